"""A trained model that needs no workdir: what experiments/export.py writes
and what others load in one call.

  bundle = gen.bundle.load("bundles/ddpm")
  images = bundle.sample(num=16, seed=0)        # uint8 [16, h, w, c]

A bundle folder holds
  params.safetensors  the parameters the run evaluates with (its EMA where it
                      kept one), flattened to "/"-joined names;
  config.json         the run's resolved config;
  bundle.json         what building the model needs besides the config (the
                      data's shape, kind and classes), the step, the format;
  README.md           a model card: family, data, steps, test metrics and how
                      they were measured, the command that trains it again.
A latent model's bundle also holds its first stage, itself a bundle, in
first_stage/, and code_statistics.safetensors: the per-channel mean and std
that standardize the first stage's codes. A model sampled with
autoguidance (config.eval.guide_workdir) holds its guide, a bundle, in guide/.

Sampling draws image i from fold_in(PRNGKey(seed), i): the same seed gives
the same images whatever the batch size or the number of devices.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from gen import families
from gen.data import SourceInfo
from gen.errors import UserError

FORMAT = 1
_PARAMS, _CONFIG, _INFO, _CARD = "params.safetensors", "config.json", "bundle.json", "README.md"
_FIRST_STAGE, _CODE_STATISTICS = "first_stage", "code_statistics.safetensors"
_GUIDE = "guide"


@dataclasses.dataclass
class Bundle:
  path: str
  config: ml_collections.ConfigDict
  family: Any
  params: Any
  info: SourceInfo
  step: int

  def sample(self, num: int, seed: int = 0, temperature: float = 1.0,
             batch_size: int = 256, progress: Callable | None = None,
             labels=None) -> np.ndarray:
    return draw(self.family, self.params, num, seed, temperature, batch_size, progress,
                labels=labels)


def num_classes(family) -> int:
  """Classes a family's samples can be asked for (0: unconditional)."""
  return getattr(family, "num_classes", 0) or 0


def sample_fn(family, temperature: float = 1.0):
  """(params, keys [n], labels [n]) -> n images in [0, 1], image i drawn from
  keys[i] alone (of class labels[i], for a conditional model)."""
  if not hasattr(family, "sample"):
    raise UserError(f"a {type(family).__name__.lower()} model draws no samples of its own "
                    f"(an autoencoder's come from a Gaussian fitted to its train codes: "
                    f"experiments/sample.py --workdir, which has the data)")
  classes = num_classes(family)
  if hasattr(family, "sample_from_keys"):  # the same images, drawn as one batch
    return lambda params, keys, labels: family.sample_from_keys(
        params, keys, temperature, labels if classes else None)
  if classes:
    one = lambda params, key, label: family.sample(params, key, 1, temperature,
                                                   labels=label[None])[0]
  else:
    one = lambda params, key, label: family.sample(params, key, 1, temperature)[0]
  return jax.vmap(one, in_axes=(None, 0, 0))


def image_labels(family, num: int, label: int | None = None) -> np.ndarray:
  """[num] the class of each image: `label` for all, else the classes in turn;
  zeros (unused) for an unconditional model."""
  classes = num_classes(family)
  if label is not None:
    if not classes:
      raise UserError(f"--class={label}: the model is unconditional "
                      f"(config.model.num_classes=0)")
    if not 0 <= label < classes:
      raise UserError(f"--class={label} is out of range: the model has classes "
                      f"0..{classes - 1}")
    return np.full(num, label, np.int32)
  return (np.arange(num) % classes).astype(np.int32) if classes else np.zeros(num, np.int32)


def draw(family, params, num: int, seed: int, temperature: float = 1.0, batch_size: int = 256,
         progress: Callable | None = None, fn: Callable | None = None,
         labels=None) -> np.ndarray:
  """`num` uint8 images [num, h, w, c], `batch_size` at a time, each batch split
  over every local device; image i from fold_in(PRNGKey(seed), i), of class
  labels[i] for a conditional model (default `image_labels`)."""
  from gen.train import sharding
  devices = jax.local_devices()
  mesh = sharding.make_mesh(devices)
  batch_size = max(len(devices), batch_size // len(devices) * len(devices))
  keys_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
  sample = jax.jit(fn or sample_fn(family, temperature))
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  base = jax.random.PRNGKey(seed)
  labels = image_labels(family, num) if labels is None else np.asarray(labels, np.int32)
  images = []
  for start in range(0, num, batch_size):
    # One shape for every batch (one compiled sampler): the last is padded.
    indices = np.arange(start, start + batch_size) % max(num, 1)
    keys = jax.vmap(lambda index: jax.random.fold_in(base, index))(jnp.asarray(indices))
    out = sample(params, jax.device_put(keys, keys_sharding),
                 jax.device_put(jnp.asarray(labels[indices]), keys_sharding))
    images.append(family.to_pixels(np.asarray(jax.device_get(out)))[:num - start])
    if progress:
      progress(min(num, start + batch_size), num)
  return np.concatenate(images)[:num]


def _flatten(params) -> dict[str, np.ndarray]:
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  return {key: np.ascontiguousarray(np.asarray(value)) for key, value in flat.items()}


def is_bundle(path: str) -> bool:
  return all(os.path.exists(os.path.join(path, name)) for name in (_PARAMS, _CONFIG, _INFO))


def export(workdir: str, out: str, config_overrides: dict | None = None) -> str:
  """Writes the bundle of the run in `workdir` to `out`; returns `out`.

  config_overrides: evaluation settings the bundle keeps, such as
  {"eval.guide_workdir": ..., "eval.guidance_scale": 1.5}."""
  from safetensors.numpy import save_file

  from gen import restore
  from gen.families import latent
  run = restore.load_run(workdir, config_overrides)
  os.makedirs(out, exist_ok=True)
  if latent.is_latent(run.config):
    # The first stage travels inside: a bundle of its own, and the statistics
    # its codes were standardized with (they came from its train data).
    export(run.config.latent.first_stage_workdir, os.path.join(out, _FIRST_STAGE))
    save_file({"mean": run.family.code_mean, "std": run.family.code_std},
              os.path.join(out, _CODE_STATISTICS))
  config = run.config
  if config.eval.get("guide_workdir"):
    # The guide travels inside too; the bundle's config names it relatively.
    export(config.eval.guide_workdir, os.path.join(out, _GUIDE))
    config = ml_collections.ConfigDict(config.to_dict())
    config.eval.guide_workdir = _GUIDE
  save_file(_flatten(run.params), os.path.join(out, _PARAMS),
            metadata={"format": str(FORMAT), "step": str(run.step)})
  with open(os.path.join(out, _CONFIG), "w") as file:
    file.write(config.to_json(indent=2))
  info = run.dataset.info
  with open(os.path.join(out, _INFO), "w") as file:
    json.dump({"format": FORMAT, "step": run.step, "family": type(run.family).__name__,
               "data": {"name": info.name, "shape": list(info.shape), "kind": info.kind,
                        "num_classes": info.num_classes,
                        "class_names": list(info.class_names)}}, file, indent=2)
  results_path = os.path.join(workdir, "results.json")
  results = json.load(open(results_path)) if os.path.exists(results_path) else {}
  with open(os.path.join(out, _CARD), "w") as file:
    file.write(model_card(run, results))
  return out


def model_card(run, results: dict) -> str:
  config, info = run.config, run.dataset.info
  test = results.get("test", {})
  quality = results.get("sample_quality", {})
  lines = [f"# {config.model.name} on {info.name}", "",
           f"A gen bundle (format {FORMAT}): `gen.bundle.load(path)` builds the model; "
           f"`python experiments/sample.py --bundle=<this folder> --num_samples=64` draws "
           f"samples.", "",
           f"- family: {type(run.family).__name__}; model `{config.model.name}`, "
           f"{results.get('num_params', 'n/a')} parameters",
           f"- data: {info.name}, examples of shape {tuple(info.shape)} ({info.kind})",
           f"- trained: {run.step} steps at batch {config.train.batch_size}"
           + (f", {results['timing']['train_seconds'] / 60:.1f} minutes"
              if "timing" in results else ""),
           "- parameters: " + ("the exponential moving average (decay "
                               f"{config.train.ema_decay})" if config.train.get("ema_decay")
                               else "as trained (no EMA)"),
           "", "## Test metrics", ""]
  if test:
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.6g} |" for key, value in sorted(test.items())
              if isinstance(value, (int, float))]
    lines += ["", "Means over the test split, with the run's own evaluation (each "
              "metric's name says what it is: `_bound` an upper bound, `_exact` exact)."]
  else:
    lines.append("None: the run has no results.json.")
  if "fid" in quality:
    lines += ["", "## Sample quality", "",
              f"FD {quality['fid']:.4g} against the test set in the features of "
              f"{quality.get('classifier', 'a classifier')}, {quality['num_samples']} samples; "
              f"the baseline of as many unseen real images: "
              f"{quality.get('fid_val_vs_test', float('nan')):.4g}. Precision / recall "
              f"{quality.get('precision', float('nan')):.3f} / "
              f"{quality.get('recall', float('nan')):.3f}."]
  lines += ["", "## Train it again", "", "```",
            f"python experiments/main.py --config=<the config file> --workdir=<new folder>",
            "```", "", "with the settings of `config.json` (every one can be given as "
            "`--config.<key>=<value>`)."]
  return "\n".join(lines) + "\n"


def load(path: str, config_overrides: dict | None = None) -> Bundle:
  """The bundle in `path`, its family built and its parameters on the host.

  config_overrides: evaluation settings such as {"eval.sampler": "euler"}."""
  from safetensors.numpy import load_file
  for name in (_PARAMS, _CONFIG, _INFO):
    if not os.path.exists(os.path.join(path, name)):
      raise UserError(f"{path}: no {name}; not a bundle (experiments/export.py writes one)")
  with open(os.path.join(path, _INFO)) as file:
    meta = json.load(file)
  if meta.get("format") != FORMAT:
    raise UserError(f"{path}: bundle format {meta.get('format')!r}; this gen reads {FORMAT}")
  with open(os.path.join(path, _CONFIG)) as file:
    config = ml_collections.ConfigDict(json.load(file))
  if config.eval.get("guide_workdir") == _GUIDE:
    config.eval.guide_workdir = os.path.join(path, _GUIDE)
  for dotted, value in (config_overrides or {}).items():
    section, key = dotted.split(".", 1)
    config[section][key] = value
  data = meta["data"]
  info = SourceInfo(data["name"], tuple(data["shape"]), data["kind"], data["num_classes"],
                    tuple(data.get("class_names", ())))
  family = _make_family(path, config, info)
  params = traverse_util.unflatten_dict(
      {tuple(key.split("/")): value for key, value in load_file(
          os.path.join(path, _PARAMS)).items()})
  return Bundle(path, config, family, params, info, meta["step"])


def _make_family(path: str, config: ml_collections.ConfigDict, info: SourceInfo):
  """The bundle's family; a latent model's built on the first stage inside it."""
  from gen.families import latent
  if not latent.is_latent(config):
    return families.make(config, info)
  from safetensors.numpy import load_file
  statistics_path = os.path.join(path, _CODE_STATISTICS)
  if not os.path.exists(statistics_path):
    raise UserError(f"{path}: a latent model's bundle without {_CODE_STATISTICS}; "
                    f"export it again with experiments/export.py")
  first = load(os.path.join(path, _FIRST_STAGE))
  statistics = load_file(statistics_path)
  stage = latent.FirstStage(first.family, first.params, first.config, first.step,
                            statistics["mean"], statistics["std"])
  return latent.Latent(config, info, stage)
