"""Datasets: sources (files, TFDS, code), batching, preprocessing."""

from gen.data.base import ArraySource, Source, SourceInfo
from gen.data.dataset import Dataset, load
from gen.data.preprocess import example_keys, preprocess, to_pixels, to_unit
