"""How useful an encoder's codes are: a linear probe and k-means agreement with labels.

* `linear_probe_accuracy`: test accuracy of a multinomial logistic regression
  trained on standardized codes; how much label information a linear read-out
  finds (chance = the share of the commonest test label).
* `kmeans_nmi`: normalized mutual information between k-means clusters of the
  codes and the labels; whether classes form clusters without supervision
  (0 = independent, 1 = the clusters are the classes, up to renaming).

Codes may have any trailing shape ([n, d], [n, h, w, c], ...); they are
flattened to [n, features]. Non-finite codes raise a ValueError naming how
many rows are affected: a probe or clustering of NaN is meaningless, and the
caller reports n/a with that reason instead of a number.
"""

from __future__ import annotations

import numpy as np
from sklearn import cluster, linear_model, metrics, preprocessing

# lbfgs on standardized ~10k x 64 codes converges in well under 1000 steps;
# the cap only guards against a silent, unconverged result on harder inputs.
_PROBE_MAX_ITER = 1000
_KMEANS_RESTARTS = 10


def _as_features(codes, name: str) -> np.ndarray:
  """[n, ...] codes -> [n, features] float64; raises on non-finite rows."""
  codes = np.asarray(codes)
  if codes.ndim < 1 or len(codes) == 0:
    raise ValueError(f"{name}: expected codes of shape [n, ...] with n > 0, got {codes.shape}")
  features = codes.reshape(len(codes), -1).astype(np.float64)
  bad_rows = int(np.count_nonzero(~np.all(np.isfinite(features), axis=1)))
  if bad_rows:
    raise ValueError(f"{name}: {bad_rows} of {len(features)} rows have non-finite values "
                     "(NaN or inf); no metric of such codes is meaningful")
  return features


def _as_labels(labels, count: int, name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (count,):
    raise ValueError(f"{name}: expected shape ({count},) to match the codes, got {labels.shape}")
  return labels


def linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels,
                          seed: int = 0) -> float:
  """Test accuracy of multinomial logistic regression on standardized codes.

  train_codes: [n_train, ...] float, train_labels: [n_train] int,
  test_codes: [n_test, ...] float (same trailing shape), test_labels: [n_test] int.
  The standardization is fitted on the train codes only. Returns accuracy in [0, 1].
  """
  train = _as_features(train_codes, "train_codes")
  test = _as_features(test_codes, "test_codes")
  if train.shape[1] != test.shape[1]:
    raise ValueError(f"train_codes have {train.shape[1]} features per row, "
                     f"test_codes {test.shape[1]}; they must come from the same encoder")
  train_labels = _as_labels(train_labels, len(train), "train_labels")
  test_labels = _as_labels(test_labels, len(test), "test_labels")
  if len(np.unique(train_labels)) < 2:
    raise ValueError("train_labels: a probe needs at least 2 distinct classes")
  scaler = preprocessing.StandardScaler().fit(train)
  # lbfgs fits one softmax over all classes (multinomial), not one-vs-rest.
  probe = linear_model.LogisticRegression(solver="lbfgs", max_iter=_PROBE_MAX_ITER,
                                          random_state=seed)
  probe.fit(scaler.transform(train), train_labels)
  return float(np.mean(probe.predict(scaler.transform(test)) == test_labels))


def kmeans_nmi(codes, labels, num_clusters: int | None = None, seed: int = 0) -> float:
  """Normalized mutual information between k-means clusters of the codes and the labels.

  codes: [n, ...] float, labels: [n] int. num_clusters defaults to the number
  of distinct labels. k-means uses `seed` and a fixed number of restarts, so
  the result is reproducible. NMI uses the arithmetic mean of the entropies;
  it does not depend on how labels or clusters are numbered. Returns a float
  in [0, 1].
  """
  features = _as_features(codes, "codes")
  labels = _as_labels(labels, len(features), "labels")
  if num_clusters is None:
    num_clusters = len(np.unique(labels))
  if not 1 <= num_clusters <= len(features):
    raise ValueError(f"num_clusters={num_clusters}: must be between 1 and the number of "
                     f"codes ({len(features)})")
  kmeans = cluster.KMeans(n_clusters=num_clusters, n_init=_KMEANS_RESTARTS, random_state=seed)
  clusters = kmeans.fit_predict(features)
  return float(metrics.normalized_mutual_info_score(labels, clusters))
