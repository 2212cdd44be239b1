"""Sample quality against network evaluations: FD for each sampler and step count.

  python experiments/nfe_sweep.py --workdirs=runs/ddpm_eps,runs/ddpm_v,runs/flow_matching \
      --nfe=5,10,20,50,100 --samples=2000 --out=docs/nfe_sweep_2core_cpu

For each finished run of the diffusion family (or a latent model on it) and
each sampler that fits its objective (gen.diffusion.samplers), the step count
whose network evaluations per sample come closest to each --nfe value
(Heun: 2 steps - 1), the Frechet distance of --samples samples in the
dataset classifier's features, beside the baseline of as many unseen
validation images. Prints a markdown table; writes <out>.json and
<out>.png (FD against evaluations, one line per run and sampler). The runs'
own files are not changed.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from gen import families, launch, restore  # noqa: E402
from gen.diffusion import samplers  # noqa: E402
from gen.evaluate import fidelity  # noqa: E402
from gen.families import classifier as classifier_lib  # noqa: E402
from gen.train import sharding  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished diffusion or flow-matching runs.")
_NFE = flags.DEFINE_list("nfe", ["5", "10", "20", "50", "100"],
                         "Network evaluations per sample to aim at.")
_SAMPLERS = flags.DEFINE_list("samplers", [], "Samplers to try (default: every one that "
                              "fits the run's objective, ancestral excepted: it runs all T).")
_SAMPLES = flags.DEFINE_integer("samples", 2000, "Samples per FD (and baseline images).")
_MAX_NOISE_LEVEL = flags.DEFINE_float(
    "max_noise_level", None, "config.eval.max_noise_level for eps and v runs (the noise "
    "level sigma/alpha their samplers start at; 0 = the schedule's end); default: each "
    "run's own.")
_STEP_SPACING = flags.DEFINE_string(
    "step_spacing", None, "config.eval.step_spacing for eps and v runs (uniform, karras); "
    "default: each run's own.")
_OUT = flags.DEFINE_string("out", "", "Write <out>.json and <out>.png; '' = print only.")
flags.mark_flags_as_required(["workdirs"])


def steps_for(sampler: str, nfe: int) -> int:
  """The step count whose network evaluations come closest to `nfe` (at least 1 step)."""
  return max(1, (nfe + 1) // 2) if sampler == "heun" else max(1, nfe)


def sweep(workdir: str) -> list[dict]:
  run = restore.load_run(workdir, {"eval.fid_samples": _SAMPLES.value})
  classifier, why = classifier_lib.find_classifier(run.config, run.dataset)
  if classifier is None:
    raise SystemExit(f"error: {why}")
  inner = getattr(run.family, "inner", run.family)
  objective = inner.objective
  names = _SAMPLERS.value or [s for s in samplers.SAMPLERS_BY_OBJECTIVE[objective]
                              if s != "ancestral"]
  base = run.config.copy_and_resolve_references()
  if _MAX_NOISE_LEVEL.value is not None:
    base.eval.max_noise_level = _MAX_NOISE_LEVEL.value
  if _STEP_SPACING.value is not None:
    base.eval.step_spacing = _STEP_SPACING.value
  first_step = getattr(families.make(base, run.dataset.info), "inner", inner).first_step
  rows = []
  for name in names:
    for nfe in sorted({int(n) for n in _NFE.value}):
      steps = steps_for(name, nfe)
      if first_step is not None:
        steps = min(steps, first_step + 1)
      config = base.copy_and_resolve_references()
      config.eval.sampler, config.eval.sampling_steps = name, steps
      family = families.make(config, run.dataset.info)
      family.check_config()
      sample_fn, params = family.sampler(run.params, run.dataset)
      start = time.perf_counter()
      result = fidelity.sample_quality(sample_fn, sharding.single_device(params), run.dataset,
                                       config, classifier, family.to_pixels)
      rows.append({"run": workdir, "objective": objective, "sampler": name, "steps": steps,
                   "network_evaluations": samplers.network_evaluations(
                       name, steps, inner.timesteps if first_step is None else first_step + 1),
                   "max_noise_level": config.eval.get("max_noise_level", 0.0),
                   "step_spacing": config.eval.get("step_spacing", "uniform"),
                   "fd": result["fid"], "fd_baseline": result["fid_val_vs_test"],
                   "num_samples": result["num_samples"], "step": run.step,
                   "seconds": time.perf_counter() - start})
      row = rows[-1]
      print(f"| {workdir} | {objective} | {name} | {steps} | {row['network_evaluations']} | "
            f"{row['fd']:.2f} | {row['fd_baseline']:.2f} | {row['num_samples']} |",
            flush=True)
  return rows


def save_figure(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(6, 4))
  lines = sorted({(r["run"], r["sampler"]) for r in rows})
  for run, sampler in lines:
    points = sorted((r["network_evaluations"], r["fd"]) for r in rows
                    if r["run"] == run and r["sampler"] == sampler)
    axes.plot(*zip(*points), marker="o", label=f"{os.path.basename(run)}: {sampler}")
  baseline = min(r["fd_baseline"] for r in rows)
  axes.axhline(baseline, color="grey", linestyle="--", label=f"real vs real ({baseline:.2f})")
  axes.set_xscale("log")
  axes.set_yscale("log")
  axes.set_xlabel("network evaluations per sample")
  axes.set_ylabel(f"FD ({rows[0]['num_samples']} samples, classifier features)")
  axes.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main(argv):
  del argv
  print("| run | objective | sampler | steps | network evaluations | FD | FD baseline | "
        "samples |")
  print("|---|---|---|---|---|---|---|---|")
  rows = []
  for workdir in _WORKDIRS.value:
    rows.extend(launch.run(lambda: sweep(workdir)))
  if _OUT.value and rows:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".json", "w") as file:
      json.dump({"rows": rows, "command": " ".join(sys.argv)}, file, indent=2)
    save_figure(rows, _OUT.value + ".png")


if __name__ == "__main__":
  app.run(main)
