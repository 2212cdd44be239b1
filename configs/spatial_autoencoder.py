"""An autoencoder with a 7x7x4 code: the first stage of configs/latent.py.

  python experiments/main.py --config=configs/spatial_autoencoder.py --workdir=runs/spatial_ae

Residual convolutions down to a feature map of 7x7 positions and 4 channels
(196 numbers, against the conv autoencoder's 64) and back up; binary cross-
entropy on [0, 1] pixels. Its reconstructions are the floor of every latent
model built on it: reported as the reconstruction FD by configs/latent.py.
Final evaluation (test reconstructions): 0.1 minutes on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/spatial_autoencoder.py:<variant>):
  digits  8x8 digits (a 2x2x4 code); seconds. The latent tests run it.
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.model.name = "spatial_autoencoder"
  config.model.features = (32, 64)
  config.model.code_channels = 4
  config.model.num_res_blocks = 1
  config.model.activation = "silu"
  config.model.output_activation = "sigmoid"
  config.model.loss = "binary_crossentropy"
  # Gaussian noise of this std on codes of unit RMS while training (0 = none):
  # a decoder that tolerates a second stage's errors (docs/diffusion.md:
  # reconstruction FD 4.90 -> 6.54, but code noise of 0.2 std costs 8.8
  # instead of 28.9, and latent samples went from FD 31.7 to 26.4).
  config.model.code_noise = 0.1
  config.train.batch_size = 64
  config.train.num_steps = 6000
  config.train.eval_every = 1000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 200
  config.optimizer.end_factor = 0.05
  config.checkpoint.every_steps = 1000
  config.eval.fid_samples = 0
  if variant == "digits":
    default.use_quick_digits(config)
    config.model.features = (16, 32)
    config.optimizer.warmup_steps = 0
  elif variant:
    raise ValueError(f"--config=configs/spatial_autoencoder.py:{variant}: unknown variant; "
                     f"valid: digits (or none)")
  return config
