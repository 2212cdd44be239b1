"""Trains the classifier that sample-quality metrics read, where they look for it.

  python experiments/train_classifier.py
  python experiments/train_classifier.py --config=configs/classifier.py:digits

The workdir defaults to runs/classifiers/<config.data.name>, the place a
run's config.eval.classifier="auto" finds it (gen.families.classifier).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gen import launch  # noqa: E402
from gen.families.classifier import default_classifier_dir  # noqa: E402
from gen.loop import train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "classifier.py"),
    "A classifier config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Default: runs/classifiers/<data.name>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_classifier_dir(config.data.name)
  results = launch.run(lambda: train_and_evaluate(config, workdir))
  if results.get("test"):
    logging.info("classifier in %s: test accuracy %.4f", workdir,
                 results["test"]["accuracy"])


if __name__ == "__main__":
  app.run(main)
