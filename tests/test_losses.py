"""Each loss of the course's table against a float64 NumPy reference."""

import numpy as np
import pytest

from gen import losses

EPS = losses.EPSILON


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# Written from the definitions, one example at a time, in float64.
def _reference(name, pred, target):
  out = []
  for p, t in zip(pred.astype(np.float64), target.astype(np.float64)):
    if name == "mean_squared_error":
      v = np.mean((p - t) ** 2)
    elif name == "mean_absolute_error":
      v = np.mean(np.abs(p - t))
    elif name == "mean_squared_logarithmic_error":
      v = np.mean((np.log(1 + np.maximum(p, EPS)) - np.log(1 + np.maximum(t, EPS))) ** 2)
    elif name == "binary_crossentropy":
      q = np.clip(p, EPS, 1 - EPS)
      v = np.mean(-(t * np.log(q) + (1 - t) * np.log(1 - q)))
    elif name == "categorical_crossentropy":
      q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
      v = np.mean(-(t * np.log(q)).sum(-1))
    elif name == "kullback_leibler":
      tc, q = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
      v = np.mean((tc * np.log(tc / q)).sum(-1))
    out.append(v)
  return np.array(out)


def _data(seed=0, shape=(6, 4, 5)):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, shape).astype(np.float32)
  target_unit = rng.uniform(0, 1, shape).astype(np.float32)
  target_dist = _softmax(rng.normal(0, 1, shape)).astype(np.float32)
  return logits, target_unit, target_dist


_PROBABILITY_LOSSES = ("binary_crossentropy", "categorical_crossentropy", "kullback_leibler")
_CASES = [(name, activation) for name in sorted(losses.LOSSES)
          for activation in ("linear", "relu", "sigmoid", "softmax", "tanh")
          # Cross-entropies are only defined on probability outputs.
          if name not in _PROBABILITY_LOSSES or activation in ("sigmoid", "softmax")]


@pytest.mark.parametrize("name,activation", _CASES)
def test_matches_numpy_reference(name, activation):
  logits, target_unit, target_dist = _data()
  target = target_dist if name in ("categorical_crossentropy", "kullback_leibler") else target_unit
  act = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "sigmoid": _sigmoid,
         "softmax": _softmax, "tanh": np.tanh}[activation]
  pred = act(logits.astype(np.float64))
  got = np.asarray(losses.reconstruction_loss(name, activation, logits, target))
  assert got.shape == (logits.shape[0],)
  # From-logits forms skip the clipping, which only matters below EPS.
  np.testing.assert_allclose(got, _reference(name, pred, target), rtol=2e-5, atol=1e-6)


def test_loss_is_zero_exactly_when_prediction_equals_target():
  _, target_unit, target_dist = _data(1)
  for name in ("mean_squared_error", "mean_absolute_error", "mean_squared_logarithmic_error"):
    assert np.all(np.asarray(losses.LOSSES[name](target_unit, target_unit)) == 0)
  np.testing.assert_allclose(losses.kullback_leibler(target_dist, target_dist), 0, atol=1e-6)


def test_binary_crossentropy_from_logits_is_finite_and_exact_for_large_logits():
  logits = np.array([[-500.0, -50.0, 0.0, 50.0, 500.0]], np.float32)
  target = np.array([[1.0, 0.0, 0.5, 1.0, 0.0]], np.float32)
  got = np.asarray(losses.reconstruction_loss("binary_crossentropy", "sigmoid", logits, target))
  # Per element: 500, ~2e-22, log 2, ~2e-22, 500 -> mean (1000 + log 2) / 5.
  np.testing.assert_allclose(got, [(1000.0 + np.log(2.0)) / 5], rtol=1e-6)
  # The probability form clips instead and gives a bounded, wrong answer.
  clipped = np.asarray(losses.binary_crossentropy(_sigmoid(logits.astype(np.float64)), target))
  assert clipped[0] < 10


def test_categorical_losses_from_logits_are_finite_for_large_logits():
  logits = np.array([[[1000.0, -1000.0, 0.0]]], np.float32)
  target = np.array([[[0.0, 1.0, 0.0]]], np.float32)
  cce = losses.reconstruction_loss("categorical_crossentropy", "softmax", logits, target)
  kl = losses.reconstruction_loss("kullback_leibler", "softmax", logits, target)
  np.testing.assert_allclose(cce, [2000.0], rtol=1e-6)
  np.testing.assert_allclose(kl, [2000.0], rtol=1e-6)  # one-hot: KL = cross-entropy


def test_gradients_are_finite_for_saturated_sigmoid():
  import jax
  logits = np.array([[-200.0, 200.0]], np.float32)
  target = np.array([[1.0, 0.0]], np.float32)
  grad = jax.grad(lambda z: losses.reconstruction_loss(
      "binary_crossentropy", "sigmoid", z, target).sum())(logits)
  np.testing.assert_allclose(grad, [[-0.5, 0.5]], rtol=1e-6)  # d/dz = (s(z) - t) / n


@pytest.mark.parametrize("loss,activation,fits", [
    ("binary_crossentropy", "linear", "'sigmoid'"),
    ("binary_crossentropy", "relu", "'sigmoid'"),
    ("categorical_crossentropy", "linear", "'softmax' or 'sigmoid'"),
    ("kullback_leibler", "tanh", "'softmax' or 'sigmoid'"),
    ("mean_squared_logarithmic_error", "tanh", "'linear'"),
])
def test_contradicting_pairing_warns_with_the_fitting_activation(loss, activation, fits):
  warning = losses.check_pairing(loss, activation)
  assert warning is not None
  assert f"config.model.loss={loss!r}" in warning and f"output_activation={fits}" in warning


@pytest.mark.parametrize("loss,activation", [
    ("mean_squared_error", "relu"), ("mean_squared_error", "sigmoid"),
    ("binary_crossentropy", "sigmoid"), ("categorical_crossentropy", "softmax"),
    ("mean_absolute_error", "linear"), ("kullback_leibler", "sigmoid"),
])
def test_table_pairings_do_not_warn(loss, activation):
  assert losses.check_pairing(loss, activation) is None
