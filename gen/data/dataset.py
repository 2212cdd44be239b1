"""One object per run that holds its train, validation and test splits."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import ml_collections
import numpy as np

from gen.data import pipeline
from gen.data.base import Source, SourceInfo


@dataclasses.dataclass
class Dataset:
  """Train batches by step, and validation/test examples in a fixed order.

  Validation rows are carved from the train source with
  `config.data.validation_seed`; `uid`s are unique across both sources.
  """

  info: SourceInfo
  train: pipeline.TrainBatches
  train_source: Source
  test_source: Source
  val_rows: np.ndarray
  test_rows: np.ndarray

  def eval_batches(self, split: str, batch_size: int,
                   part: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
    """Batches of every example of `split`; `part` picks this process's rows."""
    if split == "val":
      return pipeline.eval_batches(self.train_source, self.val_rows, self.val_rows,
                                   batch_size, part)
    if split == "test":
      offset = len(self.train_source)
      return pipeline.eval_batches(self.test_source, self.test_rows,
                                   self.test_rows + offset, batch_size, part)
    raise ValueError(f"unknown split {split!r}; valid: val, test")

  def num_examples(self, split: str) -> int:
    return {"train": len(self.train.rows), "val": len(self.val_rows),
            "test": len(self.test_rows)}[split]


def split_rows(num_rows: int, validation_size: int,
               validation_seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train rows, validation rows) of a train source of `num_rows`, each sorted:
  `validation_size` rows drawn with `validation_seed`, the rest for training."""
  order = np.random.default_rng(validation_seed).permutation(num_rows)
  return np.sort(order[validation_size:]), np.sort(order[:validation_size])


def load(config: ml_collections.ConfigDict) -> Dataset:
  """Builds the splits that `config.data` and `config.train` describe."""
  from gen.data import sources  # heavy (tfds); only when data is needed

  train_source = sources.load_source(config.data, "train")
  test_source = sources.load_source(config.data, "test")
  num_val = config.data.validation_size
  if num_val >= len(train_source):
    raise ValueError(
        f"config.data.validation_size={num_val} leaves no training data: "
        f"{config.data.name} has {len(train_source)} train examples")
  train_rows, val_rows = split_rows(len(train_source), num_val, config.data.validation_seed)
  train = pipeline.TrainBatches(train_source, train_rows, train_rows,
                                config.train.batch_size, config.seed)
  return Dataset(train_source.info, train, train_source, test_source, val_rows,
                 np.arange(len(test_source)))
