"""Deterministic, resumable batching over any `Source`.

The batch for train step s is a pure function of (seed, s): epoch s // E
shuffles with a key derived from (seed, epoch), and position s % E picks the
slice. A restarted run therefore needs nothing but its step count to continue
with exactly the batch it would have seen. The last incomplete batch of each
epoch is dropped so every step has the same shape (one compiled program).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np

from gen.data.base import Source


class TrainBatches:
  """Shuffled fixed-size batches of `rows` of `source`, addressed by step."""

  def __init__(self, source: Source, rows: np.ndarray, uids: np.ndarray,
               batch_size: int, seed: int):
    if len(rows) < batch_size:
      raise ValueError(
          f"config.train.batch_size={batch_size} is larger than the "
          f"{len(rows)} training examples of {source.info.name}")
    self.source = source
    self.rows = rows
    self.uids = uids
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = len(rows) // batch_size
    self._epoch = -1
    self._order = None

  def _order_for(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._order = rng.permutation(len(self.rows))
      self._epoch = epoch
    return self._order

  def batch_at(self, step: int, part: slice = slice(None)) -> dict[str, np.ndarray]:
    """The batch of train step `step`: {"x", "label", "uid"}, leading dim batch_size.

    `part` picks rows of that batch (one process's share of the global
    batch); only those are read from the source.
    """
    epoch, position = divmod(step, self.steps_per_epoch)
    order = self._order_for(epoch)
    picked = order[position * self.batch_size:(position + 1) * self.batch_size]
    # Sorted reads are faster for on-disk sources; the order inside a batch
    # does not matter to a mean loss, but keep it fixed for determinism.
    picked = np.sort(picked)[part]
    batch = self.source.take(self.rows[picked])
    batch["uid"] = self.uids[picked].astype(np.int32)
    return batch

  def stacked(self, first_step: int, count: int,
              part: slice = slice(None)) -> dict[str, np.ndarray]:
    """Batches of steps first_step .. first_step + count - 1, stacked: [count, batch, ...]."""
    batches = [self.batch_at(first_step + i, part) for i in range(count)]
    return {key: np.stack([b[key] for b in batches]) for key in batches[0]}


def eval_batches(source: Source, rows: np.ndarray, uids: np.ndarray, batch_size: int,
                 part: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
  """Every row once, in order; the last batch is padded and `mask` marks real rows.

  Yields {"x", "label", "uid", "mask" ([batch] float32, 1 for real rows)}.
  Padding keeps one compiled shape and keeps every example in the average.
  `part` picks this process's rows of each batch (see TrainBatches.batch_at).
  """
  for start in range(0, len(rows), batch_size):
    chunk = np.arange(start, min(start + batch_size, len(rows)))
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.full(batch_size - real, chunk[-1])])
    mask = np.zeros(batch_size, np.float32)
    mask[:real] = 1.0
    chunk, mask = chunk[part], mask[part]
    batch = source.take(rows[chunk])
    batch["uid"] = uids[chunk].astype(np.int32)
    batch["mask"] = mask
    yield batch


def prefetch(iterator: Iterator, size: int) -> Iterator:
  """Runs `iterator` in a background thread, `size` items ahead.

  Reading and placing the next batches overlaps with the device computing the
  current one. Exceptions in the thread are raised in the consumer.
  """
  if size <= 0:
    yield from iterator
    return
  items: queue.Queue = queue.Queue(maxsize=size)
  done = object()
  stop = threading.Event()

  def produce():
    try:
      for item in iterator:
        if stop.is_set():
          return
        items.put(item)
      items.put(done)
    except BaseException as error:  # handed to the consumer below
      items.put(error)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = items.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
