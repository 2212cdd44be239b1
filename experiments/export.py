"""Writes a trained run as a bundle that needs no workdir (gen/bundle.py).

  python experiments/export.py --workdir=runs/ddpm --out=bundles/ddpm
  python experiments/export.py --workdir=runs/latent --out=bundles/latent_guided \
      --guide_workdir=runs/latent_guide --guidance=1.5     # autoguidance inside

<out>/params.safetensors (the EMA parameters where the run kept them),
config.json, bundle.json and README.md (a model card). Load it with
`gen.bundle.load(out)`, or sample it: experiments/sample.py --bundle=<out>.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from gen import launch  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir.")
_OUT = flags.DEFINE_string("out", None, "The bundle's folder.")
_GUIDE = flags.DEFINE_string("guide_workdir", None, "Diffusion and flow matching: a weaker "
                              "run that guides this one (config.eval.guide_workdir); the "
                              "bundle holds it.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "config.eval.guidance_scale kept in the bundle.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gen import bundle
  settings = {}
  if _GUIDE.value is not None:
    settings["eval.guide_workdir"] = os.path.abspath(_GUIDE.value)
  if _GUIDANCE.value is not None:
    settings["eval.guidance_scale"] = _GUIDANCE.value
  out = launch.run(lambda: bundle.export(_WORKDIR.value, _OUT.value, settings))
  logging.info("bundle written: %s", out)


if __name__ == "__main__":
  app.run(main)
