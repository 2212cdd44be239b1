"""Convolutional autoencoder on Fashion-MNIST.

  python experiments/main.py --config=configs/conv_autoencoder.py --workdir=runs/conv_ae

Two stride-2 convolutions (28 -> 14 -> 7), a dense bottleneck of 64 and the
mirror-image decoder: the convolutional counterpart of configs/autoencoder.py.
After the default 5000 steps it should reach a test reconstruction MSE of about
0.009 (measured 0.0088, against 0.0104 for the dense network), in 8 minutes on
2 CPU cores (about 1,500 examples/s; experiments/benchmarks/benchmark.py). Final
evaluation (test split, FD on 5,000 samples): 0.5 minutes on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/conv_autoencoder.py:<variant>):
  gpu  accelerator-sized: batch 1024 (same network and steps, so more epochs);
       not yet measured on an accelerator (experiments/device_suite.py).
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.model.name = "conv_autoencoder"
  config.model.features = (32, 64)
  config.model.bottleneck = 64
  config.model.activation = "relu"
  config.model.output_activation = "sigmoid"
  config.model.loss = "binary_crossentropy"
  # phases | subpixel | dilated: same parameters and outputs, different speed
  # (gen.models.layers.ConvTranspose; dilated is flax's own layer). "auto":
  # phases on CPU, dilated on GPU/TPU (gen/platform.py). steps_per_call stays
  # "auto": 10 steps per compiled call on CPU, ~35% faster (README, Benchmark).
  config.model.conv_transpose_impl = "auto"
  if variant == "gpu":
    config.train.batch_size = 1024
  elif variant:
    raise ValueError(f"--config=configs/conv_autoencoder.py:{variant}: unknown variant; "
                     f"valid: gpu (or none)")
  return config
