"""Draws samples of a trained run (or bundle) and writes them as files.

  python experiments/sample.py --workdir=runs/ddpm --num_samples=1000 --seed=0
  python experiments/sample.py --bundle=bundles/ddpm --num_samples=64 --sampler=heun --steps=20

Writes <out>/samples.npz (key `images`: uint8 [N, H, W, C]; for a
class-conditional model also `labels` [N], the class asked of each image) and
<out>/samples.png (a grid of the first 64); --out defaults to
<workdir or bundle>/samples_seed<seed>. Image i is drawn from
fold_in(PRNGKey(seed), i): the same seed gives the same images whatever
--batch_size or the number of devices; each batch is split over every local
device. A run's EMA parameters are used where it kept them.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from gen import launch  # noqa: E402
from gen.errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir.")
_BUNDLE = flags.DEFINE_string("bundle", None, "A bundle (experiments/export.py).")
_NUM = flags.DEFINE_integer("num_samples", 64, "How many images.")
_SEED = flags.DEFINE_integer("seed", 0, "Image i is drawn from fold_in(PRNGKey(seed), i).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default <workdir>/samples_seed<seed>).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Images per compiled call, over all devices.")
_SAMPLER = flags.DEFINE_string("sampler", None, "Diffusion and flow matching: "
                               "config.eval.sampler (ddim, heun, euler, dpmpp_2m, ancestral).")
_STEPS = flags.DEFINE_integer("steps", None, "Diffusion and flow matching: sampling steps.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Scales the prior's std (flows, VAEs, "
                                  "GANs, diffusion's initial noise).")
_CLASS = flags.DEFINE_integer("class", None, "A conditional model: every image of this class "
                              "(default: the classes in turn).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Diffusion and flow matching: "
                               "config.eval.guidance_scale (a conditional model: 0 = "
                               "unconditional, 1 = conditional, above 1 = guided; with "
                               "--guide_workdir the autoguidance weight).")
_GUIDE = flags.DEFINE_string("guide_workdir", None, "Diffusion and flow matching: a weaker run "
                             "or bundle of the same data that guides this model "
                             "(config.eval.guide_workdir; autoguidance).")


# The flags that set sampler settings, by the config key each sets.
_FLAG_OF_SETTING = {"eval.sampler": "sampler", "eval.sampling_steps": "steps",
                    "eval.guidance_scale": "guidance", "eval.guide_workdir": "guide_workdir"}


def overrides() -> dict:
  settings = {}
  if _SAMPLER.value is not None:
    settings["eval.sampler"] = _SAMPLER.value
  if _STEPS.value is not None:
    settings["eval.sampling_steps"] = _STEPS.value
  if _GUIDANCE.value is not None:
    settings["eval.guidance_scale"] = _GUIDANCE.value
  if _GUIDE.value is not None:
    settings["eval.guide_workdir"] = os.path.abspath(_GUIDE.value) if _GUIDE.value else ""
  return settings


def sample() -> str:
  import numpy as np

  from gen import bundle as bundle_lib
  from gen.evaluate import plots

  if (_WORKDIR.value is None) == (_BUNDLE.value is None):
    raise UserError("give exactly one of --workdir and --bundle")
  if _NUM.value < 1:
    raise UserError(f"--num_samples={_NUM.value} must be >= 1")
  settings = overrides()
  if _BUNDLE.value:
    loaded = bundle_lib.load(_BUNDLE.value, settings)
    family, params, config, source = loaded.family, loaded.params, loaded.config, _BUNDLE.value
    fn = None
    if not hasattr(family, "sample"):
      raise UserError(f"{source}: a {config.model.name} bundle draws no samples (an "
                      f"autoencoder's come from a Gaussian fitted to its train codes: sample "
                      f"its run with --workdir, which has the data)")
  else:
    from gen import restore
    run = restore.load_run(_WORKDIR.value, settings)
    family, params, config, source = run.family, run.params, run.config, _WORKDIR.value
    fn = None
    if not hasattr(family, "sample"):
      # An autoencoder: draws of the Gaussian fitted to its train codes.
      sampler = family.sampler(params, run.dataset)
      if sampler is None:
        raise UserError(f"{source}: this model draws no samples")
      import jax
      one, params = sampler
      fn = jax.vmap(lambda p, key, label: one(p, key, 1)[0], in_axes=(None, 0, 0))
  if settings and not hasattr(getattr(family, "inner", family), "objective"):
    given = "/".join(f"--{_FLAG_OF_SETTING[key]}" for key in settings)
    raise UserError(f"{given}: a {config.model.name} model has no sampler settings "
                    f"(diffusion and flow matching have)")
  try:
    family.check_config()
  except ValueError as error:  # a setting given here, named by the family
    raise UserError(str(error)) from None
  out = _OUT.value or os.path.join(source, f"samples_seed{_SEED.value}")
  os.makedirs(out, exist_ok=True)
  start = time.perf_counter()
  report = lambda done, total: logging.info("sampled %d/%d (%.1f s)", done, total,
                                            time.perf_counter() - start)
  labels = bundle_lib.image_labels(family, _NUM.value, _CLASS.value)
  images = bundle_lib.draw(family, params, _NUM.value, _SEED.value, _TEMPERATURE.value,
                           _BATCH.value, report, fn, labels)
  arrays = {"images": images}
  if bundle_lib.num_classes(family):
    arrays["labels"] = labels
  np.savez_compressed(os.path.join(out, "samples.npz"), **arrays)
  plots.save_image_grid(os.path.join(out, "samples.png"), images[:64], columns=8)
  logging.info("%d images [%s] in %.1f s -> %s (samples.npz, samples.png)", len(images),
               "x".join(map(str, images.shape[1:])), time.perf_counter() - start, out)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launch.run(sample)


if __name__ == "__main__":
  app.run(main)
