"""Running the real loop and the real command line from tests, and compiling
the few test computations whose cost is running, not compiling."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags(devices: int) -> str:
  """conftest's XLA flags with `devices` host devices instead of 8."""
  return os.environ.get("XLA_FLAGS", "").replace("device_count=8", f"device_count={devices}")


def subprocess_env(**extra: str) -> dict:
  """The environment of a subprocess a test starts: two host devices, not
  conftest's 8 (still data-parallel, and 15% less time for runs whose shards
  are a few examples each); it inherits conftest's compilation cache."""
  env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS=xla_flags(2))
  env.update(extra)
  return env


def compiled_fast(fn, *example_args):
  """`fn` compiled for the shapes of `example_args` at XLA's full backend
  optimization. conftest turns that optimization off for the session, since
  most test programs run a step or two and compile time is what they cost;
  a test that pushes large arrays through one small program wants it back."""
  import jax
  return jax.jit(fn).lower(*example_args).compile(
      compiler_options={"xla_backend_optimization_level": 3})


def run_main(config_file: str, workdir: str, *overrides: str, timeout: float = 300,
             env: dict | None = None, wait: bool = True):
  """experiments/main.py in a subprocess, as a user runs it."""
  command = [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
             f"--config={config_file}", f"--workdir={workdir}", *overrides]
  process_env = subprocess_env(**(env or {}))
  if not wait:
    return subprocess.Popen(command, cwd=ROOT, env=process_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(command, cwd=ROOT, env=process_env, capture_output=True, text=True,
                        timeout=timeout)


def checkpoint_leaves(workdir) -> list:
  """Arrays of the newest checkpoint in `workdir`, as numpy, read onto this
  process's first device (whatever devices and processes saved it)."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                  item_handlers=ocp.StandardCheckpointHandler())
  step = manager.latest_step()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      manager.item_metadata(step).tree)
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  manager.close()
  return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(restored)]


# A constant learning rate, so that a run stopped at step 20 and continued to
# 40 follows the same schedule as one run straight to 40.
CONSTANT_SCHEDULE = ("--config.optimizer.schedule=constant", "--config.optimizer.warmup_steps=0")


def train_in_process(config_file: str, workdir, *overrides: str, devices: int = 2) -> dict:
  """What `experiments/main.py --config=<config_file> --workdir=<workdir>
  <overrides>` does, in this process: the same config_flags parse the file
  and the overrides, and the loop trains on the first `devices` devices
  (data-parallel, as the subprocesses' 2). Returns results.json as a dict.

  A run in the test's own process skips a process start and reuses the
  traces and lowerings of earlier runs in it: about a third of a DDPM :digits
  run on 2 cores (28 s as a subprocess, 18 s as a second run in a process).
  """
  import json
  import jax
  from absl import flags
  from ml_collections import config_flags
  from gen.loop import train_and_evaluate
  argv = ["main.py", f"--config={os.path.join(ROOT, config_file)}", *overrides]
  values = flags.FlagValues()
  # sys_argv: which overrides to define as flags (else it reads sys.argv, pytest's).
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  train_and_evaluate(values.config, str(workdir), devices=jax.devices()[:devices])
  with open(os.path.join(workdir, "results.json")) as file:
    return json.load(file)


def check_stop_and_resume(config_file: str, tmp_path, overrides, num_steps: int = 40):
  """Runs `num_steps` straight, checkpointing half-way and at the end; then a
  copy of that workdir cut back to its half-way checkpoint, as a run stopped
  there leaves it, is run again to `num_steps`.

  Asserts that the second run resumed from the half-way checkpoint and that
  the final checkpoints (parameters, optimizer states, EMA, key) are bitwise
  equal. Returns the straight run's results.json as a dict. (Two runs where a
  stop at half-way and a resume take three: the same check. A process killed
  part-way is tests/test_train_loop.py's and tests/test_multiprocess.py's.)
  """
  import numpy as np
  half = num_steps // 2
  overrides = [*overrides, *CONSTANT_SCHEDULE, f"--config.train.num_steps={num_steps}",
               f"--config.checkpoint.every_steps={half}"]
  straight = tmp_path / "straight"
  results = train_in_process(config_file, straight, *overrides)
  assert sorted(int(d) for d in os.listdir(straight / "checkpoints") if d.isdigit()) == [
      half, num_steps]
  stopped = tmp_path / "stopped"
  shutil.copytree(straight, stopped)
  shutil.rmtree(stopped / "checkpoints" / str(num_steps))
  os.remove(stopped / "results.json")
  # Pictures off: they cost compilation, not what is tested here.
  second = train_in_process(config_file, stopped, *overrides, "--config.eval.num_images=0",
                            "--config.eval.fid_samples=0")
  # It trained the second half only: it started from the half-way checkpoint.
  assert second["step"] == num_steps and second["timing"]["steps_this_session"] == half, second
  assert second["timing"]["final_evaluation_seconds"] > 0, second["timing"]
  for a, b in zip(checkpoint_leaves(straight), checkpoint_leaves(stopped), strict=True):
    np.testing.assert_array_equal(a, b)
  return results


# bfloat16 keeps 8 significant bits, so each activation is rounded by up to
# 2^-9 (0.2%) relative; float32 parameters, optimizer state and losses keep
# those roundings from compounding into the weights. Over the 40 steps of a
# :digits run the test metrics of every family stayed within 0.5% of float32
# (classifier 0.44%, GAN 0.09%, the others <= 0.03%; 2026-11-26): 2% leaves
# room for other machines and seeds, and is far below what a broken dtype
# path does (a loss computed in bfloat16 is off by > 10%).
BFLOAT16_RTOL = 0.02


def check_bfloat16_run(config_file: str, tmp_path, overrides, float32_results: dict,
                       num_steps: int = 40) -> dict:
  """Runs `config_file` with config.train.compute_dtype=bfloat16 as
  experiments/main.py would (train_in_process), with the overrides of a
  float32 run whose results are given: the loss must be finite and falling,
  and every test metric within BFLOAT16_RTOL of float32's. Returns the
  bfloat16 results."""
  import json
  import numpy as np
  workdir = tmp_path / "bfloat16"
  results = train_in_process(config_file, workdir, *overrides, *CONSTANT_SCHEDULE,
                             f"--config.train.num_steps={num_steps}",
                             "--config.train.compute_dtype=bfloat16",
                             "--config.eval.num_images=0", "--config.eval.fid_samples=0")
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert len(losses) >= 2 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert results["test"].keys() == float32_results["test"].keys()
  for key, value in float32_results["test"].items():
    np.testing.assert_allclose(results["test"][key], value, rtol=BFLOAT16_RTOL, err_msg=key)
  return results
