"""Variational autoencoders (Kingma and Welling, 2014).

q(z | x) = N(mean(x), diag(exp(log_var(x)))), p(z) = N(0, I) (a conditional
VAE with config.model.class_prior: a learned Gaussian p(z | y) per class), and
p(x | z) by `config.model.decoder`:
  bernoulli  binarized pixels (config.data.binarize = dynamic or static);
  logistic   8-bit pixels through a discretized logistic: the probability of
             each integer value, so the bound is in bits/dim of the same 8-bit
             data a flow sees (gen.evaluate.likelihood);
  gaussian   real vectors (toy2d points).

Training minimizes -E_q[log p(x | z)] + beta * w(step) * KL(q || p), with the
warm-up w rising linearly from 0 to 1 over `config.model.kl_warmup_steps`.
Evaluation always reports the true bound (beta = w = 1) and, at the end of a
run, the importance-weighted bound with K = config.eval.iw_samples (Burda et
al., 2016), which is tighter and approaches log p(x) as K grows. Both are
bounds, and their names say so.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from gen.data import to_unit
from gen.evaluate import likelihood, plots, sampling
from gen.families import FAMILIES
from gen.families.base import Family, balanced_labels, example_keys, interleave_rows
from gen.models.vae import decoder_outputs
from gen.train import sharding

# A floor on the decoder's log-scale: a collapsing scale would give the
# likelihood of a point mass, unbounded for the Gaussian decoder.
_MIN_LOG_SCALE = -7.0


def gaussian_kl(mean, log_var, prior_mean=0.0, prior_log_var=0.0):
  """[batch, latent] -> [batch] KL(N(mean, exp(log_var)) || N(prior_mean,
  exp(prior_log_var))), analytic; the prior defaults to N(0, I)."""
  return 0.5 * jnp.sum((jnp.exp(log_var) + (mean - prior_mean) ** 2) * jnp.exp(-prior_log_var)
                       - 1.0 - log_var + prior_log_var, axis=-1)


def diagonal_normal_log_prob(z, mean, log_var):
  """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
  return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-log_var) + log_var
                        + math.log(2.0 * math.pi), axis=-1)


def discretized_logistic_log_prob(pixels, mean, log_scale):
  """log P(pixel) of 8-bit values under a logistic discretized to 256 bins.

  Args:
    pixels: integer values 0..255 (any dtype).
    mean, log_scale: the logistic in [-1, 1] units, where pixel p sits at
      2 p / 255 - 1 and owns the bin of half-width 1 / 255 around it; the
      end bins reach to -inf and +inf, so the 256 masses sum to 1.
  Returns the per-value log-probabilities, shaped like `pixels`.
  """
  twice = 2.0 * pixels.astype(jnp.float32)
  inverse_scale = jnp.exp(-log_scale)
  # Each edge from one expression of the integer 2p +- 1, so that bin p's
  # upper edge is bit for bit bin p+1's lower edge and the masses telescope
  # to 1 (x +- 1/255 rounds the shared edge two ways: up to 1.6e-5 of mass
  # lost under a narrow logistic, tests/test_vae.py).
  upper = ((twice + 1.0) / 255.0 - 1.0 - mean) * inverse_scale
  lower = ((twice - 1.0) / 255.0 - 1.0 - mean) * inverse_scale
  log_cdf_upper = jax.nn.log_sigmoid(upper)  # log P(X < upper edge)
  log_survival_lower = jax.nn.log_sigmoid(-lower)  # log P(X > lower edge)
  # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)): no
  # cancellation however narrow the bin is relative to the scale.
  # lower - upper is computed from the bin width, not by subtracting: at a
  # large scale the two would round to the same float and give log(0).
  middle = (log_cdf_upper + log_survival_lower
            + jnp.log(-jnp.expm1(-2.0 / 255.0 * inverse_scale)))
  return jnp.where(pixels <= 0, log_cdf_upper,
                   jnp.where(pixels >= 255, log_survival_lower, middle))


@FAMILIES.register("vae")
class VAE(Family):
  config_keys = ("beta", "kl_warmup_steps")
  final_eval_differs = True  # the K-sample importance-weighted bound
  # Training's loss weights the KL by its warm-up; the full bound is what
  # validation reports, so the curves compare the bound on both splits.
  curve_keys = ("elbo_bound", "loss")

  @property
  def decoder(self) -> str:
    return self.model.decoder

  @property
  def num_dims(self) -> int:
    return math.prod(self.info.shape)

  def check_config(self) -> list[str]:
    data, model = self.config.data, self.config.model
    decoder = self.decoder
    decoder_outputs(decoder)  # raises on an unknown name
    if self.info.kind == "image":
      if decoder == "gaussian":
        raise ValueError("config.model.decoder='gaussian' is for real-valued vectors; for "
                         "8-bit images use 'logistic', for binarized ones 'bernoulli'")
      if decoder == "bernoulli" and data.binarize == "none":
        raise ValueError("config.model.decoder='bernoulli' models binary pixels: set "
                         "config.data.binarize to 'dynamic' or 'static', or use "
                         "decoder='logistic' for 8-bit pixels")
      if decoder == "bernoulli" and data.scale != "unit":
        raise ValueError(f"config.data.scale={data.scale!r}: Bernoulli targets are in "
                         f"{{0, 1}}; use scale='unit'")
      if decoder == "logistic" and (data.binarize != "none" or data.dequantize):
        raise ValueError("config.model.decoder='logistic' gives the probability of each "
                         "8-bit value: set config.data.binarize='none' and "
                         "config.data.dequantize=False")
    elif decoder != "gaussian":
      raise ValueError(f"config.model.decoder={decoder!r} is for images; "
                       f"{self.info.name} holds real vectors: use 'gaussian'")
    if self.num_classes > self.info.num_classes:
      raise ValueError(f"config.model.num_classes={self.num_classes}, but {data.name} has "
                       f"{self.info.num_classes or 'no'} class labels")
    if model.get("class_prior", False) and not self.num_classes:
      raise ValueError("config.model.class_prior=True needs classes: set "
                       "config.model.num_classes (a conditional VAE)")
    if model.get("beta", 1.0) < 0:
      raise ValueError(f"config.model.beta={model.beta!r} must be >= 0")
    if model.get("kl_warmup_steps", 0) < 0:
      raise ValueError(f"config.model.kl_warmup_steps={model.kl_warmup_steps!r} must be >= 0")
    return []

  # --- the model's pieces -----------------------------------------------------
  @property
  def num_classes(self) -> int:
    """Classes a conditional VAE's encoder and decoder see (0: unconditional)."""
    return getattr(self.model, "num_classes", 0)

  def labels_of(self, batch):
    """The batch's labels for a conditional VAE; None for an unconditional one
    (and for data without labels: the "no class" input)."""
    return batch.get("label") if self.num_classes else None

  def encode(self, params, x, labels=None):
    return self.apply_model({"params": params}, x, labels, method="encode")

  def decode(self, params, z, labels=None):
    return self.apply_model({"params": params}, z, labels, method="decode")

  def prior(self, params, labels, batch: int):
    """(mean, log_var) of p(z | y), [batch, latent] each (N(0, I) unless the
    model has a class prior and labels are given)."""
    return self.apply_model({"params": params}, labels, batch, method="prior")

  def decode_to_unit(self, params, z, labels=None):
    """A latent z -> the decoder's mean image in [0, 1] (a latent model's last step)."""
    return self._mean_image(self.decode(params, z, labels))

  def targets(self, batch, x):
    """What the decoder's likelihood scores: 8-bit integers for 'logistic', else x."""
    return batch["x"] if self.decoder == "logistic" else x

  def log_likelihood(self, out, target):
    """Decoder output [b, *shape, k] and targets [b, *shape] -> [b] log p(x | z), nats."""
    if self.decoder == "bernoulli":
      logits = out[..., 0]
      per_value = target * jax.nn.log_sigmoid(logits) + (1 - target) * jax.nn.log_sigmoid(-logits)
    elif self.decoder == "logistic":
      per_value = discretized_logistic_log_prob(
          target, out[..., 0], jnp.maximum(out[..., 1], _MIN_LOG_SCALE))
    else:
      log_scale = jnp.maximum(out[..., 1], _MIN_LOG_SCALE)
      per_value = diagonal_normal_log_prob(target[..., None], out[..., :1],
                                           2.0 * log_scale[..., None])
    return jnp.sum(per_value.reshape(per_value.shape[0], -1), axis=1)

  def elbo_parts(self, params, x, target, rng, per_example: bool = False, labels=None):
    """One-sample reconstruction term log p(x | z) and analytic KL, each [b], nats.

    rng: one key, or with per_example [b] keys, one per example (evaluation).
    labels: a conditional VAE's classes of x.
    """
    mean, log_var = self.encode(params, x, labels)
    if per_example:
      noise = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:]))(rng)
    else:
      noise = jax.random.normal(rng, mean.shape)
    z = mean + jnp.exp(0.5 * log_var) * noise
    return (self.log_likelihood(self.decode(params, z, labels), target),
            gaussian_kl(mean, log_var, *self.prior(params, labels, x.shape[0])))

  def iw_log_likelihood(self, params, x, target, keys, num_samples: int, chunk: int,
                        log_prior=None, labels=None):
    """[b] importance-weighted bound on log p(x) with `num_samples` samples of q.

    log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x), with p(z) the model's prior
    (N(0, I), or p(z | y) with a class prior) or `log_prior` ([n, latent] ->
    [n] nats: a latent model's learned prior); K = 1 is the one-sample ELBO.
    The samples are drawn `chunk` at a time in a lax.scan with a running
    logsumexp, so memory is that of `chunk` decodes per example whatever K is. keys: [b], one per
    example; chunk c of example i draws from fold_in(keys[i], c), so the bound
    of an example does not depend on the batch it is in.
    """
    if num_samples % chunk:
      raise ValueError(f"config.eval.iw_samples={num_samples} must be a multiple of "
                       f"config.eval.iw_chunk={chunk}")
    mean, log_var = self.encode(params, x, labels)
    batch = x.shape[0]
    prior_mean, prior_log_var = self.prior(params, labels, batch)
    tiled_labels = None if labels is None else jnp.tile(labels, chunk)
    tiled_target = jnp.broadcast_to(target, (chunk, *target.shape)).reshape(
        chunk * batch, *target.shape[1:])

    def add_chunk(running, index):
      noise = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, index),
                                                     (chunk, mean.shape[-1])))(keys)
      z = mean + jnp.exp(0.5 * log_var) * jnp.swapaxes(noise, 0, 1)  # [chunk, b, latent]
      log_q = diagonal_normal_log_prob(z, mean, log_var)
      if log_prior is None:
        log_pz = diagonal_normal_log_prob(z, prior_mean, prior_log_var)
      else:
        log_pz = log_prior(z.reshape(chunk * batch, -1)).reshape(chunk, batch)
      out = self.decode(params, z.reshape(chunk * batch, -1), tiled_labels)
      log_px = self.log_likelihood(out, tiled_target).reshape(chunk, batch)
      log_weights = log_px + log_pz - log_q
      return jnp.logaddexp(running, jax.nn.logsumexp(log_weights, axis=0)), None

    total, _ = jax.lax.scan(add_chunk, jnp.full((batch,), -jnp.inf),
                            jnp.arange(num_samples // chunk))
    return total - math.log(num_samples)

  # --- what the loop calls ----------------------------------------------------
  def _to_report_units(self, nats):
    """Negative log-likelihoods in bits/dim for 8-bit data, nats otherwise."""
    if self.decoder == "logistic":
      return likelihood.bits_per_dim(-nats, self.num_dims)
    return nats

  @property
  def _bound_name(self) -> str:
    return "bits_per_dim" if self.decoder == "logistic" else "nll"

  def kl_weight(self, step):
    """beta times the warm-up factor min(1, step / kl_warmup_steps)."""
    model = self.config.model
    warmup = model.get("kl_warmup_steps", 0)
    factor = jnp.minimum(1.0, step / warmup) if warmup else 1.0
    return model.get("beta", 1.0) * factor

  def loss(self, params, batch, rng, step):
    data_rng, sample_rng = jax.random.split(rng)
    x = self.prepare(batch, data_rng, train=True)
    reconstruction, kl = self.elbo_parts(params, x, self.targets(batch, x), sample_rng,
                                         labels=self.labels_of(batch))
    weight = self.kl_weight(step)
    loss = self._to_report_units(jnp.mean(-reconstruction + weight * kl))
    return loss, {"elbo_bound": self._to_report_units(jnp.mean(kl - reconstruction)),
                  "kl_nats": jnp.mean(kl), "kl_weight": jnp.asarray(weight, jnp.float32)}

  def evaluate(self, params, batch, rng, final=False):
    x = self.prepare(batch, rng, train=False)
    target = self.targets(batch, x)
    # Noise per example id: the numbers do not depend on the batch size.
    keys = example_keys(jax.random.fold_in(rng, 1), batch["uid"])
    elbo_keys = jax.vmap(lambda key: jax.random.fold_in(key, 0))(keys)
    iw_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys)
    labels = self.labels_of(batch)
    reconstruction, kl = self.elbo_parts(params, x, target, elbo_keys, per_example=True,
                                         labels=labels)
    bound = self._to_report_units(kl - reconstruction)
    name = self._bound_name
    metrics = {"loss": bound, f"{name}_elbo_bound": bound, "kl_nats": kl,
               "reconstruction_nats": -reconstruction}
    samples = self.config.eval.iw_samples
    if final and samples:
      log_px = self.iw_log_likelihood(params, x, target, iw_keys, samples,
                                      min(self.config.eval.iw_chunk, samples), labels=labels)
      metrics[f"{name}_iw{samples}_bound"] = self._to_report_units(-log_px)
    density = self.true_density()
    if density is not None:
      metrics["true_nll"] = -density.log_prob(x)
    return metrics

  code_name = "posterior mean"

  def codes(self, params, batch):
    mean, _ = self.encode(params, self.prepare(batch, None, train=False),
                          self.labels_of(batch))
    return mean

  def anomaly_scores(self, params, batch, rng):
    """The negative ELBO and, with config.eval.iw_samples > 0, the negative
    importance-weighted bound (bits/dim for 8-bit data, else nats)."""
    metrics = self.evaluate(params, batch, rng, final=True)
    return {key: value for key, value in metrics.items()
            if key.endswith("_bound")}

  # --- pictures ---------------------------------------------------------------
  def _mean_image(self, out):
    """Decoder output -> the image it stands for, in [0, 1]."""
    if self.decoder == "bernoulli":
      return jax.nn.sigmoid(out[..., 0])
    return jnp.clip((out[..., 0] + 1.0) / 2.0, 0.0, 1.0)

  def sample(self, params, rng, num: int, temperature=1.0, labels=None):
    """Decoded prior samples z ~ N(0, T^2 I) (with a class prior, mean + T std
    of p(z | y)): mean images in [0, 1], or points drawn from p(x | z) (a
    point's mean alone would hide the decoder's noise). A conditional VAE
    draws image i of class labels[i] (default: the classes in turn)."""
    if labels is None and self.num_classes:
      labels = balanced_labels(num, self.num_classes)
    elif labels is not None and not self.num_classes:
      raise ValueError("class labels asked of an unconditional VAE "
                       "(config.model.num_classes=0)")
    prior_rng, noise_rng = jax.random.split(rng)
    prior_mean, prior_log_var = self.prior(params, labels, num)
    z = prior_mean + temperature * jnp.exp(0.5 * prior_log_var) * jax.random.normal(
        prior_rng, (num, self.model.latent_dim))
    out = self.decode(params, z, labels)
    if self.info.kind == "image":
      return self._mean_image(out)
    scale = jnp.exp(jnp.maximum(out[..., 1], _MIN_LOG_SCALE))
    return out[..., 0] + scale * jax.random.normal(noise_rng, out[..., 0].shape)

  def interpolate(self, params, x, steps: int = 10):
    """Rows of decoded straight lines between the posterior means of x[2i] and x[2i+1]."""
    mean, _ = self.encode(params, x[: 2 * (x.shape[0] // 2)])
    start, end = mean[0::2], mean[1::2]
    weights = jnp.linspace(0.0, 1.0, steps)[None, :, None]
    path = start[:, None] * (1 - weights) + end[:, None] * weights  # [pairs, steps, latent]
    return self._mean_image(self.decode(params, path.reshape(-1, mean.shape[-1])))

  def visualize(self, params, batch, rng):
    samples = self.sample(params, rng, batch["x"].shape[0])
    if self.info.kind != "image":
      return {"samples": samples}
    x = self.prepare(batch, rng, train=False)
    labels = self.labels_of(batch)
    mean, _ = self.encode(params, x, labels)
    recon = self._mean_image(self.decode(params, mean, labels))
    return {"samples": samples,
            "reconstructions": interleave_rows(to_unit(x, self.config.data.scale), recon)}

  def report(self, params, dataset, mesh, workdir, step):
    report = sampling.sample_report(self, params, workdir, step, self.config.eval.num_images,
                                    self.config.eval.temperatures)
    if self.info.kind == "image" and self.config.eval.num_images:
      report["interpolations"] = self._save_interpolations(params, dataset, workdir)
    if self.model.latent_dim == 2:
      report["latent_scatter"] = self._save_latent_scatter(params, dataset, mesh, workdir,
                                                           step)
    return report

  def _save_interpolations(self, params, dataset, workdir, pairs: int = 8,
                           steps: int = 10) -> str:
    batch = next(dataset.eval_batches("test", 2 * pairs))
    params = sharding.single_device(params)
    x = self.prepare(batch, None, train=False)
    rows = jax.jit(self.interpolate, static_argnums=2)(params, x, steps)
    name = "interpolations.png"
    plots.save_image_grid(os.path.join(workdir, name), np.asarray(rows), columns=steps)
    return name

  def _save_latent_scatter(self, params, dataset, mesh, workdir, step) -> str:
    """Posterior means of every test example, coloured by label."""
    encode = jax.jit(lambda p, b: self.encode(p, self.prepare(b, None, train=False))[0])
    means, labels = [], []
    for batch in dataset.eval_batches("test", self.config.eval.batch_size):
      real = int(batch["mask"].sum())
      means.append(np.asarray(encode(params, sharding.put_batch(batch, mesh)))[:real])
      labels.append(batch["label"][:real])
    name = "latents.png"
    plots.save_scatter(os.path.join(workdir, name), np.concatenate(means),
                       title=f"test posterior means, step {step}",
                       labels=np.concatenate(labels))
    return name
