"""Guidance's trade-off: FD (and, for a class-conditional run, conditional
accuracy) against the guidance scale.

  python experiments/guidance_sweep.py --workdir=runs/flow_matching_cond \
      --scales=0,1,1.5,2,3,4 --samples=2000 --out=docs/guidance_2core_cpu
  python experiments/guidance_sweep.py --workdir=runs/latent \
      --guide_workdir=runs/latent_guide --scales=1,1.25,1.5,2 --out=docs/autoguidance

Classifier-free guidance of a conditional run, or with --guide_workdir
autoguidance by a weaker run of the same data (gen/families/guide.py), which
also guides an unconditional run (its rows have no accuracy columns). A
conditional model of a family without guidance (VAE, flow, GAN) is measured
the same way at --scales=1, as trained:

  python experiments/guidance_sweep.py --workdir=runs/gan_cond --scales=1 --samples=5000

For each scale: --samples images, the classes in turn (image i of class
i mod C, from fold_in(PRNGKey(seed), i)), and in the dataset classifier's
features against the test set:
  - FD overall, beside the baseline of as many unseen validation images;
  - conditional accuracy: how often the classifier names the class asked for,
    beside its own accuracy on the test images (the goal of issue 24: a
    guided model at least as accurate, at an FD no worse than unconditional);
  - FD per class (samples of class c against the test images of class c),
    beside the same for the unseen validation images of that class.
Prints a markdown table; writes <out>.json and <out>.png (FD and accuracy
against the scale). Scale 0 is the unconditional model (the guide, with
--guide_workdir), 1 the model itself.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from gen import launch  # noqa: E402
from gen.errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished diffusion or flow-matching run "
                                "(class-conditional unless --guide_workdir).")
_GUIDE = flags.DEFINE_string("guide_workdir", "", "A weaker run of the same data that guides "
                             "the model (autoguidance); '' = classifier-free guidance.")
_SCALES = flags.DEFINE_list("scales", ["0", "1", "1.5", "2", "3", "4"], "Guidance scales.")
_SAMPLES = flags.DEFINE_integer("samples", 2000, "Images per scale (the classes in turn).")
_SEED = flags.DEFINE_integer("seed", 0, "Image i from fold_in(PRNGKey(seed), i).")
_SAMPLER = flags.DEFINE_string("sampler", "", "Sampler (gen.diffusion.samplers); '' = the run's.")
_STEPS = flags.DEFINE_integer("steps", 0, "Sampling steps; 0 = the run's.")
_INTERVAL = flags.DEFINE_list("interval", [], "low,high: guide only at noise levels sigma/alpha "
                              "in (low, high] (config.eval.guidance_interval); '' = all.")
_OUT = flags.DEFINE_string("out", "", "Write <out>.json and <out>.png; '' = print only.")
flags.mark_flags_as_required(["workdir"])


def per_class_fd(features, labels, test_features, test_labels, classes: int) -> list:
  from gen.evaluate import fidelity
  distances = []
  for label in range(classes):
    mine, real = features[labels == label], test_features[test_labels == label]
    distances.append(fidelity.frechet_distance(*fidelity.feature_statistics(mine),
                                               *fidelity.feature_statistics(real))
                     if len(mine) > 1 else None)
  return distances


def sweep() -> list[dict]:
  import numpy as np

  from gen import bundle, restore
  from gen.evaluate import fidelity
  from gen.families import classifier as classifier_lib

  rows = []
  # The baseline of unseen validation images is sized by eval.fid_samples.
  settings = {"eval.fid_samples": _SAMPLES.value}
  if _GUIDE.value:
    settings["eval.guide_workdir"] = os.path.abspath(_GUIDE.value)
  if _SAMPLER.value:
    settings["eval.sampler"] = _SAMPLER.value
  if _STEPS.value:
    settings["eval.sampling_steps"] = _STEPS.value
  if _INTERVAL.value:
    settings["eval.guidance_interval"] = tuple(float(v) for v in _INTERVAL.value)
  base = restore.load_run(_WORKDIR.value, settings)
  base.family.check_config()
  inner = getattr(base.family, "inner", base.family)
  inner_eval = inner.config.eval
  guided = hasattr(inner, "objective")  # diffusion and flow matching: the guidable families
  scales = sorted(float(s) for s in _SCALES.value)
  if not guided:
    given = [flag for flag, value in (("--guide_workdir", _GUIDE.value),
                                      ("--sampler", _SAMPLER.value), ("--steps", _STEPS.value),
                                      ("--interval", _INTERVAL.value)) if value]
    if scales != [1.0] or given:
      raise UserError(f"{_WORKDIR.value}: a {base.config.model.name} model has no guidance "
                      f"(diffusion and flow matching have); measure it as trained with "
                      f"--scales=1{' and without ' + ', '.join(given) if given else ''}")
  classes = bundle.num_classes(base.family)
  if not guided and not classes:
    raise UserError(f"{_WORKDIR.value}: an unconditional {base.config.model.name} model has "
                    f"neither guidance nor classes to measure here; its sample quality is in "
                    f"results.json")
  if not classes and not _GUIDE.value:
    raise UserError(f"{_WORKDIR.value}: an unconditional run (config.model.num_classes=0) "
                    f"has no classifier-free guidance to sweep; autoguidance needs "
                    f"--guide_workdir")
  classifier, why = classifier_lib.find_classifier(base.config, base.dataset)
  if classifier is None:
    raise UserError(why)
  dataset = base.dataset
  test = dataset.test_source.take(dataset.test_rows)
  test_features, test_predicted = classifier(test["x"])
  test_labels = np.asarray(test["label"])
  real_accuracy = float(np.mean(test_predicted == test_labels))
  val_rows = fidelity.baseline_rows(dataset, base.config.copy_and_resolve_references(),
                                    classifier)
  if isinstance(val_rows, str):
    raise UserError(val_rows)
  count = min(_SAMPLES.value, len(val_rows[0]))
  val = dataset.train_source.take(val_rows[0][:count])
  val_features, _ = classifier(val["x"])
  val_labels = np.asarray(val["label"])
  test_stats = fidelity.feature_statistics(test_features)
  baseline = fidelity.frechet_distance(*fidelity.feature_statistics(val_features), *test_stats)
  val_per_class = (per_class_fd(val_features, val_labels, test_features, test_labels, classes)
                   if classes else None)
  labels = bundle.image_labels(base.family, count)
  family = base.family
  for scale in scales:
    # The guidance scale is read when sampling, by the diffusion family (a
    # latent model's second stage): one family (and guide) serves every scale.
    if guided:
      inner_eval.guidance_scale = scale
    start = time.perf_counter()
    images = bundle.draw(family, base.params, count, _SEED.value, labels=labels)
    seconds = time.perf_counter() - start
    features, predicted = classifier(images)
    fd = fidelity.frechet_distance(*fidelity.feature_statistics(features), *test_stats)
    precision, recall = fidelity.precision_recall(val_features, features)
    row = {"scale": scale, "fd": fd, "fd_baseline": baseline, "num_samples": count,
           "precision": precision, "recall": recall,
           "guide": _GUIDE.value or None, "sampling_seconds": seconds}
    if guided:
      row.update({"sampler": inner.sampler_name, "sampling_steps": inner_eval.sampling_steps,
                  "guidance_interval": list(inner.guidance_interval or ()) or None})
    if classes:
      row.update({"conditional_accuracy": float(np.mean(predicted == labels)),
                  "classifier_test_accuracy": real_accuracy,
                  "fd_per_class": per_class_fd(features, labels, test_features, test_labels,
                                               classes),
                  "fd_per_class_baseline": val_per_class})
      worst = max(v for v in row["fd_per_class"] if v is not None)
      accuracy = (f"{row['conditional_accuracy']:.3f} | {real_accuracy:.3f} | "
                  f"{np.mean([v for v in row['fd_per_class'] if v]):.1f} (worst {worst:.1f})")
    else:
      accuracy = "- | - | -"
    rows.append(row)
    print(f"| {scale:g} | {fd:.2f} | {baseline:.2f} | {precision:.3f} / {recall:.3f} | "
          f"{accuracy} | {count} |", flush=True)
  return rows


def save_figure(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  conditional = "conditional_accuracy" in rows[0]
  figure, axes = plt.subplots(1, 2 if conditional else 1, figsize=(10 if conditional else 5, 4))
  fd_axis = axes[0] if conditional else axes
  scales = [r["scale"] for r in rows]
  fd_axis.plot(scales, [r["fd"] for r in rows], marker="o", label="samples")
  fd_axis.axhline(rows[0]["fd_baseline"], color="grey", linestyle="--",
                  label=f"real vs real ({rows[0]['fd_baseline']:.2f})")
  fd_axis.set_xlabel("guidance scale" + (" (autoguidance)" if rows[0].get("guide") else ""))
  fd_axis.set_ylabel(f"FD ({rows[0]['num_samples']} samples)")
  fd_axis.legend(fontsize=8)
  if conditional:
    accuracy_axis = axes[1]
    accuracy_axis.plot(scales, [r["conditional_accuracy"] for r in rows], marker="o",
                       label="samples: class asked for")
    accuracy_axis.axhline(rows[0]["classifier_test_accuracy"], color="grey", linestyle="--",
                          label="classifier on test images")
    accuracy_axis.set_xlabel("guidance scale")
    accuracy_axis.set_ylabel("conditional accuracy")
    accuracy_axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main(argv):
  del argv
  print("| guidance | FD | FD baseline | precision / recall | conditional accuracy | "
        "classifier on test | FD per class, mean | samples |")
  print("|---|---|---|---|---|---|---|---|")
  rows = launch.run(sweep)
  if _OUT.value and rows:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".json", "w") as file:
      json.dump({"rows": rows, "command": " ".join(sys.argv)}, file, indent=2)
    save_figure(rows, _OUT.value + ".png")
    logging.info("wrote %s.json and %s.png", _OUT.value, _OUT.value)


if __name__ == "__main__":
  app.run(main)
