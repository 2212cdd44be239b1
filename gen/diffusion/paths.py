"""Gaussian paths from data to noise, and what a network is trained to predict on them.

Every model here noises data along x_t = alpha_t x_0 + sigma_t eps, eps ~ N(0, I):

  DiscretePath  DDPM's variance-preserving schedule over T integer steps
                (Ho et al., 2020): alpha_t = sqrt(abar_t), sigma_t =
                sqrt(1 - abar_t), t = 0 .. T-1 (the paper counts 1 .. T);
  FlowPath      flow matching's straight line (Lipman et al., 2023; Liu et
                al.'s rectified flow, 2023): alpha_t = 1 - t, sigma_t = t,
                t in [0, 1], t = 1 pure noise.

Objectives (`config.model.objective`), the network's regression target:
  eps            the noise (Ho et al.): a DiscretePath;
  v              v = alpha_t eps - sigma_t x_0 (Salimans and Ho, 2022): a
                 DiscretePath; better conditioned than eps near t = T-1,
                 where eps says little about x_0;
  flow_matching  the velocity dx_t/dt = eps - x_0 of the straight line: a FlowPath.
Whatever the objective, `predictions` turns the network's output into the
(x_0, eps) it implies, and the samplers (gen.diffusion.samplers) only see those.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

NOISE_SCHEDULES = ("linear", "cosine")
OBJECTIVES = ("eps", "v", "flow_matching")
TIME_SAMPLINGS = ("uniform", "logit_normal")
# Nichol and Dhariwal's offset, which keeps beta_0 from being vanishingly small.
_COSINE_OFFSET = 0.008
_MAX_BETA = 0.999
# Flow time t in [0, 1] enters the network as 1000 t: the sinusoidal time
# embedding (gen.models.unet) is laid out for the 0 .. 999 of DDPM's steps.
FLOW_NETWORK_TIME_SCALE = 1000.0


def make_schedule(name: str, timesteps: int, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> dict[str, np.ndarray]:
  """The noise schedule: a dict of [timesteps] float64 numpy arrays.

  Keys: betas, alphas (1 - betas), alphas_cumprod (abar_t),
  alphas_cumprod_prev (abar_{t-1}, 1 at t = 0), sqrt_alphas_cumprod,
  sqrt_one_minus_alphas_cumprod, posterior_variance (beta~_t, the variance
  of q(x_{t-1} | x_t, x_0); 0 at t = 0). Raises ValueError naming the
  config.model key at fault.

  linear  beta from beta_start to beta_end (Ho et al.: 1e-4 .. 0.02, T = 1000);
  cosine  abar_t = f(t + 1) / f(0), f(u) = cos((u / T + s) / (1 + s) pi / 2)^2,
          s = 0.008 (Nichol and Dhariwal, 2021), betas clipped at 0.999.
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


def broadcast_to(values, like):
  """[b] values shaped [b, 1, ..., 1] to broadcast against `like` [b, ...]."""
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


class DiscretePath:
  """DDPM's schedule: t is an integer step 0 .. T-1 (an int32 array in jax)."""

  continuous = False

  def __init__(self, schedule: dict[str, np.ndarray]):
    self.schedule = schedule
    self.timesteps = len(schedule["betas"])

  def coefficients(self, t):
    """[b] int t -> (alpha_t, sigma_t), each [b] float32."""
    return (jnp.asarray(self.schedule["sqrt_alphas_cumprod"], jnp.float32)[t],
            jnp.asarray(self.schedule["sqrt_one_minus_alphas_cumprod"], jnp.float32)[t])

  def network_time(self, t):
    return t

  def draw_time(self, rng, num: int):
    return jax.random.randint(rng, (num,), 0, self.timesteps)

  def fixed_times(self, fractions) -> list[tuple[str, int]]:
    """(metric suffix, t) at fractions of the way to noise: t = round(q (T-1))."""
    times = [round(q * (self.timesteps - 1)) for q in fractions]
    return [(f"t{t}", t) for t in times]

  def times_of(self, fractions) -> np.ndarray:
    """Path times at these fractions of the way to noise (rounded to steps)."""
    return np.round(np.asarray(fractions) * (self.timesteps - 1)).astype(np.int32)

  def noise_level(self, t):
    """[b] path times (integer steps, or the ODE's fractional ones) -> sigma / alpha."""
    _, alpha, sigma, _, _ = self.ode_coefficients(jnp.asarray(t, jnp.float32)
                                                  / (self.timesteps - 1))
    return sigma / alpha

  def ode_coefficients(self, s):
    """The schedule between its steps, for the probability-flow ODE: s in
    [0, 1] is t = s (T-1), with log abar linear between integer steps.

    Returns (network time t, alpha, sigma, d alpha / ds, d sigma / ds), float32.
    """
    log_abar = jnp.asarray(np.log(self.schedule["alphas_cumprod"]), jnp.float32)
    t = jnp.asarray(s, jnp.float32) * (self.timesteps - 1)
    i = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, self.timesteps - 2)
    slope = (log_abar[i + 1] - log_abar[i]) * (self.timesteps - 1)  # d log abar / ds
    value = log_abar[i] + (t - i) * (log_abar[i + 1] - log_abar[i])
    abar = jnp.exp(value)
    alpha, sigma = jnp.sqrt(abar), jnp.sqrt(-jnp.expm1(value))
    return t, alpha, sigma, 0.5 * alpha * slope, -abar * slope / (2.0 * sigma)


class FlowPath:
  """The straight line x_t = (1 - t) x_0 + t eps, t in [0, 1] (float32 in jax).

  Training draws t uniformly or from a logit-normal, t = sigmoid(m + s n),
  n ~ N(0, 1) (Esser et al., 2024: it spends the updates on the middle of the
  path, where the velocity is hardest to predict).
  """

  continuous = True

  def __init__(self, time_sampling: str = "uniform", logit_mean: float = 0.0,
               logit_std: float = 1.0):
    if time_sampling not in TIME_SAMPLINGS:
      raise ValueError(f"config.model.time_sampling={time_sampling!r} is not known; "
                       f"valid: {', '.join(TIME_SAMPLINGS)}")
    if not logit_std > 0:
      raise ValueError(f"config.model.logit_normal_std={logit_std!r} must be > 0")
    self.time_sampling, self.logit_mean, self.logit_std = time_sampling, logit_mean, logit_std

  def coefficients(self, t):
    """[b] float t -> (alpha_t, sigma_t) = (1 - t, t), each [b] float32."""
    t = jnp.asarray(t, jnp.float32)
    return 1.0 - t, t

  def network_time(self, t):
    return FLOW_NETWORK_TIME_SCALE * jnp.asarray(t, jnp.float32)

  def draw_time(self, rng, num: int):
    if self.time_sampling == "uniform":
      return jax.random.uniform(rng, (num,))
    return jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(rng, (num,)))

  def fixed_times(self, fractions) -> list[tuple[str, float]]:
    return [(f"t{round(100 * q)}pct", float(q)) for q in fractions]

  def times_of(self, fractions) -> np.ndarray:
    return np.asarray(fractions, np.float32)

  def noise_level(self, t):
    """[b] path times -> sigma / alpha = t / (1 - t) (inf at t = 1)."""
    t = jnp.asarray(t, jnp.float32)
    return t / (1.0 - t)

  def ode_coefficients(self, s):
    """(network time, alpha, sigma, d alpha / ds, d sigma / ds) at t = s."""
    s = jnp.asarray(s, jnp.float32)
    return (self.network_time(s), 1.0 - s, s, -jnp.ones_like(s), jnp.ones_like(s))


def make_path(model_config):
  """The path that `config.model.objective` trains on (DiscretePath for eps and v)."""
  objective = model_config.get("objective", "eps")
  if objective not in OBJECTIVES:
    raise ValueError(f"config.model.objective={objective!r} is not known; "
                     f"valid: {', '.join(OBJECTIVES)}")
  if objective == "flow_matching":
    return FlowPath(model_config.get("time_sampling", "uniform"),
                    model_config.get("logit_normal_mean", 0.0),
                    model_config.get("logit_normal_std", 1.0))
  return DiscretePath(make_schedule(model_config.get("noise_schedule", "linear"),
                                    model_config.get("timesteps", 1000),
                                    model_config.get("beta_start", 1e-4),
                                    model_config.get("beta_end", 0.02)))


def target(objective: str, x0, eps, alpha, sigma):
  """What the network regresses on for (x_0, eps) at (alpha_t, sigma_t) ([b] or scalars).

  The same function maps the exact (E[x_0 | x_t], E[eps | x_t]) to the best
  possible network output, which is how the tests build exact networks.
  """
  alpha, sigma = broadcast_to(alpha, x0), broadcast_to(sigma, x0)
  if objective == "eps":
    return eps
  if objective == "v":
    return alpha * eps - sigma * x0
  if objective == "flow_matching":
    return eps - x0
  raise ValueError(f"config.model.objective={objective!r} is not known; "
                   f"valid: {', '.join(OBJECTIVES)}")


def predictions(objective: str, output, x, alpha, sigma):
  """The network's output at x_t -> (x0_hat, eps_hat), the predictions it implies.

  eps: x0 = (x - sigma eps) / alpha. v (alpha^2 + sigma^2 = 1): x0 = alpha x -
  sigma v, eps = sigma x + alpha v. flow_matching (alpha + sigma = 1, the
  velocity u = eps - x0): x0 = x - t u, eps = x + (1 - t) u. None divides by
  a coefficient that is 0 at an end of its path except eps's 1 / alpha,
  which DDPM's schedules keep above 0.
  """
  alpha, sigma = broadcast_to(alpha, x), broadcast_to(sigma, x)
  if objective == "eps":
    return (x - sigma * output) / alpha, output
  if objective == "v":
    return alpha * x - sigma * output, sigma * x + alpha * output
  if objective == "flow_matching":
    return x - sigma * output, x + alpha * output
  raise ValueError(f"config.model.objective={objective!r} is not known; "
                   f"valid: {', '.join(OBJECTIVES)}")
