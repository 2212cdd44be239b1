"""The course's autoencoder experiment as a grid (12 runs on Fashion-MNIST).

  python experiments/sweep.py --sweep=configs/sweeps/seed_autoencoder.py \
      --workdir=runs/seed_autoencoder --parallel=2

bottleneck {64, 16} x output {relu + mean squared, sigmoid + mean squared,
sigmoid + binary cross-entropy} x optimizer {adadelta, adam}, every run the
same number of steps. Test reconstruction MSE on [0, 1] pixels is the number
that compares them, whatever loss each trained with.

Adadelta runs with learning rate 1.0 (Zeiler's method has no learning rate;
1.0 leaves its update unscaled, as Keras used to by default) and adam with 1e-3.
"""

import itertools

# The config file every run starts from; each run overrides some of its keys.
BASE_CONFIG = "configs/autoencoder.py"

# Overrides shared by every run.
COMMON = {
    "data.name": "fashion_mnist",
    "train.num_steps": 10_000,
    "train.eval_every": 500,
    "train.log_every": 500,
    "checkpoint.every_steps": 2_500,
    "train.batch_size": 128,
}

_OUTPUTS = {
    "relu_mse": {"model.output_activation": "relu", "model.loss": "mean_squared_error"},
    "sigmoid_mse": {"model.output_activation": "sigmoid", "model.loss": "mean_squared_error"},
    "sigmoid_bce": {"model.output_activation": "sigmoid", "model.loss": "binary_crossentropy"},
}
_OPTIMIZERS = {
    "adadelta": {"optimizer.name": "adadelta", "optimizer.learning_rate": 1.0,
                 "optimizer.rho": 0.95},
    "adam": {"optimizer.name": "adam", "optimizer.learning_rate": 1e-3},
}


def get_runs() -> dict[str, dict]:
  """Run name -> its overrides (on top of COMMON)."""
  runs = {}
  for bottleneck, output, optimizer in itertools.product((64, 16), _OUTPUTS, _OPTIMIZERS):
    name = f"b{bottleneck}_{output}_{optimizer}"
    runs[name] = {"model.bottleneck": bottleneck, **_OUTPUTS[output], **_OPTIMIZERS[optimizer]}
  return runs
