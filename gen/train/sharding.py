"""Data parallelism through `jax.sharding`: one mesh axis over the batch.

Parameters and optimizer state are replicated; batches are split along their
batch axis. jit then compiles one SPMD program that runs on every device and
averages gradients with the collectives it inserts itself. With several
processes (hosts) each one builds only its own rows of a global batch
(`process_rows`), and `put_batch` joins them into one global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


def local_mesh() -> Mesh:
  """The mesh of this process's devices alone, for work only one process does."""
  return make_mesh(jax.local_devices())


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


def _local_share(mesh: Mesh) -> tuple[int, int]:
  """(index of this process's first device in the mesh, how many it has there)."""
  process = jax.process_index()
  mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == process]
  if not mine or mine != list(range(mine[0], mine[0] + len(mine))):
    raise ValueError("each process's devices must be one contiguous block of the mesh")
  return mine[0], len(mine)


def process_rows(mesh: Mesh, global_rows: int) -> slice:
  """The rows of a [global_rows, ...] batch that this process's devices hold.

  The mesh splits the batch axis evenly over its devices in order, so a
  process holds one contiguous block. One process: every row.
  """
  first, count = _local_share(mesh)
  per_device = global_rows // mesh.size
  return slice(first * per_device, (first + count) * per_device)


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh, batch_dim: int = 0):
  """This process's rows (`process_rows`) -> global device arrays split along `batch_dim`.

  With one process the rows are the whole batch.
  """
  sharding = batch_sharding(mesh, batch_dim)
  _, count = _local_share(mesh)
  arrays = {}
  for key, value in batch.items():
    shape = list(value.shape)
    shape[batch_dim] = shape[batch_dim] * mesh.size // count
    arrays[key] = jax.make_array_from_process_local_data(sharding, value, tuple(shape))
  return arrays


def to_host(tree):
  """numpy copies of a pytree's arrays, from any process.

  Replicated arrays (parameters, metrics) are read from this process's own
  copy; a sharded array that spans other processes is an error.
  """
  def fetch(leaf):
    if not isinstance(leaf, jax.Array):
      return leaf
    if leaf.is_fully_addressable or leaf.is_fully_replicated:
      return np.asarray(leaf)
    raise ValueError(f"an array of shape {leaf.shape} is split over other processes; "
                     f"gather it first")
  return jax.tree_util.tree_map(fetch, tree)


def single_device(params):
  """Host work (sampling, pictures) on one local device: replicated parameters
  would make a jit run the same computation once per mesh device."""
  return jax.device_put(to_host(params), jax.local_devices()[0])
