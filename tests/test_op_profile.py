"""experiments/benchmarks/op_profile.py sorts a step's ops by kind and pass correctly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import op_profile


def _conv_train_step():
  """A jitted conv + dense step with its forward, backward and update."""
  def loss(params, x):
    h = jax.lax.conv_general_dilated(x, params["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.tanh(h.reshape(x.shape[0], -1) @ params["dense"]))

  @jax.jit
  def step(params, x):
    grads = jax.grad(loss)(params, x)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * jnp.sqrt(jnp.abs(g)), params, grads)

  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32),
            "dense": jnp.asarray(rng.normal(size=(16 * 16 * 16, 4)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(8, 16, 16, 8)), jnp.float32)
  return step, params, x


def test_hlo_instructions_are_sorted_into_kinds_and_passes():
  step, params, x = _conv_train_step()
  instructions, computations = op_profile._parse_hlo(step.lower(params, x).compile().as_text())
  kinds = {op_profile.classify_hlo(name, instructions, computations)
           for name, (opcode, _, _) in instructions.items() if opcode != "parameter"}
  assert ("convolution", "forward") in kinds
  assert ("convolution", "backward") in kinds
  assert ("matmul", "forward") in kinds
  assert any(kind == "elementwise and reductions" and phase == "update"
             for kind, phase in kinds)  # the sqrt and the update outside the model


def test_overlapping_op_intervals_cover_their_union():
  assert op_profile._covered_ns([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17


def test_a_profile_accounts_for_the_wall_time_and_finds_the_convolutions():
  step, params, x = _conv_train_step()
  hlo = step.lower(params, x).compile().as_text()
  jax.block_until_ready(step(params, x))
  profile = op_profile.profile_jax(lambda: jax.block_until_ready(step(params, x)), hlo, 3)
  total = sum(ms for _, _, ms in profile["rows"])
  assert total == pytest.approx(profile["recorded_ms"], rel=1e-6)
  assert 0 <= profile["uncovered_ms"] < profile["wall_ms"]
  by_kind = {}
  for kind, _, ms in profile["rows"]:
    by_kind[kind] = by_kind.get(kind, 0.0) + ms
  assert by_kind.get("convolution", 0) > 0
  assert profile["top"] and all(len(row) == 5 for row in profile["top"])


@pytest.mark.parametrize("name, expected", [
    ("aten::convolution_backward", ("convolution", "backward")),
    ("aten::mkldnn_convolution", ("convolution", "forward")),
    ("aten::addmm", ("matmul", "forward")),
    ("aten::native_group_norm_backward", ("normalization", "backward")),
    ("aten::_fused_adam_", ("elementwise and reductions", "update")),
    ("aten::bernoulli_", ("random numbers", "forward")),
    ("aten::copy_", ("layout copies", "forward")),
    ("aten::silu", ("elementwise and reductions", "forward")),
])
def test_pytorch_ops_are_sorted_as_xla_ops_are(name, expected):
  assert op_profile.classify_aten(name) == expected
