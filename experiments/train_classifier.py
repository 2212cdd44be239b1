"""Trains the classifier that sample-quality metrics read, where they look for it.

  python experiments/train_classifier.py
  python experiments/train_classifier.py --config=configs/classifier.py:digits

The workdir defaults to runs/classifiers/<config.data.name>, the place a
run's config.eval.classifier="auto" finds it (gen.evaluate.fidelity).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gen.evaluate import fidelity  # noqa: E402
from gen.train.checkpoint import quiet_orbax_log  # noqa: E402
from gen.train.loop import train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "classifier.py"),
    "A classifier config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Default: runs/classifiers/<data.name>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_orbax_log()
  config = _CONFIG.value
  workdir = _WORKDIR.value or fidelity.default_classifier_dir(config.data.name)
  results = train_and_evaluate(config, workdir)
  logging.info("classifier in %s: test accuracy %.4f", workdir,
               results["test"]["accuracy"])


if __name__ == "__main__":
  app.run(main)
