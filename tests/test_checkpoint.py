"""Checkpoint retention, the refusal to save NaN, and orbax's log filter."""

import logging

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gen.train.checkpoint import Checkpointer, NonFiniteCheckpointError, _QuietOrbax
from gen.train.state import TrainState


def _state(step, value=1.0):
  params = {"w": jnp.full((3,), value)}
  return TrainState(step=jnp.array(step, jnp.int32), params=params,
                    opt_state=optax.adam(1e-3).init(params), rng=jax.random.PRNGKey(0),
                    skipped_updates=jnp.array(0, jnp.int32),
                    ema_params=params)


def _checkpointer(tmp_path, keep=2, mode="min"):
  config = ml_collections.ConfigDict(dict(keep=keep, best_metric="val/loss", best_mode=mode))
  return Checkpointer(str(tmp_path), config)


@pytest.mark.parametrize("mode,best", [("min", 20), ("max", 40)])
def test_keeps_the_last_k_and_the_best(tmp_path, mode, best):
  checkpoints = _checkpointer(tmp_path, keep=2, mode=mode)
  losses = {10: 0.5, 20: 0.1, 30: 0.7, 40: 0.9, 50: None, 60: 0.8}
  for step, loss in losses.items():
    checkpoints.save(step, _state(step), None if loss is None else {"val/loss": loss})
  checkpoints.wait()
  assert checkpoints.manager.all_steps() == sorted({best, 50, 60})
  assert checkpoints.best_step() == best
  checkpoints.close()


def test_restore_returns_what_was_saved(tmp_path):
  checkpoints = _checkpointer(tmp_path)
  checkpoints.save(7, _state(7, value=2.5))
  checkpoints.wait()
  restored = checkpoints.restore(_state(0))
  assert int(restored.step) == 7
  np.testing.assert_array_equal(restored.params["w"], np.full(3, 2.5))
  np.testing.assert_array_equal(restored.ema_params["w"], np.full(3, 2.5))
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(_state(0))
  checkpoints.close()


def test_never_writes_nan(tmp_path):
  checkpoints = _checkpointer(tmp_path)
  checkpoints.save(1, _state(1))
  checkpoints.wait()
  with pytest.raises(NonFiniteCheckpointError, match="last good checkpoint: .*checkpoints/1"):
    checkpoints.save(2, _state(2, value=float("nan")))
  checkpoints.wait()
  assert checkpoints.manager.all_steps() == [1]
  checkpoints.close()


def test_state_replicated_over_devices_restores_onto_the_targets_sharding(tmp_path):
  """Saved from host copies, restored as jax arrays placed like the target."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  assert jax.device_count() == 8, "conftest sets 8 host devices"
  replicated = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec())
  checkpoints = _checkpointer(tmp_path)
  checkpoints.save(3, jax.device_put(_state(3, value=1.5), replicated))
  checkpoints.wait()
  restored = checkpoints.restore(jax.device_put(_state(0), replicated))
  for leaf in jax.tree_util.tree_leaves(restored):
    assert isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
  np.testing.assert_array_equal(restored.params["w"], np.full(3, 1.5))
  assert int(restored.step) == 3
  checkpoints.close()


class _Records(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append((record.levelno, record.getMessage()))


def test_quiet_filter_drops_orbax_chatter_but_keeps_its_real_warnings(tmp_path):
  absl_logger = logging.getLogger("absl")
  everything, filtered = _Records(), _Records()
  filtered.addFilter(_QuietOrbax())
  level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  for handler in (everything, filtered):
    absl_logger.addHandler(handler)
  try:
    checkpoints = _checkpointer(tmp_path)
    checkpoints.save(1, _state(1))  # between evaluations: no metrics, by design
    checkpoints.wait()
    checkpoints.close()
    absl_logging.warning("not from orbax")
  finally:
    for handler in (everything, filtered):
      absl_logger.removeHandler(handler)
    absl_logger.setLevel(level)
  unfiltered_text = " ".join(message for _, message in everything.messages)
  # Without the filter orbax logs INFO on saving and warns about the missing metrics.
  assert "did not provide metrics" in unfiltered_text
  assert any(levelno == logging.INFO for levelno, _ in everything.messages)
  assert filtered.messages == [(logging.WARNING, "not from orbax")]
  record = logging.LogRecord("absl", logging.WARNING, "/x/orbax/checkpoint/manager.py", 1,
                             "checkpoint directory is not writable", None, None)
  assert _QuietOrbax().filter(record)
