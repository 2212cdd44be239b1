"""Convolutional VAE on Fashion-MNIST, 8-bit pixels through a discretized logistic.

  python experiments/main.py --config=configs/conv_vae.py --workdir=runs/conv_vae

Reached (20,000 steps, 2 CPU cores shared with a DDPM run: 37 minutes of
training at ~1,190 examples/s, then 28 minutes for the K=1000 test bound at
eval.batch_size=100): test bits/dim ELBO 3.310, importance-weighted K=1000
3.259 (both bounds; RealNVP's exact figure is 3.298 at
9,000 steps, 3.192 at 22,000).

Final evaluation: 23 minutes alone on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md),
almost all of it the K=1000 bound over the 10,000 test images (progress is
logged; the first Ctrl-C stops it, the checkpoint is saved);
--config.eval.iw_samples=100 brings the whole end to about 3 minutes.

Variants as configs/vae.py: binarized, latent2, digits, cond, cond_digits, and
gpu (accelerator-sized: batch 512, same network; not yet measured on an
accelerator, experiments/device_suite.py).
"""

from configs import default, vae


def get_config(variant: str = ""):
  config = vae.get_config()
  config.model.name = "conv_vae"
  config.model.channels = (32, 64)
  config.model.hidden_size = 256
  del config.model.hidden_sizes
  config.model.conv_transpose_impl = "auto"  # gen/platform.py
  # Decoding K=1000 samples of a 1000-image batch at once would need ~40 GB
  # of activations; 100 images x 25 samples is ~0.3 GB.
  config.eval.batch_size = 100
  config.eval.iw_chunk = 25
  if variant == "toy2d":
    raise ValueError("--config=configs/conv_vae.py:toy2d: a convolutional VAE needs "
                     "images; use configs/vae.py:toy2d")
  vae.apply_variant(config, variant, "configs/conv_vae.py")
  if variant.endswith("digits"):
    config.model.channels = (16,)
    config.model.hidden_size = 64
    config.eval.batch_size = 64
  return config
