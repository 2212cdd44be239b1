"""A run's workdir: checked before anything is built, held by one run at a
time, and compared with the config it was started with before a resume."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time

from absl import logging

from gen.errors import UserError

LOCK_FILE = ".lock"

# Settings a run may change when it resumes (a warning says they changed):
# how long to train, how to evaluate and log, and how to run, none of which
# changes what the checkpoint holds. Anything else under these sections that
# changes the model or the train state is an error.
_RESUME_SAFE = ("config.train.num_steps", "config.train.eval_every", "config.train.log_every",
                "config.train.steps_per_call", "config.train.unroll_steps",
                "config.train.skip_nonfinite", "config.train.compute_dtype",
                "config.checkpoint.every_steps", "config.checkpoint.keep",
                "config.data.prefetch", "config.data.dir", "config.eval.",
                # Same parameters and outputs in every form (gen.models.layers).
                "config.model.conv_transpose_impl")
# Changes that make the checkpoint a different model or a different train
# state (its shapes or its structure): resuming would fail or mix two runs.
_RESUME_BREAKING = ("config.model.", "config.data.name", "config.optimizer.name")
# Settings that change the train state's structure only when they switch
# between 0 (off) and a value: an EMA, gradient clipping, momentum.
_BREAKING_WHEN_TOGGLED = ("config.train.ema_decay", "config.optimizer.grad_clip_norm",
                          "config.optimizer.momentum")


class WorkdirError(UserError):
  """The workdir cannot be used: not creatable, not writable, or in use."""


class ConfigChangedError(UserError):
  """The config of a resumed run changes its model or train state."""


def prepare(workdir: str) -> str:
  """Creates `workdir` if needed and checks that files can be written there.

  Returns its absolute path; raises WorkdirError naming the path and the
  reason, before anything expensive is built.
  """
  if not workdir:
    raise WorkdirError("--workdir is empty: name the folder where the run's files go")
  path = os.path.abspath(workdir)
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{socket.gethostname()}-{os.getpid()}")
    with open(probe, "w") as file:
      file.write("ok")
    os.remove(probe)
  except OSError as error:
    reason = error.strerror or str(error)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
      reason += " (no permission to write there)"
    raise WorkdirError(f"--workdir={workdir}: cannot create or write to it: {reason}; "
                       f"choose a folder you can write to") from None
  return path


class WorkdirLock:
  """Holds `<workdir>/.lock` for as long as the run goes on.

  An flock, which the operating system releases when its process ends in any
  way (SIGKILL included), so a lock left by a killed run never blocks the
  next one. The file records who holds it, for the message a second run gets.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def __enter__(self):
    file = open(self.path, "a+")
    try:
      fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      file.seek(0)
      holder = file.read().strip()
      file.close()
      try:
        holder = json.loads(holder)
        who = (f"process {holder['pid']} on {holder['host']} (started "
               f"{holder['started']}: {holder['command']})")
      except (ValueError, KeyError):
        who = "another process"
      raise WorkdirError(
          f"--workdir={os.path.dirname(self.path)} is in use by {who}. Two runs in one "
          f"workdir would overwrite each other's checkpoints and metrics: wait for it to "
          f"end (or stop it), or choose another --workdir") from None
    file.seek(0)
    file.truncate()
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "command": " ".join(sys.argv)[:500]}, file)
    file.flush()
    self._file = file
    return self

  def __exit__(self, *exc):
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def read_config(workdir: str) -> dict | None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as file:
    return json.load(file)


def check_resume(old: dict | None, new: dict, workdir: str) -> None:
  """Compares a resumed run's config with the one its workdir was started with.

  Raises ConfigChangedError naming every key that changes the model or the
  train state, with its old and new value; logs a warning for the others.
  """
  if old is None:
    return
  changes = sorted(_diff(old, new))
  breaking = [(key, a, b) for key, a, b in changes if _breaks(key, a, b)]
  if breaking:
    listed = "; ".join(f"{key}: {a!r} -> {b!r}" for key, a, b in breaking)
    raise ConfigChangedError(
        f"--workdir={workdir} holds checkpoints of a different model or train state "
        f"({listed}). Resuming would not continue that run: start this config in a new "
        f"--workdir, or set these back to resume")
  if changes:
    logging.warning("resuming %s with changed settings: %s", workdir,
                    "; ".join(f"{key}: {a!r} -> {b!r}" for key, a, b in changes))


def _breaks(key: str, old, new) -> bool:
  if key in _BREAKING_WHEN_TOGGLED:
    return bool(old) != bool(new)
  return key.startswith(_RESUME_BREAKING) and not key.startswith(_RESUME_SAFE)


def _diff(old, new, prefix="config"):
  for key in set(old) | set(new):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      yield from _diff(a, b, f"{prefix}.{key}")
    elif a != b:
      yield f"{prefix}.{key}", a, b


# --- a full disk ------------------------------------------------------------------
# What orbax names a checkpoint it has not finished writing.
_UNFINISHED_CHECKPOINT = ".orbax-checkpoint-tmp"


def disk_full(error: BaseException) -> bool:
  """Whether `error`, or an error it was raised from or during, is a full disk
  (ENOSPC; orbax and tensorstore pass it on as text)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full_error(workdir: str) -> UserError:
  """The one line a run ends with when its disk fills; removes the checkpoint
  that was being written (the ones before it are intact)."""
  import shutil
  folder = os.path.join(workdir, "checkpoints")
  steps, removed = [], False
  if os.path.isdir(folder):
    for name in os.listdir(folder):
      if _UNFINISHED_CHECKPOINT in name:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed = True
      elif name.isdigit():
        steps.append(int(name))
  mount = os.path.abspath(workdir)
  while not os.path.ismount(mount):
    mount = os.path.dirname(mount)
  free = shutil.disk_usage(workdir).free
  last = (f"the last good checkpoint is step {max(steps)} in {folder}" if steps
          else "no checkpoint was written")
  half = ", and the half-written one was removed" if removed else ""
  return UserError(f"the disk holding {workdir} is full ({mount}: {free // 1024} KiB "
                   f"free); the run stopped, {last}{half}. Free space (or copy the "
                   f"workdir to a disk with room) and run the same command to resume")
