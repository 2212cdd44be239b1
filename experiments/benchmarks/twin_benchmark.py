"""Every family's train step against its PyTorch twin, on this machine, in one run.

  pip install -e '.[benchmark]'                    # PyTorch (CPU) and diffusers
  python experiments/benchmarks/twin_benchmark.py  # all seven, 3 interleaved rounds
  python experiments/benchmarks/twin_benchmark.py --cases=ddpm,dcgan --profile
                                                   # + where the time goes
  python experiments/benchmarks/twin_benchmark.py --cases=ddpm --baseline=/tmp/old
                                                   # A/B against another checkout of gen
                                                   # (same run)

Each side of each case runs in its own process (its own XLA flags, its own
peak memory), the cases interleaved round by round (ABCABC) so that drift of
the machine falls on all of them; a row's figure is the median over rounds
of each process's median window. The table opens with what decides CPU
speed: the CPU model, its AVX-512 / AMX flags, threads, library versions.

  JAX        gen's compiled train step as a run trains it: the config's
             defaults with "auto" resolved for this platform (so steps per
             compiled call as gen/platform.py picks), real batches of the
             config's data, already on the device
  PyTorch    the twin in experiments/benchmarks/torch_twins.py: the same network and
             loss, eager, default NCHW layout (diffusers' UNet2DModel for
             DDPM); for the convolutional ones also channels_last, PyTorch's
             fastest CPU layout
  ratio      JAX / PyTorch (default layout); > 1 means gen is faster
  --profile  after the timed windows, each side's step under its profiler,
             sorted by op kind and pass (experiments/benchmarks/op_profile.py)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

# The repository root (this file is experiments/benchmarks/twin_benchmark.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# This folder: op_profile.py, torch_twins.py.
HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (JAX config spec, PyTorch twin, whether a channels_last twin row is run)
CASES = {
    "autoencoder": ("configs/autoencoder.py", "autoencoder", False),
    "conv_autoencoder": ("configs/conv_autoencoder.py", "conv_autoencoder", True),
    "vae": ("configs/vae.py", "vae", False),
    "conv_vae": ("configs/conv_vae.py", "conv_vae", True),
    "realnvp": ("configs/realnvp.py", "realnvp", True),
    "dcgan": ("configs/gan.py", "dcgan", True),
    "ddpm": ("configs/ddpm.py", "ddpm", True),
}
# Extra JAX rows: name -> (case, settings appended to its spec, XLA_FLAGS).
# What was tried on this CPU and kept or dropped is in docs/cpu_speed.md.
_YNN = "--xla_cpu_experimental_ynn_fusion_type="
VARIANTS = {
    "dcgan+subpixel": ("dcgan", "@model.conv_transpose_impl=subpixel", ""),
    "dcgan+dilated": ("dcgan", "@model.conv_transpose_impl=dilated", ""),
    "dcgan+bf16": ("dcgan", "@train.compute_dtype=bfloat16", ""),
    "ddpm+bf16": ("ddpm", "@train.compute_dtype=bfloat16", ""),
}
# XLA:CPU flags, each on DDPM and DCGAN: library (YNNPACK / XNNPACK / oneDNN)
# fusions on or off, wider vectors, fast math.
for _name, _flags in {"onednn": "--xla_cpu_use_onednn=true",
                      "xnnpack": "--xla_cpu_use_xnnpack=true",
                      "ynn_off": _YNN,
                      "ynn_eltwise": _YNN + "+ELTWISE",
                      "ynn_reduce": _YNN + "+REDUCE",
                      "vector512": "--xla_cpu_prefer_vector_width=512",
                      "fast_math": "--xla_cpu_enable_fast_math=true"}.items():
  for _case in ("ddpm", "dcgan"):
    VARIANTS[f"{_case}+{_name}"] = (_case, "", _flags)

_CASES = flags.DEFINE_list("cases", list(CASES), f"Families to run: {', '.join(CASES)}.")
_VARIANTS = flags.DEFINE_list("variants", [], "Extra JAX rows from VARIANTS: "
                              f"{', '.join(VARIANTS)}.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds over all rows.")
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Rough length of one timed window; the steps "
                              "per window come from the first step's time.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed windows per process; median kept.")
_NO_GEN_FLAGS = "none"
_XLA_VARIANTS = flags.DEFINE_multi_string(
    "xla_variant", [], "An extra JAX row for every case with these XLA_FLAGS (repeatable); "
    f"'{_NO_GEN_FLAGS}': without the XLA:CPU flags gen sets itself (gen/platform.py).")
_PROFILE = flags.DEFINE_bool("profile", False, "Also profile each side's step by op kind.")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 5, "Steps under the profiler.")
_BASELINE = flags.DEFINE_string("baseline", None, "Another checkout of gen whose JAX step "
                                "is timed beside this one (an A/B of a code change).")
_JAX_PYTHONS = flags.DEFINE_multi_string(
    "jax_python", [], "Another Python interpreter (e.g. a venv with a newer JAX) whose JAX "
    "step of this same code is timed beside this one's: one more row per case, named by its "
    "JAX version (repeatable).")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "JAX rows only (no PyTorch installed).")
_RUN = flags.DEFINE_string("run", None, "Internal: one side, 'jax:SPEC' or 'torch:TWIN[:cl]', "
                           "run here; prints JSON.")
_CODE_ROOT = flags.DEFINE_string("code_root", ROOT, "Internal: the checkout whose gen runs.")


# --- one side, in its own process ---------------------------------------------------

def _windows(run_steps, steps_per_window: int) -> list[float]:
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run_steps(steps_per_window)
    times.append(time.perf_counter() - start)
  return times


def _steps_for(seconds_per_step: float, multiple: int = 1) -> int:
  steps = max(multiple, int(_SECONDS.value / max(seconds_per_step, 1e-6)))
  return max(multiple, steps // multiple * multiple)


def _run_jax(spec: str) -> dict:
  sys.path.insert(0, _CODE_ROOT.value)
  sys.path.insert(0, os.path.join(ROOT, "experiments"))  # runlib
  import jax

  import runlib
  from gen.train import compute

  config = runlib.load_config_spec(spec)
  per_call = config.train.steps_per_call
  built = runlib.compiled_train_step(config)
  state, train_fn = built.state, built.train_fn
  calls = [built.batch(c * per_call, per_call) for c in range(4)]
  start = time.perf_counter()
  state, metrics = train_fn(state, calls[0])
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  state, metrics = train_fn(state, calls[1])
  jax.block_until_ready(metrics)
  per_step = (time.perf_counter() - start) / per_call

  def run_steps(count):
    nonlocal state, metrics
    for index in range(count // per_call):
      state, metrics = train_fn(state, calls[index % len(calls)])
    jax.block_until_ready(metrics)

  steps = _steps_for(per_step, per_call)
  times = _windows(run_steps, steps)
  one_step = jax.tree_util.tree_map(lambda x: x[:1], calls[0])
  result = {"examples_per_s": steps * config.train.batch_size / statistics.median(times),
            "compile_s": compile_s, "batch_size": config.train.batch_size,
            "steps_per_call": per_call, "window_steps": steps,
            "flops_per_step": compute.compiled_flops(train_fn, state, one_step),
            "jax": jax.__version__}
  if _PROFILE.value:
    import op_profile
    hlo = train_fn.lower(state, calls[0]).compile().as_text()
    calls_profiled = max(1, _PROFILE_STEPS.value // per_call)
    profile = op_profile.profile_jax(lambda: run_steps(per_call), hlo, calls_profiled)
    result["profile"] = op_profile.per_step_of_calls(profile, per_call)
  return result


def _run_torch(twin: str, channels_last: bool) -> dict:
  sys.path.insert(0, ROOT)
  import torch

  from experiments.benchmarks import torch_twins

  torch.manual_seed(0)
  step, _, _ = torch_twins.make_train_step(twin, "cpu", channels_last=channels_last)
  batch_size = torch_twins.batch_size_of(twin)
  generator = torch.Generator().manual_seed(0)
  # A step's cost does not depend on the pixels: random batches of what the
  # twin's step takes, made before timing.
  batches = [torch_twins.random_batch(twin, batch_size, "cpu", generator) for _ in range(4)]
  start = time.perf_counter()
  float(step(batches[0]))
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  float(step(batches[1]))
  per_step = time.perf_counter() - start

  def run_steps(count):
    for index in range(count):
      loss = step(batches[index % len(batches)])
    float(loss)

  steps = _steps_for(per_step)
  times = _windows(run_steps, steps)
  result = {"examples_per_s": steps * batch_size / statistics.median(times),
            "compile_s": first_s, "batch_size": batch_size, "window_steps": steps,
            "threads": torch.get_num_threads(), "torch": torch.__version__}
  if _PROFILE.value:
    import op_profile
    result["profile"] = op_profile.profile_torch(lambda: run_steps(1), _PROFILE_STEPS.value)
  return result


def _run_side(what: str) -> dict:
  framework, _, rest = what.partition(":")
  if framework == "jax":
    return _run_jax(rest)
  twin, _, layout = rest.partition(":")
  return _run_torch(twin, layout == "cl")


# --- the parent: rows, rounds, tables ------------------------------------------------

def _launch(what: str, xla_flags: str = "", code_root: str = ROOT,
            python: str = sys.executable) -> dict:
  env = dict(os.environ)
  # Only this row's flags: a host-device count from the environment would split the CPU.
  env["XLA_FLAGS"] = xla_flags
  if xla_flags == _NO_GEN_FLAGS:  # gen's own CPU flags off (gen/platform.py)
    env["XLA_FLAGS"], env["GEN_CPU_XLA_FLAGS"] = "", "0"
  command = [python, os.path.abspath(__file__), f"--run={what}",
             f"--code_root={code_root}", f"--seconds={_SECONDS.value}",
             f"--repeats={_REPEATS.value}", f"--profile_steps={_PROFILE_STEPS.value}"]
  if _PROFILE.value:
    command.append("--profile")
  done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code_root)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": " / ".join(tail)}
  return json.loads(lines[-1])


def _versions(python: str) -> str:
  """'jax X, jaxlib Y, flax Z, python W' of another interpreter (one line names it if not)."""
  code = ("import sys, jax, jaxlib, flax; print(f'jax {jax.__version__}, jaxlib "
          "{jaxlib.__version__}, flax {flax.__version__}, python {sys.version.split()[0]}')")
  done = subprocess.run([python, "-c", code], capture_output=True, text=True)
  if done.returncode != 0:
    raise app.UsageError(f"--jax_python={python}: cannot import jax, jaxlib and flax there: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
  return done.stdout.strip()


def _python_rows() -> dict[str, str]:
  """Row label -> interpreter, for the --jax_python rows."""
  labels = {}
  for python in _JAX_PYTHONS.value:
    versions = _versions(python)
    label = f"JAX {versions.split(',')[0].removeprefix('jax ')}"
    print(f"rows '{label}': {python} ({versions})")
    labels[label] = python
  return labels


def _rows(python_rows: dict[str, str]) -> list[tuple[str, str, str, str, str]]:
  """(row label, case, what to run, XLA flags, interpreter) in table order."""
  rows = []
  here = sys.executable
  for case in _CASES.value:
    spec, twin, channels_last = CASES[case]
    rows.append(("JAX (gen)", case, f"jax:{spec}", "", here))
    for label, python in python_rows.items():
      rows.append((label, case, f"jax:{spec}", "", python))
    if _BASELINE.value:
      rows.append(("JAX baseline", case, f"jax:{spec}", "", here))
    for xla_flags in _XLA_VARIANTS.value:
      suffix = ("without gen's XLA:CPU flags" if xla_flags == _NO_GEN_FLAGS
                else xla_flags)
      rows.append((f"JAX {suffix}", case, f"jax:{spec}", xla_flags, here))
      for label, python in python_rows.items():
        rows.append((f"{label} {suffix}", case, f"jax:{spec}", xla_flags, python))
    for variant in _VARIANTS.value:
      variant_case, settings, xla_flags = VARIANTS[variant]
      if variant_case == case:
        rows.append((f"JAX {variant}", case, f"jax:{spec}{settings}", xla_flags, here))
    if not _NO_TORCH.value:
      rows.append(("PyTorch", case, f"torch:{twin}", "", here))
      if channels_last:
        rows.append(("PyTorch channels_last", case, f"torch:{twin}:cl", "", here))
  return rows


def _median(values):
  return statistics.median(values) if values else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _RUN.value:
    print(json.dumps(_run_side(_RUN.value)), flush=True)
    return
  unknown = [c for c in _CASES.value if c not in CASES] + [
      v for v in _VARIANTS.value if v not in VARIANTS]
  if unknown:
    raise app.UsageError(f"unknown cases or variants: {', '.join(unknown)}; cases: "
                         f"{', '.join(CASES)}; variants: {', '.join(VARIANTS)}")
  sys.path.insert(0, ROOT)
  from gen.train import compute
  for line in compute.machine_summary(("torch", "diffusers")):
    print(line)
  print("XLA_FLAGS of the JAX rows: gen's own CPU flags (gen/platform.py) unless the row says")
  print(f"{_ROUNDS.value} interleaved rounds; each process: {_REPEATS.value} windows of "
        f"~{_SECONDS.value:g} s, median\n", flush=True)
  python_rows = _python_rows()
  rows = _rows(python_rows)
  results = {(label, case): [] for label, case, *_ in rows}
  for round_index in range(_ROUNDS.value):
    for label, case, what, xla_flags, python in rows:
      root = _BASELINE.value if label == "JAX baseline" else ROOT
      result = _launch(what, xla_flags, root, python)
      results[(label, case)].append(result)
      # Progress, so that a stopped run still leaves its figures.
      rate = result.get("examples_per_s")
      print(f"round {round_index + 1}: {case}, {label}: "
            f"{f'{rate:,.0f} examples/s' if rate else result.get('error')}", flush=True)
  print()
  _print_table(rows, results)
  if _PROFILE.value:
    _print_profiles(rows, results)


def _print_table(rows, results) -> None:
  from gen.train import compute

  print("| family | row | batch | examples/s | range over rounds | / PyTorch | "
        "first call s | GFLOP/step | GFLOP/s | MFU |")
  print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
  basis = None
  for label, case, *_ in rows:
    runs = results[(label, case)]
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
      print(f"| {case} | {label} | failed: {errors[0][:300]} | | | | | | | |", flush=True)
      continue
    rates = [r["examples_per_s"] for r in runs]
    rate = _median(rates)
    torch_runs = results.get(("PyTorch", case), [])
    torch_rate = _median([r["examples_per_s"] for r in torch_runs if "error" not in r])
    ratio = f"{rate / torch_rate:.2f}" if torch_rate else "n/a"
    flops = runs[0].get("flops_per_step")
    cells = ["", "", ""]
    if flops:
      achieved = flops * rate / runs[0]["batch_size"]
      value, basis = compute.mfu(achieved, "cpu")
      cells = [f"{flops / 1e9:.3g}", f"{achieved / 1e9:,.1f}", f"{value:.1%}"]
    spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else ""
    print(f"| {case} | {label} | {runs[0]['batch_size']} | {rate:,.0f} | {spread} | {ratio} | "
          f"{_median([r['compile_s'] for r in runs]):.2f} | {' | '.join(cells)} |", flush=True)
  if basis:
    print(f"\nMFU: {basis}")


def _print_profiles(rows, results) -> None:
  import op_profile

  for case in _CASES.value:
    profiles = {}
    for label, row_case, *_ in rows:
      runs = [r for r in results[(label, row_case)] if "profile" in r]
      if row_case == case and runs:
        profiles[label] = runs[-1]["profile"]  # the last round's: the machine warmest
    if profiles:
      op_profile.print_profiles(f"{case}, one train step", profiles)
      for label, profile in profiles.items():
        if profile.get("top"):
          op_profile.print_top(f"{case}, {label}", profile["top"])


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(ROOT, "experiments"))  # runlib
  sys.path.insert(0, HERE)  # op_profile
  app.run(main)
