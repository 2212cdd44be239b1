"""OOD metrics: AUROC and FPR at 95% TPR, hand-computed cases, NaN and inf rules."""

import numpy as np
import pytest

from gen.evaluate import ood

# 4 in-distribution and 3 out-of-distribution anomaly scores, one tie (0.5).
SCORES_IN = [0.1, 0.4, 0.5, 0.9]
SCORES_OUT = [0.5, 0.8, 1.2]


def test_auroc_hand_computed_with_a_tie():
  # Pairs (out, in) with out > in, ties 1/2, over 4 * 3 = 12 pairs:
  #   out 0.5: > 0.1, 0.4 (2), = 0.5 (1/2) -> 2.5
  #   out 0.8: > 0.1, 0.4, 0.5           -> 3
  #   out 1.2: > all four                -> 4
  # (2.5 + 3 + 4) / 12 = 9.5 / 12 = 19 / 24.
  assert ood.auroc(SCORES_IN, SCORES_OUT) == pytest.approx(19 / 24, abs=1e-12)


def test_fpr_at_tpr_hand_computed_with_a_tie():
  # tpr 0.95 of 4 in-distribution -> accept ceil(3.8) = 4 -> threshold 0.9:
  #   out accepted (<= 0.9): 0.5, 0.8 -> 2 / 3. (Interpolating would give less.)
  assert ood.fpr_at_tpr(SCORES_IN, SCORES_OUT) == pytest.approx(2 / 3, abs=1e-12)
  # tpr 0.75 -> accept 3 -> threshold 0.5; the tied out score 0.5 is accepted -> 1 / 3.
  assert ood.fpr_at_tpr(SCORES_IN, SCORES_OUT, tpr=0.75) == pytest.approx(1 / 3, abs=1e-12)
  # tpr 0.5 -> accept 2 -> threshold 0.4 -> no out score accepted.
  assert ood.fpr_at_tpr(SCORES_IN, SCORES_OUT, tpr=0.5) == 0.0
  # tpr 0.7 -> still needs 3 of 4 (2 of 4 is only 0.5): at least, never at most.
  assert ood.fpr_at_tpr(SCORES_IN, SCORES_OUT, tpr=0.7) == pytest.approx(1 / 3, abs=1e-12)


def test_matches_brute_force_on_tied_integer_scores():
  rng = np.random.default_rng(0)
  scores_in = rng.integers(0, 8, 97).astype(float)
  scores_out = rng.integers(3, 12, 61).astype(float)
  greater = (scores_out[:, None] > scores_in[None, :]).mean()
  equal = (scores_out[:, None] == scores_in[None, :]).mean()
  assert ood.auroc(scores_in, scores_out) == pytest.approx(greater + equal / 2, abs=1e-12)
  # Threshold = the ceil(0.95 n)-th smallest in-distribution score.
  threshold = np.sort(scores_in)[int(np.ceil(0.95 * len(scores_in))) - 1]
  assert np.mean(scores_in <= threshold) >= 0.95
  assert ood.fpr_at_tpr(scores_in, scores_out) == pytest.approx(
      np.mean(scores_out <= threshold), abs=1e-12)


def test_perfect_and_reversed_separation():
  low, high = np.arange(20.0), np.arange(20.0) + 100
  assert ood.auroc(low, high) == 1.0
  assert ood.fpr_at_tpr(low, high) == 0.0
  assert ood.auroc(high, low) == 0.0
  assert ood.fpr_at_tpr(high, low) == 1.0
  # Identical distributions: chance.
  assert ood.auroc(low, low) == pytest.approx(0.5)


def test_nan_in_distribution_score_is_no_better_than_the_worst_finite_value():
  scores_out = [5.0, 6.0, 7.0]
  clean = [1.0, 2.0, 3.0, 4.0]
  assert ood.auroc(clean, scores_out) == 1.0 and ood.fpr_at_tpr(clean, scores_out) == 0.0
  worst_finite = [100.0, 2.0, 3.0, 4.0]  # above every out score
  with_nan = [np.nan, 2.0, 3.0, 4.0]
  # 3 out scores each beat 3 of 4 in scores: 9 / 12; accepting all 4 in accepts all out.
  assert ood.auroc(with_nan, scores_out) == ood.auroc(worst_finite, scores_out) == 0.75
  assert ood.fpr_at_tpr(with_nan, scores_out) == ood.fpr_at_tpr(worst_finite, scores_out) == 1.0
  # NaN ranks above even +inf: tying with an infinite out score would earn 1/2.
  out_with_inf = [5.0, 6.0, np.inf]
  assert ood.auroc([np.inf, 2.0, 3.0, 4.0], out_with_inf) == pytest.approx(9.5 / 12)
  assert ood.auroc(with_nan, out_with_inf) == 0.75


def test_nan_out_of_distribution_score_is_no_better_than_the_worst_finite_value():
  scores_in = [1.0, 2.0, 3.0, 4.0]
  worst_finite = [-100.0, 6.0, 7.0]  # below every in score
  with_nan = [np.nan, 6.0, 7.0]
  # 2 out scores beat all 4 in scores: 8 / 12; threshold 4 accepts the low out score: 1 / 3.
  assert ood.auroc(scores_in, with_nan) == ood.auroc(scores_in, worst_finite) == pytest.approx(8 / 12)
  assert ood.fpr_at_tpr(scores_in, with_nan) == pytest.approx(1 / 3)
  assert ood.fpr_at_tpr(scores_in, worst_finite) == pytest.approx(1 / 3)
  # NaN ranks below even -inf.
  in_with_minus_inf = [-np.inf, 2.0, 3.0, 4.0]
  assert ood.auroc(in_with_minus_inf, [-np.inf, 6.0, 7.0]) == pytest.approx(8.5 / 12)
  assert ood.auroc(in_with_minus_inf, with_nan) == pytest.approx(8 / 12)


def test_infinite_scores_rank_as_extremes():
  scores_in = [1.0, 2.0, 3.0, 4.0]
  # +inf out-of-distribution scores are maximal: perfect separation, not an error.
  assert ood.auroc(scores_in, [np.inf, np.inf, 5.0]) == 1.0
  assert ood.fpr_at_tpr(scores_in, [np.inf, np.inf, 5.0]) == 0.0
  # A +inf in-distribution score is above every out score and must be accepted
  # to reach 95%: every out score is then accepted.
  assert ood.auroc([1.0, 2.0, 3.0, np.inf], [5.0, 6.0, 7.0]) == 0.75
  assert ood.fpr_at_tpr([1.0, 2.0, 3.0, np.inf], [5.0, 6.0, 7.0]) == 1.0
  # -inf is minimal.
  assert ood.auroc([-np.inf, 2.0], [-5.0, 3.0]) == 0.75


def test_detection_report_counts_nans_not_infs():
  report = ood.detection_report([np.nan, np.inf, 1.0, 2.0], [np.nan, np.nan, 5.0])
  assert report["num_in"] == 4 and report["num_out"] == 3
  assert report["nan_in"] == 1 and report["nan_out"] == 2
  assert report["auroc"] == ood.auroc([np.nan, np.inf, 1.0, 2.0], [np.nan, np.nan, 5.0])
  assert report["fpr_at_95_tpr"] == 1.0  # the NaN in score must be accepted, so all out are
  assert set(report) == {"auroc", "fpr_at_95_tpr", "num_in", "num_out", "nan_in", "nan_out"}


def test_rejects_bad_inputs():
  with pytest.raises(ValueError, match="scores_out"):
    ood.auroc([1.0], [])
  with pytest.raises(ValueError, match="scores_in"):
    ood.auroc([[1.0, 2.0]], [1.0])
  with pytest.raises(ValueError, match="tpr"):
    ood.fpr_at_tpr([1.0], [2.0], tpr=0.0)
