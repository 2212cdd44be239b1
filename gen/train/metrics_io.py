"""Metrics on disk: metrics.jsonl (one row per step and split) and TensorBoard."""

from __future__ import annotations

import json
import os
from typing import Iterable

from absl import logging


class MetricWriter:
  """Appends {"step", "split", **metrics} rows to `<workdir>/metrics.jsonl`.

  On resume from step s, rows after s are dropped first: they came from the
  part of the interrupted run that is about to be recomputed, and keeping
  them would leave duplicates in the curves.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._truncate_after(resume_step)
    self._file = open(self.path, "a")
    try:
      from tensorboardX import SummaryWriter
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # optional: the jsonl file has every number
      logging.warning("tensorboardX is not installed: no TensorBoard event files")
      self._tensorboard = None

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    kept = [row for row in read_metrics(self.path) if row["step"] <= step]
    with open(self.path, "w") as file:
      for row in kept:
        file.write(json.dumps(row) + "\n")

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    row = {"step": int(step), "split": split}
    row.update({key: float(value) for key, value in metrics.items()})
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tensorboard is not None:
      for key, value in metrics.items():
        self._tensorboard.add_scalar(f"{split}/{key}", float(value), int(step))

  def close(self) -> None:
    try:
      self._file.close()
    finally:
      if self._tensorboard is not None:
        try:
          self._tensorboard.close()
        except OSError:
          _abandon(self._tensorboard)
          raise


def _abandon(tensorboard) -> None:
  """Stops a SummaryWriter that could not flush (a full disk): its worker
  thread and its exit hook would otherwise each print the same error again."""
  for writer in getattr(tensorboard, "all_writers", {}).values():
    events = getattr(writer, "event_writer", None)
    if events is None or getattr(events, "_closed", True):
      continue
    if getattr(events, "_worker", None) is not None:
      events._worker.stop()
    events._closed = True


def read_metrics(path: str) -> list[dict]:
  """Rows of a metrics.jsonl file; a torn last line (killed mid-write) is skipped."""
  rows = []
  with open(path) as file:
    for line in file:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def curve(rows: Iterable[dict], split: str, key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` in rows of `split`."""
  points = [(r["step"], r[key]) for r in rows if r["split"] == split and key in r]
  return [p[0] for p in points], [p[1] for p in points]
