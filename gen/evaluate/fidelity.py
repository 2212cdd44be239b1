"""Sample quality in a classifier's features: Frechet distance, KID, precision/recall.

One function, `sample_quality`, serves every family that can sample (GAN,
DDPM, VAE, flow, and the autoencoder through a Gaussian fitted to its codes):

* Samples and real images go through the same path: samples in [0, 1] are
  turned into 8-bit pixels, as real images are stored, by the inverse of the
  family's own preprocessing (Family.to_pixels), then both are preprocessed
  the way the classifier was trained.
* Non-finite samples are not dropped: they are counted, drawn as 0 and kept,
  so a sampler that produces NaN is charged for it.
* The reference is the test split. Beside each model's figure is the same
  figure for as many validation images as there are samples (the baseline):
  the distance of two samples of the data itself, below which no model can
  be expected to go (the Frechet distance is biased upwards at small sample
  counts). Validation images are unseen by both the generator and the
  classifier; train images, which the classifier trained on (and so "knows"
  better than unseen ones), are reported beside it for comparison.
* The class histogram of samples, as the classifier labels them, is set
  against the classifier's labels of test images (mode coverage) and against
  the train labels (the skew of the training data that samples inherit).

The feature space is the penultimate layer of a classifier trained on the
dataset (configs/classifier.py, experiments/train_classifier.py), which the
caller loads and hands in (gen.families.classifier.find_classifier). With
config.eval.inception_weights set, Inception-v3 features give an Inception
FID through the same code; for data without labels (no classifier can be
trained) they are the feature space itself, and without weights the report
says why nothing is measured.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from gen.data.preprocess import to_pixels as unit_to_pixels
from gen.errors import EvaluationStopped

# Sampling logs its progress at most this often.
PROGRESS_SECONDS = 10.0


# --- the distances -------------------------------------------------------------
def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """[n, d] -> mean [d] and covariance [d, d] (unbiased), float64."""
  features = np.asarray(features, np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
  """Squared Frechet (2-Wasserstein) distance between two Gaussians.

  |m_a - m_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2)). The trace of the
  matrix square root is computed from the eigenvalues of the symmetric
  C_a^(1/2) C_b C_a^(1/2), which has the same spectrum as C_a C_b: no complex
  parts to discard, unlike a general sqrtm.
  """
  mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
  root_a = _psd_sqrt(np.asarray(cov_a, np.float64))
  middle = root_a @ np.asarray(cov_b, np.float64) @ root_a
  trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
  return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
               - 2.0 * trace_root)


def kernel_distance(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
  """KID (Binkowski et al., 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3.

  Averaged over `num_subsets` random subsets of `subset_size` rows of each
  set (capped at the smaller set). Unbiased: its expectation is 0 when both
  sets come from one distribution, so it can be slightly negative.
  Returns (mean, standard deviation over subsets).
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  m = min(subset_size, len(a), len(b))
  dims = a.shape[1]
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    k_xx = (x @ x.T / dims + 1.0) ** 3
    k_yy = (y @ y.T / dims + 1.0) ** 3
    k_xy = (x @ y.T / dims + 1.0) ** 3
    off_diagonal = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
    values.append(off_diagonal(k_xx) + off_diagonal(k_yy) - 2.0 * k_xy.mean())
  return float(np.mean(values)), float(np.std(values))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _kth_neighbour_radii(points: np.ndarray, k: int, chunk: int = 1000) -> np.ndarray:
  """Squared distance from each point to its k-th nearest other point."""
  radii = np.empty(len(points))
  for start in range(0, len(points), chunk):
    distances = _squared_distances(points[start:start + chunk], points)
    # Column 0 of the sorted row is the point itself (distance 0).
    radii[start:start + chunk] = np.partition(distances, k, axis=1)[:, k]
  return radii


def _fraction_inside(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray,
                     chunk: int = 1000) -> float:
  inside = 0
  for start in range(0, len(queries), chunk):
    distances = _squared_distances(queries[start:start + chunk], centres)
    inside += int(np.sum(np.any(distances <= radii[None, :], axis=1)))
  return inside / len(queries)


def precision_recall(real, fake, neighbours: int = 3) -> tuple[float, float]:
  """Improved precision and recall (Kynkaanniemi et al., 2019).

  Each set's manifold is the union of balls around its points reaching their
  k-th nearest neighbour. Precision: the share of fake points inside the real
  manifold (are samples realistic?). Recall: the share of real points inside
  the fake manifold (is the data's variety covered?). Compare sets of equal
  size: the balls shrink as a set grows.
  """
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if min(len(real), len(fake)) <= neighbours:
    raise ValueError(f"precision/recall with config.eval.pr_neighbours={neighbours} needs "
                     f"more than {neighbours} points in each set")
  precision = _fraction_inside(fake, real, _kth_neighbour_radii(real, neighbours))
  recall = _fraction_inside(real, fake, _kth_neighbour_radii(fake, neighbours))
  return precision, recall


def histogram(labels, num_classes: int) -> np.ndarray:
  """[n] integer labels -> [num_classes] shares summing to 1."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)[:num_classes]
  return counts / max(counts.sum(), 1)


def total_variation(p, q) -> float:
  return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


# --- samples and real images ---------------------------------------------------
def draw_samples(sample_fn: Callable, params, num: int, chunk: int, seed: int,
                 to_pixels: Callable = unit_to_pixels,
                 stop: Callable | None = None) -> tuple[np.ndarray, int]:
  """`num` samples of sample_fn(params, rng, count) -> [count, ...] in [0, 1],
  `chunk` at a time, turned into 8-bit pixels by `to_pixels` (the inverse of
  the family's preprocessing). Returns the pixels and how many samples were
  not finite. Logs its progress every PROGRESS_SECONDS; raises
  EvaluationStopped at the next chunk once `stop()` is true (a signal).
  """
  sample = jax.jit(sample_fn, static_argnums=2)
  base = jax.random.PRNGKey(seed)
  pixels, nonfinite = [], 0
  start_time = last_log = time.time()
  for index, start in enumerate(range(0, num, chunk)):
    if stop is not None and stop():
      raise EvaluationStopped(f"sampling stopped after {start} of {num} samples")
    if time.time() - last_log > PROGRESS_SECONDS:
      last_log = time.time()
      logging.info("sampling: %d/%d, %.0f s", start, num, last_log - start_time)
    # Every chunk has one shape (one compiled sampler); the last is cut.
    images = np.asarray(jax.device_get(sample(params, jax.random.fold_in(base, index), chunk)))
    images = images[:num - start]
    nonfinite += int(np.sum(~np.all(np.isfinite(images.reshape(len(images), -1)), axis=1)))
    pixels.append(to_pixels(images))
  return np.concatenate(pixels), nonfinite


def _real_pixels(source, rows: np.ndarray, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
  parts = [source.take(rows[i:i + chunk]) for i in range(0, len(rows), chunk)]
  return (np.concatenate([p["x"] for p in parts]),
          np.concatenate([p["label"] for p in parts]))


def compare(features_fn: Callable, test: np.ndarray, sets: dict[str, np.ndarray],
            neighbours: int, seed: int) -> dict:
  """Distances of each set of images to the test images, in one feature space.

  features_fn: 8-bit images [n, h, w, c] -> features [n, d].
  test: [m, h, w, c] uint8, the reference. sets: name -> [n, h, w, c] uint8,
  all of the same n; the keys of the result are fid<name>, kid<name>,
  kid_std<name>, precision<name>, recall<name>.
  """
  test_f = np.asarray(features_fn(test), np.float64)
  test_stats = feature_statistics(test_f)
  count = len(next(iter(sets.values())))
  # Precision/recall compare sets of equal size: a fixed subset of the test set.
  subset = np.random.default_rng(seed).permutation(len(test_f))[:count]
  result = {}
  for name, images in sets.items():
    features = np.asarray(features_fn(images), np.float64)
    result[f"fid{name}"] = frechet_distance(*feature_statistics(features), *test_stats)
    kid, kid_std = kernel_distance(features, test_f, seed=seed)
    result[f"kid{name}"], result[f"kid_std{name}"] = kid, kid_std
    precision, recall = precision_recall(test_f[subset], features, neighbours)
    result[f"precision{name}"], result[f"recall{name}"] = precision, recall
  return result


def baseline_rows(dataset, config, classifier):
  """(validation rows, train rows) of the baseline, config.eval.fid_samples of
  each at most (the validation images unseen by the model and the classifier
  cap it); a str saying why when too few are unseen."""
  unseen = np.intersect1d(dataset.val_rows, classifier.unseen_rows)
  num = min(config.eval.fid_samples, len(unseen))
  if num <= config.eval.pr_neighbours + 1:
    return (f"only {len(unseen)} validation images are unseen by both the model and the "
            f"classifier; the baseline needs more")
  rng = np.random.default_rng(config.seed)
  return (np.sort(rng.permutation(unseen)[:num]),
          np.sort(rng.permutation(dataset.train.rows)[:num]))


def reconstruction_quality(reconstruct_fn: Callable, dataset, config, classifier,
                           to_pixels: Callable = unit_to_pixels, chunk: int = 500) -> dict:
  """The Frechet distance of reconstructions of the baseline's validation
  images to the test set, beside the baseline (those images themselves):
  the floor a latent model on this autoencoder cannot go below.

  reconstruct_fn(batch {"x": uint8, "uid"}) -> [n, h, w, c] images in [0, 1].
  """
  rows = baseline_rows(dataset, config, classifier)
  if isinstance(rows, str):
    return {"skipped": rows}
  val_rows = rows[0]
  reconstruct = jax.jit(reconstruct_fn)
  pixels = []
  for start in range(0, len(val_rows), chunk):
    part = val_rows[start:start + chunk]
    # One shape for every call: the last chunk is padded with its first row.
    padded = np.concatenate([part, np.full(chunk - len(part), part[0])])
    batch = dataset.train_source.take(padded)
    images = reconstruct({"x": batch["x"], "uid": padded.astype(np.int32)})
    pixels.append(to_pixels(np.asarray(jax.device_get(images)))[:len(part)])
  test, _ = _real_pixels(dataset.test_source, dataset.test_rows)
  val, _ = _real_pixels(dataset.train_source, val_rows)
  result = compare(lambda x: classifier(x)[0], test,
                   {"": np.concatenate(pixels), "_val_vs_test": val},
                   config.eval.pr_neighbours, config.seed)
  result["num_images"] = len(val_rows)
  result["what"] = ("decode(encode(validation images)) against the test split; baseline: "
                    "the same validation images")
  logging.info("reconstructions (%d validation images, classifier features): FID %.3f "
               "(baseline %.3f)", len(val_rows), result["fid"], result["fid_val_vs_test"])
  return result


def class_report(classifier, samples, test, test_labels, dataset) -> dict:
  """The classifier's accuracy on the test images, and the class histogram of
  the samples against its labels of the test images and the train labels."""
  classes = dataset.info.num_classes
  sample_labels = classifier(samples)[1]
  test_predicted = classifier(test)[1]
  sample_hist, test_hist = histogram(sample_labels, classes), histogram(test_predicted, classes)
  train_hist = histogram(dataset.train_source.take(dataset.train.rows)["label"], classes)
  return {
      "classifier_test_accuracy": float(np.mean(test_predicted == test_labels)),
      "class_histogram": {
          "classes": list(dataset.info.class_names) or list(range(classes)),
          "samples": sample_hist.round(4).tolist(),
          "test_predicted": test_hist.round(4).tolist(),
          "train_labels": train_hist.round(4).tolist(),
          # Classes with at least half the share the classifier gives them on test images.
          "classes_covered": int(np.sum(sample_hist >= 0.5 * test_hist)),
          "total_variation_to_test": total_variation(sample_hist, test_hist),
          "total_variation_to_train": total_variation(sample_hist, train_hist),
      }}


def sample_quality(sample_fn: Callable, params, dataset, config: ml_collections.ConfigDict,
                   classifier, to_pixels: Callable = unit_to_pixels,
                   stop: Callable | None = None) -> dict:
  """The sample-quality report of a run (see the module docstring).

  sample_fn(params, rng, count) -> [count, *shape] images in [0, 1]; `params`
  is any pytree the sampler needs. `classifier` gives the feature space:
  classifier(pixels [n, h, w, c] uint8) -> (features [n, d], labels [n]), and
  classifier.unseen_rows, the train-source rows it did not train on. The
  baseline images are validation images that neither the generator nor the
  classifier trained on; their count n caps the sample count, so that model
  and baseline are measured at the same n. Returns {} when
  config.eval.fid_samples is 0 or the data are not images.
  """
  info = dataset.info
  if not config.eval.fid_samples or info.kind != "image":
    return {}
  rows = baseline_rows(dataset, config, classifier)
  if isinstance(rows, str):
    return {"skipped": rows}
  val_rows, train_rows = rows
  num = len(val_rows)
  samples, nonfinite = draw_samples(sample_fn, params, num, min(config.eval.batch_size, num),
                                    config.seed, to_pixels, stop)
  test, test_labels = _real_pixels(dataset.test_source, dataset.test_rows)
  val, _ = _real_pixels(dataset.train_source, val_rows)
  train, _ = _real_pixels(dataset.train_source, train_rows)

  result = {"num_samples": num, "nonfinite_samples": nonfinite,
            "reference": f"test split, {len(test)} images",
            "baseline": f"{num} validation images unseen by the model and the classifier "
                        f"(*_val_vs_test); *_train_vs_test: {num} train images, which the "
                        f"classifier trained on",
            "classifier": f"{classifier.workdir} (checkpoint {classifier.step})"}
  sets = {"": samples, "_val_vs_test": val, "_train_vs_test": train}
  result.update(compare(lambda x: classifier(x)[0], test, sets,
                        config.eval.pr_neighbours, config.seed))
  classes = info.num_classes
  if classes:
    result.update(class_report(classifier, samples, test, test_labels, dataset))
  inception_features = getattr(classifier, "is_inception", False)
  if config.eval.inception_weights and not inception_features:
    from gen.evaluate import inception
    inception_fn = inception.load_feature_fn(config.eval.inception_weights)
    inception_result = compare(lambda x: inception_fn(x.astype(np.float32) / 255.0), test,
                               sets, config.eval.pr_neighbours, config.seed)
    result["inception"] = {k: v for k, v in inception_result.items() if "fid" in k}
  covered = (f", classes covered {result['class_histogram']['classes_covered']}/{classes}"
             if classes else "")
  logging.info("sample quality (%d samples, %s features): FID %.3f (baseline, validation "
               "vs test: %.3f), KID %.4f, precision %.3f, recall %.3f%s", num,
               "Inception" if inception_features else "classifier", result["fid"],
               result["fid_val_vs_test"], result["kid"], result["precision"], result["recall"],
               covered)
  return result
