"""Optimizers by name, schedules and clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from gen.train import optim


def _opt(**overrides):
  opt = default.get_config().optimizer
  for key, value in overrides.items():
    opt[key] = value
  return opt


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("adam", 0.1), ("adamw", 0.1),
                                     ("adadelta", 1.0), ("rmsprop", 0.01)])
def test_every_optimizer_minimizes_a_quadratic(name, lr):
  tx = optim.make_optimizer(_opt(name=name, learning_rate=lr), num_steps=3000)
  target = jnp.array([1.0, -2.0, 3.0])
  params = jnp.zeros(3)
  state = tx.init(params)
  loss = lambda p: jnp.sum((p - target) ** 2)
  start = loss(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
  for _ in range(3000):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  assert loss(params) < 0.05 * start


def test_warmup_then_cosine_schedule():
  schedule = optim.make_schedule(
      _opt(learning_rate=1.0, schedule="cosine", warmup_steps=10, end_factor=0.1), 110)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.55, rtol=1e-5)  # halfway down the cosine
  np.testing.assert_allclose(float(schedule(110)), 0.1, rtol=1e-5)


def test_gradient_clipping_bounds_the_update():
  tx = optim.make_optimizer(_opt(name="sgd", learning_rate=1.0, momentum=0.0,
                                 grad_clip_norm=0.5), 10)
  params = jnp.zeros(4)
  updates, _ = tx.update(jnp.full(4, 100.0), tx.init(params), params)
  np.testing.assert_allclose(float(optax.tree.norm(updates)), 0.5, rtol=1e-5)


def test_unknown_names_are_reported():
  with pytest.raises(ValueError, match="config.optimizer.name='adagrad'.*valid: sgd"):
    optim.make_optimizer(_opt(name="adagrad"), 10)
  with pytest.raises(ValueError, match="config.optimizer.schedule='step'"):
    optim.make_schedule(_opt(schedule="step"), 10)
