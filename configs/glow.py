"""Glow (Kingma and Dhariwal, 2018) on Fashion-MNIST: the flow family with
actnorm, invertible 1x1 convolutions and affine couplings.

  python experiments/main.py --config=configs/glow.py --workdir=runs/glow

Two scales (14x14x4 and 7x7x8 after the squeezes), 8 steps each, residual
s/t networks of width 64; the same dequantized, logit-squeezed data and the
same exact bits/dim as configs/realnvp.py. Actnorm starts from the
statistics of the first train batch (data-dependent initialization).
Final evaluation (test bits/dim, FD on 5,000 samples): 0.6 minutes, :vd 0.8
on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/glow.py:<variant>):
  digits  8x8 digits, 2 steps per scale; seconds. The tests run it.
  vd      variational dequantization (Flow++, Ho et al., 2019): the noise u
          that dequantizes each 8-bit image is drawn from a learned q(u | x)
          (4 checkerboard couplings conditioned on the image, then a
          sigmoid) instead of U[0, 1); the test figure is then the bound
          -E_q[log p(x + u) - log q(u | x)] in bits/dim.
  vd_digits  the same on 8x8 digits; seconds.
"""

from configs import realnvp


def get_config(variant: str = ""):
  if variant not in ("", "digits", "vd", "vd_digits"):
    raise ValueError(f"--config=configs/glow.py:{variant}: unknown variant; "
                     f"valid: digits, vd, vd_digits (or none)")
  digits = variant.endswith("digits")
  config = realnvp.get_config("digits" if digits else "")
  for key in ("num_couplings", "num_final_couplings"):
    del config.model[key]
  config.model.name = "glow"
  config.model.num_scales = 2
  config.model.steps_per_scale = 8
  config.model.features = 64
  config.model.num_res_blocks = 1
  if variant.startswith("vd"):
    config.model.dequantization = "variational"
    config.model.dequantizer_couplings = 4
    config.model.dequantizer_features = 16 if digits else 32
    config.data.dequantize = False  # the model draws its own noise
  if digits:
    config.model.steps_per_scale = 2
    config.model.features = 16
  return config
