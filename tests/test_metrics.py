"""gbair_nb.metrics: closed forms and planted cases."""
import numpy as np
import pytest
from scipy.stats import t

from gbair_nb.metrics import calibrated_macro_f1, kept_round, mean_ci, percentile_ranks


def test_mean_ci_is_students_t():
    mean, half, n = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (mean, n) == (3.0, 5)
    assert half == pytest.approx(t.ppf(0.975, 4) * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5))
    assert mean_ci([0.5, None, float("nan")])[:3:2] == (0.5, 1) and np.isnan(mean_ci([0.5])[1])
    assert mean_ci([])[2] == 0


def test_percentile_ranks():
    np.testing.assert_allclose(percentile_ranks([10, 30, 20, 20]), [0, 1, 0.5, 0.5])
    np.testing.assert_allclose(percentile_ranks([7]), [1.0])


def test_calibrated_f1_undoes_a_shifted_threshold():
    """A model whose p(positive) is 0.3 for every positive and 0.1 for every negative predicts 'negative' for all
    (macro-F1 of one class only); the threshold fit on validation separates them perfectly."""
    y = np.array([0] * 30 + [1] * 10)
    p1 = np.where(y == 1, 0.3, 0.1)
    probs = np.c_[1 - p1, p1]
    from sklearn.metrics import f1_score

    assert f1_score(y, probs.argmax(1), average="macro", zero_division=0) < 0.5
    assert calibrated_macro_f1(probs, y, probs, y) == 1.0
    # the threshold comes from validation only: a test set with another shift is not rescued
    assert calibrated_macro_f1(probs, y, np.c_[1 - p1 / 4, p1 / 4], y) < 0.5
    assert np.isnan(calibrated_macro_f1(np.full((3, 3), 1 / 3), [0, 1, 2], np.full((3, 3), 1 / 3), [0, 1, 2]))


def test_kept_round_is_the_final_round_not_the_last():
    rounds = [{"round": 0, "test_macro_f1": 0.6}, {"round": 1, "test_macro_f1": 0.8}, {"round": 2, "test_macro_f1": 0.7}]
    assert kept_round({"rounds": rounds, "final_round": 1}) is rounds[1]  # round 2 was rolled back
    assert kept_round({"rounds": rounds, "final_round": 2}) is rounds[2]
    assert kept_round({"rounds": rounds[:1], "final_round": 0}) is rounds[0]
