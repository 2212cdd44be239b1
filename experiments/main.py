"""Trains and evaluates one model.

  python experiments/main.py --config=configs/autoencoder.py --workdir=runs/ae \
      --config.model.bottleneck=16

Several processes (hosts) as one job: the same command on each, with
--coordinator_address, --num_processes and --process_id, or --distributed=yes
where JAX detects the cluster (gen/launch.py; README, "Many processes").
"""

import os
import sys

# Run from a checkout without installing: the repo root holds gen/ and configs/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gen import launch  # noqa: E402
from gen.loop import train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and pictures go here; "
                               "a workdir with checkpoints is resumed.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launch.run(lambda: train_and_evaluate(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
