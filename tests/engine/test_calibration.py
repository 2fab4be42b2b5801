"""The match calibrator: features by hand, a logistic fit that recovers a known model, the threshold
rule, and files refused for another model; AUROC and the reliability table by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.calibration import CalibrationError, MatchCalibrator, fit_calibrator, fit_logistic, match_features
from engine.metrics import auroc, reliability


def test_features_are_the_distance_and_the_gap_to_the_nearest_other_result():
    f = match_features(np.array([[0.5, 0.9, 1.0], [0.7, 0.7, np.inf]]))
    np.testing.assert_allclose(f[0, :, 0], [0.5, 0.9, 1.0])
    np.testing.assert_allclose(f[0, :, 1], [0.4, -0.4, -0.5])  # the top stands 0.4 clear; the others are behind it
    np.testing.assert_allclose(f[1, :2, 1], [0.0, 0.0])  # a tie: no gap
    assert match_features(np.array([[0.3]]))[0, 0].tolist() == [0.3, 0.0]


def test_a_logistic_fit_recovers_the_model_that_drew_the_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    true = np.array([0.5, -2.0, 1.0])
    y = rng.random(20000) < 1 / (1 + np.exp(-(true[0] + x @ true[1:])))
    np.testing.assert_allclose(fit_logistic(x, y, l2=0.0), true, atol=0.1)
    with pytest.raises(ValueError, match="both"):
        fit_logistic(x, np.ones(20000))


def test_the_threshold_keeps_the_chosen_share_and_the_file_belongs_to_one_model(tmp_path: Path):
    rng = np.random.default_rng(1)
    pos = np.stack([rng.normal(0.6, 0.1, 500), rng.normal(0.2, 0.1, 500)], axis=1)
    neg = np.stack([rng.normal(1.0, 0.1, 500), rng.normal(0.0, 0.1, 500)], axis=1)
    cal = fit_calibrator(pos, neg, "model-a", keep_share=0.9)
    p_pos, p_neg = cal.probability(pos), cal.probability(neg)
    assert (p_pos >= cal.threshold).mean() == pytest.approx(0.9, abs=0.005)
    assert p_pos.mean() > 0.8 and p_neg.mean() < 0.2 and auroc(np.r_[p_pos, p_neg], np.r_[np.ones(500), np.zeros(500)]) > 0.95
    cal.save(tmp_path / "c.json")
    assert MatchCalibrator.load(tmp_path / "c.json", model_fingerprint="model-a") == cal
    with pytest.raises(CalibrationError, match="not on model-b"):
        MatchCalibrator.load(tmp_path / "c.json", model_fingerprint="model-b")
    (tmp_path / "bad.json").write_text('{"format": "showroom.calibration", "version": 1, "weights": [1, 2]}')
    with pytest.raises(CalibrationError, match="damaged|3 finite"):
        MatchCalibrator.load(tmp_path / "bad.json")
    assert cal.results(np.array([[np.inf, 0.5]]))[0, 0] == 0.0  # no result, no probability


def test_auroc_and_the_reliability_table_by_hand():
    assert auroc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.875)  # one tie of four pairs: half
    assert np.isnan(auroc(np.array([0.1]), np.array([1])))
    ece, table = reliability(np.array([0.05, 0.15, 0.95, 0.95]), np.array([0, 1, 1, 0]), bins=10)
    # bins: [0,.1) predicted .05 observed 0; [.1,.2) .15 vs 1; [.9,1] .95 vs .5
    assert ece == pytest.approx(0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.45)
    assert [r["count"] for r in table] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
