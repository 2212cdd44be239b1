"""Does a conditional VAE's decoder follow its label, or read the class from z?

  python experiments/benchmarks/label_use.py --workdir=runs/conv_vae_cond

On --images test images, in the dataset classifier's predictions (its
accuracy on the images themselves beside them):
  - reconstruction accuracy: decode(encode(x, y), y) is classified as y;
  - swapped label: decode(encode(x, y), y') with y' = y + 5 mod C, classified
    as y' (the decoder follows the label) or as y (the class came from z);
  - prior samples: z from p(z | y) (N(0, I) without a class prior) at
    temperatures 1 and 0.5, classified as y: the conditional accuracy.
docs/conditional.md reads it. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished conditional VAE run.")
_IMAGES = flags.DEFINE_integer("images", 2000, "Test images to encode.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prior samples.")
flags.mark_flags_as_required(["workdir"])


def label_use(run, classifier, images: int, seed: int = 0) -> dict:
  """The measures of the module docstring for the conditional VAE `run`."""
  import jax
  import numpy as np

  from gen import bundle
  from gen.errors import UserError

  family, params = run.family, run.params
  classes = bundle.num_classes(family)
  if run.config.model.name not in ("vae", "conv_vae") or not classes:
    raise UserError(f"{run.workdir}: not a conditional VAE (config.model.name="
                    f"{run.config.model.name}, num_classes={classes})")
  count = min(images, len(run.dataset.test_rows))
  test = run.dataset.test_source.take(run.dataset.test_rows[:count])
  labels = np.asarray(test["label"])
  x = family.prepare({"x": test["x"], "uid": np.arange(count)}, None, train=False)
  mean, _ = family.encode(params, x, labels)
  decode = lambda z, y: family.to_pixels(np.asarray(family.decode_to_unit(
      params, z, y))).reshape(test["x"].shape)
  predict = lambda pixels: np.asarray(classifier(pixels)[1])
  swapped = (labels + classes // 2) % classes
  on_swap = predict(decode(mean, swapped))
  result = {"images": count,
            "classifier_accuracy_on_images": float(np.mean(predict(test["x"]) == labels)),
            "reconstruction_accuracy": float(np.mean(predict(decode(mean, labels)) == labels)),
            "swapped_label_follows_new": float(np.mean(on_swap == swapped)),
            "swapped_label_keeps_old": float(np.mean(on_swap == labels))}
  prior_mean, prior_log_var = family.prior(params, labels, count)
  noise = jax.random.normal(jax.random.PRNGKey(seed), mean.shape)
  for temperature in (1.0, 0.5):
    z = prior_mean + temperature * np.exp(0.5 * np.asarray(prior_log_var)) * noise
    result[f"prior_sample_accuracy_T{temperature:g}"] = float(
        np.mean(predict(decode(z, labels)) == labels))
  return result


def main(argv):
  del argv
  from gen import restore
  from gen.errors import UserError
  from gen.families import classifier as classifier_lib
  run = restore.load_run(_WORKDIR.value)
  classifier, why = classifier_lib.find_classifier(run.config, run.dataset)
  if classifier is None:
    raise UserError(why)
  print(json.dumps(label_use(run, classifier, _IMAGES.value, _SEED.value), indent=1))


if __name__ == "__main__":
  app.run(main)
