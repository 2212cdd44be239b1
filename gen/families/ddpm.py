"""Denoising diffusion probabilistic models (Ho, Jain and Abbeel, 2020).

The forward process adds Gaussian noise in T steps (t = 0 .. T-1 here; the
paper counts 1 .. T),

  q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),

so that q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) in closed form,
abar_t = prod_{s <= t} (1 - beta_s). A network eps(x_t, t) (gen.models.unet)
learns the noise that was added, by the paper's "simple" loss
E_{t, x_0, eps} ||eps - eps(x_t, t)||^2 (averaged over pixels).

Sampling runs the learned reverse process from x_{T-1} ~ N(0, I):
  ancestral  the paper's Algorithm 2 over all T steps, with the posterior
             variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t;
  ddim       Song, Meng and Ermon (2021) on an evenly spaced subsequence of
             the timesteps; eta = 0 is deterministic, eta = 1 with all T
             steps is the ancestral sampler (the same update, rearranged).
Both are one compiled lax.scan over the steps, written for any
`eps_fn(x, t)`, so the tests can plug in the exact noise predictor of
Gaussian data. x is not clipped between steps, only the final sample is
clipped to [-1, 1] (the data's range) and mapped to a [0, 1] image.

Noise schedules (`config.model.noise_schedule`):
  linear  beta from beta_start to beta_end (Ho et al.: 1e-4 .. 0.02, T = 1000).
          Those values assume T = 1000: with fewer steps, scale both by
          1000 / T (configs/ddpm.py:digits does) or x_{T-1} keeps signal;
  cosine  abar_t = f(t + 1) / f(0), f(u) = cos((u / T + s) / (1 + s) pi / 2)^2,
          s = 0.008 (Nichol and Dhariwal, 2021), betas clipped at 0.999;
          beta_start and beta_end are not used.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from gen.data import to_unit
from gen.evaluate import sampling
from gen.families import FAMILIES
from gen.families.base import Family, interleave_rows
from gen.train import sharding

NOISE_SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ancestral")
# Nichol and Dhariwal's offset, which keeps beta_0 from being vanishingly small.
_COSINE_OFFSET = 0.008
_MAX_BETA = 0.999
# Forward-process noise levels (fractions of T-1) at which evaluation also
# reports the loss, so that a checkpoint's quality can be read per noise level.
_EVAL_QUANTILES = (0.1, 0.5, 0.9)
# Above this abar_{T-1}, x_{T-1} holds enough of x_0 that starting the
# sampler from N(0, I) is visibly wrong (the linear schedule of T = 1000 ends
# at 4e-5; the same betas with T = 100 at 0.37).
_MAX_FINAL_ALPHA_CUMPROD = 1e-3
# Batch of the two sampler timings in `report`.
_TIMING_BATCH = 16
_TIMING_DDIM_STEPS = 50


def make_schedule(name: str, timesteps: int, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> dict[str, np.ndarray]:
  """The noise schedule: a dict of [timesteps] float64 numpy arrays.

  Keys: betas, alphas (1 - betas), alphas_cumprod (abar_t),
  alphas_cumprod_prev (abar_{t-1}, 1 at t = 0), sqrt_alphas_cumprod,
  sqrt_one_minus_alphas_cumprod, posterior_variance (beta~_t, the variance
  of q(x_{t-1} | x_t, x_0); 0 at t = 0). Raises ValueError naming the
  config.model key at fault.
  """
  if not isinstance(timesteps, int) or timesteps < 1:
    raise ValueError(f"config.model.timesteps={timesteps!r} must be a positive integer")
  if name == "linear":
    if not 0.0 < beta_start <= beta_end < 1.0:
      raise ValueError(f"config.model.beta_start={beta_start!r} and "
                       f"config.model.beta_end={beta_end!r} must satisfy "
                       f"0 < beta_start <= beta_end < 1")
    betas = np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)
  elif name == "cosine":
    u = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((u + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * math.pi / 2) ** 2
    betas = np.minimum(1.0 - f[1:] / f[:-1], _MAX_BETA)
  else:
    raise ValueError(f"config.model.noise_schedule={name!r} is not known; "
                     f"valid: {', '.join(NOISE_SCHEDULES)}")
  alphas = 1.0 - betas
  # From the (clipped) betas, so the closed form is the product of the steps taken.
  alphas_cumprod = np.cumprod(alphas)
  alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
  return {
      "betas": betas,
      "alphas": alphas,
      "alphas_cumprod": alphas_cumprod,
      "alphas_cumprod_prev": alphas_cumprod_prev,
      "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
      "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
      "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
  }


def _at(values: np.ndarray, t, like):
  """values[t] as float32, shaped [b, 1, ..., 1] to broadcast against `like` [b, ...]."""
  picked = jnp.asarray(values, jnp.float32)[t]
  return picked.reshape(picked.shape + (1,) * (like.ndim - 1))


def q_sample(x0, t, noise, schedule: dict):
  """A draw of x_t ~ q(x_t | x_0) in closed form.

  Args:
    x0: [b, ...] float32 clean data.
    t: [b] int timesteps in 0 .. T-1.
    noise: [b, ...] float32 standard normal, shaped like x0.
    schedule: from `make_schedule`.
  Returns [b, ...] float32 sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.
  """
  return (_at(schedule["sqrt_alphas_cumprod"], t, x0) * x0
          + _at(schedule["sqrt_one_minus_alphas_cumprod"], t, x0) * noise)


def simple_loss(eps_fn, x0, t, noise, schedule: dict):
  """Ho et al.'s L_simple per example: [b] mean over values of (eps - eps_fn(x_t, t))^2.

  eps_fn: ([b, ...] x_t, [b] int t) -> [b, ...] predicted noise.
  """
  error = eps_fn(q_sample(x0, t, noise, schedule), t) - noise
  return jnp.mean(jnp.square(error).reshape(error.shape[0], -1), axis=1)


def predict_x0(x_t, t, eps, schedule: dict):
  """The x_0 that x_t and the noise `eps` imply: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
  return ((x_t - _at(schedule["sqrt_one_minus_alphas_cumprod"], t, x_t) * eps)
          / _at(schedule["sqrt_alphas_cumprod"], t, x_t))


def ancestral_sample(eps_fn, schedule: dict, rng, shape: tuple[int, ...],
                     temperature=1.0):
  """Ho et al.'s Algorithm 2 over all T steps, one lax.scan: [*shape] float32 x_0, not clipped.

  x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) / sqrt(alpha_t) + sigma_t z,
  sigma_t^2 = beta~_t (the posterior variance; 0 at the last step, so the
  sample is the final mean). `temperature` multiplies the initial noise
  x_{T-1} ~ N(0, I) and every injected z: below 1 it trades diversity for
  typical-looking samples. The noise of step i (0 = first) comes from
  fold_in(key, i), as in `ddim_sample`, so that DDIM with eta = 1 over all T
  steps draws the same noise and gives the same samples.
  """
  timesteps = len(schedule["betas"])
  ts = np.arange(timesteps - 1, -1, -1)
  coefficients = (1.0 / np.sqrt(schedule["alphas"][ts]),
                  schedule["betas"][ts] / schedule["sqrt_one_minus_alphas_cumprod"][ts],
                  np.sqrt(schedule["posterior_variance"][ts]))
  init_rng, step_rng = jax.random.split(rng)
  x = temperature * jax.random.normal(init_rng, shape)

  def step(x, inputs):
    index, t, inverse_sqrt_alpha, eps_coefficient, sigma = inputs
    eps = eps_fn(x, jnp.full((shape[0],), t, jnp.int32))
    z = jax.random.normal(jax.random.fold_in(step_rng, index), shape)
    return inverse_sqrt_alpha * (x - eps_coefficient * eps) + sigma * temperature * z, None

  inputs = (jnp.arange(timesteps), jnp.asarray(ts, jnp.int32),
            *(jnp.asarray(c, jnp.float32) for c in coefficients))
  x, _ = jax.lax.scan(step, x, inputs)
  return x


def ddim_timesteps(timesteps: int, num_steps: int) -> np.ndarray:
  """[num_steps] int32: evenly spaced from T-1 down to 0 (just T-1 for one step).

  Starting at T-1 matters: that is where x is N(0, I); ending at 0 leaves
  the least noise for the final x_0 prediction to remove.
  """
  if not 1 <= num_steps <= timesteps:
    raise ValueError(f"config.eval.sampling_steps={num_steps!r} must be in "
                     f"1 .. config.model.timesteps={timesteps}")
  return np.round(np.linspace(timesteps - 1, 0, num_steps)).astype(np.int32)


def ddim_sample(eps_fn, schedule: dict, rng, shape: tuple[int, ...], num_steps: int,
                eta: float = 0.0, temperature=1.0):
  """DDIM (Song et al., 2021) on `ddim_timesteps`, one lax.scan: [*shape] x_0, not clipped.

  From t to the next timestep s of the subsequence (s = -1 after the last,
  abar_{-1} = 1):
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z,
    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)).
  eta = 0 is deterministic given x_{T-1}; eta = 1 is the posterior variance,
  which over all T steps is exactly `ancestral_sample`. For eta > 1 the
  noise would exceed 1 - abar_s; the direction term is then floored at 0.
  `temperature` multiplies the initial noise and z, as in `ancestral_sample`.
  `num_steps` and `eta` are Python numbers: the coefficients are computed in
  float64 before the loop.
  """
  timesteps = len(schedule["betas"])
  ts = ddim_timesteps(timesteps, num_steps)
  abar = schedule["alphas_cumprod"]
  abar_t = abar[ts]
  abar_next = np.concatenate([abar[ts[1:]], [1.0]])
  sigma = eta * np.sqrt((1.0 - abar_next) / (1.0 - abar_t) * (1.0 - abar_t / abar_next))
  coefficients = (np.sqrt(abar_t), np.sqrt(1.0 - abar_t), np.sqrt(abar_next),
                  np.sqrt(np.maximum(1.0 - abar_next - sigma ** 2, 0.0)), sigma)
  init_rng, step_rng = jax.random.split(rng)
  x = temperature * jax.random.normal(init_rng, shape)
  noisy = eta > 0

  def step(x, inputs):
    index, t, sqrt_abar, sqrt_one_minus_abar, sqrt_abar_next, direction, noise_scale = inputs
    eps = eps_fn(x, jnp.full((shape[0],), t, jnp.int32))
    x0_hat = (x - sqrt_one_minus_abar * eps) / sqrt_abar
    x = sqrt_abar_next * x0_hat + direction * eps
    if noisy:
      z = jax.random.normal(jax.random.fold_in(step_rng, index), shape)
      x = x + noise_scale * temperature * z
    return x, None

  inputs = (jnp.arange(num_steps), jnp.asarray(ts),
            *(jnp.asarray(c, jnp.float32) for c in coefficients))
  x, _ = jax.lax.scan(step, x, inputs)
  return x


@FAMILIES.register("ddpm")
class DDPM(Family):
  config_keys = ("timesteps", "noise_schedule", "beta_start", "beta_end")

  def __init__(self, config, info):
    super().__init__(config, info)
    model = config.model
    self.schedule = make_schedule(model.get("noise_schedule", "linear"),
                                  model.get("timesteps", 1000),
                                  model.get("beta_start", 1e-4), model.get("beta_end", 0.02))

  @property
  def timesteps(self) -> int:
    return len(self.schedule["betas"])

  def check_config(self) -> list[str]:
    data, evaluation = self.config.data, self.config.eval
    if self.info.kind != "image":
      raise ValueError(f"config.data.name={data.name!r} holds {self.info.kind} data; the "
                       f"DDPM U-Net needs images")
    if data.scale != "symmetric":
      raise ValueError(f"config.data.scale={data.scale!r}: DDPM noises data in [-1, 1] "
                       f"(the range its N(0, I) end point is scaled for); use "
                       f"scale='symmetric'")
    if evaluation.sampler not in SAMPLERS:
      raise ValueError(f"config.eval.sampler={evaluation.sampler!r} is not known; "
                       f"valid: {', '.join(SAMPLERS)}")
    ddim_timesteps(self.timesteps, evaluation.sampling_steps)  # raises when out of range
    if not evaluation.ddim_eta >= 0:
      raise ValueError(f"config.eval.ddim_eta={evaluation.ddim_eta!r} must be >= 0 "
                       f"(0 = deterministic, 1 = ancestral-like)")
    warnings = []
    final = float(self.schedule["alphas_cumprod"][-1])
    if final > _MAX_FINAL_ALPHA_CUMPROD:
      warnings.append(
          f"config.model.noise_schedule={self.config.model.get('noise_schedule', 'linear')!r} "
          f"with timesteps={self.timesteps} ends at abar={final:.3g}: x_T still holds "
          f"sqrt(abar)={math.sqrt(final):.3g} of the data, but sampling starts from "
          f"N(0, I); raise beta_end (scale the T=1000 betas by 1000/T) or T")
    if evaluation.ddim_eta > 1:
      warnings.append(f"config.eval.ddim_eta={evaluation.ddim_eta} > 1 adds more noise than "
                      f"the posterior; DDIM's direction term is floored at 0")
    return warnings

  # --- the model --------------------------------------------------------------
  def init_params(self, rng):
    dummy = jnp.zeros((1, *self.info.shape), jnp.float32)
    return self.model.init(rng, dummy, jnp.zeros((1,), jnp.int32), train=False)["params"]

  def eps_fn(self, params, train: bool = False, dropout_rng=None):
    """The U-Net as the samplers' eps_fn(x [b, h, w, c], t [b]) -> [b, h, w, c]."""
    rngs = {"dropout": dropout_rng} if train else {}
    return lambda x, t: self.apply_model({"params": params}, x, t, train=train, rngs=rngs)

  # --- what the loop calls ----------------------------------------------------
  def loss(self, params, batch, rng, step):
    data_rng, t_rng, noise_rng, dropout_rng = jax.random.split(rng, 4)
    x0 = self.prepare(batch, data_rng, train=True)
    t = jax.random.randint(t_rng, (x0.shape[0],), 0, self.timesteps)
    noise = jax.random.normal(noise_rng, x0.shape)
    loss = simple_loss(self.eps_fn(params, True, dropout_rng), x0, t, noise, self.schedule)
    return jnp.mean(loss), {}

  def evaluate(self, params, batch, rng, final=False):
    """Per-example simple loss ("loss") at a timestep and noise fixed per example
    (drawn from its uid, so independent of batching), and at fixed timesteps
    (`loss_t<t>`, at 10%, 50% and 90% of T-1) with the same noise, and their
    mean (`loss_fixed_t_mean`)."""
    x0 = self.prepare(batch, rng, train=False)
    keys = jax.vmap(lambda uid: jax.random.fold_in(rng, uid))(batch["uid"])
    t = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 0,
                                              self.timesteps))(keys)
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    fixed_ts = [round(q * (self.timesteps - 1)) for q in _EVAL_QUANTILES]
    # All timesteps in one batch through one U-Net: one copy of it to compile.
    ts = jnp.stack([t, *(jnp.full_like(t, fixed) for fixed in fixed_ts)])  # [k, b]
    tile = lambda v: jnp.broadcast_to(v, (len(ts), *v.shape)).reshape(-1, *v.shape[1:])
    losses = simple_loss(self.eps_fn(params), tile(x0), ts.reshape(-1), tile(noise),
                         self.schedule).reshape(ts.shape)
    metrics = {"loss": losses[0], "loss_fixed_t_mean": jnp.mean(losses[1:], axis=0)}
    for fixed, values in zip(fixed_ts, losses[1:]):
      metrics[f"loss_t{fixed}"] = values
    return metrics

  def anomaly_scores(self, params, batch, rng):
    """The denoising loss at fixed noise levels (10%, 50%, 90% of T), averaged,
    with noise drawn per example id: how badly the model predicts the noise
    of x; a cheap stand-in for its likelihood bound."""
    return {"denoising_loss": self.evaluate(params, batch, rng)["loss_fixed_t_mean"]}

  def _sample_unclipped(self, params, rng, num: int, temperature, sampler: str,
                        steps: int, eta: float):
    shape = (num, *self.info.shape)
    if sampler == "ancestral":
      return ancestral_sample(self.eps_fn(params), self.schedule, rng, shape, temperature)
    return ddim_sample(self.eps_fn(params), self.schedule, rng, shape, steps, eta, temperature)

  def sample(self, params, rng, num: int, temperature=1.0):
    """[num, h, w, c] images in [0, 1] by config.eval.sampler (ddim: sampling_steps
    steps, ddim_eta); clipped to [-1, 1] only at the end, so non-finite values stay.

    temperature multiplies the initial noise and every injected noise
    (ancestral, or DDIM with eta > 0); deterministic DDIM only sees the first.
    """
    evaluation = self.config.eval
    x = self._sample_unclipped(params, rng, num, temperature, evaluation.sampler,
                               evaluation.sampling_steps, evaluation.ddim_eta)
    return to_unit(jnp.clip(x, -1.0, 1.0), "symmetric")

  def visualize(self, params, batch, rng):
    """samples: DDIM with min(sampling_steps, 20) steps (cheap to run and compile
    in the loop); denoising: rows of x_t of 4 validation images at 8 timesteps,
    each followed by the x_0 the model predicts from it."""
    evaluation = self.config.eval
    num = batch["x"].shape[0]
    x = ddim_sample(self.eps_fn(params), self.schedule, rng, (num, *self.info.shape),
                    min(evaluation.sampling_steps, 20, self.timesteps), evaluation.ddim_eta)
    samples = to_unit(jnp.clip(x, -1.0, 1.0), "symmetric")
    x0 = self.prepare(batch, rng, train=False)[:4]
    columns = 8
    ts = jnp.asarray(np.round(np.linspace(0, self.timesteps - 1, columns)), jnp.int32)
    images = jnp.repeat(x0, columns, axis=0)
    t = jnp.tile(ts, x0.shape[0])
    noise = jax.random.normal(jax.random.fold_in(rng, 1), images.shape)
    x_t = q_sample(images, t, noise, self.schedule)
    x0_hat = predict_x0(x_t, t, self.eps_fn(params)(x_t, t), self.schedule)
    show = lambda v: to_unit(jnp.clip(v, -1.0, 1.0), "symmetric")
    return {"samples": samples,
            "denoising": interleave_rows(show(x_t), show(x0_hat), columns)}

  def report(self, params, dataset, mesh, workdir, step):
    """sample_report's grids and timing (config.eval.sampler), plus the seconds
    per sample of ancestral sampling (all T steps) and of DDIM with 50 steps
    (or T if fewer; the key names the count), each on a batch of 16 images."""
    evaluation = self.config.eval
    report = sampling.sample_report(self, params, workdir, step, evaluation.num_images,
                                    evaluation.temperatures)
    if not evaluation.num_images:
      return report
    params = sharding.single_device(params)
    ddim_steps = min(_TIMING_DDIM_STEPS, self.timesteps)
    for name, sampler, steps in (("ancestral", "ancestral", self.timesteps),
                                 (f"ddim{ddim_steps}", "ddim", ddim_steps)):
      report[f"sampling_seconds_per_sample_{name}"] = self._time_sampler(
          params, sampler, steps, evaluation.ddim_eta)
    report["sampling_timing_batch"] = _TIMING_BATCH
    return report

  def _time_sampler(self, params, sampler: str, steps: int, eta: float) -> float:
    """Seconds per sample of one compiled call on _TIMING_BATCH images.

    Compiled ahead of time (lower().compile()), so the timed call is the
    first run of an already compiled program: no compilation in the time,
    and no untimed warm-up run of T steps to pay for.
    """
    fn = jax.jit(lambda p, key: self._sample_unclipped(p, key, _TIMING_BATCH, 1.0, sampler,
                                                       steps, eta))
    key = jax.random.PRNGKey(0)
    compiled = fn.lower(params, key).compile()
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, key))
    return (time.perf_counter() - start) / _TIMING_BATCH
