"""Out-of-distribution (anomaly) detection metrics: AUROC and FPR at 95% TPR.

Conventions:

* Every detector gives an *anomaly score*: higher = more anomalous (for a
  likelihood model, e.g. minus log-likelihood or bits/dim).
* AUROC is the probability that a random out-of-distribution example scores
  higher than a random in-distribution example, ties counting 1/2:
  0.5 = chance, 1 = perfect separation, 0 = perfectly reversed.
* For FPR at 95% TPR the positives are the in-distribution examples, as in
  Hendrycks & Gimpel (2017) and ODIN (Liang et al., 2018): an example is
  accepted as in-distribution when its score <= a threshold; the threshold is
  the smallest score that accepts at least 95% of in-distribution examples,
  and the figure is the share of out-of-distribution examples also accepted.
  No interpolation between thresholds. 0 = perfect, 1 = useless.
* Non-finite scores never flatter a detector. +inf and -inf are valid scores
  and rank as the extremes they are. NaN is a failure of the model and is
  charged as the worst case for the detector: a NaN in-distribution score
  ranks above every other score (flagged), a NaN out-of-distribution score
  ranks below every other score (not flagged). `detection_report` says how
  many NaNs each side had.

Both figures depend on the scores only through their order, so they are
computed on ranks, which also keeps infinities out of scikit-learn (it
rejects them).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics

DEFAULT_TPR = 0.95


def _as_scores(scores, name: str) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1 or len(scores) == 0:
    raise ValueError(f"{name}: expected a non-empty 1-D array of scores, got shape {scores.shape}")
  return scores


def _ranks(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
  """Scores -> integer ranks with the same order and ties, NaNs at the worst-case ends.

  scores_in: [n_in] float, scores_out: [n_out] float -> ([n_in], [n_out]) int64.
  Finite and infinite scores get dense ranks 1..K; a NaN in-distribution score
  gets K + 1 (above everything, +inf included), a NaN out-of-distribution
  score gets 0 (below everything, -inf included).
  """
  scores_in = _as_scores(scores_in, "scores_in")
  scores_out = _as_scores(scores_out, "scores_out")
  nan_in, nan_out = np.isnan(scores_in), np.isnan(scores_out)
  valid = np.concatenate([scores_in[~nan_in], scores_out[~nan_out]])
  distinct, dense = np.unique(valid, return_inverse=True)
  ranks_in = np.full(len(scores_in), len(distinct) + 1, np.int64)
  ranks_out = np.zeros(len(scores_out), np.int64)
  ranks_in[~nan_in] = dense[:np.count_nonzero(~nan_in)] + 1
  ranks_out[~nan_out] = dense[np.count_nonzero(~nan_in):] + 1
  return ranks_in, ranks_out


def auroc(scores_in, scores_out) -> float:
  """P(score_out > score_in) + P(score_out == score_in) / 2.

  scores_in: [n_in] float anomaly scores of in-distribution examples;
  scores_out: [n_out] float anomaly scores of out-of-distribution examples.
  NaN and inf as in the module docstring.
  """
  ranks_in, ranks_out = _ranks(scores_in, scores_out)
  is_out = np.concatenate([np.zeros(len(ranks_in)), np.ones(len(ranks_out))])
  # roc_auc_score is the Mann-Whitney statistic: ties between classes count 1/2.
  return float(metrics.roc_auc_score(is_out, np.concatenate([ranks_in, ranks_out])))


def fpr_at_tpr(scores_in, scores_out, tpr: float = DEFAULT_TPR) -> float:
  """Share of out-of-distribution examples accepted when >= `tpr` of in-distribution ones are.

  scores_in: [n_in] float, scores_out: [n_out] float anomaly scores; tpr in (0, 1].
  Accepted means score <= threshold, with the threshold the smallest score
  that accepts at least ceil(tpr * n_in) in-distribution examples; ties at
  the threshold are accepted on both sides. NaN and inf as in the module
  docstring: with more than (1 - tpr) of in-distribution scores NaN, the
  threshold must accept everything and the result is 1.
  """
  if not 0.0 < tpr <= 1.0:
    raise ValueError(f"tpr={tpr}: must be in (0, 1]")
  ranks_in, ranks_out = _ranks(scores_in, scores_out)
  is_in = np.concatenate([np.ones(len(ranks_in)), np.zeros(len(ranks_out))])
  # In-distribution is the positive class, so the score that predicts it is
  # minus the anomaly rank; roc_curve predicts positive when score >= threshold.
  # Thresholds are every distinct score, in decreasing order (no interpolation,
  # nothing dropped), so the first point reaching `tpr` is the smallest
  # anomaly threshold that accepts enough in-distribution examples.
  fpr_curve, tpr_curve, _ = metrics.roc_curve(
      is_in, -np.concatenate([ranks_in, ranks_out]).astype(np.float64), drop_intermediate=False)
  # tpr_curve holds k / n_in, correctly rounded; exact k / n_in == tpr rounds
  # to the same double as tpr, so no tolerance is needed.
  first = int(np.argmax(tpr_curve >= tpr))
  return float(fpr_curve[first])


def detection_report(scores_in, scores_out) -> dict:
  """AUROC, FPR at 95% TPR and the counts behind them.

  scores_in: [n_in] float, scores_out: [n_out] float anomaly scores.
  Returns {auroc, fpr_at_95_tpr: float; num_in, num_out, nan_in, nan_out: int}.
  """
  scores_in = _as_scores(scores_in, "scores_in")
  scores_out = _as_scores(scores_out, "scores_out")
  return {
      "auroc": auroc(scores_in, scores_out),
      "fpr_at_95_tpr": fpr_at_tpr(scores_in, scores_out, DEFAULT_TPR),
      "num_in": int(len(scores_in)),
      "num_out": int(len(scores_out)),
      "nan_in": int(np.count_nonzero(np.isnan(scores_in))),
      "nan_out": int(np.count_nonzero(np.isnan(scores_out))),
  }
