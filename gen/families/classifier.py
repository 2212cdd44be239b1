"""Classifiers of the dataset: not generative, but trained by the same loop.

They give sample-quality metrics a feature space (gen.evaluate.fidelity) and
label generated samples for the class histogram. Training them through the
generic loop gives them its checkpoints, resume and data parallelism.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from gen.data import preprocess
from gen.data.dataset import split_rows
from gen.families import FAMILIES
from gen.families.base import Family

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_COMMAND = "python experiments/train_classifier.py --config=configs/classifier.py"


@FAMILIES.register("classifier")
class Classifier(Family):

  def check_config(self) -> list[str]:
    if self.info.kind != "image" or not self.info.num_classes:
      raise ValueError(f"config.data.name={self.info.name!r}: a classifier needs labelled "
                       f"images")
    if self.model.num_classes != self.info.num_classes:
      raise ValueError(f"config.model.num_classes={self.model.num_classes} but "
                       f"{self.info.name} has {self.info.num_classes} classes")
    if self.config.data.binarize != "none" or self.config.data.dequantize:
      raise ValueError("a classifier for sample metrics sees 8-bit pixels: set "
                       "config.data.binarize='none' and config.data.dequantize=False")
    return []

  def init_params(self, rng):
    dummy = jnp.zeros((1, *self.info.shape), jnp.float32)
    return self.model.init({"params": rng}, dummy)["params"]

  def logits(self, params, x, rng=None):
    train = rng is not None
    return self.apply_model({"params": params}, x, train=train,
                            rngs={"dropout": rng} if train else {})

  def loss(self, params, batch, rng, step):
    data_rng, dropout_rng = jax.random.split(rng)
    x = self.prepare(batch, data_rng, train=True)
    logits = self.logits(params, x, dropout_rng)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, {"accuracy": accuracy}

  def evaluate(self, params, batch, rng, final=False):
    logits = self.logits(params, self.prepare(batch, rng, train=False))
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
            "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)}


# --- a trained classifier as a feature space -----------------------------------
def train_command(data_name: str) -> str:
  """The command that trains the classifier of `data_name` where runs look for it."""
  if data_name == "fashion_mnist":
    return TRAIN_COMMAND
  if data_name == "digits":
    return TRAIN_COMMAND + ":digits"
  return f"{TRAIN_COMMAND} --config.data.name={data_name}"


def default_classifier_dir(data_name: str) -> str:
  """Where experiments/train_classifier.py writes the classifier of `data_name`."""
  return os.path.join(_REPO_ROOT, "runs", "classifiers", data_name.replace("/", "_"))


class ClassifierFeatures:
  """A trained classifier of a run's dataset, read from its workdir.

  `__call__(pixels)` maps 8-bit images [n, h, w, c] to penultimate-layer
  features [n, d] float64 and predicted labels [n] int. `unseen_rows` are
  the rows of the train source it held out for validation: images it never
  trained on, which a sample-quality baseline can use.
  """

  def __init__(self, workdir: str, dataset, batch_size: int = 1000):
    info = dataset.info
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"no classifier config at {path}")
    with open(path) as file:
      config = ml_collections.ConfigDict(json.load(file))
    if config.data.name != info.name:
      raise ValueError(f"the classifier in {workdir} was trained on {config.data.name!r}, "
                       f"not on this run's data {info.name!r}")
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    # The best checkpoint by validation accuracy when ranked, else the newest.
    step = manager.best_step() or manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    self.params = restored.get("ema_params") or restored["params"]
    self.family = Classifier(config, info)
    self.workdir, self.step, self.batch_size = workdir, step, batch_size
    _, self.unseen_rows = split_rows(len(dataset.train_source), config.data.validation_size,
                                     config.data.validation_seed)
    scale = config.data.scale

    def apply(params, pixels):
      x = preprocess(pixels, None, None, kind="image", scale=scale)
      logits, features = self.family.apply_model({"params": params}, x,
                                                 return_features=True)
      return features, jnp.argmax(logits, axis=-1)

    self._apply = jax.jit(apply)

  def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for start in range(0, len(pixels), self.batch_size):
      chunk = pixels[start:start + self.batch_size]
      real = len(chunk)
      if real < self.batch_size:  # one compiled shape: pad, then drop the padding
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - real, 0)])
      f, y = jax.device_get(self._apply(self.params, chunk))
      features.append(np.asarray(f[:real], np.float64))
      labels.append(np.asarray(y[:real]))
    return np.concatenate(features), np.concatenate(labels)


class InceptionFeatures:
  """The FID Inception-v3's pool features, for data without labels.

  The same interface as ClassifierFeatures: `__call__(pixels)` gives
  features [n, 2048] and labels (all 0: one class, nothing is predicted);
  every train image is unseen by this network.
  """

  def __init__(self, weights: str, dataset, batch_size: int = 100):
    from gen.evaluate import inception
    self._features = inception.load_feature_fn(weights, batch_size)
    self.workdir, self.step = f"FID Inception-v3 ({weights})", 0
    self.unseen_rows = np.arange(len(dataset.train_source))
    self.is_inception = True

  def __call__(self, pixels: np.ndarray):
    return (self._features(np.asarray(pixels, np.float32) / 255.0),
            np.zeros(len(pixels), np.int64))


def find_classifier(config: ml_collections.ConfigDict, dataset):
  """The classifier config.eval.classifier names, or (None, why not).

  "auto" looks at `default_classifier_dir` and is skipped (with the command
  that trains one) when there is none; a path that holds no classifier is an
  error.
  """
  setting, info = config.eval.classifier, dataset.info
  if not info.num_classes:
    # No labels, no classifier to train: Inception features where the user
    # has the weights (they cannot be downloaded here).
    if config.eval.get("inception_weights"):
      return InceptionFeatures(config.eval.inception_weights, dataset), ""
    return None, (f"{info.name} has no class labels, so no classifier can be trained for "
                  f"its feature space; set config.eval.inception_weights to the FID "
                  f"Inception-v3 weights (gen/evaluate/inception.py says where they come "
                  f"from) for FD in Inception features")
  if not setting:
    return None, "config.eval.classifier is empty"
  workdir = default_classifier_dir(info.name) if setting == "auto" else setting
  if not os.path.exists(os.path.join(workdir, "config.json")):
    if setting != "auto":
      raise FileNotFoundError(f"config.eval.classifier={setting!r}: no trained classifier "
                              f"there (expected config.json and checkpoints/)")
    return None, (f"no classifier for {info.name} at {workdir}; train it with: "
                  f"{train_command(info.name)}")
  return ClassifierFeatures(workdir, dataset), ""
