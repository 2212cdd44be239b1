"""Sample quality of finished runs, measured again with the current evaluation code.

  python experiments/requality.py --workdirs=runs/realnvp,runs/gan
  # the same samples through the pre-fix pixel map round(255 y), for the record
  python experiments/requality.py --workdirs=runs/realnvp --pixel_map=round255

For runs whose sample quality was measured before an evaluation fix (issue
15: the baseline of validation images nobody trained on, the flow's samples
mapped to pixels by floor(256 y), batch-independent GAN samples). Loads each
run's newest checkpoint (gen.restore), draws --samples samples from the
family's sampler and prints one table row per run and pixel map; writes
<workdir>/requality.json. The run's own files are not changed otherwise.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from gen import launch, restore  # noqa: E402
from gen.evaluate import fidelity  # noqa: E402
from gen.families import classifier as classifier_lib  # noqa: E402
from gen.train import sharding  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished runs of experiments/main.py.")
_SAMPLES = flags.DEFINE_integer("samples", 5000, "Samples (capped by the unseen validation "
                                "images, as in every run).")
_PIXEL_MAP = flags.DEFINE_enum(
    "pixel_map", "family", ["family", "round255", "both"],
    "family: the family's own inverse of its preprocessing (Family.to_pixels); round255: "
    "round(255 y), what every family used before issue 15; both: one row each.")
flags.mark_flags_as_required(["workdirs"])


def round255(images) -> np.ndarray:
  """The pre-fix map: round(255 y), whatever the family's preprocessing."""
  images = np.nan_to_num(np.asarray(images, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def measure(workdir: str, pixel_maps: list[str]) -> dict[str, dict]:
  """{pixel map: sample quality} of the run in `workdir`, restored once; the
  samples are drawn from config.seed, so every map sees the same ones."""
  run = restore.load_run(workdir, {"eval.fid_samples": _SAMPLES.value})
  classifier, why = classifier_lib.find_classifier(run.config, run.dataset)
  if classifier is None:
    return {pixel_map: {"skipped": why} for pixel_map in pixel_maps}
  sampler = run.family.sampler(run.params, run.dataset)
  if sampler is None:
    return {pixel_map: {"skipped": "the family does not sample"} for pixel_map in pixel_maps}
  sample_fn, params = sampler
  params = sharding.single_device(params)
  measured = {}
  for pixel_map in pixel_maps:
    to_pixels = run.family.to_pixels if pixel_map == "family" else round255
    result = fidelity.sample_quality(sample_fn, params, run.dataset, run.config, classifier,
                                     to_pixels)
    result["step"], result["pixel_map"] = run.step, pixel_map
    measured[pixel_map] = result
  return measured


def main(argv):
  del argv
  maps = ["family", "round255"] if _PIXEL_MAP.value == "both" else [_PIXEL_MAP.value]
  print("| run | step | pixel map | samples | FD | FD val-vs-test | FD train-vs-test | "
        "precision / recall | val-vs-test P / R |")
  print("|---|---|---|---|---|---|---|---|---|")
  for workdir in _WORKDIRS.value:
    measured = launch.run(lambda: measure(workdir, maps))
    for pixel_map, result in measured.items():
      if "fid" not in result:
        print(f"| {workdir} | | {pixel_map} | skipped: {result.get('skipped')} |")
        continue
      print(f"| {workdir} | {result['step']} | {pixel_map} | {result['num_samples']} | "
            f"{result['fid']:.1f} | {result['fid_val_vs_test']:.2f} | "
            f"{result['fid_train_vs_test']:.2f} | {result['precision']:.3f} / "
            f"{result['recall']:.3f} | {result['precision_val_vs_test']:.3f} / "
            f"{result['recall_val_vs_test']:.3f} |", flush=True)
    with open(os.path.join(workdir, "requality.json"), "w") as file:
      json.dump(measured, file, indent=2)


if __name__ == "__main__":
  app.run(main)
