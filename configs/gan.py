"""DCGAN on Fashion-MNIST (non-saturating loss, EMA generator for sampling).

  python experiments/train_classifier.py          # once: the metrics' classifier
  python experiments/main.py --config=configs/gan.py --workdir=runs/gan

Sample quality (FID in the classifier's features, beside the train-vs-test
baseline at the same sample count) is in results.json under
"sample_quality" (the final evaluation, FD on 5,000 samples: 0.5 minutes
on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md)). Measured (10,000 steps: a 4000-step run continued in its workdir, the
schedule constant, so the same as one run; 33 + 30 minutes of training on
2 CPU cores, the first part shared with a DDPM run):
10,000 samples, classifier FID 195.4 (train-vs-test baseline 1.67),
precision/recall 0.574/0.567, all 10 classes covered (total variation 0.050
to the test labels). At 4000 steps: FID 376.0, precision/recall 0.575/0.405.

Variants:
  :toy2d     an MLP pair on the ring of 8 Gaussians; mode coverage in results.json
             (--config.model.loss=minimax for the original, saturating game)
  :digits    8x8 digits, seconds; the tests run it
  :cond      class-conditional: the generator sees a class embedding beside z,
             the discriminator projects the label onto its features (Miyato
             and Koyama, 2018); spectral normalization in D, as they train it
  :cond_digits  the same on 8x8 digits; seconds
  :gpu       accelerator-sized: generator (256, 128), discriminator (128, 256),
             batch 256; not yet measured on an accelerator (experiments/device_suite.py;
             its PyTorch twin is experiments/benchmarks/torch_twins.py's dcgan_gpu)
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.data.scale = "symmetric"
  config.model.name = "dcgan"
  config.model.latent_dim = 64
  config.model.generator_channels = (128, 64)
  config.model.discriminator_channels = (64, 128)
  config.model.generator_norm = "batch"
  config.model.spectral_norm_iterations = 0
  config.model.conv_transpose_impl = "auto"  # gen/platform.py
  config.model.loss = "non_saturating"
  config.model.disc_steps = 1
  config.model.r1_weight = 0.0
  config.model.disc_learning_rate = 0.0  # 0 = config.optimizer.learning_rate
  config.model.num_classes = 0  # > 0: class-conditional (:cond)
  config.train.batch_size = 64
  # ~4.7 epochs: what 2 CPU cores (~2-4 steps/s) give in half an hour.
  config.train.num_steps = 10_000
  config.train.eval_every = 2000
  config.train.log_every = 100
  config.train.ema_decay = 0.999
  # Adam with beta1 = 0.5, as DCGAN: momentum lags behind a moving opponent.
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.checkpoint.every_steps = 1000
  # A GAN's losses do not rank checkpoints by quality: keep the newest only.
  config.checkpoint.best_metric = ""
  config.eval.temperatures = (1.0,)
  if variant == "toy2d":
    config.data.name = "toy2d"
    config.data.toy2d.density = "ring8"
    config.data.toy2d.noise = 0.05
    config.model.name = "mlp_gan"
    del config.model.generator_channels, config.model.discriminator_channels
    del config.model.generator_norm, config.model.conv_transpose_impl, config.model.num_classes
    config.model.latent_dim = 2
    config.model.hidden_sizes = (128, 128, 128)
    config.model.activation = "relu"
    config.train.batch_size = 256
    config.train.num_steps = 10_000
    config.train.steps_per_call = 10
    config.train.unroll_steps = 1
    config.train.ema_decay = 0.0
    config.optimizer.learning_rate = 1e-4
    config.eval.num_images = 2000
  elif variant == "digits":
    default.use_quick_digits(config)
    config.model.latent_dim = 16
    config.model.generator_channels = (32,)
    config.model.discriminator_channels = (32,)
    config.train.ema_decay = 0.9
  elif variant in ("cond", "cond_digits"):
    if variant == "cond_digits":
      return _conditional(get_config("digits"))
    return _conditional(config)
  elif variant == "gpu":
    config.model.generator_channels = (256, 128)
    config.model.discriminator_channels = (128, 256)
    config.train.batch_size = 256
  elif variant:
    raise ValueError(f"--config=configs/gan.py:{variant}: unknown variant; "
                     f"valid: toy2d, digits, cond, cond_digits, gpu (or none)")
  return config


def _conditional(config):
  config.model.num_classes = 10
  config.model.spectral_norm_iterations = 1
  return config
