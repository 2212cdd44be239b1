"""Convolutional autoencoder on Fashion-MNIST.

  python experiments/main.py --config=configs/conv_autoencoder.py --workdir=runs/conv_ae

Two stride-2 convolutions (28 -> 14 -> 7), a dense bottleneck of 64 and the
mirror-image decoder; should reach a lower test MSE than the dense network at
the same bottleneck.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "conv_autoencoder"
  config.model.features = (32, 64)
  config.model.bottleneck = 64
  config.model.activation = "relu"
  config.model.output_activation = "sigmoid"
  config.model.loss = "binary_crossentropy"
  return config
