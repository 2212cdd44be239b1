"""RealNVP on 2-D points: a ring of 8 Gaussians, whose entropy is known.

  python experiments/main.py --config=configs/realnvp2d.py --workdir=runs/realnvp2d

TARGET_PLACEHOLDER

Other densities: --config.data.toy2d.density=moons (or checkerboard).
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.data.name = "toy2d"
  config.data.toy2d.density = "ring8"
  config.model.name = "realnvp2d"
  config.model.num_couplings = 10
  config.model.hidden_sizes = (128, 128)
  config.model.activation = "relu"
  config.train.batch_size = 256
  config.train.num_steps = 10_000
  config.train.eval_every = 2000
  config.train.log_every = 500
  config.train.steps_per_call = 10
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 200
  config.checkpoint.every_steps = 2000
  config.eval.num_images = 2000
  if variant == "quick":
    config.train.num_steps = 40
    config.train.eval_every = 20
    config.train.log_every = 10
    config.train.steps_per_call = 1
    config.checkpoint.every_steps = 10
    config.data.toy2d.num_train = 2000
    config.data.toy2d.num_test = 1000
    config.data.validation_size = 500
    config.eval.num_images = 200
  elif variant:
    raise ValueError(f"--config=configs/realnvp2d.py:{variant}: unknown variant; "
                     f"valid: quick (or none)")
  return config
