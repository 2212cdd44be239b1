"""FLOP counts of compiled programs, the peak table, and MFU on the CPU."""

import jax
import jax.numpy as jnp
import pytest

from gen.train import compute


def test_compiled_flops_of_a_matmul_is_2mkn():
  m, k, n = 64, 48, 32
  a = jax.ShapeDtypeStruct((m, k), jnp.float32)
  b = jax.ShapeDtypeStruct((k, n), jnp.float32)
  # XLA:CPU counts a dot exactly (one multiply and one add per term).
  assert compiled_flops_or_skip(jax.jit(jnp.matmul), a, b) == 2 * m * k * n


def test_compiled_flops_of_two_matmuls_is_their_sum():
  a = jax.ShapeDtypeStruct((64, 48), jnp.float32)
  b = jax.ShapeDtypeStruct((48, 32), jnp.float32)
  c = jax.ShapeDtypeStruct((32, 16), jnp.float32)
  flops = compiled_flops_or_skip(jax.jit(lambda a, b, c: (a @ b) @ c), a, b, c)
  assert flops == 2 * 64 * 48 * 32 + 2 * 64 * 32 * 16


def test_compiled_flops_passes_keyword_arguments_and_jits_plain_functions():
  a = jnp.ones((8, 4))
  flops = compiled_flops_or_skip(lambda x, scale: scale * (x @ x.T), a, scale=2.0)
  assert flops >= 2 * 8 * 4 * 8


def test_flops_of_reads_every_form_of_cost_analysis():
  assert compute._flops_of({"flops": 10.0}) == 10.0
  assert compute._flops_of([{"flops": 10.0, "bytes accessed": 4.0}]) == 10.0
  assert compute._flops_of(None) is None
  assert compute._flops_of([]) is None
  assert compute._flops_of({"flops": -1.0}) is None


def test_peak_table_finds_known_kinds_and_nothing_else():
  h100 = compute.find_peak("NVIDIA H100 80GB HBM3")
  assert h100.name == "NVIDIA H100 SXM" and h100.flops_per_second == pytest.approx(989.4e12)
  assert compute.find_peak("NVIDIA H100 PCIe").name == "NVIDIA H100 PCIe"
  assert compute.find_peak("NVIDIA H200").flops_per_second == pytest.approx(989.4e12)
  assert compute.find_peak("NVIDIA A100-SXM4-40GB").flops_per_second == 312e12
  assert compute.find_peak("NVIDIA A10").flops_per_second == 125e12
  assert compute.find_peak("NVIDIA A10G").flops_per_second is None  # no datasheet
  assert compute.find_peak("Tesla T4").name == "NVIDIA T4"
  assert compute.find_peak("TPU v5 lite").name == "TPU v5e"
  assert compute.find_peak("TPU v5").name == "TPU v5p"
  assert compute.find_peak("TPU v6 lite").flops_per_second == 918e12
  # Near misses must not borrow a neighbour's figure.
  assert compute.find_peak("NVIDIA L40S") is None
  assert compute.find_peak("TPU v4 lite") is None
  assert compute.find_peak("Some Unknown GPU") is None
  assert compute.mfu(1e12, "Some Unknown GPU")[0] is None


def test_mfu_on_an_accelerator_divides_by_the_datasheet_peak():
  value, basis = compute.mfu(494.7e12, "NVIDIA H100 80GB HBM3")
  assert value == pytest.approx(0.5)
  assert "datasheet" in basis


def test_mfu_on_cpu_of_a_measured_rate_is_a_fraction():
  rate = compute.measure_cpu_matmul_flops(size=512, repeats=3)
  value, basis = compute.mfu(rate, jax.devices("cpu")[0])
  assert 0.0 < value < 1.5
  assert "measured" in basis


def compiled_flops_or_skip(fn, *args, **kwargs) -> float:
  flops = compute.compiled_flops(fn, *args, **kwargs)
  if flops is None:
    pytest.skip("this backend has no cost analysis")
  return flops
