"""Settings measured on XLA:CPU are "auto": chosen per backend, with their reason."""

import json
import os

import pytest

from configs import autoencoder, conv_autoencoder, ddpm, gan
from gen import loop, platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_auto_resolves_per_backend_and_names_the_measurement():
  config = conv_autoencoder.get_config()
  cpu, why_cpu = platform.resolve(config, "cpu")
  assert (cpu.model.conv_transpose_impl, cpu.train.steps_per_call,
          cpu.train.unroll_steps) == ("phases", 10, 10)
  assert "experiments/benchmarks/benchmark.py" in why_cpu["model.conv_transpose_impl"]["why"]
  for backend in ("gpu", "tpu"):
    native, why = platform.resolve(config, backend)
    assert (native.model.conv_transpose_impl, native.train.steps_per_call,
            native.train.unroll_steps) == ("dilated", 1, 1)
    assert all("not measured" in choice["why"] or "not been measured" in choice["why"]
               for choice in why.values())
  # The U-Net and the DCGAN run one step per call everywhere; the DCGAN's
  # transposed convolutions follow the backend too.
  assert platform.resolve(ddpm.get_config(), "cpu")[0].train.steps_per_call == 1
  assert platform.resolve(gan.get_config(), "gpu")[0].model.conv_transpose_impl == "dilated"


def test_explicit_values_stay_and_auto_fits_the_step_counts():
  config = conv_autoencoder.get_config()
  config.train.num_steps, config.train.log_every = 120, 4
  config.train.eval_every, config.checkpoint.every_steps = 60, 60
  resolved, why = platform.resolve(config, "cpu")
  assert resolved.train.steps_per_call == 4  # the largest <= 10 dividing 120, 4, 60, 60
  assert "divides" in why["train.steps_per_call"]["why"]
  explicit = autoencoder.get_config()
  explicit.train.steps_per_call = "5"  # as --config.train.steps_per_call=5 arrives
  resolved, why = platform.resolve(explicit, "gpu")
  assert resolved.train.steps_per_call == 5 and "train.steps_per_call" not in why
  bad = autoencoder.get_config()
  bad.train.steps_per_call = "fast"
  with pytest.raises(ValueError, match="config.train.steps_per_call='fast'"):
    loop.train_and_evaluate(bad, "/tmp/unused-gen-workdir")


def test_a_run_logs_and_records_what_auto_became(tmp_path):
  config = autoencoder.get_config("digits")
  config.eval.num_images = 0
  results = loop.train_and_evaluate(config, str(tmp_path))
  recorded = json.loads((tmp_path / "results.json").read_text())["auto_settings"]
  assert recorded == results["auto_settings"]
  assert recorded["train.steps_per_call"]["value"] == 1
  assert recorded["train.unroll_steps"]["value"] == 10
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps_per_call"] == 1


_YNN = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture
def backends_not_started(monkeypatch):
  from jax._src import xla_bridge
  monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
  monkeypatch.setattr(platform, "_ACCELERATOR_PLUGINS", ())
  monkeypatch.setattr(platform, "_added_flags", {})


def test_cpu_xla_flags_are_added_to_the_users_and_recorded(backends_not_started):
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  added = platform.use_cpu_xla_flags(environ)
  assert set(added) == set(platform.CPU_XLA_FLAGS)
  assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                          *platform.CPU_XLA_FLAGS]
  choice = platform.xla_flag_choices()["XLA_FLAGS"]
  assert choice["value"] == " ".join(platform.CPU_XLA_FLAGS)
  assert "twin_benchmark" in choice["why"]  # the measurement that chose it


@pytest.mark.parametrize("environ", [
    {"XLA_FLAGS": f"{_YNN}=INDIVIDUAL_DOT"},  # the user's own value of that flag
    {"GEN_CPU_XLA_FLAGS": "0"},               # opted out
    {"JAX_PLATFORMS": "cuda"},                # another platform first
])
def test_cpu_xla_flags_leave_the_users_choice_alone(backends_not_started, environ):
  before = dict(environ)
  assert platform.use_cpu_xla_flags(environ) == {}
  assert environ == before
  assert platform.xla_flag_choices() == {}


def test_cpu_xla_flags_are_not_set_once_the_backends_started(monkeypatch):
  # In this test process JAX's backends are already running: too late.
  monkeypatch.setattr(platform, "_ACCELERATOR_PLUGINS", ())
  monkeypatch.setattr(platform, "_added_flags", {})
  environ = {}
  assert platform.use_cpu_xla_flags(environ) == {} and environ == {}


def test_importing_gen_first_compiles_convolutions_without_library_fusions():
  import subprocess
  import sys
  code = ("import gen, jax, jax.numpy as jnp\n"
          "conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
          "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
          "text = jax.jit(conv).lower(jnp.ones((8, 14, 14, 32)), jnp.ones((3, 3, 32, 32)))"
          ".compile().as_text()\n"
          "print('ynn' in text)")
  outputs = {}
  for opt_out in ("1", "0"):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(GEN_CPU_XLA_FLAGS=opt_out, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=ROOT, check=True)
    outputs[opt_out] = done.stdout.split()[-1]
  assert outputs == {"1": "False", "0": "True"}  # with gen's flags / XLA's default


def test_steps_of_some_models_get_their_measured_library_fusions_back(monkeypatch):
  monkeypatch.setattr(platform, "_added_flags", {})
  assert platform.compiler_options("vae") is None  # the process's own flags rule
  monkeypatch.setattr(platform, "_added_flags", dict(platform.CPU_XLA_FLAGS))
  options = platform.compiler_options("vae")
  assert options == {"xla_cpu_experimental_ynn_fusion_type":
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
  assert platform.compiler_options("autoencoder") is None
  choices = platform.xla_flag_choices("unet")
  assert "examples/s" in choices["step_compiler_options"]["why"]
  # XLA accepts them: a step compiles with them.
  import jax
  import jax.numpy as jnp
  jax.jit(lambda x: x @ x, compiler_options=options).lower(jnp.ones((4, 4))).compile()


def test_cpu_xla_flags_inherited_from_a_parent_that_imported_gen_stay_gens(
    backends_not_started):
  # A child process (a test's subprocess, a launcher's worker) inherits the
  # parent's XLA_FLAGS: the per-model options must still apply there.
  environ = {"XLA_FLAGS": " ".join(platform.CPU_XLA_FLAGS)}
  assert platform.use_cpu_xla_flags(environ) == {}
  assert environ["XLA_FLAGS"] == " ".join(platform.CPU_XLA_FLAGS)  # not doubled
  assert platform.xla_flag_choices()["XLA_FLAGS"]["value"] == " ".join(platform.CPU_XLA_FLAGS)
