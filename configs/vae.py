"""Dense VAE on Fashion-MNIST, 8-bit pixels through a discretized logistic.

  python experiments/main.py --config=configs/vae.py --workdir=runs/vae

Should reach a test bound of about 3.45 bits/dim (ELBO) and 3.39 bits/dim
(importance-weighted, K=1000) on the 8-bit test images: measured 3.450 and
3.389 after 20,000 steps: 5.5 minutes of training and 4 of K=1000 test
evaluation on 2 CPU cores (shared with another run). Final evaluation
(K=1000 bound over the 10,000 test images, FD on 5,000 samples): 2.2 minutes
on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/vae.py:<variant>):
  binarized  Bernoulli decoder on dynamically binarized pixels (bound in nats).
  latent2    a 2-D latent space, whose test latents are drawn coloured by label.
  digits     8x8 digits, seconds; the tests run it.
  toy2d      a ring of 8 Gaussians with a Gaussian decoder; seconds.
  gpu        accelerator-sized: batch 512 (same network and steps, so more
             epochs); not yet measured on an accelerator (experiments/device_suite.py).
  cond       a conditional VAE: encoder and decoder see the class (one-hot),
             and p(z | y) is a learned Gaussian per class
             (config.model.class_prior); samples are drawn for the class asked
             for. With N(0, I) instead, the decoder read the class from z and
             ignored the label (docs/conditional.md).
  cond_digits  the same on 8x8 digits; seconds.
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.model.name = "vae"
  config.model.latent_dim = 32
  config.model.hidden_sizes = (512, 256)
  config.model.activation = "relu"
  config.model.decoder = "logistic"
  # A conditional VAE when > 0: encoder and decoder see the label (:cond).
  config.model.num_classes = 0
  # A conditional VAE's p(z | y): a learned Gaussian per class, or N(0, I).
  config.model.class_prior = False
  config.model.beta = 1.0
  config.model.kl_warmup_steps = 2000
  config.data.scale = "symmetric"
  config.train.batch_size = 128
  config.train.num_steps = 20_000
  config.train.eval_every = 2000
  config.train.log_every = 200
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.end_factor = 0.05
  config.checkpoint.every_steps = 2000
  config.eval.iw_chunk = 50
  apply_variant(config, variant, "configs/vae.py")
  return config


def apply_variant(config, variant: str, path: str):
  """The variants shared by configs/vae.py and configs/conv_vae.py."""
  if variant == "binarized":
    config.model.decoder = "bernoulli"
    config.data.scale = "unit"
    config.data.binarize = "dynamic"
  elif variant == "latent2":
    config.model.latent_dim = 2
  elif variant == "digits":
    default.use_quick_digits(config)
    config.model.latent_dim = 2
    config.model.kl_warmup_steps = 20
    config.eval.iw_samples = 20
    config.eval.iw_chunk = 10
  elif variant == "toy2d":
    config.data.name = "toy2d"
    config.data.validation_size = 5000
    config.model.decoder = "gaussian"
    config.model.latent_dim = 2
    config.model.kl_warmup_steps = 500
    config.train.batch_size = 256
    config.train.num_steps = 4000
    config.train.eval_every = 1000
    config.train.log_every = 200
    config.eval.iw_samples = 100
    config.eval.iw_chunk = 50
    config.eval.num_images = 1000
    config.checkpoint.every_steps = 1000
  elif variant == "gpu":
    config.train.batch_size = 512
  elif variant in ("cond", "cond_digits"):
    if variant == "cond_digits":
      apply_variant(config, "digits", path)
    config.model.num_classes = 10
    config.model.class_prior = True
  elif variant:
    raise ValueError(f"--config={path}:{variant}: unknown variant; "
                     f"valid: binarized, latent2, digits, toy2d, gpu, cond, cond_digits "
                     f"(or none)")
