"""What each config's final evaluation costs: a table for the configs' docstrings.

  python experiments/benchmarks/final_eval_cost.py --out=docs/final_eval_cost_2core_cpu.md
  python experiments/benchmarks/final_eval_cost.py --configs=configs/vae.py,configs/ddpm.py

The end of a run (test split, samples, pictures, sample quality, a VAE's
importance-weighted bounds, a diffusion model's ODE likelihood) costs the same
whatever the parameters are: it runs the same programs on the same data. So
each config is run by experiments/main.py for one training step in a fresh
folder, and the table gives its results.json's timing.final_evaluation_seconds
(which includes compiling the evaluation programs, as a real run's end does),
with the settings that drive it. Nothing else should run on the machine.
A latent model needs a finished first stage: --first_stage_workdir (else its
full first stage trains first, beside the run, untimed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_CONFIGS = flags.DEFINE_list(
    "configs", ["configs/autoencoder.py", "configs/conv_autoencoder.py",
                "configs/spatial_autoencoder.py", "configs/vae.py", "configs/conv_vae.py",
                "configs/realnvp.py", "configs/glow.py", "configs/gan.py", "configs/ddpm.py",
                "configs/flow_matching.py", "configs/latent.py"],
    "Config files (with :variant) to measure.")
_OUT = flags.DEFINE_string("out", "", "Also write the table to this markdown file.")
_TIMEOUT = flags.DEFINE_integer("timeout", 3600, "Seconds per config before giving up.")
_FIRST_STAGE = flags.DEFINE_string("first_stage_workdir", "",
                                   "A finished first stage for configs/latent.py configs.")


def measure(config: str, folder: str) -> dict:
  workdir = os.path.join(folder, config.replace("/", "_").replace(":", "_"))
  command = [sys.executable, os.path.join(ROOT, "experiments", "main.py"), f"--config={config}",
             f"--workdir={workdir}", "--config.train.num_steps=1",
             "--config.train.steps_per_call=1"]
  if config.startswith("configs/latent.py") and _FIRST_STAGE.value:
    command.append(f"--config.latent.first_stage_workdir={_FIRST_STAGE.value}")
  start = time.perf_counter()
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=_TIMEOUT.value)
  wall = time.perf_counter() - start
  if result.returncode != 0:
    return {"config": config, "error": result.stderr.strip().splitlines()[-1]}
  with open(os.path.join(workdir, "results.json")) as file:
    results = json.load(file)
  with open(os.path.join(workdir, "config.json")) as file:
    settings = json.load(file)["eval"]
  quality = results.get("sample_quality", {})
  return {"config": config, "seconds": results["timing"]["final_evaluation_seconds"],
          "wall_seconds": wall, "fid_samples": quality.get("num_samples", 0),
          # K counts only where the run reported an importance-weighted bound.
          "iw_samples": (settings.get("iw_samples", 0) if any(
              "_iw" in key for key in results.get("test", {})) else 0),
          "ode_likelihood_images": settings.get("ode_likelihood_images", 0),
          "num_images": settings.get("num_images", 0)}


def cpu_name() -> str:
  """The CPU's model name (what lscpu prints), for the table's heading."""
  try:
    with open("/proc/cpuinfo") as file:
      for line in file:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def main(argv):
  del argv
  lines = [f"Final evaluation cost, `python experiments/benchmarks/final_eval_cost.py` "
           f"({cpu_name()}, {os.cpu_count()} cores)", "",
           "| config | final evaluation | FD samples | IW samples (K) | ODE likelihood images |",
           "|---|---:|---:|---:|---:|"]
  print("\n".join(lines), flush=True)
  with tempfile.TemporaryDirectory(prefix="final_eval_cost_") as folder:
    for config in _CONFIGS.value:
      row = measure(config, folder)
      if "error" in row:
        line = f"| {config} | failed: {row['error']} | | | |"
      else:
        line = (f"| {config} | {row['seconds'] / 60:.1f} min | {row['fid_samples']} | "
                f"{row['iw_samples'] or '-'} | {row['ode_likelihood_images'] or '-'} |")
      print(line, flush=True)
      lines.append(line)
  if _OUT.value:
    with open(_OUT.value, "w") as file:
      file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
