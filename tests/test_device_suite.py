"""experiments/device_suite.py: the :gpu configs build, the cases run in the
right order under the deadline, and a tiny run on the CPU writes a report
with every case; likelihood_benchmark's speed table carries FLOPs and MFU."""

import importlib
import json
import math
import os
import subprocess
import sys

import jax
import pytest

from experiments import device_suite
from gen import config as config_lib
from gen import families, platform
from gen.data import SourceInfo
from tests.helpers import ROOT, subprocess_env

FASHION_MNIST = SourceInfo("fashion_mnist", (28, 28, 1), "image", 10)
GPU_CONFIGS = ["autoencoder", "conv_autoencoder", "vae", "conv_vae", "realnvp", "gan", "ddpm"]


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", GPU_CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_configs_validate_and_build(name, dtype):
  config = importlib.import_module(f"configs.{name}").get_config("gpu")
  config.train.compute_dtype = dtype
  for backend in ("cpu", "gpu"):  # "auto" settings resolve for either
    resolved, _ = platform.resolve(config, backend)
    config_lib.validate(resolved)
    family = families.make(resolved, FASHION_MNIST)
    family.check_config()
    # Shapes only: nothing is initialized (35.7M parameters for the U-Net).
    params = jax.eval_shape(family.init_params, jax.random.PRNGKey(0))
  if name == "ddpm":  # Ho et al.'s widths; 28x28 padded to 32x32 by the U-Net
    assert family.model.level_sizes(28) == [32, 16, 8, 4]
    assert _count(params) == 35_741_697
  if name == "gan":
    assert _count(params) == 4_794_754


def test_plan_runs_the_most_important_cases_first():
  cases = device_suite.plan_cases("accelerator", list(device_suite.FAMILIES),
                                  list(device_suite.DTYPES))
  ids = [case["id"] for case in cases]
  assert len(ids) == len(set(ids))
  assert ids[:4] == ["jax-ddpm-bfloat16-b128", "jax-ddpm-float32-b128",
                     "torch-ddpm_ho-bfloat16-b128", "torch-ddpm_ho-float32-b128"]
  assert ids[4:8] == ["jax-dcgan-bfloat16-b256", "jax-dcgan-float32-b256",
                      "torch-dcgan_gpu-bfloat16-b256", "torch-dcgan_gpu-float32-b256"]
  sweep = [case["batch"] for case in cases if case["group"] == "sweep"]
  assert sweep == sorted(sweep) and sweep[0] > 128
  assert ids.index("torch-ddpm_ho-bfloat16-b128-compile") < ids.index(
      "jax-autoencoder-bfloat16-b4096")
  # Every family in both dtypes, each at its :gpu batch.
  jax_cases = {(c["family"], c["dtype"]): c["batch"] for c in cases
               if c["kind"] == "jax" and c["group"] == "main"}
  assert len(jax_cases) == 2 * len(device_suite.FAMILIES)
  assert jax_cases["autoencoder", "float32"] == 4096
  assert jax_cases["conv_autoencoder", "float32"] == 1024


def _fake_result(case, seconds, status="ok"):
  result = {"id": case["id"], "status": status, "reasons": {}, "wall_seconds": seconds,
            "stage": "done"}
  if status == "ok":
    result.update(examples_per_second=1000.0, steps_per_second=1000.0 / case["batch"],
                  compile_seconds=1.0, peak_bytes_in_use=2 ** 30,
                  device_kind="NVIDIA H100 80GB HBM3", platform="gpu", device_count=1)
    if case["kind"] == "jax":
      result.update(flops_per_step=1e12, achieved_flops_per_second=1e12 * 1000 / case["batch"])
  else:
    result["reason"] = "RESOURCE_EXHAUSTED: out of memory"
  return result


def test_suite_stops_the_sweep_and_reports_what_did_not_fit(tmp_path, monkeypatch):
  cases = device_suite.plan_cases("accelerator", ["ddpm", "autoencoder"], ["bfloat16"],
                                  compile_on=False)
  now = [0.0]

  def fake_run_case(case, limit, out):
    assert limit <= case["limit_s"]
    seconds = 30.0
    now[0] += seconds
    return _fake_result(case, seconds, "oom" if case["batch"] == 1024 else "ok")

  monkeypatch.setattr(device_suite, "run_case", fake_run_case)
  header = dict(device_suite.host_header("/nowhere"), size="accelerator", deadline_s=130)
  # 130 s, 30 s a case: DDPM, its twin, sweep 512 and 1024 (out of memory);
  # the autoencoder would start with 10 s left.
  results = device_suite.run_suite(cases, str(tmp_path), 130, 20, 150, header,
                                   clock=lambda: now[0])
  status = {r["id"]: (r["status"], r.get("reason", "")) for r in results}
  assert status["jax-ddpm-bfloat16-b512"][0] == "ok"
  assert status["jax-ddpm-bfloat16-b1024"][0] == "oom"
  assert status["jax-ddpm-bfloat16-b2048"] == ("not run",
                                               "not run (sweep stopped: b1024 oom)")
  assert status["jax-autoencoder-bfloat16-b4096"][1].startswith("not run (time")
  report = json.loads((tmp_path / "device_suite.json").read_text())
  assert report["not_run"] == ["jax-autoencoder-bfloat16-b4096"]
  rows = {row["id"]: row for row in report["cases"]}
  # MFU over the H100's dense bf16 peak; JAX over its twin at the same batch.
  ddpm = rows["jax-ddpm-bfloat16-b128"]
  assert ddpm["mfu"] == pytest.approx(1e12 * 1000 / 128 / 989.4e12)
  assert ddpm["jax_over_pytorch"] == {"eager": pytest.approx(1.0)}
  assert "b512 (b1024: oom)" in report["goals"][0]
  markdown = (tmp_path / "device_suite.md").read_text()
  assert all(f"| {case['id']} |" in markdown for case in cases)
  assert "--only=jax-autoencoder-bfloat16-b4096" in markdown


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def test_tiny_run_reports_every_case(tmp_path):
  """The suite end to end on the CPU: subprocesses, JSON and the table.

  DDPM (sampling, the twin, the sweep's bookkeeping) and the dense
  autoencoder, bfloat16 only; the sweep and ancestral sampling are given no
  time, so they are reported as not run, with their reason.
  """
  out = tmp_path / "suite"
  command = [sys.executable, os.path.join(ROOT, "experiments", "device_suite.py"),
             "--size=tiny", "--families=autoencoder,ddpm", "--dtypes=bfloat16",
             "--sweep_share_s=0", "--optional_budget_s=0", f"--out={out}"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400,
                        env=subprocess_env())
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads((out / "device_suite.json").read_text())
  rows = {row["id"]: row for row in report["cases"]}
  assert list(rows) == ["jax-ddpm-bfloat16-b8", "torch-ddpm-bfloat16-b8",
                        "jax-ddpm-bfloat16-b16", "jax-autoencoder-bfloat16-b8"]
  for name in ("jax-ddpm-bfloat16-b8", "jax-autoencoder-bfloat16-b8"):
    row = rows[name]
    assert row["status"] == "ok", row
    for key in ("examples_per_second", "compile_seconds", "flops_per_step",
                "achieved_flops_per_second", "mfu"):
      assert _finite(row[key]) and row[key] > 0, (name, key, row.get(key))
    assert row["peak_bytes_in_use"] is None and row["memory_reason"]  # a CPU has none
    assert "CPU" in row["mfu_basis"]
  sampling = rows["jax-ddpm-bfloat16-b8"]["sampling"]
  assert _finite(sampling["ddim-10"]["ms_per_sample"])
  assert sampling["ancestral-100"]["skipped"].startswith("time")
  assert _finite(rows["jax-autoencoder-bfloat16-b8"]["sampling"]["sample"]["ms_per_sample"])
  assert rows["jax-ddpm-bfloat16-b16"]["status"] == "not run"
  assert rows["jax-ddpm-bfloat16-b16"]["reason"].startswith("not run (time")
  twin = rows["torch-ddpm-bfloat16-b8"]
  if twin["status"] == "ok":
    assert _finite(twin["examples_per_second"])
    assert "not this case's network" in twin["reasons"]["flops_per_step"]
  else:  # no torch or diffusers here: said so
    assert twin["status"] == "not run" and twin["reason"]
  markdown = (out / "device_suite.md").read_text()
  assert markdown.count("| jax-") + markdown.count("| torch-") == len(rows)
  assert "| jax-ddpm-bfloat16-b8 | JAX DDPM U-Net | 8 | bfloat16 |" in markdown
  assert markdown in done.stdout  # printed as written


def test_likelihood_benchmark_speed_table_has_flops_and_mfu():
  command = [sys.executable,
             os.path.join(ROOT, "experiments", "benchmarks", "likelihood_benchmark.py"),
             "--configs=configs/vae.py:digits", "--steps=2", "--repeats=1", "--samples=4"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=subprocess_env())
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  header = next(l for l in done.stdout.splitlines() if l.startswith("| config"))
  row = next(l for l in done.stdout.splitlines() if l.startswith("| configs/vae.py:digits"))
  cells = dict(zip([c.strip() for c in header.split("|")[1:-1]],
                   [c.strip() for c in row.split("|")[1:-1]]))
  assert float(cells["GFLOP/step"]) > 0
  assert float(cells["GFLOP/s"].replace(",", "")) > 0
  assert cells["MFU"].endswith("%")
  assert "MFU: measured float32" in done.stdout  # the CPU's peak, said in a note
