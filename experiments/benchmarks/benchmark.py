"""Train-step throughput of the autoencoders, in JAX and in PyTorch on the same machine.

  python experiments/benchmarks/benchmark.py               # the full table (~10 min on 2 cores)
  python experiments/benchmarks/benchmark.py --cases=jax_conv,torch_conv
  python experiments/benchmarks/benchmark.py --per_layer   # where the conv step's time goes

Every case runs in its own process, so that its peak memory is its own and
XLA flags (read once, at JAX's start) can differ between cases. Each prints:
  examples/s   median over --repeats windows of --steps train steps
  compile s    first call: tracing + XLA compilation (+ its steps)
  GFLOP/step   XLA's count of ONE compiled train step (gen.train.compute.
               compiled_flops; a scan's loop body would count once, so the
               one-step program is counted); PyTorch rows: the JAX count of
               the same network (*)
  GFLOP/s, MFU achieved = FLOPs per step x steps/s; MFU by gen.train.compute.mfu:
               on a CPU over a float32 matmul measured on it (the table's note
               says which), on an accelerator over its dense bf16 peak
  peak MB      the process's peak resident memory

Batch 128 of real Fashion-MNIST (uint8, scaled on the device as in training),
Adam, sigmoid + binary cross-entropy: the configs in configs/autoencoder.py and
configs/conv_autoencoder.py. PyTorch gets the same networks, layer by layer.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

# The repository root (this file is experiments/benchmarks/benchmark.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CASES = flags.DEFINE_list("cases", None, "Cases to run (default: all); see CASES.")
_STEPS = flags.DEFINE_integer("steps", 100, "Train steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed windows; the median is reported.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Examples per train step.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Run the list of cases this many times, "
                               "interleaved (ABCABC), to spread machine drift over all.")
_CASE = flags.DEFINE_string("case", None, "Internal: run this one case here and print JSON.")
_PER_LAYER = flags.DEFINE_bool("per_layer", False, "Instead of the cases, time forward + "
                               "backward of each conv AE layer alone, in each form.")

_ONEDNN = "--xla_cpu_use_onednn=true"
_XNNPACK = "--xla_cpu_use_xnnpack=true"

# name -> (framework, model, settings). steps_per_call: train steps per compiled
# call (lax.scan); input: "device" = batches already on the device, "pipeline"
# = host batches assembled and transferred as in training, with prefetch.
CASES = {
    "jax_dense": ("jax", "dense", {"steps_per_call": 1}),
    "jax_dense_scan10": ("jax", "dense", {"steps_per_call": 10}),
    "jax_dense_scan10_loop": ("jax", "dense", {"steps_per_call": 10, "unroll_steps": 1}),
    "jax_dense_scan10_pipeline": ("jax", "dense", {"steps_per_call": 10, "input": "pipeline"}),
    "torch_dense": ("torch", "dense", {}),
    "jax_conv": ("jax", "conv", {"steps_per_call": 1}),
    "jax_conv_scan10": ("jax", "conv", {"steps_per_call": 10}),
    "jax_conv_scan10_loop": ("jax", "conv", {"steps_per_call": 10, "unroll_steps": 1}),
    "jax_conv_scan10_pipeline": ("jax", "conv", {"steps_per_call": 10, "input": "pipeline"}),
    "jax_conv_onednn": ("jax", "conv", {"steps_per_call": 10, "xla_flags": _ONEDNN}),
    "jax_conv_xnnpack": ("jax", "conv", {"steps_per_call": 10, "xla_flags": _XNNPACK}),
    "jax_conv_fast_math": ("jax", "conv", {"steps_per_call": 10,
                                           "xla_flags": "--xla_cpu_enable_fast_math=true"}),
    "jax_conv_one_thread": ("jax", "conv", {"steps_per_call": 10,
                                            "xla_flags": "--xla_cpu_multi_thread_eigen=false"}),
    "jax_conv_nchw": ("jax", "conv", {"steps_per_call": 10, "layout": "NCHW"}),
    "jax_conv_dilated": ("jax", "conv", {"steps_per_call": 10, "conv_transpose_impl": "dilated"}),
    "jax_conv_subpixel": ("jax", "conv", {"steps_per_call": 10,
                                          "conv_transpose_impl": "subpixel"}),
    "torch_conv": ("torch", "conv", {}),
    "torch_conv_channels_last": ("torch", "conv", {"channels_last": True}),
}


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _config(model: str):
  if model == "dense":
    from configs import autoencoder
    config = autoencoder.get_config()
  else:
    from configs import conv_autoencoder
    config = conv_autoencoder.get_config()
  config.train.batch_size = _BATCH.value
  return config


def _time_windows(run_window) -> list[float]:
  """Seconds of each of --repeats calls of run_window()."""
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run_window()
    times.append(time.perf_counter() - start)
  return times


def _time_jax(run, carry, first_input, inputs, steps_per_call: int,
              read_each: bool = False) -> dict:
  """Compile time of run(carry, first_input), then throughput over windows of
  inputs(), and XLA's FLOP count of one step (run on the first step's inputs).

  read_each: fetch the metrics of every call to the host, as the training loop does.
  """
  import jax

  from gen.train import compute

  start = time.perf_counter()
  carry, metrics = run(carry, first_input)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start

  def window():
    nonlocal carry, metrics
    for batch in inputs():
      carry, metrics = run(carry, batch)
      if read_each:
        jax.device_get(metrics)
    jax.block_until_ready(metrics)

  times = _time_windows(window)
  steps = _STEPS.value // steps_per_call * steps_per_call
  # Counted on a one-step call: with several steps per call, a rolled loop
  # counts its body once. With one step per call this reuses the compiled step.
  one_step = (first_input if steps_per_call == 1
              else jax.tree_util.tree_map(lambda x: x[:1], first_input))
  return {"examples_per_s": steps * _BATCH.value / statistics.median(times),
          "compile_s": compile_s, "flops_per_step": compute.compiled_flops(run, carry, one_step),
          "device_kind": jax.devices()[0].device_kind}


def _run_jax(model: str, settings: dict) -> dict:
  import jax

  from gen import data as data_lib
  from gen import families, platform
  from gen.train import sharding, steps as loop

  config, _ = platform.resolve(_config(model))
  per_call = settings.get("steps_per_call", 1)
  config.train.steps_per_call = per_call
  config.train.unroll_steps = settings.get("unroll_steps", config.train.unroll_steps)
  if "conv_transpose_impl" in settings:
    config.model.conv_transpose_impl = settings["conv_transpose_impl"]
  dataset = data_lib.load(config)
  if settings.get("layout") == "NCHW":
    return _run_jax_nchw(config, dataset, per_call)
  family = families.make(config, dataset.info)
  mesh = sharding.make_mesh(jax.devices()[:1])
  tx = family.make_optimizer()
  state = loop.init_state(family, tx, config, mesh)
  train_fn = loop.make_train_fn(family, tx, mesh, config.train.unroll_steps)
  calls = _STEPS.value // per_call

  def host_batch(call):
    return dataset.train.stacked(call * per_call, per_call)

  def put(batch):
    return sharding.put_batch(batch, mesh, batch_dim=1)

  if settings.get("input") == "pipeline":
    def batches():  # assembled and transferred while the previous call computes
      return data_lib.pipeline.prefetch((put(host_batch(c)) for c in range(calls)),
                                        config.data.prefetch)
    return _time_jax(train_fn, state, put(host_batch(0)), batches, per_call, read_each=True)
  on_device = [put(host_batch(c)) for c in range(calls)]
  return _time_jax(train_fn, state, on_device[0], lambda: on_device, per_call)


def _run_jax_nchw(config, dataset, per_call: int) -> dict:
  """The conv autoencoder written with lax.conv in NCHW/OIHW, as PyTorch lays it out."""
  import jax
  import jax.numpy as jnp
  import optax

  features, bottleneck = config.model.features, config.model.bottleneck
  dims = ("NCHW", "OIHW", "NCHW")
  rng = iter(jax.random.split(jax.random.PRNGKey(0), 16))

  def conv_init(c_out, c_in):
    scale = 1.0 / jnp.sqrt(9.0 * c_in)
    return {"w": jax.random.normal(next(rng), (c_out, c_in, 3, 3)) * scale,
            "b": jnp.zeros((c_out, 1, 1))}

  def dense_init(n_in, n_out):
    return {"w": jax.random.normal(next(rng), (n_in, n_out)) / jnp.sqrt(n_in),
            "b": jnp.zeros((n_out,))}

  params = {"enc1": conv_init(features[0], 1), "enc2": conv_init(features[1], features[0]),
            "code": dense_init(features[1] * 49, bottleneck),
            "up": dense_init(bottleneck, features[1] * 49),
            "dec2": conv_init(features[1], features[1]), "dec1": conv_init(features[0], features[1]),
            "out": conv_init(1, features[0])}

  def conv(p, h, stride):
    return jax.lax.conv_general_dilated(h, p["w"], (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=dims) + p["b"]

  def conv_up(p, h):
    # Stride-2 transposed convolution = input dilation 2, as PyTorch's ConvTranspose2d.
    return jax.lax.conv_general_dilated(h, p["w"], (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2),
                                        dimension_numbers=dims) + p["b"]

  def forward(params, x):
    h = jax.nn.relu(conv(params["enc1"], x, 2))
    h = jax.nn.relu(conv(params["enc2"], h, 2))
    z = jax.nn.relu(h.reshape(h.shape[0], -1) @ params["code"]["w"] + params["code"]["b"])
    h = jax.nn.relu(z @ params["up"]["w"] + params["up"]["b"]).reshape(-1, features[1], 7, 7)
    h = jax.nn.relu(conv_up(params["dec2"], h))
    h = jax.nn.relu(conv_up(params["dec1"], h))
    return conv(params["out"], h, 1)

  tx = optax.adam(1e-3)

  def steps(carry, x_uint8):
    params, opt_state = carry
    x = x_uint8.astype(jnp.float32)[:, None, :, :, 0] / 255.0

    def loss_fn(p):
      return jnp.mean(optax.sigmoid_binary_cross_entropy(forward(p, x), x))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  run = jax.jit(lambda carry, xs: jax.lax.scan(steps, carry, xs, unroll=True), donate_argnums=0)
  calls = _STEPS.value // per_call
  on_device = [jax.device_put(dataset.train.stacked(c * per_call, per_call)["x"])
               for c in range(calls)]
  return _time_jax(run, (params, tx.init(params)), on_device[0], lambda: on_device, per_call)


def _torch_model(model: str, config):
  """The autoencoder's PyTorch twin (experiments/benchmarks/torch_twins.py), sized by `config`."""
  from experiments.benchmarks import torch_twins

  if model == "dense":
    return torch_twins.DenseAutoencoder(torch_twins.FASHION_MNIST_SHAPE,
                                        tuple(config.model.hidden_sizes), config.model.bottleneck)
  return torch_twins.ConvAutoencoder(torch_twins.FASHION_MNIST_SHAPE,
                                     tuple(config.model.features), config.model.bottleneck)


def _run_torch(model: str, settings: dict) -> dict:
  import torch

  from gen import data as data_lib

  torch.manual_seed(0)
  config = _config(model)
  dataset = data_lib.load(config)
  net = _torch_model(model, config)
  memory_format = torch.channels_last if settings.get("channels_last") else torch.contiguous_format
  net = net.to(memory_format=memory_format)
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
  loss_fn = torch.nn.BCEWithLogitsLoss()
  batches = [torch.from_numpy(dataset.train.batch_at(s)["x"]).permute(0, 3, 1, 2).contiguous()
             for s in range(_STEPS.value)]

  def step(x_uint8):
    x = (x_uint8.float() / 255.0).contiguous(memory_format=memory_format)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), x)
    loss.backward()
    optimizer.step()
    return loss

  start = time.perf_counter()
  step(batches[0]).item()
  first_s = time.perf_counter() - start

  def window():
    for x in batches:
      loss = step(x)
    loss.item()

  times = _time_windows(window)
  return {"examples_per_s": _STEPS.value * _BATCH.value / statistics.median(times),
          "compile_s": first_s, "threads": torch.get_num_threads()}


# The conv autoencoder's layers (configs/conv_autoencoder.py) at batch 128:
# name, transposed?, input channels, output channels, input size, stride.
_LAYERS = [("conv 1->32, stride 2, 28->14", False, 1, 32, 28, 2),
           ("conv 32->64, stride 2, 14->7", False, 32, 64, 14, 2),
           ("transposed conv 64->64, 7->14", True, 64, 64, 7, 2),
           ("transposed conv 64->32, 14->28", True, 64, 32, 14, 2),
           ("output conv 32->1, 28->28", False, 32, 1, 28, 1)]


def _median_ms(run) -> float:
  run()  # compile / warm up
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(_STEPS.value // 10):
      run()
    times.append((time.perf_counter() - start) / (_STEPS.value // 10) * 1000)
  return statistics.median(times)


def _per_layer_table():
  """Forward + backward (input and parameter gradients) of each layer, in ms."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from gen.models import layers

  def jax_ms(module, x):
    params = module.init(jax.random.PRNGKey(0), x)
    cotangent = jnp.ones(jax.eval_shape(module.apply, params, x).shape) / 7
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * cotangent), (0, 1)))
    return _median_ms(lambda: jax.block_until_ready(grad(params, x)))

  def torch_ms(layer, x, memory_format):
    layer = layer.to(memory_format=memory_format)
    x = x.contiguous(memory_format=memory_format).requires_grad_()

    def run():
      layer.zero_grad(set_to_none=True)
      x.grad = None
      layer(x).sum().backward()
    return _median_ms(run)

  print(f"batch {_BATCH.value}, forward + backward, median ms over {_REPEATS.value} windows\n")
  print("| layer | PyTorch NCHW | PyTorch channels_last | JAX flax/lax | JAX as shipped |")
  print("|---|---:|---:|---:|---:|")
  rng = np.random.default_rng(0)
  for name, transposed, c_in, c_out, size, stride in _LAYERS:
    x = rng.normal(size=(_BATCH.value, size, size, c_in)).astype(np.float32)
    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    if transposed:
      flax_layer = nn.ConvTranspose(c_out, (3, 3), strides=(stride, stride), padding="SAME")
      shipped = layers.ConvTranspose(c_out, 3, stride)
      torch_layer = torch.nn.ConvTranspose2d(c_in, c_out, 3, stride, padding=1,
                                             output_padding=stride - 1)
    else:
      flax_layer = shipped = nn.Conv(c_out, (3, 3), strides=(stride, stride), padding="SAME")
      torch_layer = torch.nn.Conv2d(c_in, c_out, 3, stride, padding=1)
    cells = [torch_ms(torch_layer, x_torch, torch.contiguous_format),
             torch_ms(torch_layer, x_torch, torch.channels_last),
             jax_ms(flax_layer, jnp.asarray(x)), jax_ms(shipped, jnp.asarray(x))]
    print(f"| {name} | " + " | ".join(f"{ms:.1f}" for ms in cells) + " |", flush=True)


def _run_case(name: str) -> dict:
  framework, model, settings = CASES[name]
  result = (_run_jax if framework == "jax" else _run_torch)(model, settings)
  result.update(case=name, peak_mb=_peak_mb())
  return result


def _launch(name: str) -> dict:
  framework, _, settings = CASES[name]
  env = dict(os.environ)
  # Only this case's flags: a host-device count from the environment would split the CPU.
  env["XLA_FLAGS"] = settings.get("xla_flags", "")
  command = [sys.executable, __file__, f"--case={name}", f"--steps={_STEPS.value}",
             f"--repeats={_REPEATS.value}", f"--batch_size={_BATCH.value}"]
  done = subprocess.run(command, env=env, capture_output=True, text=True)
  lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
  if done.returncode != 0 or not lines:
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"case": name, "error": " / ".join(tail)}
  return json.loads(lines[-1])


def _flops_by_model(results: dict) -> dict:
  """XLA's FLOPs per step of each network ("dense", "conv"), from a JAX case that
  ran it in the shipped form (flax layout; any transposed-convolution form has
  the same multiplications, bar the dilated one's zeros)."""
  flops = {}
  for name, runs in results.items():
    framework, model, settings = CASES[name]
    if framework != "jax" or settings.get("layout") or "conv_transpose_impl" in settings:
      continue
    for run in runs:
      if run.get("flops_per_step"):
        flops.setdefault(model, run["flops_per_step"])
  return flops


def _mfu(flops_per_second: float, device_kind: str):
  """gen.train.compute.mfu for a case's device (measured here, for a CPU)."""
  from gen.train import compute
  return compute.mfu(flops_per_second, device_kind)


def _describe(name: str) -> str:
  framework, model, settings = CASES[name]
  parts = [f"{k}={v}" for k, v in settings.items()]
  return f"{framework} {model}" + (f" ({', '.join(parts)})" if parts else "")


def main(argv):
  del argv
  sys.path.insert(0, ROOT)
  if _CASE.value:
    print(json.dumps(_run_case(_CASE.value)), flush=True)
    return
  if _PER_LAYER.value:
    _per_layer_table()
    return
  names = _CASES.value or list(CASES)
  unknown = [n for n in names if n not in CASES]
  if unknown:
    raise app.UsageError(f"--cases: unknown {', '.join(unknown)}; valid: {', '.join(CASES)}")
  print(f"batch {_BATCH.value}, {_STEPS.value} steps x {_REPEATS.value} windows, "
        f"{_ROUNDS.value} round(s), {os.cpu_count()} CPU(s)\n")
  results = {name: [] for name in names}
  for _ in range(_ROUNDS.value):
    for name in names:
      results[name].append(_launch(name))
  print("| case | setting | examples/s | (range over rounds) | compile (first call) s | "
        "GFLOP/step | GFLOP/s | MFU | peak MB |")
  print("|---|---|---:|---|---:|---:|---:|---:|---:|")
  flops = _flops_by_model(results)
  bases = []
  for name, runs in results.items():
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
      print(f"| {name} | {_describe(name)} | failed: {errors[0][:200]} | | | | | | |",
            flush=True)
      continue
    rates = [r["examples_per_s"] for r in runs]
    spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else ""
    framework, model, _ = CASES[name]
    step_flops = runs[0].get("flops_per_step") if framework == "jax" else flops.get(model)
    cells = ["n/a"] * 3
    if step_flops:
      achieved = step_flops * statistics.median(rates) / _BATCH.value
      value, basis = _mfu(achieved, runs[0].get("device_kind", "cpu"))
      mark = "" if framework == "jax" else "*"
      cells = [f"{step_flops / 1e9:.3g}{mark}", f"{achieved / 1e9:,.1f}",
               "n/a" if value is None else f"{value:.1%}"]
      if basis not in bases:
        bases.append(basis)
    print(f"| {name} | {_describe(name)} | {statistics.median(rates):,.0f} | {spread} | "
          f"{statistics.median(r['compile_s'] for r in runs):.2f} | {' | '.join(cells)} | "
          f"{max(r['peak_mb'] for r in runs):,.0f} |", flush=True)
  for basis in bases:
    print(f"\nMFU: {basis}")
  if any(CASES[name][0] == "torch" for name in results):
    print("*: PyTorch rows use XLA's count of the JAX step of the same network")

if __name__ == "__main__":
  app.run(main)
