"""Likelihood models side by side: speed measured here, quality from finished runs.

  # speed: train examples/s and sampling time per image, each config alone
  python experiments/benchmarks/likelihood_benchmark.py \
      --configs=configs/realnvp.py,configs/vae.py,configs/conv_vae.py,configs/realnvp2d.py
  # quality: the test numbers of finished runs (workdirs of experiments/main.py)
  python experiments/benchmarks/likelihood_benchmark.py --configs= \
      --workdirs=runs/realnvp,runs/vae,runs/conv_vae,runs/realnvp2d

Speed: `--repeats` windows of `--steps` compiled train steps on real batches
of the config's data; the median window is reported (after a first call that
compiles). Beside it, FLOPs per train step (XLA's count of the compiled step,
gen.train.compute.compiled_flops, summed over the devices), the achieved
FLOP/s and MFU (gen.train.compute.mfu: on an accelerator over its dense bf16
peak, per device; on a CPU over a float32 matmul measured on it, which the
table's note states). Sampling: one compiled call drawing `--samples`
samples, timed after a first call, divided by the count. Both on whatever JAX
runs on.

Quality: every likelihood number of results.json, with its kind in its name
(exact = a flow's density of dequantized data; *_bound = an upper bound on
the NLL from a VAE) and the count of non-finite samples at each temperature.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

# The repository root (this file is experiments/benchmarks/likelihood_benchmark.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from gen import data as data_lib  # noqa: E402
from gen import families  # noqa: E402
from gen.train import compute, sharding, steps  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "experiments"))  # runlib
import runlib  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["configs/realnvp.py", "configs/vae.py",
                                         "configs/conv_vae.py", "configs/realnvp2d.py"],
                             "Config files (file.py or file.py:variant) to time.")
_WORKDIRS = flags.DEFINE_list("workdirs", [], "Finished runs whose results to tabulate.")
_STEPS = flags.DEFINE_integer("steps", 20, "Train steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed windows; the median is reported.")
_SAMPLES = flags.DEFINE_integer("samples", 64, "Samples per timed sampling call.")


def utilization(device_flops_per_step: float | None, steps_per_second: float,
                mesh) -> dict:
  """FLOPs per step over the mesh, achieved FLOP/s and MFU, from one device's count.

  compiled_flops of a program split over the mesh is one device's share, so
  the step's total is that times the devices. MFU compares like with like:
  on an accelerator, one device's rate with one device's peak; on a CPU,
  whose host devices all share its cores, the total with the CPU's
  measured matmul rate.
  """
  if device_flops_per_step is None:
    return {"flops_per_step": None, "flops_per_second": None, "mfu": None,
            "mfu_basis": "XLA gave no cost analysis on this backend"}
  device = mesh.devices.flat[0]
  total = device_flops_per_step * mesh.size
  rate = (total if device.platform == "cpu" else device_flops_per_step) * steps_per_second
  value, basis = compute.mfu(rate, device)
  return {"flops_per_step": total, "flops_per_second": total * steps_per_second, "mfu": value,
          "mfu_basis": basis}


def measure_speed(spec: str) -> dict:
  """Train examples/s (median window), FLOPs per step, achieved FLOP/s and MFU
  (`utilization`), and seconds per sample of `spec`'s model."""
  config = runlib.load_config_spec(spec)
  mesh = sharding.make_mesh(None)
  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  tx = family.make_optimizer()
  state = steps.init_state(family, tx, config, mesh)
  train_fn = steps.make_train_fn(family, tx, mesh, config.train.unroll_steps)
  batches = [sharding.put_batch(dataset.train.stacked(step, 1), mesh, batch_dim=1)
             for step in range(_STEPS.value)]
  start = time.perf_counter()
  state, _ = train_fn(state, batches[0])
  jax.block_until_ready(state)
  compile_seconds = time.perf_counter() - start
  # One step, as compiled above (the executable is reused, not rebuilt).
  device_flops = compute.compiled_flops(train_fn, state, batches[0])
  windows = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for batch in batches:
      state, _ = train_fn(state, batch)
    jax.block_until_ready(state)
    windows.append(time.perf_counter() - start)
  steps_per_second = _STEPS.value / statistics.median(windows)
  examples_per_second = steps_per_second * config.train.batch_size

  params = sharding.single_device(state.params)
  sample = jax.jit(family.sample, static_argnums=2)
  jax.block_until_ready(sample(params, jax.random.PRNGKey(0), _SAMPLES.value, 1.0))
  start = time.perf_counter()
  jax.block_until_ready(sample(params, jax.random.PRNGKey(1), _SAMPLES.value, 1.0))
  per_sample = (time.perf_counter() - start) / _SAMPLES.value
  return {"config": spec, "model": config.model.name, "data": dataset.info.name,
          "batch": config.train.batch_size, "examples_per_second": examples_per_second,
          "compile_seconds": compile_seconds, "ms_per_sample": 1000 * per_sample,
          **utilization(device_flops, steps_per_second, mesh)}


def print_speed_table(specs: list[str]) -> None:
  """One row of measure_speed per config spec, as a markdown table."""
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
  print("| config | model | data | batch | train examples/s | compile s | GFLOP/step "
        "| GFLOP/s | MFU | ms/sample |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  bases = []
  for spec in specs:
    row = measure_speed(spec)
    flops, rate, mfu = row["flops_per_step"], row["flops_per_second"], row["mfu"]
    print(f"| {row['config']} | {row['model']} | {row['data']} | {row['batch']} | "
          f"{row['examples_per_second']:.0f} | {row['compile_seconds']:.1f} | "
          f"{'n/a' if flops is None else f'{flops / 1e9:.3g}'} | "
          f"{'n/a' if rate is None else f'{rate / 1e9:,.1f}'} | "
          f"{'n/a' if mfu is None else f'{mfu:.1%}'} | "
          f"{row['ms_per_sample']:.3f} |", flush=True)
    if row["mfu_basis"] not in bases:
      bases.append(row["mfu_basis"])
  for basis in bases:
    print(f"\nMFU: {basis}")


def _likelihood_rows(workdir: str) -> list[str]:
  with open(os.path.join(workdir, "results.json")) as file:
    results = json.load(file)
  with open(os.path.join(workdir, "config.json")) as file:
    config = json.load(file)
  test = results["test"]
  keys = [k for k in test if k.startswith(("bits_per_dim", "nll", "true_nll"))]
  nonfinite = {t: s["nonfinite"] for t, s in results.get("samples", {}).items()}
  rows = []
  for key in sorted(keys):
    kind = "exact" if "exact" in key else ("bound" if "bound" in key else "reference")
    rows.append(f"| {config['model']['name']} | {config['data']['name']} | "
                f"{results['step']} | {key} | {kind} | {test[key]:.4f} | "
                f"{json.dumps(nonfinite)} |")
  return rows


def main(argv):
  del argv
  if _CONFIGS.value:
    print_speed_table(_CONFIGS.value)
  if _WORKDIRS.value:
    print("\n| model | data | step | test metric | kind | value | non-finite samples |")
    print("|---|---|---|---|---|---|---|")
    for workdir in _WORKDIRS.value:
      for row in _likelihood_rows(workdir):
        print(row)


if __name__ == "__main__":
  app.run(main)
