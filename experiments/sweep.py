"""Runs a grid of configs, skips finished runs, and tabulates the results.

  python experiments/sweep.py --sweep=configs/sweeps/seed_autoencoder.py \
      --workdir=runs/seed_autoencoder --parallel=2

A sweep file defines BASE_CONFIG (a config file), COMMON (overrides for every
run) and get_runs() (run name -> overrides). Each run is experiments/main.py
in its own process and workdir (<workdir>/<run name>), so a killed sweep
resumes every unfinished run from its last checkpoint; a run with
results.json is finished and is not run again. Writes <workdir>/results.md,
results.csv and val_curves.png.

  # the same grid as one Slurm job array, one task per run (experiments/slurm.py)
  python experiments/sweep.py --sweep=configs/sweeps/seed_autoencoder.py \
      --workdir=runs/seed_autoencoder --launcher=slurm --slurm_partition=cpu \
      --slurm_time=02:00:00 --slurm_cpus_per_task=8

With --launcher=slurm the unfinished runs are submitted as one array and the
sweep waits for it (sbatch --wait) before writing the same table; a task that
reaches its time limit or is preempted saves a checkpoint and requeues itself.
"""

import csv
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

import runlib  # noqa: E402
from gen.errors import UserError  # noqa: E402
from gen.train import metrics_io  # noqa: E402

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (see configs/sweeps/).")
_WORKDIR = flags.DEFINE_string("workdir", None, "One subdirectory per run goes here.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once.")
_SET = flags.DEFINE_multi_string("set", [], "Extra override for every run, KEY=VALUE "
                                 "(e.g. --set=train.num_steps=200); wins over the file.")
_ONLY = flags.DEFINE_list("only", [], "Run only these run names.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"],
                              "local: subprocesses here, --parallel at once; slurm: one "
                              "Slurm job array (experiments/slurm.py).")
_PARTITION = flags.DEFINE_string("slurm_partition", "", "Partition ('' = Slurm's default).")
_TIME = flags.DEFINE_string("slurm_time", "01:00:00", "Time limit of each task.")
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 2, "CPUs of each task.")
_GPUS = flags.DEFINE_integer("slurm_gpus_per_task", 0, "GPUs of each task.")
_TASKS = flags.DEFINE_integer("slurm_tasks_per_run", 1, "Processes of one run: srun starts "
                              "them as one JAX job (gen.launch reads Slurm's environment).")
_ARRAY = flags.DEFINE_integer("slurm_array_parallelism", 0, "Tasks at once (0 = no limit).")
_SIGNAL = flags.DEFINE_integer("slurm_signal_seconds", 120, "SIGTERM this many seconds "
                               "before the time limit: the run checkpoints and requeues.")
_EXTRA = flags.DEFINE_multi_string("slurm_option", [], "More sbatch options, e.g. "
                                   "--slurm_option=--account=lab.")
flags.mark_flags_as_required(["sweep", "workdir"])


def load_sweep(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(f"--sweep={path}: no such file")
  spec = importlib.util.spec_from_file_location("sweep_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in ("BASE_CONFIG", "COMMON", "get_runs"):
    if not hasattr(module, name):
      raise ValueError(f"--sweep={path} must define {name}")
  return module


def check_run_names(runs: dict) -> None:
  """Each run needs a folder of its own: one line naming the runs that would share one."""
  folders: dict[str, str] = {}
  for name in runs:
    folder = os.path.normcase(os.path.normpath(name))
    if os.path.isabs(name) or folder.startswith("..") or folder in (".", ""):
      raise ValueError(f"run name {name!r}: must be a folder inside --workdir")
    if folder in folders:
      raise ValueError(f"runs {folders[folder]!r} and {name!r} would share the workdir "
                       f"{os.path.join(_WORKDIR.value, folder)}; rename one")
    folders[folder] = name


def launch_on_slurm(todo: list[tuple[str, list[str], str]]) -> list[str]:
  """The unfinished runs as one Slurm array; waits for it; returns the failed names."""
  import slurm
  if not todo:
    return []
  options = slurm.SlurmOptions(
      partition=_PARTITION.value, time=_TIME.value, cpus_per_task=_CPUS.value,
      gpus_per_task=_GPUS.value, tasks_per_run=_TASKS.value,
      array_parallelism=_ARRAY.value, signal_seconds=_SIGNAL.value,
      extra=tuple(_EXTRA.value))
  folder = os.path.join(_WORKDIR.value, "slurm")
  name = "gen-" + os.path.basename(os.path.abspath(_WORKDIR.value))
  logging.info("submitting %d runs as a Slurm array (%s)", len(todo), folder)
  result = slurm.submit(todo, options, folder, name)
  logging.info("Slurm array %s ended (sbatch exit %d)", result.stdout.strip(),
               result.returncode)
  return [name for name, _, run_dir in todo if not runlib.is_finished(run_dir)]


def _parse_set(items: list[str]) -> dict[str, str]:
  overrides = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--set={item!r}: expected KEY=VALUE, e.g. train.num_steps=200")
    key, value = item.split("=", 1)
    overrides[key] = value
  return overrides


def write_report(workdir: str, runs: dict[str, dict]) -> list[dict]:
  """results.md, results.csv and val_curves.png from the finished runs' files."""
  rows = []
  for name, overrides in runs.items():
    path = os.path.join(workdir, name, "results.json")
    if not os.path.exists(path):
      continue
    with open(path) as file:
      results = json.load(file)
    row = {"run": name, **{key: overrides[key] for key in sorted(overrides)}}
    row["steps"] = results["step"]
    for split in ("val", "test"):
      for key, value in sorted(results[split].items()):
        row[f"{split}/{key}"] = value
    rows.append(row)
  if not rows:
    return rows
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as file:
    writer = csv.DictWriter(file, columns)
    writer.writeheader()
    writer.writerows(rows)
  ranked = sorted(rows, key=lambda r: r.get("test/mse", float("inf")))
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in ranked:
    lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
  with open(os.path.join(workdir, "results.md"), "w") as file:
    file.write("\n".join(lines) + "\n")
  _plot_curves(workdir, [r["run"] for r in ranked])
  return ranked


def _cell(value) -> str:
  return f"{value:.5g}" if isinstance(value, float) else str(value)


def _plot_curves(workdir: str, names: list[str]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, (loss_axis, mse_axis) = plt.subplots(1, 2, figsize=(13, 5))
  for name in names:
    path = os.path.join(workdir, name, "metrics.jsonl")
    if not os.path.exists(path):
      continue
    rows = metrics_io.read_metrics(path)
    style = "-" if "adam" in name and "adadelta" not in name else "--"
    loss_axis.plot(*metrics_io.curve(rows, "val", "loss"), style, label=name)
    mse_axis.plot(*metrics_io.curve(rows, "val", "mse"), style, label=name)
  loss_axis.set_title("validation loss (each run's own loss)")
  mse_axis.set_title("validation reconstruction MSE, pixels in [0, 1]")
  for axis in (loss_axis, mse_axis):
    axis.set_xlabel("step")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
  mse_axis.legend(fontsize=7)
  figure.savefig(os.path.join(workdir, "val_curves.png"), dpi=110, bbox_inches="tight")
  plt.close(figure)


def main(argv):
  del argv
  try:
    sweep_main()
  except (ValueError, FileNotFoundError, UserError) as error:
    # Bad input: one line that names the flag, file or run at fault.
    raise SystemExit(f"error: {error}") from None


def sweep_main():
  sweep = load_sweep(_SWEEP.value)
  runs = sweep.get_runs()
  if _ONLY.value:
    unknown = sorted(set(_ONLY.value) - set(runs))
    if unknown:
      raise ValueError(f"--only names unknown runs {unknown}; valid: {sorted(runs)}")
    runs = {name: runs[name] for name in _ONLY.value}
  extra = _parse_set(_SET.value)
  check_run_names(runs)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  todo = []
  for name, overrides in runs.items():
    run_dir = os.path.join(_WORKDIR.value, name)
    if runlib.is_finished(run_dir):
      logging.info("%s: finished, not run again", name)
      continue
    command = runlib.run_command(sweep.BASE_CONFIG, run_dir,
                                 {**sweep.COMMON, **overrides, **extra})
    todo.append((name, command, run_dir))
  if _LAUNCHER.value == "slurm":
    failed = launch_on_slurm(todo)
  else:
    failed = runlib.launch_all(
        todo, _PARALLEL.value,
        lambda name, code, seconds: logging.info(
            "%s: %s in %.0f s", name, "done" if code == 0 else f"FAILED ({code})", seconds))
  ranked = write_report(_WORKDIR.value, runs)
  logging.info("%d/%d runs finished; table: %s", len(ranked), len(runs),
               os.path.join(_WORKDIR.value, "results.md"))
  if failed:
    raise SystemExit(f"runs failed: {', '.join(failed)}; see their log.txt")


if __name__ == "__main__":
  app.run(main)
