"""Diffusion and flow-matching math, independent of any network.

paths     the Gaussian paths x_t = alpha_t x_0 + sigma_t eps: DDPM's discrete
          variance-preserving schedules and flow matching's straight line;
          the three training objectives (eps, v, velocity) and the
          conversions between a network's output and (x_0, eps) predictions.
samplers  every sampler as one compiled lax.scan, written for any denoiser.
likelihood  log-likelihood through the probability-flow ODE.

gen.families.ddpm puts a U-Net behind these; the tests put the exact
denoiser of Gaussian data behind them.
"""
