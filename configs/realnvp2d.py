"""RealNVP on 2-D points: a ring of 8 Gaussians, whose entropy is known.

  python experiments/main.py --config=configs/realnvp2d.py --workdir=runs/realnvp2d

Should reach a test NLL within 0.05 nats of the density's entropy, 0.3121
nats (log 8 + log(2 pi e 0.1^2)): measured 0.3307 (0.019 above), with the mass
of the model's density on a 200x200 grid 1.001, in 20 minutes on 2 CPU cores
(shared with another run). `:quick` is the seconds-long variant the tests run.

Other densities: --config.data.toy2d.density=moons (or checkerboard).
Final evaluation (test NLL, the density on a grid): seconds.
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.data.name = "toy2d"
  config.data.toy2d.density = "ring8"
  config.model.name = "realnvp2d"
  config.model.num_couplings = 32
  config.model.hidden_sizes = (128, 128)
  config.model.activation = "relu"
  config.model.rotate = True
  config.train.batch_size = 512
  config.train.num_steps = 40_000
  config.train.eval_every = 5000
  config.train.log_every = 500
  # 10 steps per call in a while loop: this small MLP gains nothing from
  # unrolling, and 10 unrolled copies of 32 couplings take minutes to compile.
  config.train.steps_per_call = 10
  config.train.unroll_steps = 1
  config.train.ema_decay = 0.999
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 200
  config.checkpoint.every_steps = 5000
  config.eval.num_images = 2000
  if variant == "quick":
    config.model.num_couplings = 4
    config.model.hidden_sizes = (32, 32)
    config.train.batch_size = 128
    config.train.ema_decay = 0.0
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
