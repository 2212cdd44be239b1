"""Where a train step's time goes, op by op, in JAX and in PyTorch.

  python experiments/benchmarks/twin_benchmark.py --profile --cases=ddpm,dcgan

JAX: the step runs under jax.profiler; XLA:CPU records one event per thunk
(a fusion, a convolution, a while loop...) on the thread that ran it. Each
event is matched to its HLO instruction in the compiled program, and the
instruction's source (its metadata op_name, e.g.
"transpose(jvp(UNet))/ResBlock_0/Conv_0/conv_general_dilated") says what it
computes and in which pass:
  forward    op_name under jvp(...)
  backward   op_name under transpose(jvp(...)): gradients
  update     everything outside the model: optimizer, EMA, finiteness checks
  no source  ops XLA made that keep no source, mostly layout copies for
             the backward pass (a convolution or matmul without one is a
             gradient and is counted as backward: the update has none)
PyTorch: torch.profiler's self CPU time per aten op, sorted into the same
kinds by op name (aten::convolution_backward is a backward convolution...).

Each kind is the time its ops ran, per step, summed over threads (XLA:CPU
runs independent thunks side by side on its threads). Beside it, the wall
time per step and the part of it that no recorded op covers: for XLA:CPU,
the kernels it hands to Eigen's thread pool (its own convolutions and
matmuls) run partly after their op's event ends, and the executor's own
work between ops; for PyTorch, Python and the autograd engine.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time
from typing import Callable, Iterable

KINDS = ("convolution", "matmul", "normalization", "attention (not matmul)",
         "random numbers", "layout copies", "elementwise and reductions", "other")
PHASES = ("forward", "backward", "update", "no source")

_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) ")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%(\S+) = (.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_TOP = 25  # instructions listed by time
_NORMS = ("GroupNorm", "BatchNorm", "LayerNorm", "BatchStatisticsNorm", "ActNorm")


def _parse_hlo(text: str) -> tuple[dict, dict]:
  """HLO text -> ({instruction: (opcode, op_name, called computation)},
  {computation: [(opcode, op_name)]})."""
  instructions, computations = {}, collections.defaultdict(list)
  current = None
  for line in text.splitlines():
    match = _COMPUTATION.match(line)
    if match:
      current = match.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match or current is None:
      continue
    name, rest = match.groups()
    opcode = _OPCODE.search(" " + rest.split(", metadata=")[0])
    op_name = _OP_NAME.search(rest)
    calls = _CALLS.search(rest)
    entry = (opcode.group(1) if opcode else "?", op_name.group(1) if op_name else "",
             calls.group(1) if calls else None)
    instructions[name] = entry
    computations[current].append(entry[:2])
  return instructions, computations


def classify_hlo(name: str, instructions: dict, computations: dict) -> tuple[str, str]:
  """(kind, phase) of one HLO instruction, from its opcode and its ops' source."""
  opcode, op_name, calls = instructions[name]
  inner = computations.get(calls, []) if opcode == "fusion" else []
  opcodes = {opcode} | {o for o, _ in inner}
  sources = [op_name] + [n for _, n in inner if n]
  text = " ".join(sources)
  if "transpose(jvp(" in text:
    phase = "backward"
  elif "jvp(" in text:
    phase = "forward"
  elif text.strip():
    phase = "update"
  else:
    phase = "no source"
  if "convolution" in opcodes:
    kind = "convolution"
  elif "dot" in opcodes:
    kind = "matmul"
  elif opcode in ("while", "rng-bit-generator") or re.search(
      r"threefry|_uniform|_bernoulli|_normal|random_bits", text):
    kind = "random numbers"
  elif any(norm in text for norm in _NORMS):
    kind = "normalization"
  elif "Attention" in text:
    kind = "attention (not matmul)"
  elif opcodes - {"fusion"} <= {"parameter", "copy", "transpose", "bitcast", "reshape", "concatenate",
                   "slice", "pad", "broadcast", "constant", "tuple", "get-tuple-element"}:
    kind = "layout copies"
  elif opcodes & {"add", "multiply", "subtract", "divide", "maximum", "reduce", "exponential",
                  "select", "compare", "rsqrt", "sqrt", "tanh", "logistic", "negate",
                  "convert", "log", "and", "or", "abs", "power", "minimum"}:
    kind = "elementwise and reductions"
  else:
    kind = "other"
  if phase == "no source" and kind in ("convolution", "matmul"):
    # The optimizer multiplies no matrices: these are gradients that XLA
    # rewrote (a weight gradient's convolution) and left without a source.
    phase = "backward"
  return kind, phase


def _leaf_events(lines, names) -> Iterable:
  """Events named in `names` that contain no other such event of their line
  (a while loop's body thunks are recorded inside the loop's own event)."""
  for line in lines:
    events = sorted((e for e in line.events if e.name in names),
                    key=lambda e: (e.start_ns, -e.duration_ns))
    for index, event in enumerate(events):
      following = events[index + 1] if index + 1 < len(events) else None
      if following is not None and following.start_ns < event.start_ns + event.duration_ns:
        continue  # it has a child: count the children instead
      yield event


def profile_jax(run_step: Callable[[], None], hlo_text: str, steps: int) -> dict:
  """Per-(kind, phase) thread-ms per step of `steps` calls of run_step().

  run_step: runs one compiled step and blocks until it is done (already
  compiled and warmed up). hlo_text: that step's compiled program
  (jitted.lower(...).compile().as_text()).
  Returns {"wall_ms": ms per step, "recorded_ms": the ops' own ms per step
  (threads summed), "rows": [[kind, phase, ms of the step]], "top": the
  _TOP instructions by time, [[name, ms per step, kind, phase, source]]}
  (JSON-ready).
  """
  import jax
  from jax.profiler import ProfileData

  instructions, computations = _parse_hlo(hlo_text)
  with tempfile.TemporaryDirectory() as directory:
    jax.profiler.start_trace(directory)
    start = time.perf_counter()
    for _ in range(steps):
      run_step()
    wall = time.perf_counter() - start
    jax.profiler.stop_trace()
    data = ProfileData.from_file(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0])
  rows, by_instruction = collections.Counter(), collections.Counter()
  intervals = []
  plane = data.find_plane_with_name("/host:CPU")
  for event in _leaf_events(plane.lines, instructions):
    rows[classify_hlo(event.name, instructions, computations)] += event.duration_ns / 1e6
    by_instruction[event.name] += event.duration_ns / 1e6 / steps
    intervals.append((event.start_ns, event.start_ns + event.duration_ns))
  result = _per_step(rows, wall, steps, _covered_ns(intervals) / 1e6)
  result["top"] = [[name, ms, *classify_hlo(name, instructions, computations),
                    instructions[name][1]]
                   for name, ms in by_instruction.most_common(_TOP)]
  return result


def _covered_ns(intervals: list[tuple[float, float]]) -> float:
  """Length of the union of [start, end) intervals."""
  total, reach = 0.0, float("-inf")
  for start, end in sorted(intervals):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total


def _per_step(rows: collections.Counter, wall_seconds: float, steps: int,
              covered_ms: float) -> dict:
  """Per step: each kind's recorded op time (threads summed), the wall time,
  and the wall time that no recorded op covers (covered_ms: the union of the
  ops' intervals over all steps)."""
  return {"wall_ms": 1000 * wall_seconds / steps,
          "recorded_ms": sum(rows.values()) / steps,
          "uncovered_ms": max(0.0, 1000 * wall_seconds - covered_ms) / steps,
          "rows": [[kind, phase, value / steps] for (kind, phase), value in rows.items()]}


def per_step_of_calls(profile: dict, steps_per_call: int) -> dict:
  """A profile of compiled calls of several train steps, per train step."""
  scale = 1 / steps_per_call
  return dict(profile, wall_ms=profile["wall_ms"] * scale,
              recorded_ms=profile["recorded_ms"] * scale,
              uncovered_ms=profile["uncovered_ms"] * scale,
              rows=[[kind, phase, ms * scale] for kind, phase, ms in profile["rows"]],
              top=[[name, ms * scale, *rest] for name, ms, *rest in profile.get("top", [])])


def classify_aten(name: str) -> tuple[str, str]:
  """(kind, phase) of a PyTorch op from its name, as classify_hlo sorts XLA's."""
  lowered = name.lower()
  phase = "backward" if "backward" in lowered or lowered.startswith("autograd") else "forward"
  if re.search(r"adam|_foreach|lerp|clip_grad|zero_", lowered):
    return ("elementwise and reductions", "update")
  if "conv" in lowered or "mkldnn_convolution" in lowered:
    kind = "convolution"
  elif re.search(r"addmm|\bmm\b|::mm|bmm|matmul|linear|baddbmm", lowered):
    kind = "matmul"
  elif "norm" in lowered:
    kind = "normalization"
  elif "attention" in lowered or "softmax" in lowered:
    kind = "attention (not matmul)"
  elif re.search(r"randn|rand|normal|bernoulli|randint|uniform", lowered):
    kind = "random numbers"
  elif re.search(r"copy|contiguous|clone|permute|transpose|cat|pad|view|reshape|to\b", lowered):
    kind = "layout copies"
  else:
    kind = "elementwise and reductions"
  return kind, phase


def profile_torch(run_step: Callable[[], None], steps: int) -> dict:
  """profile_jax's result for a PyTorch step: self CPU time of each aten op."""
  import torch
  from torch.profiler import ProfilerActivity, profile

  with profile(activities=[ProfilerActivity.CPU]) as prof:
    start = time.perf_counter()
    for _ in range(steps):
      run_step()
    wall = time.perf_counter() - start
  rows = collections.Counter()
  for average in prof.key_averages():
    if average.key.startswith("ProfilerStep") or average.self_cpu_time_total <= 0:
      continue
    rows[classify_aten(average.key)] += average.self_cpu_time_total / 1000
  del torch
  # Ops run one after another on the calling thread (each parallel inside):
  # their self times cover the wall time but for Python and the autograd engine.
  return _per_step(rows, wall, steps, min(sum(rows.values()), 1000 * wall))


def print_profiles(title: str, profiles: dict[str, dict]) -> None:
  """One markdown table: a row per (kind, phase), a column per profile."""
  names = list(profiles)
  tables = {name: {(kind, phase): ms for kind, phase, ms in profile["rows"]}
            for name, profile in profiles.items()}
  keys = sorted({key for table in tables.values() for key in table},
                key=lambda key: (KINDS.index(key[0]), PHASES.index(key[1])))
  print(f"\n{title}: ms per step that ops of each kind ran (threads summed; share of the "
        "recorded op time)\n")
  print("| op kind | pass | " + " | ".join(names) + " |")
  print("|---|---|" + "---:|" * len(names))
  for kind, phase in keys:
    cells = []
    for name in names:
      value = tables[name].get((kind, phase), 0.0)
      share = value / max(profiles[name]["recorded_ms"], 1e-9)
      cells.append(f"{value:.1f} ({share:.0%})" if value >= 0.05 else "")
    print(f"| {kind} | {phase} | " + " | ".join(cells) + " |")
  for label, key in (("**recorded op time**", "recorded_ms"), ("**wall time per step**", "wall_ms"),
                     ("wall time no recorded op covers", "uncovered_ms")):
    print(f"| {label} | | " + " | ".join(f"{profiles[n][key]:.1f}" for n in names) + " |")
  print(flush=True)


def print_top(title: str, top: list) -> None:
  """The instructions that took longest, with their kind, pass and source."""
  print(f"\n{title}: the longest XLA ops, ms per step\n")
  print("| ms | instruction | kind | pass | source |")
  print("|---:|---|---|---|---|")
  for name, ms, kind, phase, source in top:
    print(f"| {ms:.2f} | {name} | {kind} | {phase} | {source.removeprefix('jit(run_steps)/')} |")
