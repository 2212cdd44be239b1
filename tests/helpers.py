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


def check_stop_and_resume(config_file: str, tmp_path, overrides, num_steps: int = 40):
  """Runs `num_steps` straight, checkpointing half-way and at the end; then a
  copy of that workdir cut back to its half-way checkpoint, as a run stopped
  there leaves it, is run again to `num_steps`.

  Asserts that the second run resumed from the half-way checkpoint and that
  the final checkpoints (parameters, optimizer states, EMA, key) are bitwise
  equal. Returns the straight run's results.json as a dict. (Two processes
  where a stop at half-way and a resume take three: the same check.)
  """
  import json
  import numpy as np
  half = num_steps // 2
  overrides = [*overrides, *CONSTANT_SCHEDULE, f"--config.train.num_steps={num_steps}",
               f"--config.checkpoint.every_steps={half}"]
  straight = tmp_path / "straight"
  run = run_main(config_file, str(straight), *overrides)
  assert run.returncode == 0, run.stdout + run.stderr
  assert sorted(int(d) for d in os.listdir(straight / "checkpoints") if d.isdigit()) == [
      half, num_steps]
  stopped = tmp_path / "stopped"
  shutil.copytree(straight, stopped)
  shutil.rmtree(stopped / "checkpoints" / str(num_steps))
  os.remove(stopped / "results.json")
  # Pictures off: they cost compilation, not what is tested here.
  second = run_main(config_file, str(stopped), *overrides, "--config.eval.num_images=0",
                    "--config.eval.fid_samples=0")
  assert second.returncode == 0, second.stdout + second.stderr
  assert ("resumed from" in second.stderr
          and os.path.join("checkpoints", str(half)) in second.stderr), second.stderr
  for a, b in zip(checkpoint_leaves(straight), checkpoint_leaves(stopped), strict=True):
    np.testing.assert_array_equal(a, b)
  return json.loads((straight / "results.json").read_text())


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
  """Runs `config_file` with config.train.compute_dtype=bfloat16 through
  experiments/main.py, with the overrides of a float32 run whose results are
  given: the loss must be finite and falling, and every test metric within
  BFLOAT16_RTOL of float32's. Returns the bfloat16 results."""
  import json
  import numpy as np
  workdir = tmp_path / "bfloat16"
  run = run_main(config_file, str(workdir), *overrides, *CONSTANT_SCHEDULE,
                 f"--config.train.num_steps={num_steps}", "--config.train.compute_dtype=bfloat16",
                 "--config.eval.num_images=0", "--config.eval.fid_samples=0")
  assert run.returncode == 0, run.stdout + run.stderr
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert len(losses) >= 2 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  results = json.loads((workdir / "results.json").read_text())
  assert results["test"].keys() == float32_results["test"].keys()
  for key, value in float32_results["test"].items():
    np.testing.assert_allclose(results["test"][key], value, rtol=BFLOAT16_RTOL, err_msg=key)
  return results
