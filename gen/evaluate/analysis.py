"""What a trained model is good for besides samples: its codes and its anomaly scores.

Given a family (gen.families.base.Family) and its parameters:
  codes_of          the encoder's code of each image (Family.codes);
  representation    how useful the codes are: linear-probe accuracy and k-means
                    NMI against the labels (gen.evaluate.representation);
  scores_of         the family's natural out-of-distribution scores
                    (Family.anomaly_scores) of any set of 8-bit images;
  out_of_distribution
                    AUROC and FPR at 95% TPR of each score for in-distribution
                    test images against each out-of-distribution set, and the
                    complexity-corrected version of every bits/dim score
                    (Serra et al., 2020): S(x) = bits/dim(x) - the bits/dim a
                    PNG compressor needs for x, which discounts how simple an
                    image is from how likely the model finds it.
A family without an encoder gets {"n/a": reason} from `representation`.
"""

from __future__ import annotations

import io

import jax
import numpy as np
from PIL import Image

from gen.evaluate import ood, representation as representation_lib


def _batches(images: np.ndarray, batch_size: int, uid_offset: int):
  """{"x", "label", "uid", "mask"} batches of uint8 images; the last one padded."""
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, 0)])
    yield real, {"x": chunk, "label": np.zeros(batch_size, np.int32),
                 "uid": (uid_offset + start + np.arange(batch_size)).astype(np.int32),
                 "mask": (np.arange(batch_size) < real).astype(np.float32)}


def _per_example(fn, params, images: np.ndarray, batch_size: int, uid_offset: int) -> dict:
  """fn(params, batch) -> {name: [batch] or [batch, d]} over all `images`, as numpy."""
  compiled = jax.jit(fn)
  parts: dict[str, list] = {}
  for real, batch in _batches(images, batch_size, uid_offset):
    out = compiled(params, batch)
    for name, value in (out.items() if isinstance(out, dict) else [("", out)]):
      parts.setdefault(name, []).append(np.asarray(value)[:real])
  return {name: np.concatenate(values) for name, values in parts.items()}


def codes_of(family, params, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """[n, d] float32 codes of uint8 images [n, h, w, c]."""
  return _per_example(family.codes, params, images, batch_size, 0)[""]


def scores_of(family, params, images: np.ndarray, uid_offset: int,
              batch_size: int = 500) -> dict[str, np.ndarray]:
  """{score name: [n]} anomaly scores of uint8 images (higher = more anomalous).

  uid_offset: the example ids the per-example noise is drawn from; give each
  image set its own range.
  """
  return _per_example(lambda p, b: family.anomaly_scores(p, b, jax.random.PRNGKey(0)),
                      params, images, batch_size, uid_offset)


def png_bits_per_dim(images: np.ndarray) -> np.ndarray:
  """[n] bits per value a lossless PNG (zlib level 9) needs for each uint8 image:
  a generic measure of how complex an image is (Serra et al., 2020)."""
  values = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        buffer, format="PNG", compress_level=9)
    values.append(8.0 * buffer.tell() / image.size)
  return np.asarray(values)


def representation(family, params, train: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], seed: int = 0) -> dict:
  """Linear-probe test accuracy (probe fit on the train codes) and k-means NMI of
  the test codes, for (images, labels) pairs; {"n/a": why} without an encoder."""
  if family.code_name is None:
    return {"n/a": f"the {type(family).__name__} family has no encoder"}
  train_codes = codes_of(family, params, train[0])
  test_codes = codes_of(family, params, test[0])
  try:
    accuracy = representation_lib.linear_probe_accuracy(train_codes, train[1], test_codes,
                                                         test[1], seed=seed)
    nmi = representation_lib.kmeans_nmi(test_codes, test[1], seed=seed)
  except ValueError as error:  # non-finite codes
    return {"n/a": str(error)}
  return {"code": family.code_name, "code_dims": int(test_codes.shape[1]),
          "linear_probe_accuracy": accuracy, "kmeans_nmi": nmi,
          "chance_accuracy": float(np.max(np.bincount(test[1])) / len(test[1]))}


def out_of_distribution(family, params, inside: np.ndarray,
                        outside: dict[str, np.ndarray]) -> dict:
  """{score: {set: detection report}} for in-distribution images `inside` against
  each out-of-distribution set; bits/dim scores also complexity-corrected."""
  if not outside:
    return {}
  inside_scores = scores_of(family, params, inside, uid_offset=10_000_000)
  outside_scores = {name: scores_of(family, params, images, uid_offset=20_000_000 * (k + 1))
                    for k, (name, images) in enumerate(outside.items())}
  if not inside_scores:
    return {"n/a": f"the {type(family).__name__} family has no anomaly score"}
  result: dict[str, dict] = {}
  for score, values in inside_scores.items():
    result[score] = {name: ood.detection_report(values, scores[score])
                     for name, scores in outside_scores.items()}
    result[score]["mean_in"] = float(np.mean(values))
    for name, scores in outside_scores.items():
      result[score][name]["mean_out"] = float(np.mean(scores[score]))
  likelihood_scores = [s for s in inside_scores if "bits_per_dim" in s]
  if likelihood_scores:
    complexity_in = png_bits_per_dim(inside)
    complexity_out = {name: png_bits_per_dim(images) for name, images in outside.items()}
    for score in likelihood_scores:
      corrected = f"{score}_minus_png"
      result[corrected] = {
          name: ood.detection_report(inside_scores[score] - complexity_in,
                                     outside_scores[name][score] - complexity_out[name])
          for name in outside}
  return result
