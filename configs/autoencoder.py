"""Dense autoencoder on Fashion-MNIST: the course's 784-128-64-128-784 network.

  python experiments/main.py --config=configs/autoencoder.py --workdir=runs/ae
  python experiments/main.py --config=configs/autoencoder.py --workdir=runs/ae16 \
      --config.model.bottleneck=16

Should reach a test reconstruction MSE of about 0.01 (pixels in [0, 1]) with
bottleneck 64 after 5000 steps at batch 128: measured 0.0104, in 30-35 s on 2 CPU
cores.

  python experiments/main.py --config=configs/autoencoder.py:digits --workdir=runs/ae_digits

is the quick variant: 8x8 digits, 40 steps, seconds; the tests run it.

Final evaluation (test split, FD on 5,000 decoded samples): 0.4 minutes
on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

  :gpu  accelerator-sized: batch 4096 (same network and steps, so more
        epochs); not yet measured on an accelerator (experiments/device_suite.py).
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
    default.use_quick_digits(config)
    config.model.hidden_sizes = (32,)
    config.model.bottleneck = 8
  elif variant == "gpu":
    # Batch 128 leaves an accelerator idle between launches of this tiny net.
    config.train.batch_size = 4096
  elif variant:
    raise ValueError(f"--config=configs/autoencoder.py:{variant}: unknown variant; "
                     f"valid: digits, gpu (or none)")
  return config
