"""Bad settings fail at start with an error that names the key."""

import jax
import pytest

from configs import autoencoder
from gen import config as config_lib
from gen import loop
from tests.helpers import run_main


def _config():
  return autoencoder.get_config("digits")


def test_the_shipped_configs_are_valid():
  from configs import conv_autoencoder, default
  for module in (default, autoencoder, conv_autoencoder):
    config_lib.validate(module.get_config())


@pytest.mark.parametrize("key,value,message", [
    ("train.batch_size", -4, "config.train.batch_size=-4: must be a positive integer"),
    ("train.num_steps", 0, "config.train.num_steps=0"),
    ("optimizer.name", "lion", "config.optimizer.name='lion'"),
    ("optimizer.learning_rate", -1.0, "config.optimizer.learning_rate=-1.0"),
    ("data.scale", "zero_one", "config.data.scale='zero_one'"),
    ("data.binarize", "yes", "config.data.binarize='yes'"),
    ("checkpoint.best_mode", "lowest", "config.checkpoint.best_mode='lowest'"),
    ("train.ema_decay", 1.0, "config.train.ema_decay=1.0"),
])
def test_impossible_values_name_the_key(key, value, message):
  config = _config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  assert message in str(error.value)


def test_steps_must_be_multiples_of_steps_per_call():
  config = _config()
  config.train.steps_per_call = 7
  with pytest.raises(ValueError, match="config.train.num_steps=40: must be a multiple"):
    config_lib.validate(config)


def test_unknown_keys_are_named():
  config = _config()
  config.train.unlock()
  config.train.learning_rate = 0.1  # belongs in config.optimizer
  with pytest.raises(ValueError, match="config.train.learning_rate is not a known setting"):
    config_lib.validate(config)


def test_unknown_model_key_lists_the_valid_ones(tmp_path):
  config = _config()
  config.model.bottlenek = 3
  with pytest.raises(ValueError, match=r"config.model.bottlenek.*valid:.*bottleneck"):
    loop.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("key,value,message", [
    ("loss", "hinge", "config.model.loss='hinge' is not known"),
    ("output_activation", "softplus", "config.model.output_activation='softplus'"),
])
def test_unknown_loss_or_activation(tmp_path, key, value, message):
  config = _config()
  config.model[key] = value
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, str(tmp_path))


def test_a_loss_the_model_cannot_produce(tmp_path):
  config = _config()
  config.data.scale = "symmetric"  # targets in [-1, 1]; a sigmoid cannot reach -1
  with pytest.raises(ValueError, match="output_activation='sigmoid' cannot produce"):
    loop.train_and_evaluate(config, str(tmp_path))
  config.model.output_activation = "tanh"  # now the range fits, but BCE needs [0, 1]
  with pytest.raises(ValueError, match="config.model.loss='binary_crossentropy' needs"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_batch_not_divisible_by_devices(tmp_path):
  assert jax.device_count() == 8
  config = _config()
  config.train.batch_size = 12
  with pytest.raises(ValueError, match=r"config.train.batch_size=12 must be divisible by "
                                       r"the number of devices \(8"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_command_line_overrides_and_their_errors(tmp_path):
  result = run_main("configs/autoencoder.py:digits", str(tmp_path / "bad"),
                    "--config.model.bottlenek=3")
  assert result.returncode != 0
  assert "bottlenek" in result.stderr
  result = run_main("configs/autoencoder.py:digits", str(tmp_path / "ok"),
                    "--config.model.bottleneck=3", "--config.train.num_steps=10",
                    "--config.train.log_every=10", "--config.train.eval_every=10")
  assert result.returncode == 0, result.stderr
  assert "bottleneck: 3" in (tmp_path / "ok" / "config.txt").read_text()
