"""Sample-based families side by side: speed measured here, quality from finished runs.

  # speed: train examples/s and sampling time per image (DDPM: ancestral and DDIM-50)
  python experiments/benchmarks/sample_benchmark.py
  # quality: sample-quality figures of finished runs (workdirs of experiments/main.py)
  python experiments/benchmarks/sample_benchmark.py --configs= \
      --workdirs=runs/gan,runs/ddpm,runs/vae,runs/realnvp,runs/autoencoder

Speed is measured as in experiments/benchmarks/likelihood_benchmark.py (median of timed
windows after a compiling call; sampling timed on a second compiled call).

Quality: from results.json, "sample_quality" (Frechet distance, KID and
precision/recall in the dataset classifier's features, each beside the same
figure for as many train images; classes covered by the samples) and, for
toy2d GANs, "mode_coverage".
"""

from __future__ import annotations

import json
import os
import sys

# The repository root (this file is experiments/benchmarks/sample_benchmark.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # likelihood_benchmark
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

import likelihood_benchmark  # noqa: E402  (its flags: --steps, --repeats, --samples)

flags.FLAGS.set_default("configs", [
    "configs/gan.py", "configs/gan.py:toy2d", "configs/ddpm.py@eval.sampler=ancestral",
    "configs/ddpm.py@eval.sampler=ddim@eval.sampling_steps=50"])
flags.FLAGS.set_default("samples", 16)


def _quality_rows(workdir: str) -> list[str]:
  with open(os.path.join(workdir, "results.json")) as file:
    results = json.load(file)
  with open(os.path.join(workdir, "config.json")) as file:
    config = json.load(file)
  name = f"{config['model']['name']} ({config['model'].get('loss', '')})".replace(" ()", "")
  quality = results.get("sample_quality")
  rows = []
  if quality and "fid" in quality:
    histogram = quality["class_histogram"]
    rows.append(
        f"| {name} | {config['data']['name']} | {results['step']} | {quality['num_samples']} | "
        f"{quality['fid']:.3f} | {quality['fid_train_vs_test']:.3f} | "
        f"{quality['kid']:.4f} | {quality['kid_train_vs_test']:.4f} | "
        f"{quality['precision']:.3f} / {quality['recall']:.3f} | "
        f"{quality['precision_train_vs_test']:.3f} / {quality['recall_train_vs_test']:.3f} | "
        f"{histogram['classes_covered']}/{len(histogram['classes'])} | "
        f"{histogram['total_variation_to_test']:.3f} | {quality['nonfinite_samples']} |")
  elif quality:
    rows.append(f"| {name} | {config['data']['name']} | skipped: {quality['skipped']} |")
  coverage = results.get("mode_coverage")
  if coverage:
    rows.append(f"| {name} | {config['data']['name']} | {results['step']} | "
                f"{coverage['num_samples']} | modes covered {coverage['modes_covered']}/"
                f"{coverage['num_modes']}, far from every mode {coverage['far_share']:.1%} |")
  return rows


def main(argv):
  del argv
  configs, workdirs = flags.FLAGS.configs, flags.FLAGS.workdirs
  if configs:
    likelihood_benchmark.print_speed_table(configs)
  if workdirs:
    print("\n| model | data | step | samples | FID | FID train-vs-test | KID | "
          "KID train-vs-test | precision / recall | train-vs-test P / R | classes covered "
          "| class TV to test | non-finite |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for workdir in workdirs:
      for row in _quality_rows(workdir):
        print(row)


if __name__ == "__main__":
  app.run(main)
