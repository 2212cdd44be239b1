"""Runs of experiments/main.py as one Slurm job array: what sweep.py's
--launcher=slurm submits.

Each run is one array task (one `srun` step of `tasks_per_run` tasks: one
run over several processes, JAX finding its coordinator from Slurm's
environment). The array's script is written beside the sweep
(<folder>/slurm/array.sh, with the commands in commands.txt) and submitted
with `sbatch --wait`, so the sweep's table is written when the array ends,
as with local processes.

Nothing is lost: Slurm sends SIGTERM `signal_seconds` before a task's time
limit (and on preemption); the run saves a checkpoint and stops, and the
script then requeues its own task, which resumes from that checkpoint. A run
that stops with an error is not requeued. Submitting the sweep again skips
the finished runs and resumes the others.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess

from gen.errors import UserError


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  partition: str = ""          # "" = the cluster's default partition
  time: str = "01:00:00"       # each task's time limit
  cpus_per_task: int = 2
  gpus_per_task: int = 0
  tasks_per_run: int = 1       # processes of one run (one JAX job)
  array_parallelism: int = 0   # tasks at once; 0 = as many as Slurm allows
  signal_seconds: int = 120    # SIGTERM this long before the time limit
  extra: tuple[str, ...] = ()  # more sbatch options, e.g. ("--account=lab",)


def check_available() -> str:
  """The path of sbatch, or a UserError that says what to do."""
  path = shutil.which("sbatch")
  if path is None:
    raise UserError("--launcher=slurm: sbatch is not on PATH (install Slurm's client "
                    "commands, or use --launcher=local)")
  return path


def check_partition(partition: str) -> None:
  """A UserError naming --slurm_partition when Slurm does not know it."""
  if not partition:
    return
  known = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
  names = sorted(set(known.stdout.split()))
  if known.returncode == 0 and partition not in names:
    raise UserError(f"--slurm_partition={partition!r}: Slurm has no such partition; "
                    f"it has: {', '.join(names) or 'none'}")


def array_script(options: SlurmOptions, folder: str, count: int, name: str) -> str:
  """The sbatch script of an array of `count` tasks; task i runs line i + 1 of
  <folder>/commands.txt in its own run folder (the last argument given to
  main.py as --workdir)."""
  limit = f"%{options.array_parallelism}" if options.array_parallelism > 0 else ""
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name={name}",
           f"#SBATCH --array=0-{count - 1}{limit}",
           f"#SBATCH --output={folder}/task_%a.out",
           "#SBATCH --open-mode=append",
           f"#SBATCH --time={options.time}",
           f"#SBATCH --ntasks={options.tasks_per_run}",
           f"#SBATCH --cpus-per-task={options.cpus_per_task}",
           # To every step (not B:, the batch shell): the run checkpoints and stops.
           f"#SBATCH --signal=TERM@{options.signal_seconds}",
           "#SBATCH --requeue"]
  if options.partition:
    lines.append(f"#SBATCH --partition={options.partition}")
  if options.gpus_per_task:
    lines.append(f"#SBATCH --gpus-per-task={options.gpus_per_task}")
  lines += [f"#SBATCH {option}" for option in options.extra]
  lines += [
      "set -u",
      f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(folder)}/commands.txt)',
      'workdir=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" '
      f'{shlex.quote(folder)}/workdirs.txt)',
      'echo "task $SLURM_ARRAY_TASK_ID (restart ${SLURM_RESTART_COUNT:-0}): $line"',
      # The batch shell ignores the TERM it may be sent too: srun's steps stop.
      "trap '' TERM",
      'eval srun --kill-on-bad-exit=1 "$line"',
      "status=$?",
      # Stopped cleanly without finishing (the signal before the time limit,
      # or preemption): requeue this task, which resumes from the checkpoint.
      'if [ "$status" = 0 ] && [ ! -e "$workdir/results.json" ]; then',
      '  echo "task $SLURM_ARRAY_TASK_ID stopped before the end: requeued"',
      '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
      "fi",
      "exit $status"]
  return "\n".join(lines) + "\n"


def submit(jobs: list[tuple[str, list[str], str]], options: SlurmOptions, folder: str,
           name: str = "gen-sweep", wait: bool = True) -> subprocess.CompletedProcess:
  """Writes and submits the array of (name, command, run_dir) jobs; with `wait`,
  returns when every task has ended (sbatch --wait)."""
  sbatch = check_available()
  check_partition(options.partition)
  folder = os.path.abspath(folder)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "commands.txt"), "w") as file:
    file.writelines(shlex.join(command) + "\n" for _, command, _ in jobs)
  with open(os.path.join(folder, "workdirs.txt"), "w") as file:
    file.writelines(os.path.abspath(run_dir) + "\n" for _, _, run_dir in jobs)
  with open(os.path.join(folder, "runs.txt"), "w") as file:
    file.writelines(f"{index}\t{run}\n" for index, (run, _, _) in enumerate(jobs))
  for _, _, run_dir in jobs:
    os.makedirs(run_dir, exist_ok=True)
  script = os.path.join(folder, "array.sh")
  with open(script, "w") as file:
    file.write(array_script(options, folder, len(jobs), name))
  command = [sbatch, "--parsable"] + (["--wait"] if wait else []) + [script]
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode and "invalid partition" in result.stderr.lower():
    raise UserError(f"--slurm_partition={options.partition!r}: {result.stderr.strip()}")
  if result.returncode and not result.stdout.strip():
    raise UserError(f"sbatch refused the sweep's array ({script}): {result.stderr.strip()}")
  return result
