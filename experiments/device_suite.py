"""Every family's train step, sampler and PyTorch twin on one accelerator: one command.

Recipe (the GPU machine has no network and lacks ml-collections, diffusers and
the data; build/device_carry/, 51 MiB and git-ignored, carries them):

  # here, where PyPI is reachable, once:
  python experiments/prepare_device_carry.py
  # on the device, from the repository root, with build/device_carry carried
  # beside the working tree (an ignored path; 51 of the 64 MiB allowed); under
  # 8 minutes on one H100. One line: experiments/device_suite.cmd. The second
  # pip is for a Python whose site-packages is not writable; the suite runs
  # whatever pip managed, and its header names what is missing.
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --no-index \\
      --find-links build/device_carry/wheels ml-collections diffusers \\
    || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --user --no-index \\
      --find-links build/device_carry/wheels ml-collections diffusers; \\
  PYTHONPATH=. python3 experiments/device_suite.py --out=$OUT/suite
  # on a CPU, a few minutes (tests/test_device_suite.py runs two families):
  python experiments/device_suite.py --size=tiny --out=/tmp/suite

It prints one markdown table and writes <out>/device_suite.json and
<out>/device_suite.md (rewritten after every case, so a run cut short keeps
what it measured), and <out>/logs/<case>.log, each case's own output.

For each family at its `:gpu` config (`--size=accelerator`), in bfloat16 and
float32 (config.train.compute_dtype):
  train examples/s   the median of timed windows of the real compiled train
                     step (gen.train.steps.make_train_fn, one step per call)
                     on real batches, after a compiling call
  compile s          lowering + XLA compilation of that step
  GFLOP/step         XLA's count of the compiled step (gen.train.compute.
                     compiled_flops: forward, backward, optimizer, EMA)
  TFLOP/s, MFU       achieved = FLOPs per step x steps/s; MFU over the
                     device's dense bf16 peak (gen.train.compute.mfu), so a
                     float32 run scores low by construction
  peak memory        device.memory_stats()["peak_bytes_in_use"] after training
  sampling ms/image  one compiled call of the family's sampler at a fixed
                     count, timed after a first call (DDPM: DDIM-50, and
                     ancestral over all T steps when the case has time left)
Then the DDPM U-Net in bfloat16 at growing batches (until one does not fit in
memory or the sweep's share of time is spent), and the PyTorch twins of the
DDPM U-Net and the DCGAN (experiments/benchmarks/torch_twins.py; same networks, same
batch and precision, eager and torch.compile), with JAX / PyTorch beside.

Each case runs in its own process, on one device (jax.devices()[:1]): peak
memory is the case's own, and one that runs out of memory or crashes does
not end the suite. Cases run most important first (DDPM, then DCGAN, the
twins, the sweep, the other families) under a per-case limit and an overall
deadline (--deadline_s); a case that does not fit is reported as "not run
(time)", and the end of the output names a command that runs those alone.

--size=tiny: the :digits configs (8x8 digits; the conv autoencoder's default
on digits) at batch --tiny_batch, 2 timed steps, and the small twins
(ddpm, dcgan) on the CPU: the smoke test of all of the above.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform as host_platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ and gen/ are imported from the repository root
  sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

SIZES = ("accelerator", "tiny")
DTYPES = ("bfloat16", "float32")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
CARRIED_FASHION_MNIST = os.path.join(ROOT, "build", "device_carry", "fashion-mnist")
INSTALL_HINT = ("python3 -m pip install --no-index --find-links build/device_carry/wheels "
                "ml-collections diffusers (wheels from experiments/prepare_device_carry.py)")


@dataclasses.dataclass(frozen=True)
class FamilySpec:
  """One family of the suite: its config file and, where there is one, its twin."""

  title: str
  config: str  # file under configs/; the suite picks the variant by --size
  tiny_variant: str | None = "digits"  # None: the default config moved onto digits
  twin: str | None = None  # torch_twins model at --size=accelerator (same network)
  tiny_twin: str | None = None  # torch_twins model at --size=tiny (the small one)


# In the order their cases run: DDPM and DCGAN (the accelerator's reason to
# exist here, with PyTorch twins) first, then the rest.
FAMILIES = {
    "ddpm": FamilySpec("DDPM U-Net", "ddpm", twin="ddpm_ho", tiny_twin="ddpm"),
    "dcgan": FamilySpec("DCGAN", "gan", twin="dcgan_gpu", tiny_twin="dcgan"),
    "realnvp": FamilySpec("RealNVP", "realnvp"),
    "conv_vae": FamilySpec("conv VAE", "conv_vae"),
    "conv_autoencoder": FamilySpec("conv autoencoder", "conv_autoencoder", tiny_variant=None),
    "vae": FamilySpec("dense VAE", "vae"),
    "autoencoder": FamilySpec("dense autoencoder", "autoencoder"),
}
LEADING = ("ddpm", "dcgan")  # families whose cases (and twins) come first

# Seconds a case may run before it is killed, by what it is: estimates for
# one H100, not yet measured there. A process start with CUDA and the data is
# ~5-10 s; the 35.7M-parameter U-Net's init, train step and each sampler
# compile for tens of seconds (its train step took 25-38 s to compile on
# these 2 CPU cores at the :digits size; XLA:GPU autotunes convolutions on
# top), while its steps take milliseconds (4.5 TFLOP at batch 128); RealNVP's
# many couplings make a large program (49 s to compile at features 32 on the
# CPU); the small families compile in seconds; torch.compile of the U-Net's
# forward and backward takes one to three minutes.
CASE_LIMIT_S = {"ddpm": 170, "dcgan": 80, "realnvp": 90, "other": 60, "sweep": 90,
                "torch": 60, "torch_compile": 180}
# Optional work inside a case (DDPM's ancestral sampling) starts only if it
# is expected to end before this many seconds of the case have passed.
OPTIONAL_BUDGET_S = {"accelerator": 130, "tiny": 60}
# Doubling from 4x the :gpu batch (128): a step's working set grows with the
# batch, and the sweep stops at the first that does not fit.
SWEEP_BATCHES = {"accelerator": (512, 1024, 2048, 4096), "tiny": (16,)}

# --- cases ---------------------------------------------------------------------------

def case_id(kind: str, name: str, dtype: str, batch: int, compile: bool = False) -> str:
  """'jax-ddpm-bfloat16-b128', 'torch-ddpm_ho-float32-b128-compile': file-name safe."""
  return f"{kind}-{name}-{dtype}-b{batch}" + ("-compile" if compile else "")


def config_spec(family: str, size: str) -> str:
  """'configs/ddpm.py:gpu' (or ':digits'; the conv autoencoder's tiny config is its
  default, moved onto digits by the child)."""
  spec = FAMILIES[family]
  variant = "gpu" if size == "accelerator" else (spec.tiny_variant or "")
  return f"configs/{spec.config}.py" + (f":{variant}" if variant else "")


def default_batch(family: str, size: str, tiny_batch: int = 8) -> int:
  """The :gpu config's batch at --size=accelerator; `tiny_batch` at tiny."""
  if size == "tiny":
    return tiny_batch
  module = importlib.import_module(f"configs.{FAMILIES[family].config}")
  return int(module.get_config("gpu").train.batch_size)


def plan_cases(size: str, families: list[str], dtypes: list[str], torch_on: bool = True,
               compile_on: bool = True, sweep_on: bool = True,
               tiny_batch: int = 8) -> list[dict]:
  """Every case of the run, most important first (each a JSON-able dict).

  DDPM, then DCGAN (each in bfloat16 then float32, then their eager twins),
  the DDPM bfloat16 batch sweep, the twins under torch.compile in bfloat16,
  the other families (all bfloat16 first), the twins compiled in float32.
  """
  dtypes = [d for d in DTYPES if d in dtypes]  # bfloat16 first
  cases = []

  def jax_case(family, dtype, batch=None, group="main"):
    batch = batch or default_batch(family, size, tiny_batch)
    limit = CASE_LIMIT_S["sweep" if group == "sweep" else
                         family if family in CASE_LIMIT_S else "other"]
    cases.append(dict(id=case_id("jax", family, dtype, batch), kind="jax", group=group,
                      family=family, dtype=dtype, batch=batch,
                      config=config_spec(family, size), limit_s=limit,
                      sample=group == "main"))

  def torch_case(family, dtype, compile):
    spec = FAMILIES[family]
    twin = spec.twin if size == "accelerator" else spec.tiny_twin
    batch = default_batch(family, size, tiny_batch)
    cases.append(dict(id=case_id("torch", twin, dtype, batch, compile), kind="torch",
                      group="torch", family=family, twin=twin, dtype=dtype, batch=batch,
                      compile=compile, same_network=size == "accelerator",
                      limit_s=CASE_LIMIT_S["torch_compile" if compile else "torch"]))

  leading = [f for f in LEADING if f in families]
  for family in leading:
    for dtype in dtypes:
      jax_case(family, dtype)
    if torch_on:
      for dtype in dtypes:
        torch_case(family, dtype, compile=False)
  if sweep_on and "ddpm" in families and "bfloat16" in dtypes:
    for batch in SWEEP_BATCHES[size]:
      jax_case("ddpm", "bfloat16", batch, group="sweep")
  if torch_on and compile_on and "bfloat16" in dtypes:
    for family in leading:
      torch_case(family, "bfloat16", compile=True)
  for dtype in dtypes:
    for family in (f for f in FAMILIES if f in families and f not in LEADING):
      jax_case(family, dtype)
  if torch_on and compile_on and "float32" in dtypes:
    for family in leading:
      torch_case(family, "float32", compile=True)
  return cases


# --- one case, in its own process ----------------------------------------------------

def _write_json(path: str, value) -> None:
  """Atomically: a reader never sees half a file, even if this process is killed."""
  with open(path + ".tmp", "w") as file:
    json.dump(value, file, indent=1, default=str)
  os.replace(path + ".tmp", path)


def _is_oom(text: str) -> bool:
  """Whether an error message (or a crashed case's log) says memory ran out."""
  return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                 "OutOfMemoryError"))


def _load_case_config(case: dict, data_dir: str):
  """The case's config: its config file and variant, dtype and batch, resolved."""
  from configs import default
  from gen import platform
  path, _, variant = case["config"].partition(":")
  module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
  config = module.get_config(variant) if variant else module.get_config()
  if case["size"] == "tiny" and not variant:
    default.use_quick_digits(config)  # a config without :digits, on digits
  config.train.compute_dtype = case["dtype"]
  config.train.batch_size = case["batch"]
  if config.data.name == "fashion_mnist":
    config.data.dir = data_dir
  config, _ = platform.resolve(config)
  return config


def _timed_windows(run_step, wait, case: dict) -> tuple[int, list[float]]:
  """(steps per window, seconds of each of case["repeats"] windows).

  One step, timed alone, sizes the windows at --size=accelerator (about
  case["window_s"] each, 3 to 500 steps); --size=tiny times 2 steps.
  """
  start = time.perf_counter()
  run_step(1)
  wait()
  one = time.perf_counter() - start
  count = 2 if case["size"] == "tiny" else int(
      min(500, max(3, math.ceil(case["window_s"] / max(one, 1e-6)))))
  windows = []
  for _ in range(case["repeats"]):
    start = time.perf_counter()
    for index in range(count):
      run_step(index)
    wait()
    windows.append(time.perf_counter() - start)
  return count, windows


def run_jax_case(case: dict, result: dict, save) -> None:
  """Times one (family, dtype, batch) of our code; fills `result` as it goes."""
  import jax
  import numpy as np

  from gen import config as config_lib
  from gen import data as data_lib
  from gen import families
  from gen.train import compute, sharding, steps

  devices = jax.devices()
  device = devices[0]
  result.update(device_kind=device.device_kind, device_count=len(devices),
                platform=device.platform, platform_version=_platform_version(device),
                jax_default_matmul_precision=str(
                    getattr(jax.config, "jax_default_matmul_precision", None)))
  config = _load_case_config(case, case["data_dir"])
  config_lib.validate(config)
  mesh = sharding.make_mesh(devices[:1])  # one device: every number is per device
  start = time.perf_counter()
  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  family.check_config()
  tx = family.make_optimizer()
  result["data_seconds"] = time.perf_counter() - start
  start = time.perf_counter()
  state = steps.init_state(family, tx, config, mesh)
  jax.block_until_ready(state)
  result.update(init_seconds=time.perf_counter() - start,
                params=int(family.num_params(state.params)), stage="compile")
  save()

  train_fn = steps.make_train_fn(family, tx, mesh, config.train.unroll_steps)
  # A few distinct real batches, on the device before timing; one step per call.
  batches = [sharding.put_batch(dataset.train.stacked(s, 1), mesh, batch_dim=1)
             for s in range(4)]
  start = time.perf_counter()
  # Compiles the step ahead of time; the call below reuses the executable.
  flops = compute.compiled_flops(train_fn, state, batches[0])
  result["compile_seconds"] = time.perf_counter() - start
  result["flops_per_step"] = flops
  if flops is None:
    result["reasons"]["flops_per_step"] = "XLA gave no cost analysis on this backend"
  try:  # the count before XLA's rewrites: a check on the compiled one
    result["lowered_flops_per_step"] = compute.lowered_flops(train_fn, state, batches[0])
  except Exception as error:  # noqa: BLE001 (a cross-check only)
    result["lowered_flops_per_step"] = None
    result["reasons"]["lowered_flops_per_step"] = f"{type(error).__name__}: {error}"[:200]
  start = time.perf_counter()
  state, metrics = train_fn(state, batches[0])
  jax.block_until_ready(state)
  result["first_call_seconds"] = time.perf_counter() - start
  result["stage"] = "train timing"
  save()

  holder = {"state": state, "metrics": metrics}

  def run_step(index):  # dispatches; the window waits for its last step only
    holder["state"], holder["metrics"] = train_fn(holder["state"], batches[index % 4])

  count, windows = _timed_windows(run_step, lambda: jax.block_until_ready(holder["state"]),
                                  case)
  state, metrics = holder["state"], holder["metrics"]
  median = statistics.median(windows)
  loss = float(np.asarray(metrics["loss"]).reshape(-1)[-1])
  result.update(steps_per_window=count, window_seconds=windows,
                steps_per_second=count / median,
                examples_per_second=count * case["batch"] / median, loss=loss)
  if flops is not None:
    result["achieved_flops_per_second"] = flops * count / median
  if not math.isfinite(loss):
    result["reasons"]["loss"] = "the last step's loss is not finite"
  result.update(_jax_memory(device), stage="sampling")
  if device.platform != "cpu" and result["lowered_flops_per_step"] is None:
    result["cpu_lowered_flops_per_step"] = _cpu_lowered_flops(family, tx, config, dataset)
  save()

  if not case["sample"]:
    result["stage"] = "done"
    return
  params = state.eval_params()
  del state, holder, batches
  samplers = _samplers(case, config, dataset, families)
  result["sampling"] = {}
  for label, sampler_family, optional in samplers:
    if optional:
      expected = _ancestral_estimate(result["sampling"], sampler_family)
      elapsed = time.time() - case["started_at"]  # since the process started
      budget = min(case["optional_budget_s"], case["hard_limit_s"] - 10)
      if expected is None or elapsed + expected > budget:
        result["sampling"][label] = {
            "skipped": f"time: expected {expected or float('nan'):.0f} s after "
                       f"{elapsed:.0f} s of this case, over its budget of {budget:.0f} s"}
        save()
        continue
    result["sampling"][label] = _time_sampler(sampler_family, params, dataset, case)
    save()
  result.update(_jax_memory(device, prefix="peak_bytes_with_sampling"))
  result["stage"] = "done"


def _cpu_lowered_flops(family, tx, config, dataset) -> float | None:
  """The step's FLOPs before XLA's rewrites, lowered for the host CPU: a check
  on an accelerator's compiled count where its backend (a PJRT plugin) offers
  no lowered one. Shapes only; nothing is compiled or run."""
  import jax

  from gen.train import compute, sharding, steps
  try:
    mesh = sharding.make_mesh(jax.devices("cpu")[:1])
    state = jax.eval_shape(lambda: steps.init_state(family, tx, config, mesh))
    batch = sharding.put_batch(dataset.train.stacked(0, 1), mesh, batch_dim=1)
    return compute.lowered_flops(steps.make_train_fn(family, tx, mesh, 1), state, batch)
  except Exception:  # noqa: BLE001 (a cross-check only)
    return None


def _platform_version(device) -> str | None:
  try:
    return str(device.client.platform_version)
  except Exception:  # noqa: BLE001 (informative only)
    return None


def _jax_memory(device, prefix: str = "peak_bytes_in_use") -> dict:
  """{prefix: peak bytes, "bytes_limit": ...} or the reason there are none."""
  try:
    stats = device.memory_stats()
  except Exception as error:  # noqa: BLE001
    stats, why = None, f"memory_stats() raised {type(error).__name__}"
  else:
    why = f"memory_stats() gives nothing on {device.platform}"
  if not stats or "peak_bytes_in_use" not in stats:
    return {prefix: None, "memory_reason": why}
  return {prefix: int(stats["peak_bytes_in_use"]), "bytes_limit": stats.get("bytes_limit")}


def _samplers(case, config, dataset, families) -> list[tuple[str, object, bool]]:
  """(label, family configured to sample that way, optional?) for the case's family."""
  if config.model.name != "unet":
    return [("sample", families.make(config, dataset.info), False)]
  out = []
  ddim_steps = 50 if case["size"] == "accelerator" else int(config.eval.sampling_steps)
  for sampler, optional in (("ddim", False), ("ancestral", True)):
    sampler_config = config.copy_and_resolve_references()
    sampler_config.eval.sampler = sampler
    sampler_config.eval.sampling_steps = ddim_steps
    family = families.make(sampler_config, dataset.info)
    label = f"ddim-{ddim_steps}" if sampler == "ddim" else f"ancestral-{family.timesteps}"
    out.append((label, family, optional))
  return out


def _ancestral_estimate(done: dict, family) -> float | None:
  """Seconds ancestral sampling should take, from DDIM's: the same network in a
  loop of T steps instead of `ddim_steps` (compile about the same; two calls)."""
  ddim = next((v for k, v in done.items() if k.startswith("ddim-") and "seconds" in v), None)
  if ddim is None:
    return None
  per_step = ddim["seconds"] / ddim["network_calls"]
  return ddim["first_call_seconds"] + 2 * per_step * family.timesteps + 5.0


def _time_sampler(family, params, dataset, case) -> dict:
  """One compiled call of the family's sampler at the case's count, after a first."""
  import jax
  import numpy as np

  count = case["sample_count"]
  sample_fn, sampler_params = family.sampler(params, dataset)
  sample = jax.jit(sample_fn, static_argnums=2)
  start = time.perf_counter()
  jax.block_until_ready(sample(sampler_params, jax.random.PRNGKey(0), count))
  first = time.perf_counter() - start
  start = time.perf_counter()
  images = jax.block_until_ready(sample(sampler_params, jax.random.PRNGKey(1), count))
  seconds = time.perf_counter() - start
  entry = {"count": count, "first_call_seconds": first, "seconds": seconds,
           "ms_per_sample": 1000 * seconds / count,
           "nonfinite": int(np.sum(~np.isfinite(np.asarray(images, np.float32))))}
  if hasattr(family, "timesteps"):
    evaluation = family.config.eval
    entry["network_calls"] = (family.timesteps if evaluation.sampler == "ancestral"
                              else int(evaluation.sampling_steps))
  return entry


def run_torch_case(case: dict, result: dict, save) -> None:
  """Times one PyTorch twin (experiments/benchmarks/torch_twins.py); fills `result`."""
  try:
    import torch
  except ImportError:
    result.update(status="not run", reason="torch is not installed")
    return
  result.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
  if case["twin"].startswith("ddpm"):
    try:
      import diffusers
      result["diffusers"] = diffusers.__version__
    except ImportError:
      result.update(status="not run", reason=f"diffusers is missing: {INSTALL_HINT}")
      return
  from experiments.benchmarks import torch_twins

  if torch.cuda.is_available():
    device = "cuda"
    result.update(device_kind=torch.cuda.get_device_name(0), platform="cuda",
                  cudnn=torch.backends.cudnn.version())
  elif case["size"] == "accelerator":
    result.update(status="not run", reason="this torch sees no CUDA device")
    return
  else:
    device = "cpu"
    result.update(device_kind="cpu", platform="cpu")
  tiny = case["size"] == "tiny"
  save()
  timing = torch_twins.time_train_step(
      case["twin"], device, batch_size=case["batch"], dtype=case["dtype"],
      steps=2 if tiny else 25, repeats=1 if tiny else case["repeats"],
      compile=case["compile"], warmup_steps=0 if tiny else 3)
  result.update(examples_per_second=timing["examples_per_second"],
                steps_per_second=timing["examples_per_second"] / case["batch"],
                compile_seconds=timing["compile_or_first_step_seconds"],
                params=timing["params"], loss=timing["loss"],
                window_seconds=timing["window_seconds"], steps_per_window=timing["steps"],
                torch_threads=timing["threads"])
  if device == "cuda":
    result["peak_bytes_in_use"] = int(torch.cuda.max_memory_allocated())
  else:
    result.update(peak_bytes_in_use=None, memory_reason="torch counts no CPU peak")
  result["stage"] = "done"


def run_case_file(path: str) -> int:
  """The child: runs the case in `path`, writes <path>.result.json as it goes."""
  with open(path) as file:
    case = json.load(file)
  result = {"id": case["id"], "status": "running", "stage": "start", "reasons": {}}
  out = path.removesuffix(".json") + ".result.json"
  save = lambda: _write_json(out, result)  # noqa: E731
  save()
  try:
    (run_jax_case if case["kind"] == "jax" else run_torch_case)(case, result, save)
    if result["status"] == "running":
      result["status"] = "ok"
  except BaseException as error:  # noqa: BLE001 (reported, then the process ends)
    result.update(status="oom" if _is_oom(f"{type(error).__name__}: {error}") else "failed",
                  reason=f"{type(error).__name__}: {str(error)[:600]}",
                  traceback=traceback.format_exc()[-4000:])
  save()
  return 0 if result["status"] in ("ok", "not run") else 1


# --- the parent: runs the cases, writes the report -------------------------------------

def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _command(args: list[str], timeout: float = 20) -> str | None:
  if not shutil.which(args[0]):
    return None
  try:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
  except (OSError, subprocess.SubprocessError):
    return None
  return (done.stdout or done.stderr).strip() or None


def host_header(data_dir: str) -> dict:
  """What the parent knows without touching a device: versions, host, command."""
  versions = {name: _version(name) for name in (
      "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
      "jax-cuda13-pjrt", "flax", "optax", "orbax-checkpoint", "torch", "diffusers",
      "ml-collections", "numpy", "absl-py")}
  smi = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                  "clocks.max.sm,power.limit", "--format=csv,noheader"])
  smi_banner = _command(["nvidia-smi"])
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": shlex.join([sys.executable, *sys.argv]),
      "python": sys.version.split()[0], "host": host_platform.node(),
      "cpus": os.cpu_count(), "versions": {k: v for k, v in versions.items() if v},
      "missing": [k for k in ("ml-collections", "diffusers", "torch") if not versions[k]],
      "nvidia_smi": smi,
      # The banner's first lines hold the driver and CUDA versions.
      "nvidia_smi_banner": "\n".join(smi_banner.splitlines()[:4]) if smi_banner else None,
      "git_commit": _command(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
      "data_dir": data_dir,
  }


def _child_env() -> dict:
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  # JAX takes 75% of GPU memory up front by default; the batch sweep wants
  # more of it, and nothing else shares the device while a case runs.
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  return env


def run_case(case: dict, limit: float, out: str) -> dict:
  """Runs `case` in a child process for at most `limit` seconds; its result."""
  cases_dir = os.path.join(out, "cases")
  os.makedirs(cases_dir, exist_ok=True)
  os.makedirs(os.path.join(out, "logs"), exist_ok=True)
  path = os.path.join(cases_dir, f"{case['id']}.json")
  _write_json(path, dict(case, started_at=time.time(), hard_limit_s=limit))
  result_path = path.removesuffix(".json") + ".result.json"
  if os.path.exists(result_path):
    os.remove(result_path)
  start = time.perf_counter()
  with open(os.path.join(out, "logs", f"{case['id']}.log"), "w") as log:
    # Its own session: torch.compile's workers are killed with it on a timeout.
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                f"--case_file={path}"], cwd=ROOT, env=_child_env(),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
      process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
      timed_out = True
      os.killpg(process.pid, signal.SIGKILL)
      process.wait()
  wall = time.perf_counter() - start
  try:
    with open(result_path) as file:
      result = json.load(file)
  except (OSError, ValueError):
    result = {"id": case["id"], "stage": "start", "reasons": {}}
  result["wall_seconds"] = wall
  if timed_out:
    result.update(status="timed out", reason=f"killed after {limit:.0f} s, in stage "
                                             f"{result.get('stage', '?')}")
  elif result.get("status") in (None, "running"):
    # Died without a word of its own (an abort in XLA or CUDA): the log says why.
    tail = _log_tail(os.path.join(out, "logs", f"{case['id']}.log"))
    result.update(status="oom" if _is_oom(tail) else "failed",
                  reason=f"exit code {process.returncode}: {tail}")
  return result


def _log_tail(path: str, lines: int = 3) -> str:
  try:
    with open(path) as file:
      return " / ".join(line.strip() for line in file.read().splitlines()[-lines:])[:400]
  except OSError:
    return "no log"


def run_suite(cases: list[dict], out: str, deadline_s: float, min_start_s: float,
              sweep_share_s: float, header: dict, clock=time.perf_counter) -> list[dict]:
  """Runs the cases in order under the deadline; writes the report after each.

  A case starts only with min_start_s left and runs at most until the
  deadline; the sweep's cases stop at the first that does not succeed (the
  next, larger batch would not fit either) or when the next one, expected to
  take at least as long as the last, would overrun sweep_share_s.
  """
  suite_start = clock()
  results: list[dict] = []
  sweep_seconds, sweep_last, sweep_stop = 0.0, 0.0, None
  for case in cases:
    left = deadline_s - (clock() - suite_start)
    why_not = None
    if case["group"] == "sweep" and sweep_stop:
      why_not = f"not run (sweep stopped: {sweep_stop})"
    elif case["group"] == "sweep" and (sweep_share_s <= 0
                                       or sweep_seconds + sweep_last > sweep_share_s):
      why_not = (f"not run (time: {sweep_seconds:.0f} s of the sweep's share of "
                 f"{sweep_share_s:.0f} s spent, the last batch took {sweep_last:.0f} s)")
    elif left < min_start_s:
      why_not = f"not run (time: {max(left, 0):.0f} s left of the {deadline_s:.0f} s deadline)"
    if why_not:
      result = {"id": case["id"], "status": "not run", "reason": why_not, "reasons": {}}
    else:
      limit = min(case["limit_s"], left)
      print(f"[{clock() - suite_start:5.0f} s] {case['id']} (limit {limit:.0f} s)",
            flush=True)
      result = run_case(case, limit, out)
      if result["status"] == "timed out" and limit < case["limit_s"]:
        result["reason"] += " (the suite's deadline)"
      if case["group"] == "sweep":
        sweep_seconds += result["wall_seconds"]
        sweep_last = result["wall_seconds"]
        if result["status"] != "ok":
          sweep_stop = f"b{case['batch']} {result['status']}"
      print(f"         {result['status']}: {_summary(result)}", flush=True)
    results.append(dict(case=case, **result))
    write_report(out, header, results, cases)
  return results


def _summary(result: dict) -> str:
  if result["status"] != "ok":
    return result.get("reason", "")
  parts = [f"{result['examples_per_second']:,.0f} examples/s"]
  if result.get("flops_per_step"):
    parts.append(f"{_gflop(result['flops_per_step'])} GFLOP/step")
  return ", ".join(parts) + f" ({result['wall_seconds']:.0f} s)"


# --- the report ------------------------------------------------------------------------

def _utilization(results: list[dict]) -> None:
  """Adds achieved FLOP/s and MFU (gen.train.compute.mfu) to every measured row.

  A twin's FLOPs are XLA's count of our step of the same network, batch and
  precision (the twin is built to compute the same thing).
  """
  from gen.train import compute
  jax_flops = {(r["case"]["family"], r["case"]["dtype"], r["case"]["batch"]):
               r.get("flops_per_step") for r in results
               if r["case"]["kind"] == "jax" and r["status"] == "ok"}
  for row in results:
    if row["status"] != "ok":
      continue
    case = row["case"]
    if case["kind"] == "torch":
      flops = jax_flops.get((case["family"], case["dtype"], case["batch"]))
      if not case.get("same_network"):
        row["reasons"]["flops_per_step"] = "tiny: the twin is not this case's network"
        continue
      if flops is None:
        row["reasons"]["flops_per_step"] = "no JAX count of this network, dtype and batch"
        continue
      row["flops_per_step"], row["flops_from"] = flops, "XLA's count of our step"
      row["achieved_flops_per_second"] = flops * row["steps_per_second"]
    if not row.get("achieved_flops_per_second"):
      row["reasons"].setdefault("mfu", "no FLOP count")
      continue
    value, basis = compute.mfu(row["achieved_flops_per_second"], row["device_kind"])
    row["mfu"], row["mfu_basis"] = value, basis
    if value is None:
      row["reasons"]["mfu"] = basis


def _ratios(results: list[dict]) -> None:
  """JAX / PyTorch examples/s for each JAX row that has twins at its dtype and batch."""
  twins = {}
  for row in results:
    case = row["case"]
    if case["kind"] == "torch":
      key = (case["family"], case["dtype"], case["batch"])
      twins.setdefault(key, {})["compile" if case["compile"] else "eager"] = row
  for row in results:
    case = row["case"]
    if case["kind"] != "jax":
      continue
    found = twins.get((case["family"], case["dtype"], case["batch"]))
    if not found:
      continue
    ratios = {}
    for mode, twin in found.items():
      if not twin["case"].get("same_network"):
        ratios[mode] = "n/a (tiny: a different network)"
      elif row["status"] == "ok" and twin["status"] == "ok":
        ratios[mode] = row["examples_per_second"] / twin["examples_per_second"]
      else:
        ratios[mode] = f"twin {twin['status']}" if twin["status"] != "ok" else row["status"]
    row["jax_over_pytorch"] = ratios


def goals(results: list[dict]) -> list[str]:
  """The issue's two targets, as lines: bf16 MFU of the DDPM U-Net at the
  largest batch that fit (>= 40%), and JAX >= 1.0x the twin at the same precision."""
  lines = []
  ddpm = [r for r in results if r["case"]["kind"] == "jax" and r["case"]["family"] == "ddpm"
          and r["case"]["dtype"] == "bfloat16"]
  fitted = [r for r in ddpm if r["status"] == "ok"]
  if fitted:
    best = max(fitted, key=lambda r: r["case"]["batch"])
    larger = [r for r in ddpm if r["case"]["batch"] > best["case"]["batch"]]
    why = (f"b{larger[0]['case']['batch']}: {larger[0]['status']}" if larger
           else "no larger batch was tried")
    mfu = best.get("mfu")
    verdict = ("n/a" if mfu is None else f"{mfu:.1%} ({'met' if mfu >= 0.40 else 'not met'})")
    lines.append(f"DDPM bf16 MFU at the largest batch that fit, b{best['case']['batch']} "
                 f"({why}): {verdict}; goal >= 40%")
  else:
    lines.append("DDPM bf16 MFU: no DDPM bf16 case ran")
  for row in results:
    if row["case"]["kind"] == "jax" and row.get("jax_over_pytorch"):
      parts = []
      for mode, ratio in row["jax_over_pytorch"].items():
        parts.append(f"{mode} {ratio:.2f}x" if isinstance(ratio, float) else f"{mode} {ratio}")
      met = [r for r in row["jax_over_pytorch"].values() if isinstance(r, float)]
      verdict = ("" if not met else
                 "; goal >= 1.0x " + ("met" if min(met) >= 1.0 else "not met"))
      lines.append(f"JAX / PyTorch, {FAMILIES[row['case']['family']].title} "
                   f"{row['case']['dtype']} b{row['case']['batch']}: {', '.join(parts)}{verdict}")
  return lines


def _fmt(value, pattern: str, missing: str = "n/a") -> str:
  return missing if value is None else format(value, pattern)


def _gflop(flops: float | None) -> str:
  """4478.7e9 -> '4,479'; 0.0123e9 -> '0.0123': whole GFLOPs, or 3 significant digits."""
  if flops is None:
    return "—"
  return f"{flops / 1e9:,.0f}" if flops >= 100e9 else f"{flops / 1e9:.3g}"


def _sampling_cell(row: dict) -> str:
  sampling = row.get("sampling")
  if not sampling:
    return "—"
  cells = []
  for label, entry in sampling.items():
    if "ms_per_sample" in entry:
      bad = f", {entry['nonfinite']} non-finite" if entry.get("nonfinite") else ""
      cells.append(f"{label} {entry['ms_per_sample']:.3g}{bad}")
    else:
      cells.append(f"{label} skipped ({entry.get('skipped', '?').split(':')[0]})")
  return "; ".join(cells)


def _name(case: dict) -> str:
  title = FAMILIES[case["family"]].title
  if case["kind"] == "torch":
    return f"PyTorch {case['twin']}" + (" compile" if case["compile"] else " eager")
  return f"JAX {title}" + (" (sweep)" if case["group"] == "sweep" else "")


def table(results: list[dict]) -> list[str]:
  lines = ["| id | case | batch | dtype | train ex/s | compile s | GFLOP/step | TFLOP/s | MFU "
           "| peak mem GiB | sampling ms/image | JAX/PyTorch | status |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
  for row in results:
    case = row["case"]
    ok = row["status"] == "ok"
    flops = row.get("flops_per_step")
    ratio = row.get("jax_over_pytorch") or {}
    ratio_cell = ", ".join(f"{m} {r:.2f}x" if isinstance(r, float) else f"{m}: {r}"
                           for m, r in ratio.items()) or "—"
    reason = row.get("reason", "")
    status = (row["status"] if ok else reason if reason.startswith(row["status"])
              else f"{row['status']}: {reason}")
    status = status.replace("|", "/").replace("\n", " ")[:160]
    peak = row.get("peak_bytes_in_use")
    achieved = row.get("achieved_flops_per_second")
    lines.append(
        f"| {case['id']} | {_name(case)} | {case['batch']} | {case['dtype']} | "
        f"{_fmt(row.get('examples_per_second'), ',.0f', '—')} | "
        f"{_fmt(row.get('compile_seconds'), '.1f', '—')} | "
        f"{_gflop(flops)}{'*' if row.get('flops_from') else ''} | "
        f"{_fmt(achieved and achieved / 1e12, '.3g', '—')} | "
        f"{_fmt(row.get('mfu'), '.1%', '—')} | "
        f"{_fmt(None if peak is None else peak / 2 ** 30, '.2f', 'n/a' if ok else '—')} | "
        f"{_sampling_cell(row)} | {ratio_cell} | {status} |")
  return lines


def _header_lines(header: dict, results: list[dict]) -> list[str]:
  jax_rows = [r for r in results if r["case"]["kind"] == "jax" and r.get("device_kind")]
  torch_rows = [r for r in results if r["case"]["kind"] == "torch" and r.get("torch_cuda")]
  device = (f"{jax_rows[0]['device_count']} x {jax_rows[0]['device_kind']} "
            f"({jax_rows[0]['platform']}, {jax_rows[0].get('platform_version')}); each case "
            f"on one" if jax_rows else "no JAX case reached its device")
  versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items())
  lines = [f"# device suite, --size={header['size']}", "",
           f"- date: {header['date']}; commit {header.get('git_commit')}",
           f"- command: `{header['command']}`",
           f"- device: {device}",
           f"- python {header['python']}; {versions}"]
  if torch_rows:
    lines.append(f"- torch CUDA {torch_rows[0]['torch_cuda']}, cuDNN "
                 f"{torch_rows[0].get('cudnn')}")
  if header.get("nvidia_smi"):
    lines.append(f"- nvidia-smi: {header['nvidia_smi']}")
  if header.get("nvidia_smi_banner"):
    banner = " ".join(header["nvidia_smi_banner"].split())
    lines.append(f"- nvidia-smi banner: {banner[:300]}")
  if header["missing"]:
    lines.append(f"- missing: {', '.join(header['missing'])} ({INSTALL_HINT})")
  lines.append(f"- data: {header['data_dir']}; deadline {header['deadline_s']:.0f} s")
  return lines


def _notes(results: list[dict]) -> list[str]:
  notes = ["train ex/s: median of timed windows of the compiled train step (one step per "
           "call) after a compiling call; compile s: lowering + compilation (PyTorch: the "
           "first step, which holds torch.compile's compilation)",
           "MFU: achieved FLOP/s over a peak (gen.train.compute.mfu): an accelerator's "
           "dense bf16 figure, for float32 rows too (so they score low by construction); "
           "a CPU's measured float32 matmul rate"]
  bases = sorted({r["mfu_basis"] for r in results if r.get("mfu_basis")})
  notes += [f"MFU peak: {basis}" for basis in bases]
  if any(r.get("flops_from") for r in results):
    notes.append("*: a PyTorch row's FLOPs are XLA's count of our step of the same network, "
                 "batch and precision")
  checks = []
  for row in results:
    compiled = row.get("flops_per_step")
    lowered = row.get("lowered_flops_per_step") or row.get("cpu_lowered_flops_per_step")
    if row["case"]["kind"] == "jax" and compiled and lowered:
      where = "" if row.get("lowered_flops_per_step") else " (lowered for the CPU)"
      checks.append(f"{row['case']['id']} {compiled / lowered:.2f}{where}")
  if checks:
    notes.append("compiled / lowered FLOP counts (far from 1: XLA's compiled count missed "
                 "or added work, e.g. library calls it cannot see into): " + ", ".join(checks))
  precision = {str(r.get("jax_default_matmul_precision")) for r in results
               if r.get("platform") in ("gpu", "cuda") and r["case"]["kind"] == "jax"}
  if precision:
    notes.append(f"float32 on GPU: JAX's default matmul precision ("
                 f"{', '.join(sorted(precision))}) lets XLA use TF32; the twins enable TF32 "
                 f"for matmuls (cuDNN convolutions use it by default)")
  memory = {r.get("memory_reason") for r in results if r.get("memory_reason")}
  notes += [f"peak memory n/a: {why}" for why in sorted(memory)]
  return notes


def write_report(out: str, header: dict, results: list[dict], cases: list[dict]) -> str:
  """Writes device_suite.json and .md (all cases: those not reached yet too)."""
  from_results = {r["id"] for r in results}
  pending = [{"case": c, "id": c["id"], "status": "pending", "reason": "not reached yet",
              "reasons": {}} for c in cases if c["id"] not in from_results]
  rows = [dict(r, reasons=dict(r.get("reasons", {}))) for r in results] + pending
  _utilization(rows)
  _ratios(rows)
  goal_lines = goals(rows)
  markdown = "\n".join(_header_lines(header, rows) + ["", *table(rows), "", "Goals:", *(
      f"- {line}" for line in goal_lines), "", "Notes:", *(f"- {n}" for n in _notes(rows))])
  not_run = [r["id"] for r in rows if r["status"] in ("pending", "timed out")
             or (r["status"] == "not run" and r["reason"].startswith("not run (time"))]
  if not_run:
    markdown += ("\n\nNot run for time; alone: `" + _rerun_command(header, not_run) + "`")
  markdown += "\n"
  _write_json(os.path.join(out, "device_suite.json"),
              {"header": header, "cases": rows, "goals": goal_lines, "not_run": not_run})
  with open(os.path.join(out, "device_suite.md"), "w") as file:
    file.write(markdown)
  return markdown


def _rerun_command(header: dict, ids: list[str]) -> str:
  return (f"PYTHONPATH=. python3 experiments/device_suite.py --size={header['size']} "
          f"--only={','.join(ids)} --out=$OUT/suite2")


def _define_flags():
  """The command line; defined only when run as a script, so that importing
  this module (the tests do) defines no flags."""
  flags.DEFINE_enum("size", "accelerator", SIZES,
                    "accelerator: the :gpu configs; tiny: :digits at a tiny batch (CPU).")
  flags.DEFINE_string("out", os.path.join(ROOT, "runs", "device_suite"),
                      "Folder for device_suite.json, device_suite.md and logs/.")
  flags.DEFINE_list("families", list(FAMILIES), "Families to run, any of: "
                    + ", ".join(FAMILIES) + " (run in the suite's order).")
  flags.DEFINE_list("dtypes", list(DTYPES), "config.train.compute_dtype values.")
  flags.DEFINE_list("only", [], "Run only the cases with these ids (as in the JSON; the "
                    "end of a run that ran out of time prints them).")
  flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files (config.data.dir); default: "
                      "build/device_carry/fashion-mnist if it exists, else "
                      + DEBIAN_FASHION_MNIST)
  flags.DEFINE_float("deadline_s", 450.0, "No case starts after this many seconds; a "
                     "running one is killed at it.")
  flags.DEFINE_float("min_start_s", 20.0, "A case starts only with this much time left "
                     "before the deadline.")
  flags.DEFINE_float("sweep_share_s", 180.0, "Seconds the DDPM batch sweep may take in all.")
  flags.DEFINE_float("optional_budget_s", None, "DDPM's ancestral sampling runs only if "
                     "expected to end within this many seconds of its case's start "
                     "(default: " + ", ".join(f"{k} {v:g}" for k, v in
                                             OPTIONAL_BUDGET_S.items()) + ").")
  flags.DEFINE_bool("sweep", True, "Run the DDPM bfloat16 batch sweep.")
  flags.DEFINE_bool("torch", True, "Run the PyTorch twins.")
  flags.DEFINE_bool("torch_compile", None, "Also time the twins under torch.compile "
                    "(default: at --size=accelerator only).")
  flags.DEFINE_float("window_s", 0.5, "Target seconds per timed window (accelerator).")
  flags.DEFINE_integer("repeats", 3, "Timed windows; the median is reported.")
  flags.DEFINE_integer("sample_count", 256, "Images per timed sampling call (accelerator; "
                       "--tiny_batch at tiny).")
  flags.DEFINE_integer("tiny_batch", 8, "Batch of every case at --size=tiny.")
  flags.DEFINE_string("case_file", None, "Internal: run the case in this JSON file in this "
                      "process and write its result beside it.")


def main(argv):
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.case_file:
    sys.exit(run_case_file(FLAGS.case_file))
  unknown = [f for f in FLAGS.families if f not in FAMILIES]
  bad_dtypes = [d for d in FLAGS.dtypes if d not in DTYPES]
  if unknown:
    raise app.UsageError(f"--families: unknown {unknown}; valid: {', '.join(FAMILIES)}")
  if bad_dtypes:
    raise app.UsageError(f"--dtypes: unknown {bad_dtypes}; valid: {', '.join(DTYPES)}")
  size = FLAGS.size
  data_dir = FLAGS.data_dir or (CARRIED_FASHION_MNIST if os.path.isdir(CARRIED_FASHION_MNIST)
                                else DEBIAN_FASHION_MNIST)
  compile_on = FLAGS.torch_compile if FLAGS.torch_compile is not None else size != "tiny"
  cases = plan_cases(size, FLAGS.families, FLAGS.dtypes, FLAGS.torch, compile_on,
                     FLAGS.sweep, FLAGS.tiny_batch)
  if FLAGS.only:
    missing = sorted(set(FLAGS.only) - {c["id"] for c in cases})
    if missing:
      raise app.UsageError(f"--only: no case {', '.join(missing)} in this plan")
    cases = [c for c in cases if c["id"] in FLAGS.only]
  optional_budget = (OPTIONAL_BUDGET_S[size] if FLAGS.optional_budget_s is None
                     else FLAGS.optional_budget_s)
  for case in cases:  # what every child needs besides the case itself
    case.update(size=size, data_dir=os.path.abspath(data_dir),
                repeats=1 if size == "tiny" else FLAGS.repeats, window_s=FLAGS.window_s,
                sample_count=FLAGS.tiny_batch if size == "tiny" else FLAGS.sample_count,
                optional_budget_s=optional_budget)
  out = os.path.abspath(FLAGS.out)
  os.makedirs(out, exist_ok=True)
  header = dict(host_header(data_dir), size=size, deadline_s=FLAGS.deadline_s)
  print(f"device suite: {len(cases)} cases, deadline {FLAGS.deadline_s:.0f} s; "
        f"writing {out}", flush=True)
  results = run_suite(cases, out, FLAGS.deadline_s, FLAGS.min_start_s, FLAGS.sweep_share_s,
                      header)
  print()
  print(write_report(out, header, results, cases), flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
