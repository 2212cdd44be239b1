"""Dense autoencoder on Fashion-MNIST: the course's 784-128-64-128-784 network.

  python experiments/main.py --config=configs/autoencoder.py --workdir=runs/ae
  python experiments/main.py --config=configs/autoencoder.py --workdir=runs/ae16 \
      --config.model.bottleneck=16

Should reach a test reconstruction MSE of about 0.01 (pixels in [0, 1]) with
bottleneck 64 after 5000 steps at batch 128: measured 0.0104, in 30-35 s on 2 CPU
cores.

  python experiments/main.py --config=configs/autoencoder.py:digits --workdir=runs/ae_digits

is the quick variant: 8x8 digits, 40 steps, seconds; the tests run it.
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.model.name = "dense_autoencoder"
  config.model.hidden_sizes = (128,)
  config.model.bottleneck = 64
  config.model.activation = "relu"
  config.model.output_activation = "sigmoid"
  config.model.loss = "binary_crossentropy"
  if variant == "digits":
    config.data.name = "digits"
    config.data.validation_size = 200
    config.model.hidden_sizes = (32,)
    config.model.bottleneck = 8
    config.train.batch_size = 32
    config.train.num_steps = 40
    config.train.eval_every = 20
    config.train.log_every = 10
    config.eval.batch_size = 64
    config.eval.num_images = 16
    config.checkpoint.every_steps = 10
  elif variant:
    raise ValueError(f"--config=configs/autoencoder.py:{variant}: unknown variant; "
                     f"valid: digits (or none)")
  return config
