"""Normalizing flows: exact log-likelihood by the change of variables.

Images: 8-bit pixels are dequantized (v = p + u), scaled to [0, 1], squeezed
into [alpha, 1 - alpha] and sent through a logit (`config.model.logit_alpha`);
the flow maps the result to a standard normal. The log-likelihood counts
every one of those Jacobians, so `bits_per_dim_exact` is the exact density
of the dequantized data in bits per 8-bit value (gen.evaluate.likelihood),
comparable with a VAE's bound on the same data.

2-D points (toy2d) are modelled as they are; the test NLL is in nats, next to
the true density's NLL of the same points, whose mean estimates the entropy.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from gen.data import to_pixels
from gen.evaluate import likelihood, plots, sampling
from gen.families import FAMILIES
from gen.families.base import Family, balanced_labels, example_keys
from gen.train import sharding


# The fixed key of evaluation's draws from a variational dequantizer.
_EVAL_DEQUANTIZATION_SEED = 13


@FAMILIES.register("flow")
class Flow(Family):
  config_keys = ("logit_alpha",)
  # The flow's likelihood is of dequantized data, in evaluation too; the
  # noise comes from a fixed key there (Family.prepare).
  dequantize_in_eval = True

  @property
  def is_image(self) -> bool:
    return self.info.kind == "image"

  @property
  def num_classes(self) -> int:
    """Classes of a class-conditional base distribution (0: N(0, I))."""
    return getattr(self.model, "num_classes", 0)

  def labels_of(self, batch):
    return batch.get("label") if self.num_classes else None

  def log_prior(self, params, z, labels=None):
    """[b] log p(z) of the flattened latents: N(0, I); for a class-conditional
    flow N(mean_y, exp(log_scale_y)^2) of each label y, or without labels the
    mixture over the classes with equal weights (log p(x), marginal)."""
    z = z.reshape(z.shape[0], -1)
    if not self.num_classes:
      return likelihood.standard_normal_log_prob(z)
    mean, log_scale = self.apply_model({"params": params}, method="prior_parameters")
    given = lambda m, s: jnp.sum(-0.5 * (jnp.square((z - m) * jnp.exp(-s))
                                         + math.log(2.0 * math.pi)) - s, axis=-1)
    if labels is not None:
      return given(mean[labels], log_scale[labels])
    per_class = jax.vmap(given)(mean[:, None, :], log_scale[:, None, :])  # [C, b]
    return jax.nn.logsumexp(per_class, axis=0) - math.log(self.num_classes)

  @property
  def variational(self) -> bool:
    """Whether the model learns its dequantization noise (Glow's option)."""
    return getattr(self.model, "dequantization", "uniform") == "variational"

  def check_config(self) -> list[str]:
    data = self.config.data
    if self.num_classes > self.info.num_classes:
      raise ValueError(f"config.model.num_classes={self.num_classes}, but {data.name} has "
                       f"{self.info.num_classes or 'no'} class labels")
    if not self.is_image:
      if self.variational:
        raise ValueError("config.model.dequantization='variational' dequantizes 8-bit "
                         f"images; {self.info.name} holds real vectors: use 'uniform'")
      return []
    if data.binarize != "none":
      raise ValueError(f"config.data.binarize={data.binarize!r}: a flow models 8-bit "
                       f"pixels as continuous values; use binarize='none'")
    if self.variational and data.dequantize:
      raise ValueError("config.model.dequantization='variational' draws its own noise "
                       "from q(u | x): set config.data.dequantize=False")
    if not data.dequantize and not self.variational:
      raise ValueError("config.data.dequantize=False: a flow's density on raw 8-bit "
                       "values is unbounded (it can put infinite density on 256 points); "
                       "set config.data.dequantize=True")
    if data.scale != "unit":
      raise ValueError(f"config.data.scale={data.scale!r}: the flow's logit "
                       f"preprocessing needs pixels in [0, 1]; use scale='unit'")
    alpha = self.config.model.get("logit_alpha", 0.05)
    if not 0.0 < alpha < 0.5:
      raise ValueError(f"config.model.logit_alpha={alpha!r} must be in (0, 0.5)")
    return []

  @property
  def logit_alpha(self) -> float:
    return self.config.model.get("logit_alpha", 0.05)

  @property
  def num_dims(self) -> int:
    return math.prod(self.info.shape)

  data_dependent_init = True

  def init_params(self, rng, batch: dict | None = None):
    """Parameters initialized on `batch` (raw, as the loop draws it) when given:
    Glow's actnorm layers start by normalizing it (gen.models.flow.ActNorm);
    RealNVP's parameters do not depend on it."""
    if self.variational:
      return self._init_with_dequantizer(rng, batch)
    if batch is None:
      x = jnp.zeros((1, *self.info.shape), jnp.float32)
    else:
      x = self.prepare(batch, rng, train=True)
      if self.is_image:
        x, _ = likelihood.logit(x, self.logit_alpha)
    params = dict(self.model.init(rng, x, method="forward")["params"])
    if self.num_classes:
      params.update(self.model.init(rng, method="prior_parameters")["params"])
    return params

  def _init_with_dequantizer(self, rng, batch):
    """The dequantizer's parameters, then the flow's, initialized on what that
    dequantizer makes of `batch` (actnorm's data-dependent start)."""
    pixels = (jnp.zeros((1, *self.info.shape), jnp.float32) if batch is None
              else jnp.asarray(batch["x"], jnp.float32))
    eps = jax.random.normal(jax.random.fold_in(rng, 1), pixels.shape)
    params = dict(self.model.init(rng, pixels, eps, method="dequantize")["params"])
    u, _ = self.apply_model({"params": params}, pixels, eps, method="dequantize")
    x, _ = likelihood.logit((pixels + u) / 256.0, self.logit_alpha)
    params.update(self.model.init(rng, x, method="forward")["params"])
    if self.num_classes:
      params.update(self.model.init(rng, method="prior_parameters")["params"])
    return params

  def to_pixels(self, images):
    """Samples in [0, 1] -> uint8: floor(256 y), the inverse of (p + u) / 256
    whichever noise u dequantized the data."""
    if self.variational:
      return to_pixels(images, dequantized=True)
    return super().to_pixels(images)

  def variational_bound(self, params, batch, rng, per_example: bool = False, labels=None):
    """[b] bits/dim of -E_q[log p(x + u) - log q(u | x)] with one draw u ~ q(u | x):
    an upper bound on the 8-bit image's bits/dim. rng: one key, or with
    per_example one per example (evaluation)."""
    pixels = batch["x"].astype(jnp.float32)
    if per_example:
      eps = jax.vmap(lambda key: jax.random.normal(key, pixels.shape[1:]))(rng)
    else:
      eps = jax.random.normal(rng, pixels.shape)
    u, log_q = self.apply_model({"params": params}, pixels, eps, method="dequantize")
    log_prob, pre_log_det = self.log_likelihood(params, (pixels + u) / 256.0, labels)
    return likelihood.bits_per_dim(log_prob - log_q, self.num_dims, pre_log_det)

  # --- likelihood --------------------------------------------------------------
  def log_likelihood(self, params, x, labels=None):
    """Model-space x ([0, 1] images or points) -> ([batch] log p(x), log-det of preprocessing).

    For images the second value is log |det d(logit input)/d(pixel value)|,
    what bits_per_dim needs to move the density to 8-bit pixel values.
    """
    pre_log_det = 0.0
    if self.is_image:
      x, logit_log_det = likelihood.logit(x, self.logit_alpha)
      pre_log_det = logit_log_det + likelihood.scale_log_det(self.num_dims, "unit")
    z, log_det = self.apply_model({"params": params}, x, method="forward")
    return self.log_prior(params, z, labels) + log_det, pre_log_det

  def _per_example_loss(self, params, x, labels=None):
    log_prob, pre_log_det = self.log_likelihood(params, x, labels)
    if self.is_image:
      return likelihood.bits_per_dim(log_prob, self.num_dims, pre_log_det)
    return -log_prob

  def loss(self, params, batch, rng, step):
    labels = self.labels_of(batch)
    if self.variational:
      return jnp.mean(self.variational_bound(params, batch, rng, labels=labels)), {}
    x = self.prepare(batch, rng, train=True)
    return jnp.mean(self._per_example_loss(params, x, labels)), {}

  def evaluate(self, params, batch, rng, final=False):
    if self.variational:
      # The draws of q from a fixed key and the example ids.
      keys = example_keys(jax.random.PRNGKey(_EVAL_DEQUANTIZATION_SEED), batch["uid"])
      bound = self.variational_bound(params, batch, keys, per_example=True)
      return {"loss": bound, "bits_per_dim_variational_bound": bound}
    x = self.prepare(batch, rng, train=False)
    # A conditional flow: log p(x), the mixture over classes (comparable with
    # every other model's), and log p(x | y) given the true class.
    loss = self._per_example_loss(params, x)
    labels = self.labels_of(batch)
    if self.is_image:
      # Exact: the density of the uniformly dequantized pixels.
      metrics = {"loss": loss, "bits_per_dim_exact": loss}
      if labels is not None:
        metrics["bits_per_dim_exact_given_class"] = self._per_example_loss(params, x, labels)
      return metrics
    metrics = {"loss": loss, "nll_exact": loss}
    density = self.true_density()
    if density is not None:
      true_nll = -density.log_prob(x)
      metrics.update(true_nll=true_nll, nll_gap=loss - true_nll)
    return metrics

  code_name = "latent z = f(x) (the whole flow)"

  def codes(self, params, batch):
    x = self.prepare(batch, None, train=False)
    if self.is_image:
      x, _ = likelihood.logit(x, self.logit_alpha)
    z, _ = self.apply_model({"params": params}, x, method="forward")
    return z

  def anomaly_scores(self, params, batch, rng):
    """The exact negative log-likelihood (bits/dim for images; with variational
    dequantization, its bound)."""
    metrics = self.evaluate(params, batch, rng)
    key = ("bits_per_dim_variational_bound" if self.variational else
           "bits_per_dim_exact" if self.is_image else "nll_exact")
    return {key: metrics[key]}

  # --- sampling ----------------------------------------------------------------
  def sample(self, params, rng, num: int, temperature=1.0, labels=None):
    """[num, *shape] samples: images in [0, 1] (not clipped), or points.

    temperature scales the prior's standard deviation (Kingma and Dhariwal,
    2018): below 1 trades diversity for typical-looking samples. A
    class-conditional flow draws image i of class labels[i] (default: the
    classes in turn).
    """
    z = temperature * jax.random.normal(rng, (num, self.num_dims))
    if self.num_classes:
      if labels is None:
        labels = balanced_labels(num, self.num_classes)
      mean, log_scale = self.apply_model({"params": params}, method="prior_parameters")
      z = mean[labels] + jnp.exp(log_scale[labels]) * z
    elif labels is not None:
      raise ValueError("class labels asked of an unconditional flow "
                       "(config.model.num_classes=0)")
    x = self.apply_model({"params": params}, z, method="inverse")
    if self.is_image:
      x = likelihood.inverse_logit(x, self.logit_alpha)
    return x.reshape(num, *self.info.shape)

  def sample_codes(self, params, rng, num: int, temperature=1.0):
    """[num, *shape] vectors: a latent model's codes (gen.families.latent)."""
    return self.sample(params, rng, num, temperature)

  def visualize(self, params, batch, rng):
    samples = self.sample(params, rng, batch["x"].shape[0])
    if self.is_image:
      samples = jnp.clip(samples, 0.0, 1.0)
    return {"samples": samples}

  def report(self, params, dataset, mesh, workdir, step):
    report = sampling.sample_report(self, params, workdir, step, self.config.eval.num_images,
                                    self.config.eval.temperatures)
    if not self.is_image:
      report["density_grid"] = self._density_plot(params, dataset, workdir, step)
    return report

  def _density_plot(self, params, dataset, workdir, step, resolution: int = 200) -> dict:
    """The model's density on a grid around the test data; its integral should be 1."""
    points = np.concatenate([b["x"] for b in dataset.eval_batches("test", 1000)])
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.25 * (high - low)
    low, high = low - margin, high + margin
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    params = sharding.single_device(params)
    log_prob = jax.jit(lambda p, x: self.log_likelihood(p, x)[0])(params, grid)
    density = np.exp(np.asarray(log_prob)).reshape(resolution, resolution)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    mass = float(density.sum() * cell)
    plots.save_density(os.path.join(workdir, "density.png"), density,
                       (low[0], high[0], low[1], high[1]),
                       title=f"model density, step {step} (mass on grid {mass:.3f})")
    return {"mass_on_grid": mass, "resolution": resolution,
            "limits": [float(low[0]), float(high[0]), float(low[1]), float(high[1])]}
