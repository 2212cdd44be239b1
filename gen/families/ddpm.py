"""The diffusion family: DDPM (Ho, Jain and Abbeel, 2020), v-prediction and flow matching.

Data x_0 in [-1, 1] is noised along a Gaussian path x_t = alpha_t x_0 +
sigma_t eps (gen.diffusion.paths), and a U-Net (gen.models.unet) learns, by
mean squared error, what `config.model.objective` names:
  eps            the noise, on DDPM's discrete schedule of T steps (Ho et
                 al.'s "simple" loss);
  v              v = alpha_t eps - sigma_t x_0 on the same schedule
                 (Salimans and Ho, 2022);
  flow_matching  the velocity eps - x_0 of the straight line x_t = (1 - t) x_0
                 + t eps, t in [0, 1] (Lipman et al., 2023; Liu et al., 2023),
                 t drawn uniformly or logit-normally
                 (`config.model.time_sampling`).

Sampling (`config.eval.sampler`, `config.eval.sampling_steps`; each one
compiled lax.scan in gen.diffusion.samplers, written for any network, so the
tests plug in the exact denoiser of Gaussian data):
  ancestral  Ho et al.'s Algorithm 2 over all T steps (eps, v);
  ddim       Song, Meng and Ermon (2021), any steps and eta (eps, v);
  heun       second-order ODE steps: Karras et al.'s (2022) form for eps and
             v, the step in t for flow matching;
  dpmpp_2m   DPM-Solver++(2M) (Lu et al., 2022; eps, v);
  euler      the ODE's first-order step (flow matching).
"auto" is ddim for eps and v and heun for flow matching. x is not clipped
between steps; only the final sample is clipped to [-1, 1] (the data's range)
and mapped to a [0, 1] image.

Noise schedules of eps and v (`config.model.noise_schedule`):
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

from gen.data import example_keys, preprocess, to_unit
from gen.diffusion import likelihood as ode_likelihood
from gen.diffusion import paths, samplers
from gen.evaluate import likelihood
from gen.diffusion.paths import NOISE_SCHEDULES, make_schedule  # noqa: F401 (the family's API)
from gen.diffusion.samplers import (SAMPLERS, ancestral_sample, ddim_sample,  # noqa: F401
                                    ddim_timesteps)
from gen.evaluate import sampling
from gen.families import FAMILIES
from gen.families.base import Family, balanced_labels, interleave_rows
from gen.families.guide import load_guide
from gen.train import sharding

# Forward-process noise levels (fractions of the way to noise) at which
# evaluation also reports the loss, so that a checkpoint's quality can be read
# per noise level.
_EVAL_QUANTILES = (0.1, 0.5, 0.9)
# Above this abar_{T-1}, x_{T-1} holds enough of x_0 that starting the
# sampler from N(0, I) is visibly wrong (the linear schedule of T = 1000 ends
# at 4e-5; the same betas with T = 100 at 0.37).
_MAX_FINAL_ALPHA_CUMPROD = 1e-3
# Batch of the sampler timings in `report`.
_TIMING_BATCH = 16
_TIMING_DDIM_STEPS = 50
# Steps of the sample grid drawn at every evaluation (cheap to run and compile).
_VISUALIZE_STEPS = 20
# Test images per compiled call of the probability-flow likelihood.
_ODE_BATCH = 50


def _at(values: np.ndarray, t, like):
  """values[t] as float32, shaped [b, 1, ..., 1] to broadcast against `like` [b, ...]."""
  return paths.broadcast_to(jnp.asarray(values, jnp.float32)[t], like)


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
  return objective_loss(eps_fn, "eps", paths.DiscretePath(schedule), x0, t, noise)


def objective_loss(network, objective: str, path, x0, t, noise):
  """[b] mean over values of (target - network(x_t, t))^2, x_t = alpha_t x0 + sigma_t noise.

  network: ([b, ...] x_t, [b] path times) -> [b, ...] its prediction of
  `paths.target(objective, ...)`: the noise, v or the velocity.
  """
  alpha, sigma = path.coefficients(t)
  x_t = paths.broadcast_to(alpha, x0) * x0 + paths.broadcast_to(sigma, x0) * noise
  error = network(x_t, t) - paths.target(objective, x0, noise, alpha, sigma)
  return jnp.mean(jnp.square(error).reshape(error.shape[0], -1), axis=1)


def predict_x0(x_t, t, eps, schedule: dict):
  """The x_0 that x_t and the noise `eps` imply: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
  return ((x_t - _at(schedule["sqrt_one_minus_alphas_cumprod"], t, x_t) * eps)
          / _at(schedule["sqrt_alphas_cumprod"], t, x_t))


@FAMILIES.register("ddpm")
class DDPM(Family):
  """The diffusion family: DDPM's eps, v-prediction and flow matching on one U-Net."""

  config_keys = ("timesteps", "noise_schedule", "beta_start", "beta_end", "objective",
                 "time_sampling", "logit_normal_mean", "logit_normal_std", "label_dropout")

  def __init__(self, config, info):
    super().__init__(config, info)
    self.objective = config.model.get("objective", "eps")
    self.path = paths.make_path(config.model)  # raises on an unknown objective or schedule
    guide_workdir = config.eval.get("guide_workdir", "")
    # Autoguidance: a weaker model of the same data (gen.families.guide).
    self.guide = load_guide(config, guide_workdir) if guide_workdir else None
    self.schedule = getattr(self.path, "schedule", None)

  @property
  def timesteps(self) -> int:
    """T of a DDPM schedule (0 for flow matching, whose time is continuous)."""
    return 0 if self.path.continuous else self.path.timesteps

  @property
  def num_classes(self) -> int:
    """Classes the network is conditioned on (0: unconditional)."""
    return getattr(self.model, "num_classes", 0)

  @property
  def guidance_scale(self) -> float:
    return float(self.config.eval.get("guidance_scale", 1.0))

  def balanced_labels(self, num: int):
    """[num] class labels 0, 1, ..., C-1, 0, 1, ...: what unlabelled sampling
    of a conditional model draws (None for an unconditional one)."""
    return balanced_labels(num, self.num_classes)

  @property
  def sampler_name(self) -> str:
    """config.eval.sampler with "auto" resolved for the objective."""
    return samplers.resolve_sampler(self.config.eval.sampler, self.objective)

  @property
  def max_noise_level(self) -> float:
    """config.eval.max_noise_level (0 = sample from the path's end)."""
    level = self.config.eval.get("max_noise_level", 0.0) or 0.0
    if not (isinstance(level, (int, float)) and level >= 0):
      raise ValueError(f"config.eval.max_noise_level={level!r} must be a number >= 0 "
                       f"(a noise level sigma/alpha; 0 = start at the schedule's end)")
    return float(level)  # flow matching's grid names it when set

  @property
  def step_spacing(self) -> str:
    """config.eval.step_spacing ("uniform" when unset); checked by the grids."""
    return self.config.eval.get("step_spacing", "uniform")

  @property
  def first_step(self) -> int | None:
    """The step eps/v samplers start from (`samplers.first_step`); None on a FlowPath."""
    if self.path.continuous:
      return None
    return samplers.first_step(self.schedule, self.max_noise_level)

  @property
  def guidance_interval(self) -> tuple[float, float] | None:
    """config.eval.guidance_interval as (low, high) noise levels; None = everywhere."""
    interval = tuple(self.config.eval.get("guidance_interval", ()) or ())
    if not interval:
      return None
    if len(interval) != 2 or not 0.0 <= float(interval[0]) < float(interval[1]):
      raise ValueError(f"config.eval.guidance_interval={interval!r}: give (low, high) noise "
                       f"levels sigma/alpha with 0 <= low < high, or () for every level")
    return float(interval[0]), float(interval[1])

  def check_config(self) -> list[str]:
    data, evaluation = self.config.data, self.config.eval
    if self.info.kind not in ("image", "latent"):
      raise ValueError(f"config.data.name={data.name!r} holds {self.info.kind} data; the "
                       f"DDPM U-Net needs images (or a first stage's feature-map codes)")
    if self.info.kind == "image" and data.scale != "symmetric":
      raise ValueError(f"config.data.scale={data.scale!r}: DDPM noises data in [-1, 1] "
                       f"(the range its N(0, I) end point is scaled for); use "
                       f"scale='symmetric'")
    classes, scale = self.num_classes, self.guidance_scale
    if classes and classes > self.info.num_classes:
      raise ValueError(f"config.model.num_classes={classes}, but {data.name} has "
                       f"{self.info.num_classes or 'no'} class labels")
    dropout = self.config.model.get("label_dropout", 0.0)
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"config.model.label_dropout={dropout} must be in [0, 1)")
    if scale != 1.0 and not classes and self.guide is None:
      raise ValueError(f"config.eval.guidance_scale={scale} guides a class-conditional "
                       f"model, or any model by a weaker one (config.eval.guide_workdir); "
                       f"this one is unconditional (config.model.num_classes=0) and has no "
                       f"guide")
    if scale < 0:
      raise ValueError(f"config.eval.guidance_scale={scale} must be >= 0")
    self.guidance_interval  # raises when malformed
    self.first_step  # raises when the noise-level cap is malformed or below the schedule
    sampler = self.sampler_name  # raises when unknown or unfit for the objective
    if sampler != "ancestral":
      samplers.make_grid(self.path, evaluation.sampling_steps, self.max_noise_level,
                         self.step_spacing)  # raises when out of range or unknown
    else:
      samplers.check_step_spacing(self.step_spacing)
    if not evaluation.ddim_eta >= 0:
      raise ValueError(f"config.eval.ddim_eta={evaluation.ddim_eta!r} must be >= 0 "
                       f"(0 = deterministic, 1 = ancestral-like)")
    warnings = []
    if self.path.continuous:
      if evaluation.ddim_eta:
        warnings.append(f"config.eval.ddim_eta={evaluation.ddim_eta} is not used by "
                        f"config.eval.sampler={sampler!r} (flow matching samples by an ODE)")
      return warnings
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

  def network(self, params, train: bool = False, dropout_rng=None, labels=None,
              guidance: float = 1.0):
    """The U-Net as network(x [b, h, w, c], t [b] path times) -> its raw output
    (noise, v or velocity, by config.model.objective).

    A conditional model sees `labels` ([b]; None = no class). With guidance
    s != 1 (classifier-free guidance, Ho and Salimans, 2022) the output is
    unconditional + s * (conditional - unconditional), both halves in one
    call; s = 0 and s = 1 evaluate only the unconditional or the conditional
    network, so they are exactly those models. The combination is linear in
    the raw output, so it is the same guidance for eps, v and velocity.

    With a guide (config.eval.guide_workdir) and s != 1 the output is
    guide + s * (model - guide) instead (autoguidance), the guide given the
    labels when it is conditional.

    With config.eval.guidance_interval (low, high), s applies only where the
    noise level sigma/alpha of t is in (low, high]; elsewhere the output is
    the model's own (scale 1)."""
    rngs = {"dropout": dropout_rng} if train else {}
    kwargs = {"labels": labels} if labels is not None else {}
    interval = self.guidance_interval

    def apply(x, t, **labelled):
      return self.apply_model({"params": params}, x, self.path.network_time(t), train=train,
                              rngs=rngs, **labelled)

    def scale_at(t, like):
      if interval is None:
        return guidance
      level = self.path.noise_level(jnp.broadcast_to(t, like.shape[:1]))
      inside = (level > interval[0]) & (level <= interval[1])
      return paths.broadcast_to(jnp.where(inside, guidance, 1.0), like)

    if self.guide is not None and guidance != 1.0:
      guide = self.guide.family.network(
          self.guide.params, labels=labels if self.guide.family.num_classes else None)

      def autoguided(x, t):
        weak = guide(x, t)
        return weak + scale_at(t, x) * (apply(x, t, **kwargs) - weak)
      return autoguided
    if labels is None or guidance == 1.0:
      return lambda x, t: apply(x, t, **kwargs)
    if guidance == 0.0 and interval is None:
      return lambda x, t: apply(x, t)
    unconditional = jnp.full_like(labels, self.num_classes)

    def guided(x, t):
      both = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   labels=jnp.concatenate([labels, unconditional]))
      conditional, plain = jnp.split(both, 2)
      return plain + scale_at(t, x) * (conditional - plain)
    return guided

  def denoiser(self, params, labels=None, guidance: float = 1.0):
    """denoise(x, t) -> (x0_hat, eps_hat): what the samplers of any objective call."""
    network = self.network(params, labels=labels, guidance=guidance)
    return lambda x, t: paths.predictions(self.objective, network(x, t), x,
                                          *self.path.coefficients(t))

  def eps_fn(self, params, train: bool = False, dropout_rng=None, labels=None,
             guidance: float = 1.0):
    """eps_fn(x [b, h, w, c], int t [b]) -> predicted noise [b, h, w, c], for
    DDPM's own samplers (eps and v objectives)."""
    if self.path.continuous:
      raise ValueError("config.model.objective='flow_matching' has no DDPM noise predictor")
    network = self.network(params, train, dropout_rng, labels, guidance)
    if self.objective == "eps":
      return network
    return lambda x, t: paths.predictions(self.objective, network(x, t), x,
                                          *self.path.coefficients(t))[1]

  # --- what the loop calls ----------------------------------------------------
  def _train_labels(self, batch, rng):
    """A conditional model's labels, each replaced by "no class" with
    probability config.model.label_dropout (so one network also learns the
    unconditional model that guidance needs); None when unconditional."""
    if not self.num_classes:
      return None
    labels = batch["label"].astype(jnp.int32)
    dropout = self.config.model.get("label_dropout", 0.0)
    if dropout:
      dropped = jax.random.bernoulli(rng, dropout, labels.shape)
      labels = jnp.where(dropped, self.num_classes, labels)
    return labels

  def loss(self, params, batch, rng, step):
    data_rng, t_rng, noise_rng, dropout_rng = jax.random.split(rng, 4)
    x0 = self.prepare(batch, data_rng, train=True)
    t = self.path.draw_time(t_rng, x0.shape[0])
    noise = jax.random.normal(noise_rng, x0.shape)
    labels = self._train_labels(batch, jax.random.fold_in(t_rng, 1))
    loss = objective_loss(self.network(params, True, dropout_rng, labels), self.objective,
                          self.path, x0, t, noise)
    return jnp.mean(loss), {}

  def evaluate(self, params, batch, rng, final=False):
    """Per-example loss of the objective ("loss") at a time and noise fixed per
    example (drawn from its uid, so independent of batching), and at fixed
    times (`loss_t<t>` at 10%, 50% and 90% of T-1 for eps and v;
    `loss_t<q>pct` at t = q / 100 for flow matching) with the same noise, and
    their mean (`loss_fixed_t_mean`)."""
    x0 = self.prepare(batch, rng, train=False)
    keys = jax.vmap(lambda uid: jax.random.fold_in(rng, uid))(batch["uid"])
    t = jax.vmap(lambda k: self.path.draw_time(jax.random.fold_in(k, 0), 1)[0])(keys)
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    fixed = self.path.fixed_times(_EVAL_QUANTILES)
    # All times in one batch through one U-Net: one copy of it to compile.
    ts = jnp.stack([t, *(jnp.full_like(t, value) for _, value in fixed)])  # [k, b]
    tile = lambda v: jnp.broadcast_to(v, (len(ts), *v.shape)).reshape(-1, *v.shape[1:])
    # A conditional model is scored given the true class, where there is one.
    labels = batch.get("label") if self.num_classes else None
    labels = None if labels is None else tile(labels.astype(jnp.int32))
    losses = objective_loss(self.network(params, labels=labels), self.objective, self.path,
                            tile(x0), ts.reshape(-1), tile(noise)).reshape(ts.shape)
    metrics = {"loss": losses[0], "loss_fixed_t_mean": jnp.mean(losses[1:], axis=0)}
    for (name, _), values in zip(fixed, losses[1:]):
      metrics[f"loss_{name}"] = values
    return metrics

  def anomaly_scores(self, params, batch, rng):
    """The training loss at fixed noise levels (10%, 50%, 90% of the way to
    noise), averaged, with noise drawn per example id: how badly the model
    denoises x; a cheap stand-in for its likelihood."""
    return {"denoising_loss": self.evaluate(params, batch, rng)["loss_fixed_t_mean"]}

  def _sample_unclipped(self, params, rng, num: int, temperature, sampler: str,
                        steps: int, eta: float, labels=None):
    shape = (num, *self.info.shape)
    if labels is None:
      labels = self.balanced_labels(num)
    elif not self.num_classes:
      raise ValueError("class labels asked of an unconditional model "
                       "(config.model.num_classes=0)")
    guidance = self.guidance_scale
    if sampler in ("ancestral", "ddim"):
      eps = self.eps_fn(params, labels=labels, guidance=guidance)
      if sampler == "ancestral":
        return ancestral_sample(eps, self.schedule, rng, shape, temperature, self.first_step)
      return ddim_sample(eps, self.schedule, rng, shape, steps, eta, temperature,
                         self.first_step, self.step_spacing)
    grid = samplers.make_grid(self.path, steps, self.max_noise_level, self.step_spacing)
    denoiser = self.denoiser(params, labels, guidance)
    if sampler == "euler":
      return samplers.euler_sample(denoiser, grid, rng, shape, temperature)
    if sampler == "heun":
      form = "flow" if self.path.continuous else "edm"
      return samplers.heun_sample(denoiser, grid, rng, shape, form, temperature)
    return samplers.dpmpp_2m_sample(denoiser, grid, rng, shape, temperature)

  def sample_codes(self, params, rng, num: int, temperature=1.0, labels=None):
    """[num, *shape] draws of the configured sampler, not clipped: a latent
    model's codes (gen.families.latent), whose range is not the pixels'."""
    evaluation = self.config.eval
    return self._sample_unclipped(params, rng, num, temperature, self.sampler_name,
                                  evaluation.sampling_steps, evaluation.ddim_eta, labels)

  def sample(self, params, rng, num: int, temperature=1.0, labels=None):
    """[num, h, w, c] images in [0, 1] by config.eval.sampler ("auto": ddim for
    eps and v, heun for flow matching) with config.eval.sampling_steps steps;
    clipped to [-1, 1] only at the end, so non-finite values stay.

    temperature multiplies the initial noise and every injected noise
    (ancestral, or DDIM with eta > 0); the ODE samplers only see the first.
    A conditional model draws image i of class labels[i] (default: the
    classes in turn) with config.eval.guidance_scale.
    """
    evaluation = self.config.eval
    x = self._sample_unclipped(params, rng, num, temperature, self.sampler_name,
                               evaluation.sampling_steps, evaluation.ddim_eta, labels)
    return to_unit(jnp.clip(x, -1.0, 1.0), "symmetric")

  def visualize(self, params, batch, rng):
    """samples: the configured sampler (DDIM for ancestral) with at most 20
    steps (cheap to run and compile in the loop); denoising: rows of x_t of 4
    validation images at 8 noise levels, each followed by the x_0 the model
    predicts from it."""
    evaluation = self.config.eval
    num = batch["x"].shape[0]
    sampler = "ddim" if self.sampler_name == "ancestral" else self.sampler_name
    steps = min(evaluation.sampling_steps, _VISUALIZE_STEPS)
    if not self.path.continuous:
      steps = min(steps, self.first_step + 1)
    x = self._sample_unclipped(params, rng, num, 1.0, sampler, steps, evaluation.ddim_eta)
    show = lambda v: to_unit(jnp.clip(v, -1.0, 1.0), "symmetric")
    labels = batch.get("label") if self.num_classes else None
    labels = None if labels is None else labels[:4].astype(jnp.int32)
    x0 = self.prepare(batch, rng, train=False)[:4]
    columns = 8
    times = jnp.asarray(self.path.times_of(np.linspace(0.0, 1.0, columns)))
    images = jnp.repeat(x0, columns, axis=0)
    t = jnp.tile(times, x0.shape[0])
    noise = jax.random.normal(jax.random.fold_in(rng, 1), images.shape)
    alpha, sigma = self.path.coefficients(t)
    x_t = paths.broadcast_to(alpha, images) * images + paths.broadcast_to(sigma, images) * noise
    x0_hat, _ = self.denoiser(params, None if labels is None else jnp.repeat(
        labels, columns))(x_t, t)
    return {"samples": show(x), "denoising": interleave_rows(show(x_t), show(x0_hat), columns)}

  def report(self, params, dataset, mesh, workdir, step):
    """sample_report's grids and timing (config.eval.sampler), the sampler and
    its network evaluations per sample, and the seconds per sample on a batch
    of 16 images of: ancestral sampling (all T steps) and DDIM with 50 steps
    (or T if fewer) for eps and v; the configured sampler at its steps (the
    key names sampler and steps)."""
    evaluation = self.config.eval
    report = sampling.sample_report(self, params, workdir, step, evaluation.num_images,
                                    evaluation.temperatures)
    sampler, steps = self.sampler_name, evaluation.sampling_steps
    report["sampler"] = sampler
    first = self.first_step
    report["sampler_network_evaluations"] = samplers.network_evaluations(
        sampler, steps, self.timesteps if first is None else first + 1)
    if self.max_noise_level:
      report["sampler_max_noise_level"] = self.max_noise_level
      report["sampler_first_step"] = first
    if not evaluation.num_images:
      return report
    params = sharding.single_device(params)
    timed = [(f"{sampler}{steps}", sampler, steps)]
    if not self.path.continuous:
      ddim_steps = min(_TIMING_DDIM_STEPS, self.first_step + 1)
      timed = [("ancestral", "ancestral", self.first_step + 1),
               (f"ddim{ddim_steps}", "ddim", ddim_steps),
               *(entry for entry in timed if entry[1] not in ("ancestral", "ddim"))]
    for name, sampler_name, sampler_steps in timed:
      report[f"sampling_seconds_per_sample_{name}"] = self._time_sampler(
          params, sampler_name, sampler_steps, evaluation.ddim_eta)
    report["sampling_timing_batch"] = _TIMING_BATCH
    if evaluation.get("ode_likelihood_images", 0):
      report["ode_likelihood"] = self.ode_bits_per_dim(params, dataset)
    return report

  def ode_bits_per_dim(self, params, dataset) -> dict:
    """Bits/dim of the first config.eval.ode_likelihood_images test images
    through the probability-flow ODE (gen.diffusion.likelihood), an estimate.

    The images are dequantized as the flow's are, x = 2 (p + u) / 256 - 1 with
    u ~ U[0, 1) drawn per example id, so the number is a density of the same
    dequantized 8-bit data, comparable with a flow's exact bits/dim (and, like
    it, an upper bound on the discrete data's in expectation). Returns the
    mean and its standard error over images, with how it was computed.
    """
    evaluation = self.config.eval
    num_images = min(int(evaluation.ode_likelihood_images), dataset.num_examples("test"))
    steps, probes = int(evaluation.ode_likelihood_steps), int(evaluation.ode_likelihood_probes)
    num_dims = math.prod(self.info.shape)

    def bits(p, pixels, uid):
      x = preprocess(pixels, uid, example_keys(jax.random.PRNGKey(0), uid), kind="image",
                     scale="symmetric", dequantize=True, per_example=True)
      velocity = ode_likelihood.probability_flow(
          lambda y, t: self.apply_model({"params": p}, y, t, train=False), self.objective,
          self.path)
      rng = jax.random.fold_in(jax.random.PRNGKey(1), uid[0])
      log_p = ode_likelihood.log_likelihood(velocity, x, rng, steps, probes)
      return likelihood.bits_per_dim(log_p, num_dims,
                                     likelihood.scale_log_det(num_dims, "symmetric"))

    bits = jax.jit(bits)
    values, start = [], time.perf_counter()
    for batch in dataset.eval_batches("test", _ODE_BATCH):
      if len(values) * _ODE_BATCH >= num_images:
        break
      values.append(np.asarray(bits(params, batch["x"], batch["uid"])))
    values = np.concatenate(values)[:num_images]
    return {"bits_per_dim": float(np.mean(values)),
            "standard_error": float(np.std(values, ddof=1) / math.sqrt(len(values)))
                              if len(values) > 1 else None,
            "kind": "estimate, probability-flow ODE",
            "images": int(len(values)), "images_of": "the first of the test split",
            "integrator": f"heun, {steps} fixed steps ({2 * steps} velocity evaluations)",
            "divergence": f"hutchinson, {probes} gaussian probe(s) per image",
            "dequantization": "uniform, per example id",
            "seconds": time.perf_counter() - start}

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
