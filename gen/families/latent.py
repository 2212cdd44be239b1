"""Latent generative models: a frozen first stage and a generative model of its codes.

The families composed (Rombach et al., 2022; Dai and Wipf's two-stage VAE,
2019): a finished autoencoder or VAE run (`config.latent.first_stage_workdir`,
its config and newest checkpoint) encodes every image to a code; the second
stage, the family that `config.model.name` trains (the diffusion family's
U-Net for feature-map codes), learns the distribution of those codes,
standardized per channel by statistics of the codes of train images. The
second stage never knows what it decodes to: samples are drawn as codes,
un-standardized and decoded by the first stage, and then measured as images
like every other family's.

The first stage's reconstructions bound what the composition can reach:
`reconstructor` gives them to the sample-quality report, which sets their FD
beside the samples'. gen.loop trains the first stage first when its workdir
holds no finished run (`prepare_first_stage`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen import models, platform
from gen.data import SourceInfo
from gen.errors import UserError
from gen.evaluate import sampling
from gen.families import FAMILIES

# Train images whose codes give the standardization statistics.
_STATISTICS_IMAGES = 10_000
# Families whose runs can be a first stage: they encode and decode.
FIRST_STAGE_FAMILIES = ("autoencoder", "vae")


def is_latent(config: ml_collections.ConfigDict) -> bool:
  return bool(config.get("latent") and config.latent.get("first_stage"))


def default_first_stage_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """A folder beside the run named after the first stage's config, so that
  latent runs on the same first stage share it: runs/latent ->
  runs/first_stage_spatial_autoencoder (runs/first_stage_<file>_<variant>)."""
  spec = config.latent.first_stage
  path, _, variant = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0] + (f"_{variant}" if variant else "")
  return os.path.join(os.path.dirname(os.path.abspath(workdir)), f"first_stage_{name}")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/spatial_autoencoder.py:digits' -> that file's get_config("digits")."""
  import importlib.util
  path, _, variant = spec.partition(":")
  if not os.path.exists(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, path)
  if not os.path.exists(path):
    raise UserError(f"config.latent.first_stage={spec!r}: no such config file")
  module_spec = importlib.util.spec_from_file_location("first_stage_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


def finished(workdir: str) -> bool:
  """Whether `workdir` holds a run that reached its num_steps and wrote results."""
  try:
    with open(os.path.join(workdir, "results.json")) as file:
      results = json.load(file)
    with open(os.path.join(workdir, "config.json")) as file:
      config = json.load(file)
  except (OSError, ValueError):
    return False
  return not results.get("preempted") and results.get("step", 0) >= config["train"]["num_steps"]


def prepare_first_stage(config: ml_collections.ConfigDict, workdir: str, train) -> (
    ml_collections.ConfigDict):
  """The config with config.latent.first_stage_workdir made absolute (default
  `default_first_stage_workdir`), after training the first stage there with
  `train(config, workdir)` when it holds no finished run (a stopped one
  resumes). The first stage's data must be the run's."""
  config = ml_collections.ConfigDict(config.to_dict())
  first_workdir = config.latent.first_stage_workdir or default_first_stage_workdir(
      config, workdir)
  config.latent.first_stage_workdir = os.path.abspath(first_workdir)
  if not finished(first_workdir):
    first_config = (_read_config(first_workdir) if os.path.exists(
        os.path.join(first_workdir, "config.json")) else load_config_file(
            config.latent.first_stage))
    check_first_stage(first_config, config, first_workdir)
    train(first_config, first_workdir)
  return config


def _read_config(workdir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(workdir, "config.json")) as file:
    return ml_collections.ConfigDict(json.load(file))


def check_first_stage(first_config, config, first_workdir: str) -> None:
  """One line naming the key at fault when the first stage cannot serve."""
  family = models.get(first_config.model.name).family
  if family not in FIRST_STAGE_FAMILIES:
    raise UserError(
        f"config.latent.first_stage_workdir={first_workdir!r} holds a run of "
        f"{first_config.model.name!r} ({family} family), which has no encoder; a first "
        f"stage is one of the families {', '.join(FIRST_STAGE_FAMILIES)}")
  if first_config.data.name != config.data.name:
    raise UserError(
        f"config.latent.first_stage_workdir={first_workdir!r} holds a run on "
        f"{first_config.data.name!r}, but config.data.name={config.data.name!r}")


@FAMILIES.register("latent")
class Latent:
  """A second-stage family (`inner`) trained on the codes of a frozen first stage.

  Everything the loop asks of a family is the inner family's, applied to
  codes; sampling and pictures go through the first stage's decoder.
  """

  code_name = None
  # Its second stages (the diffusion family, RealNVPVector) initialize from shapes.
  data_dependent_init = False

  def __init__(self, config: ml_collections.ConfigDict, info: SourceInfo):
    from gen import restore  # restore builds families: imported when one is made
    self.config, _ = platform.resolve(config)
    self.info = info
    first_workdir = config.latent.first_stage_workdir
    if not first_workdir or not finished(first_workdir):
      raise UserError(f"config.latent.first_stage_workdir={first_workdir!r} holds no "
                      f"finished run (experiments/main.py trains it first)")
    first_config = _read_config(first_workdir)
    check_first_stage(first_config, config, first_workdir)
    self.first = restore.load_run(first_workdir)
    self.first_family, self.first_params = self.first.family, self.first.params
    self.code_mean, self.code_std = self._code_statistics()
    self.code_shape = tuple(self._encode_shape())
    entry = models.get(config.model.name)
    # A dense second stage (a flow prior) sees the codes flattened.
    self.flatten = getattr(entry.module, "vector_input", False)
    shape = (int(np.prod(self.code_shape)),) if self.flatten else self.code_shape
    self.code_info = SourceInfo(f"{info.name}/codes", shape, "latent")
    self.inner = FAMILIES.get(entry.family)(self.config, self.code_info)
    # What the loop reads off a family.
    for name in ("eval_loss_key", "final_eval_differs", "curve_keys", "model"):
      setattr(self, name, getattr(self.inner, name))
    self.dequantize_in_eval = self.first_family.dequantize_in_eval

  # --- the codes ------------------------------------------------------------------
  def _encode_shape(self):
    dummy = jnp.zeros((1, *self.info.shape), jnp.float32)
    return jax.eval_shape(lambda x: self._raw_codes(self.first_params, x), dummy).shape[1:]

  def _raw_codes(self, first_params, x):
    """x in the first stage's space -> its code (a VAE: the posterior mean)."""
    code = self.first_family.encode(first_params, x)
    return code[0] if isinstance(code, tuple) else code

  def _code_statistics(self):
    """Per-channel mean and std [1, ..., c] of the codes of up to 10,000 train images."""
    from gen.families.autoencoder import train_codes
    codes = train_codes(lambda p, batch: self._raw_codes(
        p, self.first_family.prepare(batch, None, train=False)), self.first_params,
        self.first.dataset, _STATISTICS_IMAGES).astype(np.float64)
    axes = tuple(range(codes.ndim - 1))
    mean = codes.mean(axis=axes, keepdims=True)
    std = np.maximum(codes.std(axis=axes, keepdims=True), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)

  def encode(self, batch: dict):
    """Raw batch -> standardized codes [b, *code_shape] float32."""
    x = self.first_family.prepare(batch, None, train=False)
    codes = (self._raw_codes(self.first_params, x) - self.code_mean) / self.code_std
    return codes.reshape(codes.shape[0], -1) if self.flatten else codes

  def decode(self, codes):
    """Standardized codes -> images [b, h, w, c] in [0, 1]."""
    codes = codes.reshape(codes.shape[0], *self.code_shape)
    return self.first_family.decode_to_unit(self.first_params,
                                            codes * self.code_std + self.code_mean)

  def _code_batch(self, batch: dict) -> dict:
    return {**batch, "x": self.encode(batch)}

  # --- what the loop calls (the inner family's, on codes) ---------------------------
  def check_config(self) -> list[str]:
    return self.inner.check_config()

  def init_params(self, rng):
    return self.inner.init_params(rng)

  def num_params(self, params) -> int:
    return self.inner.num_params(params)

  def make_optimizer(self):
    return self.inner.make_optimizer()

  def init_opt_state(self, tx, params):
    return self.inner.init_opt_state(tx, params)

  def loss(self, params, batch, rng, step):
    return self.inner.loss(params, self._code_batch(batch), rng, step)

  def train_step(self, state, batch, rng, tx):
    return self.inner.train_step(state, self._code_batch(batch), rng, tx)

  def evaluate(self, params, batch, rng, final=False):
    return self.inner.evaluate(params, self._code_batch(batch), rng, final)

  def anomaly_scores(self, params, batch, rng):
    return self.inner.anomaly_scores(params, self._code_batch(batch), rng)

  def to_pixels(self, images):
    return self.first_family.to_pixels(images)

  def sample(self, params, rng, num: int, temperature=1.0):
    """[num, h, w, c] images in [0, 1]: the second stage's codes, decoded."""
    return self.decode(self.inner.sample_codes(params, rng, num, temperature))

  def sampler(self, params, dataset):
    return (lambda p, rng, count: self.sample(p, rng, count, 1.0)), params

  def reconstructor(self, params):
    """images -> decode(encode(images)), in [0, 1]: the first stage's floor."""
    return lambda batch: self.decode(self.encode(batch))

  def visualize(self, params, batch, rng):
    """samples (decoded), and rows of images over their reconstructions by the first stage."""
    from gen.families.base import interleave_rows
    from gen.data import to_unit
    x = self.first_family.prepare(batch, rng, train=False)
    originals = jnp.clip(to_unit(x, self.first.config.data.scale), 0.0, 1.0)
    return {"samples": self.sample(params, rng, batch["x"].shape[0]),
            "reconstructions": interleave_rows(originals, self.reconstructor(params)(batch))}

  def report(self, params, dataset, mesh, workdir, step):
    evaluation = self.config.eval
    report = sampling.sample_report(self, params, workdir, step, evaluation.num_images,
                                    evaluation.temperatures)
    report["first_stage"] = {"workdir": self.config.latent.first_stage_workdir,
                             "model": self.first.config.model.name, "step": self.first.step,
                             "code_shape": list(self.code_info.shape)}
    return report
