"""Data parallelism through `jax.sharding`: one mesh axis over the batch.

Parameters and optimizer state are replicated; batches are split along their
batch axis. jit then compiles one SPMD program that runs on every device and
averages gradients with the collectives it inserts itself.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_dim: int = 0) -> NamedSharding:
  """Splits dimension `batch_dim` over the mesh (1 for [steps, batch, ...] stacks)."""
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_dim), BATCH_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, key: str) -> None:
  if batch_size % mesh.size:
    raise ValueError(
        f"{key}={batch_size} must be divisible by the number of devices "
        f"({mesh.size}: {mesh.devices.flat[0].platform}) to split it evenly")


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh, batch_dim: int = 0):
  """Host arrays -> global device arrays split along `batch_dim`.

  Built from this process's data, so the same call serves several hosts.
  """
  sharding = batch_sharding(mesh, batch_dim)
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in batch.items()}


def single_device(params):
  """Host work (sampling, pictures) on one device: replicated parameters would
  make a jit run the same computation once per mesh device."""
  return jax.device_put(jax.device_get(params), jax.devices()[0])
