"""The seam every generative family fills: loss, evaluation, pictures.

The generic loop (gen.loop) only talks to a `Family`: it asks for
initial parameters and an optimizer, calls `train_step` inside its compiled
loop, `evaluate` on validation and test batches, and `visualize` for PNGs. A
family that needs more than one loss and one optimizer (a GAN) overrides
`make_optimizer` and `train_step`; nothing else in the loop changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen import models, platform
from gen.data import SourceInfo, example_keys, preprocess, to_pixels
from gen.train import optim
from gen.train.state import TrainState, all_finite, ema_update

# Keys of config.model that are not constructor fields of a module.
_SELECTION_KEYS = ("name",)
# Module fields the loop sets itself, never config.model.
_SET_BY_THE_LOOP = {"parent", "name", "data_shape", "dtype"}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_module(model_config: ml_collections.ConfigDict, info: SourceInfo,
                 family_keys: tuple[str, ...] = (), compute_dtype: str = "float32"):
  """The Flax module named by `model_config.name`, built from the other keys.

  The module's dataclass fields are the schema: a key that is neither a field
  nor read by the family is an error that names it and lists the valid ones.
  `compute_dtype` (config.train.compute_dtype) goes to the module's `dtype`:
  the dtype its layers compute in; parameters are float32 either way.
  """
  entry = models.get(model_config.name)
  all_fields = {f.name for f in dataclasses.fields(entry.module)}
  fields = all_fields - _SET_BY_THE_LOOP
  kwargs = {}
  for key, value in model_config.items():
    if key in _SELECTION_KEYS or key in family_keys:
      continue
    if key not in fields:
      raise ValueError(
          f"config.model.{key} is not a setting of model {model_config.name!r}; "
          f"valid: {', '.join(sorted(fields | set(family_keys)))}")
    kwargs[key] = tuple(value) if isinstance(value, list) else value
  if "dtype" in all_fields:
    kwargs["dtype"] = COMPUTE_DTYPES[compute_dtype]
  elif compute_dtype != "float32":
    raise ValueError(f"config.train.compute_dtype={compute_dtype!r}: model "
                     f"{model_config.name!r} computes in float32 only")
  return entry.module(data_shape=tuple(info.shape), **kwargs)


def float32_outputs(tree):
  """Floating leaves of a model's output as float32: losses, log-likelihoods,
  log-determinants and bits/dim are computed in float32 whatever the compute
  dtype of the network."""
  return jax.tree_util.tree_map(
      lambda leaf: leaf.astype(jnp.float32)
      if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating) else leaf, tree)


class Family:
  """Base class: single loss, single optax optimizer, optional EMA."""

  # Keys of config.model the family reads itself (not module fields).
  config_keys: tuple[str, ...] = ()
  # The metric (a key of `evaluate`'s output) that `loss` means on eval data.
  eval_loss_key = "loss"
  # A likelihood of dequantized data must be evaluated on dequantized data
  # too (with noise from a fixed key); other families evaluate on pixels / 255.
  dequantize_in_eval = False
  # Whether evaluate(final=True) computes more than evaluate(): the loop then
  # compiles a second evaluation program for the end of the run.
  final_eval_differs = False
  # The train and validation metrics that loss_curve.png sets side by side:
  # the same quantity on both splits (a VAE trains on a KL-warmed-up loss
  # but its validation loss is the full bound).
  curve_keys = ("loss", "loss")

  def __init__(self, config: ml_collections.ConfigDict, info: SourceInfo):
    # "auto" settings resolved for this backend (gen.platform), however the
    # family is built: by the loop, by families.make, or straight from a config.
    self.config, _ = platform.resolve(config)
    config = self.config
    self.info = info
    self.model = build_module(config.model, info, self.config_keys,
                              config.train.get("compute_dtype", "float32"))

  # --- setup -----------------------------------------------------------------
  def check_config(self) -> list[str]:
    """Raises ValueError on impossible settings; returns warnings to log."""
    return []

  # Whether init_params takes a `batch` of real data to initialize from
  # (Glow's actnorm); the loop then hands it the first train batch.
  data_dependent_init = False

  def init_params(self, rng) -> Any:
    dummy = jnp.zeros((1, *self.info.shape), jnp.float32)
    return self.model.init(rng, dummy)["params"]

  def apply_model(self, variables, *args, **kwargs):
    """self.model.apply, with floating outputs cast to float32 (`float32_outputs`)."""
    return float32_outputs(self.model.apply(variables, *args, **kwargs))

  def num_params(self, params) -> int:
    """Trained parameters (state that no optimizer updates is not counted)."""
    return sum(x.size for x in jax.tree_util.tree_leaves(params))

  def make_optimizer(self) -> optax.GradientTransformation:
    return optim.make_optimizer(self.config.optimizer, self.config.train.num_steps)

  def init_opt_state(self, tx, params) -> Any:
    return tx.init(params)

  # --- data ------------------------------------------------------------------
  def prepare(self, batch: dict, rng, train: bool) -> jax.Array:
    """Raw batch -> model input x: [batch, *shape] float32 (see gen.data.preprocess).

    Evaluation draws its dequantization/binarization noise per example, from
    a fixed key folded with the example's id: a checkpoint's validation
    numbers do not change from call to call, nor with the batch size.
    """
    data = self.config.data
    if not train:
      rng = example_keys(jax.random.PRNGKey(0), batch["uid"])
    return preprocess(batch["x"], batch["uid"], rng, kind=self.info.kind,
                      scale=data.scale, binarize=data.binarize,
                      dequantize=data.dequantize and (train or self.dequantize_in_eval),
                      per_example=not train)

  def to_pixels(self, images) -> "np.ndarray":
    """Samples in [0, 1] -> uint8 pixels, by the inverse of this family's
    preprocessing (floor(256 y) for dequantized data, else round(255 y))."""
    dequantized = self.config.data.dequantize and self.dequantize_in_eval
    return to_pixels(images, dequantized=dequantized)

  def true_density(self):
    """The density that generated toy2d data (its log_prob), or None for other data."""
    if not self.info.name.startswith("toy2d/"):
      return None
    from gen.data import toy2d
    toy = self.config.data.toy2d
    return toy2d.make(toy.density, toy.noise)

  # --- what each family writes ------------------------------------------------
  def loss(self, params, batch: dict, rng, step) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar training loss and scalar metrics to log.

    `step` ([] int32, the updates taken so far) lets a loss follow a schedule
    of its own, such as a VAE's KL warm-up; most families ignore it.
    """
    raise NotImplementedError

  def evaluate(self, params, batch: dict, rng, final: bool = False) -> dict[str, jax.Array]:
    """Per-example metrics, each [batch]; the loop averages them over real rows.

    `final` is True for the test evaluation at the end of a run, where a
    family may spend more (a VAE's 1000-sample importance-weighted bound).
    """
    raise NotImplementedError

  def report(self, params, dataset, mesh, workdir: str, step: int) -> dict:
    """After the test evaluation: pictures and figures that are not per-example
    means (samples, their timing, non-finite counts); merged into results.json."""
    return {}

  def sampler(self, params, dataset):
    """What sample-quality metrics draw from: (sample_fn, sampler_params) with
    sample_fn(sampler_params, rng, count) -> [count, *shape] in [0, 1], or
    None for a family that cannot sample. By default the family's own
    `sample(params, rng, num, temperature)` at temperature 1."""
    if not hasattr(self, "sample"):
      return None
    return (lambda p, rng, count: self.sample(p, rng, count, 1.0)), params

  def visualize(self, params, batch: dict, rng) -> dict[str, jax.Array]:
    """Named pictures: [n, h, w, c] images in [0, 1], or [n, 2] points."""
    return {}

  # --- what the family comparison asks (experiments/compare.py) ---------------
  # Name of the code `codes` returns, or None for a family without an encoder.
  code_name: str | None = None

  def codes(self, params, batch: dict) -> jax.Array:
    """[batch, d] float32: the family's code of each example (for a linear probe
    and clustering); families with an encoder override it (see code_name)."""
    raise NotImplementedError(f"{type(self).__name__} has no encoder")

  def anomaly_scores(self, params, batch: dict, rng) -> dict[str, jax.Array]:
    """The family's natural out-of-distribution scores, each [batch], higher =
    more anomalous (gen.evaluate.ood): a reconstruction error, a negative
    log-likelihood or bound, a discriminator's doubt, a denoising loss. Noise,
    where a score needs it, is drawn per example id, as in `evaluate`."""
    return {}

  # --- the step ----------------------------------------------------------------
  def train_step(self, state: TrainState, batch: dict, rng,
                 tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """One update; a pure function of its arguments, compiled by the loop."""
    (loss, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(
        state.params, batch, rng, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return apply_if_finite(state, params, opt_state, loss, grads, metrics,
                           self.config.train.ema_decay)


def interleave_rows(originals, reconstructions, columns: int = 8):
  """[n, h, w, c] pairs -> grid order: a row of originals, then their
  reconstructions underneath, and so on; n is cut to a multiple of `columns`."""
  n = (originals.shape[0] // columns) * columns
  shape = originals.shape[1:]
  pairs = jnp.stack([originals[:n], reconstructions[:n]]).reshape(2, n // columns, columns, *shape)
  return jnp.swapaxes(pairs, 0, 1).reshape(2 * n, *shape)


def apply_if_finite(state: TrainState, params, opt_state, loss, grads, metrics: dict,
                    ema_decay: float) -> tuple[TrainState, dict]:
  """The next state, or the same parameters when the loss or a gradient is not finite.

  The step counter always advances (the batch was consumed), a skipped
  update is counted in the state, and the EMA (`ema_update`, debiased)
  averages whatever parameters the step leaves. `finite` in the metrics tells
  the loop whether to stop.
  """
  finite = all_finite(loss, grads)
  # One conditional for the whole state, not a select per array: XLA:CPU
  # compiled a where() per leaf of params and optimizer state 2x slower (a
  # U-Net step (configs/ddpm.py:digits): 12.4 s against 6.6 s, measured alone).
  params, opt_state = jax.lax.cond(finite, lambda: (params, opt_state),
                                   lambda: (state.params, state.opt_state))
  ema = state.ema_params
  if ema is not None:
    ema = ema_update(ema, params, ema_decay, state.step + 1)
  metrics = dict(metrics, loss=loss, finite=finite)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       skipped_updates=state.skipped_updates + (~finite).astype(jnp.int32),
                       ema_params=ema), metrics


def balanced_labels(num: int, num_classes: int):
  """[num] class labels 0, 1, ..., C-1, 0, 1, ...: what sampling a conditional
  model without asked-for labels draws (None for an unconditional one, C = 0)."""
  return jnp.arange(num, dtype=jnp.int32) % num_classes if num_classes else None
