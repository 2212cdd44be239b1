"""Mode collapse on the ring of 8 Gaussians: GAN losses side by side, over seeds.

  python experiments/gan_modes.py                       # 3 losses x 3 seeds, ~5 min on 2 cores
  python experiments/gan_modes.py --losses=non_saturating,minimax --seeds=0,1,2,3,4

Each run is configs/gan.py:toy2d with config.model.loss and config.seed set,
trained through the generic loop; the table reads its mode coverage (modes
holding at least a quarter of their fair share of 10,000 samples, and the
share of samples more than 3 std from every mode) and the true density's
NLL of generated points (low = samples where the data is).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from configs import gan as gan_config  # noqa: E402
from gen.loop import train_and_evaluate  # noqa: E402

_LOSSES = flags.DEFINE_list("losses", ["non_saturating", "minimax", "hinge"], "GAN losses.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "config.seed of each run.")
_ROOT = flags.DEFINE_string("root", "runs/gan_modes", "Workdirs go under here.")
_STEPS = flags.DEFINE_integer("steps", 10_000, "config.train.num_steps.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  rows = []
  for loss in _LOSSES.value:
    for seed in _SEEDS.value:
      config = gan_config.get_config("toy2d")
      config.model.loss = loss
      config.seed = int(seed)
      config.train.num_steps = _STEPS.value
      results = train_and_evaluate(config, os.path.join(_ROOT.value, f"{loss}_seed{seed}"))
      coverage = results["mode_coverage"]
      rows.append((loss, seed, coverage["modes_covered"], coverage["num_modes"],
                   coverage["far_share"], results["test"]["fake_true_nll"]))
      print(f"{loss} seed {seed}: {coverage['modes_covered']}/{coverage['num_modes']} modes",
            flush=True)
  print("\n| loss | seed | modes covered | far from every mode | true NLL of samples (nats) |")
  print("|---|---|---|---|---|")
  for loss, seed, covered, modes, far, nll in rows:
    print(f"| {loss} | {seed} | {covered}/{modes} | {far:.1%} | {nll:.3f} |")


if __name__ == "__main__":
  app.run(main)
