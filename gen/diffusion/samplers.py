"""Samplers of diffusion and flow-matching models, each one compiled lax.scan.

Two interfaces, so that any network (or the exact denoiser of Gaussian data,
in the tests) can be plugged in:
  eps_fn(x [b, ...], t [b] int) -> predicted noise, on a DDPM schedule
      (ancestral, ddim: the forms of Ho et al. and Song et al.);
  denoise(x [b, ...], t [b]) -> (x0_hat, eps_hat), on any path of
      gen.diffusion.paths, with a `Grid` of the path's times
      (euler, heun, dpmpp_2m).

Which sampler fits which objective (config.eval.sampler; "auto" = DEFAULT):
  eps, v         ancestral, ddim, heun (EDM form), dpmpp_2m
  flow_matching  euler, heun (the ODE step in t)
Network evaluations per sample (`network_evaluations`): ancestral T; ddim,
euler and dpmpp_2m one per step; heun two per step but one for the last step
(to the clean end, where it is Euler's, as in Karras et al., 2022).

x is not clipped between steps; the family clips only the final sample.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gen.diffusion.paths import DiscretePath

SAMPLERS_BY_OBJECTIVE = {
    "eps": ("ddim", "ancestral", "heun", "dpmpp_2m"),
    "v": ("ddim", "ancestral", "heun", "dpmpp_2m"),
    "flow_matching": ("heun", "euler"),
}
# The first of each list: what config.eval.sampler="auto" means.
DEFAULT_SAMPLER = {objective: names[0] for objective, names in SAMPLERS_BY_OBJECTIVE.items()}
SAMPLERS = ("ancestral", "ddim", "euler", "heun", "dpmpp_2m")
# config.eval.step_spacing on a discrete schedule: steps even in t, or even in
# (sigma / alpha)^(1 / rho), rho = 7 (Karras et al., 2022), which takes short
# steps at high noise, where a long one throws a second-order corrector off.
STEP_SPACINGS = ("uniform", "karras")
_KARRAS_RHO = 7.0


def resolve_sampler(sampler: str, objective: str) -> str:
  """config.eval.sampler for config.model.objective ("auto" = the objective's
  default); ValueError naming both keys when the sampler does not fit."""
  fitting = SAMPLERS_BY_OBJECTIVE[objective]
  if sampler == "auto":
    return DEFAULT_SAMPLER[objective]
  if sampler not in SAMPLERS:
    raise ValueError(f"config.eval.sampler={sampler!r} is not known; valid: auto, "
                     f"{', '.join(SAMPLERS)}")
  if sampler not in fitting:
    raise ValueError(f"config.eval.sampler={sampler!r} does not fit "
                     f"config.model.objective={objective!r}; valid for it: auto, "
                     f"{', '.join(fitting)}")
  return sampler


def network_evaluations(sampler: str, steps: int, timesteps: int = 0) -> int:
  """Network calls per sample: ancestral runs all `timesteps` (from its first
  step: `first_step` + 1 of them), heun 2 steps - 1."""
  if sampler == "ancestral":
    return timesteps
  if sampler == "heun":
    return 2 * steps - 1
  return steps


# --- DDPM's own forms (eps_fn on a schedule) --------------------------------------
def _noise_levels(schedule: dict) -> np.ndarray:
  """[T] float64 sigma / alpha of each step (increasing)."""
  abar = schedule["alphas_cumprod"]
  return np.sqrt((1.0 - abar) / abar)


def first_step(schedule: dict, max_noise_level: float = 0.0) -> int:
  """The step a sampler starts from: T-1, or with max_noise_level > 0 the last
  step whose noise level sigma / alpha is at most it.

  Why a cap: eps networks predict x_0 as (x - sigma eps_hat) / alpha, so an
  error in eps_hat reaches x_0 multiplied by sigma / alpha. The cosine
  schedule of T = 1000 ends at sigma / alpha = 2e4 (its last beta is clipped
  at 0.999), and its first step then throws samples far off the data (a
  latent eps model, FD 706); EDM's sigma_max = 80 starts where x is still
  N(0, I) to within alpha = 0.0125 of the data (Karras et al., 2022).
  """
  timesteps = len(schedule["betas"])
  if not max_noise_level:
    return timesteps - 1
  levels = _noise_levels(schedule)
  within = np.nonzero(levels <= max_noise_level)[0]
  if not len(within):
    raise ValueError(f"config.eval.max_noise_level={max_noise_level} is below the noise "
                     f"level of the schedule's first step, {levels[0]:.3g}")
  return int(within.max())


def ancestral_sample(eps_fn, schedule: dict, rng, shape: tuple[int, ...],
                     temperature=1.0, start: int | None = None):
  """Ho et al.'s Algorithm 2 over all T steps, one lax.scan: [*shape] float32 x_0, not clipped.

  x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) / sqrt(alpha_t) + sigma_t z,
  sigma_t^2 = beta~_t (the posterior variance; 0 at the last step, so the
  sample is the final mean). `temperature` multiplies the initial noise
  x_{T-1} ~ N(0, I) and every injected z: below 1 it trades diversity for
  typical-looking samples. The noise of step i (0 = first) comes from
  fold_in(key, i), as in `ddim_sample`, so that DDIM with eta = 1 over all T
  steps draws the same noise and gives the same samples. `start` (default
  T-1; see `first_step`) is the step it starts from.
  """
  timesteps = len(schedule["betas"])
  ts = np.arange(timesteps - 1 if start is None else start, -1, -1)
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

  inputs = (jnp.arange(len(ts)), jnp.asarray(ts, jnp.int32),
            *(jnp.asarray(c, jnp.float32) for c in coefficients))
  x, _ = jax.lax.scan(step, x, inputs)
  return x


def ddim_timesteps(timesteps: int, num_steps: int, start: int | None = None) -> np.ndarray:
  """[num_steps] int32: evenly spaced from `start` (default T-1) down to 0
  (just `start` for one step).

  Starting at T-1 (or the `first_step` of a noise-level cap) matters: that
  is where x is N(0, I); ending at 0 leaves the least noise for the final
  x_0 prediction to remove.
  """
  start = timesteps - 1 if start is None else start
  if not 1 <= num_steps <= start + 1:
    limit = (f"config.model.timesteps={timesteps}" if start == timesteps - 1 else
             f"{start + 1}, the steps below config.eval.max_noise_level")
    raise ValueError(f"config.eval.sampling_steps={num_steps!r} must be in 1 .. {limit}")
  return np.round(np.linspace(start, 0, num_steps)).astype(np.int32)


def karras_timesteps(schedule: dict, num_steps: int, start: int | None = None) -> np.ndarray:
  """[num_steps] int32 steps from `start` (default T-1) down to 0 whose noise
  levels sigma / alpha follow Karras et al.'s ramp, even in level^(1/7): each
  target level's nearest step (in log level), made strictly decreasing."""
  timesteps = len(schedule["betas"])
  ddim_timesteps(timesteps, num_steps, start)  # the same range check
  start = timesteps - 1 if start is None else start
  if num_steps == 1:
    return np.array([start], np.int32)
  log_level = np.log(_noise_levels(schedule)[:start + 1])
  high, low = (np.exp(log_level[[-1, 0]]) ** (1.0 / _KARRAS_RHO))
  targets = _KARRAS_RHO * np.log(high + np.linspace(0.0, 1.0, num_steps) * (low - high))
  times = np.abs(targets[:, None] - log_level[None, :]).argmin(axis=1)
  times = np.minimum(times, start - np.arange(num_steps))
  times[0], times[-1] = start, 0
  for i in range(num_steps - 2, 0, -1):
    times[i] = max(times[i], times[i + 1] + 1)
  return times.astype(np.int32)


def check_step_spacing(spacing: str) -> None:
  """ValueError naming config.eval.step_spacing when it is not known."""
  if spacing not in STEP_SPACINGS:
    raise ValueError(f"config.eval.step_spacing={spacing!r} is not known; valid: "
                     f"{', '.join(STEP_SPACINGS)}")


def discrete_timesteps(schedule: dict, num_steps: int, start: int | None = None,
                       spacing: str = "uniform") -> np.ndarray:
  """The steps of a sampler on a discrete schedule by config.eval.step_spacing."""
  check_step_spacing(spacing)
  if spacing == "karras":
    return karras_timesteps(schedule, num_steps, start)
  return ddim_timesteps(len(schedule["betas"]), num_steps, start)


def ddim_sample(eps_fn, schedule: dict, rng, shape: tuple[int, ...], num_steps: int,
                eta: float = 0.0, temperature=1.0, start: int | None = None,
                spacing: str = "uniform"):
  """DDIM (Song et al., 2021) on `ddim_timesteps`, one lax.scan: [*shape] x_0, not clipped.

  From t to the next timestep s of the subsequence (s = -1 after the last,
  abar_{-1} = 1):
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z,
    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)).
  eta = 0 is deterministic given x_{T-1} (Euler's method for the probability-
  flow ODE in x / alpha and sigma / alpha); eta = 1 is the posterior variance,
  which over all T steps is exactly `ancestral_sample`. For eta > 1 the
  noise would exceed 1 - abar_s; the direction term is then floored at 0.
  `temperature` multiplies the initial noise and z, as in `ancestral_sample`.
  `num_steps` and `eta` are Python numbers: the coefficients are computed in
  float64 before the loop. `start` and `spacing`: as in `discrete_timesteps`.
  """
  ts = discrete_timesteps(schedule, num_steps, start, spacing)
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


# --- samplers on any path (a denoiser and a grid of times) ------------------------
@dataclasses.dataclass(frozen=True)
class Grid:
  """The times a sampler visits, from noise to data, float64 numpy.

  times [N]: the path times of the N network evaluations' points (int steps
  of a DiscretePath, floats of a FlowPath); alpha, sigma [N + 1]: the path's
  coefficients there, and at the clean end (alpha 1, sigma 0) last.
  """
  times: np.ndarray
  alpha: np.ndarray
  sigma: np.ndarray

  @property
  def num_steps(self) -> int:
    return len(self.times)


def make_grid(path, num_steps: int, max_noise_level: float = 0.0,
              spacing: str = "uniform") -> Grid:
  """N steps of `path`: a DiscretePath's `discrete_timesteps` (from its
  `first_step` under max_noise_level, by `spacing`); on a FlowPath, t evenly
  spaced from 1 to 0 (t = 0, the data, is the clean end)."""
  if isinstance(path, DiscretePath):
    times = discrete_timesteps(path.schedule, num_steps,
                               first_step(path.schedule, max_noise_level), spacing)
    abar = path.schedule["alphas_cumprod"][times]
    return Grid(times, np.append(np.sqrt(abar), 1.0), np.append(np.sqrt(1.0 - abar), 0.0))
  if spacing != "uniform":
    raise ValueError(f"config.eval.step_spacing={spacing!r} spaces a discrete schedule's "
                     f"steps (eps, v); flow matching's are even in t: leave it 'uniform'")
  if max_noise_level:
    raise ValueError(f"config.eval.max_noise_level={max_noise_level} caps a discrete "
                     f"schedule's noise (eps, v); flow matching starts at t = 1, where its "
                     f"x_0 estimate is not amplified: leave it 0")
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"config.eval.sampling_steps={num_steps!r} must be a positive integer")
  t = np.linspace(1.0, 0.0, num_steps + 1)
  return Grid(t[:-1].astype(np.float32), 1.0 - t, t)


def _per_step(grid: Grid, shape):
  """(times as a jax array, a function index -> [b] times) for the scans."""
  dtype = jnp.int32 if np.issubdtype(grid.times.dtype, np.integer) else jnp.float32
  times = jnp.asarray(grid.times, dtype)
  return lambda i: jnp.full((shape[0],), times[i], dtype)


def euler_sample(denoise, grid: Grid, rng, shape: tuple[int, ...], temperature=1.0):
  """x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} eps_hat: [*shape] x_0, not clipped.

  On a FlowPath this is exactly Euler's step x + (t_{i+1} - t_i) u with the
  velocity u = eps_hat - x0_hat; on a DiscretePath it is deterministic DDIM.
  """
  time_at = _per_step(grid, shape)
  alpha = jnp.asarray(grid.alpha, jnp.float32)
  sigma = jnp.asarray(grid.sigma, jnp.float32)

  def step(x, i):
    x0_hat, eps_hat = denoise(x, time_at(i))
    return alpha[i + 1] * x0_hat + sigma[i + 1] * eps_hat, None

  x = temperature * jax.random.normal(rng, shape)
  x, _ = jax.lax.scan(step, x, jnp.arange(grid.num_steps))
  return x


def heun_sample(denoise, grid: Grid, rng, shape: tuple[int, ...], form: str,
                temperature=1.0):
  """Heun's second-order method for the probability-flow ODE: [*shape] x_0, not clipped.

  form="edm" (eps, v; Karras et al., 2022, Algorithm 1 without churn): the
  ODE dy/ds = eps_hat in y = x / alpha and s = sigma / alpha, whose Euler
  step is deterministic DDIM. form="flow" (flow matching): dx/dt = u =
  eps_hat - x0_hat in x and t. Every step but the last is Euler's predictor
  and the trapezoid corrector (2 network calls); the last, to the clean end,
  is Euler's (it lands on x0_hat in both forms).
  """
  if form not in ("edm", "flow"):
    raise ValueError(f"heun form {form!r}: valid edm, flow")
  time_at = _per_step(grid, shape)
  alpha = jnp.asarray(grid.alpha, jnp.float32)
  if form == "edm":
    knots = jnp.asarray(grid.sigma / grid.alpha, jnp.float32)
    to_x = lambda y, i: alpha[i] * y
    slope = lambda x0_hat, eps_hat: eps_hat
  else:
    knots = jnp.asarray(grid.sigma, jnp.float32)  # sigma_t = t on a FlowPath
    to_x = lambda y, i: y
    slope = lambda x0_hat, eps_hat: eps_hat - x0_hat

  def derivative(y, i):
    return slope(*denoise(to_x(y, i), time_at(i)))

  def step(y, i):
    d = derivative(y, i)
    h = knots[i + 1] - knots[i]
    predicted = y + h * d
    return y + h * 0.5 * (d + derivative(predicted, i + 1)), None

  x = temperature * jax.random.normal(rng, shape)
  y = x / alpha[0] if form == "edm" else x
  last = grid.num_steps - 1
  y, _ = jax.lax.scan(step, y, jnp.arange(last))
  return y + (knots[last + 1] - knots[last]) * derivative(y, last)


def dpmpp_2m_sample(denoise, grid: Grid, rng, shape: tuple[int, ...], temperature=1.0):
  """DPM-Solver++(2M) (Lu et al., 2022), multistep second order in the data
  prediction: [*shape] x_0, not clipped.

  With lambda = log(alpha / sigma) and h_i = lambda_{i+1} - lambda_i:
    x_{i+1} = sigma_{i+1} / sigma_i x_i - alpha_{i+1} (exp(-h_i) - 1) D_i,
  D_i = x0_hat_i at the first step and (1 + 1/(2r)) x0_hat_i - 1/(2r)
  x0_hat_{i-1}, r = h_{i-1} / h_i, after it. The last step, to sigma = 0
  (lambda = inf), is the first-order limit x = x0_hat. One network call a step.
  """
  time_at = _per_step(grid, shape)
  with np.errstate(divide="ignore"):
    lam = np.log(grid.alpha) - np.log(grid.sigma)  # inf at the clean end
  n = grid.num_steps
  x = temperature * jax.random.normal(rng, shape)
  x0_hat, _ = denoise(x, time_at(0))
  if n == 1:
    return x0_hat
  h = lam[1:n] - lam[:n - 1]  # [n - 1] finite steps (the last one is to lambda = inf)
  # Step 0 is first order; steps 1 .. n-2 second order.
  first = (grid.sigma[1] / grid.sigma[0]) * x - grid.alpha[1] * np.expm1(-h[0]) * x0_hat
  coefficients = [jnp.asarray(c, jnp.float32) for c in (
      grid.sigma[2:n] / grid.sigma[1:n - 1],              # sigma_{i+1} / sigma_i
      -grid.alpha[2:n] * np.expm1(-h[1:]),                # -alpha_{i+1} (e^{-h} - 1)
      1.0 / (2.0 * h[:-1] / h[1:]))]                      # 1 / (2 r)

  def step(carry, inputs):
    x, previous = carry
    i, sigma_ratio, scale, half_inverse_r = inputs
    current, _ = denoise(x, time_at(i))
    d = (1.0 + half_inverse_r) * current - half_inverse_r * previous
    return (sigma_ratio * x + scale * d, current), None

  (x, _), _ = jax.lax.scan(step, (first, x0_hat),
                           (jnp.arange(1, n - 1), *coefficients))
  x0_hat, _ = denoise(x, time_at(n - 1))
  return x0_hat
