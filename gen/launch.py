"""What every launch script (experiments/*.py) does around its work.

  run(work)   quiets orbax's log, joins a multi-process JAX job when there is
              one (flags below, or what JAX detects), runs `work`, and turns
              a UserError into one line on stderr and exit status 1.

Several processes (hosts) make one JAX job:
  * explicitly: the same command on every process, with
      --coordinator_address=HOST:PORT --num_processes=N --process_id=I
    (I = 0 .. N-1; process 0 serves as coordinator at HOST:PORT);
  * detected by JAX: --distributed=yes on a Cloud TPU pod slice or under
    Slurm (srun with several tasks), where jax.distributed.initialize() finds
    the coordinator itself; --distributed=auto (the default) does that by
    itself when Slurm runs several tasks.
A single process needs none of this. On CPU the processes' collectives go
through gloo.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, Callable

import jax
from absl import flags, logging

from gen.errors import UserError
from gen.train.checkpoint import quiet_orbax_log

_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "Join a multi-process JAX job: yes = jax.distributed.initialize() with JAX's own "
    "cluster detection (TPU pod slices, Slurm); auto = when the flags below are given or "
    "Slurm runs several tasks; no = one process.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process job.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. N-1.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 30,
    "Seconds without a heartbeat after which the job's other processes count a process as "
    "dead and stop with an error, instead of waiting for it in a collective forever.")


_SHUTDOWN_SECONDS = 4 * 3600


def _explicit() -> bool:
  given = [_COORDINATOR.value is not None, _NUM_PROCESSES.value is not None,
           _PROCESS_ID.value is not None]
  if any(given) and not all(given):
    raise UserError("--coordinator_address, --num_processes and --process_id go together: "
                    "give all three (or none, to let JAX detect the cluster)")
  return all(given)


def _slurm_tasks() -> int:
  try:
    return int(os.environ.get("SLURM_NTASKS", "1"))
  except ValueError:
    return 1


def initialize_distributed() -> None:
  """jax.distributed.initialize from the flags, or from JAX's cluster detection."""
  mode = _DISTRIBUTED.value
  explicit = _explicit()
  if mode == "no" or (mode == "auto" and not explicit and _slurm_tasks() <= 1):
    return
  kwargs: dict[str, Any] = {}
  if explicit:
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      raise UserError(f"--process_id={_PROCESS_ID.value} must be in 0 .. "
                      f"--num_processes - 1 = {_NUM_PROCESSES.value - 1}")
    kwargs = dict(coordinator_address=_COORDINATOR.value,
                  num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  # jax 0.10 and 0.11 take both; checked, so that another version still starts.
  accepted = inspect.signature(jax.distributed.initialize).parameters
  if "heartbeat_timeout_seconds" in accepted:
    kwargs["heartbeat_timeout_seconds"] = _HEARTBEAT.value
  if "shutdown_timeout_seconds" in accepted:
    # At exit every process waits for the others; process 0 still draws
    # samples and computes sample quality then, which can take many minutes.
    kwargs["shutdown_timeout_seconds"] = _SHUTDOWN_SECONDS
  # CPU processes need a collectives backend to talk to each other; GPUs and
  # TPUs have their own and ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  if jax.default_backend() == "cpu" and jax.process_count() > 1:
    _without_persistent_cache()
  if jax.process_index() != 0:
    # Every process computes; process 0 reports. The others log warnings only.
    logging.set_verbosity(logging.WARNING)
  logging.warning("process %d of %d; %d local / %d global devices", jax.process_index(),
                  jax.process_count(), jax.local_device_count(), jax.device_count())


def _without_persistent_cache() -> None:
  """Turns JAX's persistent compilation cache off for this process.

  Under jax 0.12.1, CPU processes that read their train step from a warm
  cache (JAX_COMPILATION_CACHE_DIR) waited in its first gloo collective
  forever; with the cache off, the same job trains (tests/test_multiprocess.py
  hung, then passed). A multi-process CPU job compiles afresh instead.
  """
  if jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir:
    logging.warning("multi-process CPU job: JAX's persistent compilation cache (%s) is not "
                    "used: under jax 0.12 its programs hung in the first collective",
                    jax.config.jax_compilation_cache_dir)
  jax.config.update("jax_enable_compilation_cache", False)


def run(work: Callable[[], Any]) -> Any:
  """Runs `work()` as a launch script should (see the module docstring)."""
  quiet_orbax_log()
  try:
    initialize_distributed()
    return work()
  except UserError as error:
    # The message names the setting or file and what to do: no traceback.
    sys.exit(f"error: {error}")
