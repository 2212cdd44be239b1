"""Log-likelihood of a diffusion or flow-matching model through its probability-flow ODE.

Sampling by an ODE makes the model a continuous normalizing flow (Song et
al., 2021, section 4.3; Chen et al., 2018): along dx/ds = f(x, s), s from 0
(data) to 1 (noise), the log-density changes by d log p(x(s)) / ds =
-div f(x(s), s), so

  log p_0(x) = log N(x(1); 0, I) + int_0^1 div f(x(s), s) ds.

For a path x_s = alpha_s x_0 + sigma_s eps the ODE's velocity is
f = alpha'_s E[x_0 | x_s] + sigma'_s E[eps | x_s]: the network's (x0_hat,
eps_hat) at that time, whatever its objective (gen.diffusion.paths).

The divergence is exact (the trace of the Jacobian, D forward-mode passes:
cheap for 2-D data) or Hutchinson's unbiased estimate E[v^T J v] with
`num_probes` Gaussian probes per example, drawn once and held along the path
(Grathwohl et al., 2019). Integration: Heun's method with `num_steps` fixed
steps (2 velocity evaluations each), so the cost and the error are set in
advance and reported beside the number. The result is an estimate: its
error is the ODE's discretization, the estimator's variance, and the prior's
mismatch at s = 1 (DDPM's x_{T-1} keeps sqrt(abar_{T-1}) of the data).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gen.diffusion import paths


def probability_flow(network, objective: str, path):
  """f(x [b, ...], s []) -> dx/ds [b, ...], for network(x, network time [b]) -> raw output."""

  def velocity(x, s):
    t, alpha, sigma, dalpha, dsigma = path.ode_coefficients(s)
    batch = x.shape[0]
    output = network(x, jnp.full((batch,), t, jnp.float32))
    x0_hat, eps_hat = paths.predictions(objective, output, x, jnp.full((batch,), alpha),
                                        jnp.full((batch,), sigma))
    return dalpha * x0_hat + dsigma * eps_hat

  return velocity


def _divergence(velocity, x, s, probes, exact: bool):
  """(f(x, s), div f estimate [b]): exact trace, or the mean of v^T J v over probes."""
  flat = lambda y: y.reshape(y.shape[0], -1)
  value, jvp = jax.linearize(lambda y: velocity(y, s), x)
  if exact:
    dims = flat(x).shape[1]
    basis = jnp.eye(dims, dtype=x.dtype).reshape(dims, 1, *x.shape[1:])
    columns = jax.vmap(lambda e: flat(jvp(jnp.broadcast_to(e, x.shape))))(basis)  # [D, b, D]
    return value, jnp.einsum("ibi->b", columns)
  products = jax.vmap(jvp)(probes)  # [k, b, ...]
  per_probe = jnp.sum((probes * products).reshape(*probes.shape[:2], -1), axis=-1)
  return value, jnp.mean(per_probe, axis=0)


def log_likelihood(velocity, x, rng, num_steps: int, num_probes: int = 1,
                   exact_trace: bool = False):
  """log p_0(x) in nats, [b], by Heun's method over `num_steps` steps from s = 0 to 1.

  velocity: f(x, s) from `probability_flow` (or any ODE of that form);
  x: [b, ...] data in the model's space; rng: the Hutchinson probes
  ([num_probes, b, ...] standard normal; unused with exact_trace).
  """
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"config.eval.ode_likelihood_steps={num_steps!r} must be a positive "
                     f"integer")
  if not exact_trace and (not isinstance(num_probes, int) or num_probes < 1):
    raise ValueError(f"config.eval.ode_likelihood_probes={num_probes!r} must be a positive "
                     f"integer")
  probes = (None if exact_trace else
            jax.random.normal(rng, (num_probes, *x.shape), jnp.float32))
  h = 1.0 / num_steps

  def step(carry, i):
    y, integral = carry
    s = i * h
    d, div = _divergence(velocity, y, s, probes, exact_trace)
    predicted = y + h * d
    d_next, div_next = _divergence(velocity, predicted, s + h, probes, exact_trace)
    return (y + 0.5 * h * (d + d_next), integral + 0.5 * h * (div + div_next)), None

  (z, integral), _ = jax.lax.scan(step, (x, jnp.zeros(x.shape[0], jnp.float32)),
                                  jnp.arange(num_steps, dtype=jnp.float32))
  flat_z = z.reshape(z.shape[0], -1)
  prior = -0.5 * jnp.sum(flat_z ** 2, axis=1) - 0.5 * flat_z.shape[1] * math.log(2 * math.pi)
  return prior + integral
