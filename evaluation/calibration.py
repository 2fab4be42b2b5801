"""Is the top result the product? Fitting and measuring the match calibrator (``engine.calibration``) on evaluated pairs.

Each evaluated pair (its fixed query crop) is asked twice: with its product in the index
(*present*: the top result is the nearer of its own product and the best other one) and with its
product removed (*absent*: the top result is the best other product, the case of a shop that does
not carry it). ``fit`` fits the calibrator on the top results of both: label 1 when the top result
is the query's own product, else 0, so its probability is P(the top result is the product); the
threshold keeps 95 % of present queries whose product is in the top 10.

(The first design, positives = every pair's own product wherever it ranks, negatives = the absent
query's top result, was measured and dropped: its positives are mostly own products ranked far
down, so its probability *rose* with distance; AUROC 0.47 on development scenes, 0.483 on the
hold-out.)

``assess`` reports, for a fitted calibrator on other scenes: the AUROC of the top result's
probability between present and absent queries, and its ceiling: a present query whose product is
not first has exactly its absent twin's top result, so no score of the top result beats
0.5 + R@1 / 2; at the threshold, the share of absent queries told "no close match", of present
ones told so, and of present ones whose product is in the top 10 that lose it; the expected
calibration error and reliability bins of the probability on the top results it was fitted on.
"""

from __future__ import annotations

import numpy as np

from engine.calibration import MatchCalibrator, fit_calibrator
from engine.metrics import auroc, bootstrap_recall, reliability

KEEP_TOP = 10  # "whose right product is in the top 10"


def _features(rows: np.ndarray) -> dict[str, np.ndarray]:
    """float (R, 2) features (distance, gap) of each pair's absent query's top result and of its present query's top result."""
    own, best, second = rows[:, 0], rows[:, 1], rows[:, 2]
    absent_top = np.stack([best, second - best], axis=1)
    present_d = np.minimum(own, best)
    present_gap = np.where(own <= best, best - own, np.minimum(own, second) - best)
    return {"absent_top": absent_top, "present_top": np.stack([present_d, present_gap], axis=1)}


def fit(rows: np.ndarray, model_fingerprint: str, *, keep_share: float = 0.95, features: str = "distance",
        fitted: dict | None = None) -> MatchCalibrator:
    """The calibrator of ``rows`` (``EvalResult.match_rows``, development pairs): P(the top result is the
    product) from the top result's distance (``features="distance"``) or distance and gap
    (``"distance+gap"``); its threshold keeps ``keep_share`` of the present queries whose product is in
    the top 10."""
    if len(rows) < 10:
        raise ValueError(f"fitting a calibrator needs at least 10 evaluated pairs with a query crop, got {len(rows)}")
    if features not in ("distance", "distance+gap"):
        raise ValueError(f"features must be 'distance' or 'distance+gap', got {features!r}")
    f = _features(rows)
    tops = np.vstack([f["present_top"], f["absent_top"]])
    labels = np.concatenate([(rows[:, 0] <= rows[:, 1]).astype(float), np.zeros(len(rows))])
    if features == "distance":
        tops = np.stack([tops[:, 0], np.zeros(len(tops))], axis=1)  # the gap's weight is then 0 (L2)
    kept = f["present_top"][rows[:, 3] <= KEEP_TOP]
    return fit_calibrator(tops[labels == 1], tops[labels == 0], model_fingerprint, keep_share=keep_share, kept=kept,
                          fitted={"pairs": len(rows), "features": features, "target": "the top result is the query's product",
                                  "rule": f"threshold keeps {keep_share:.0%} of present queries with their product in the top {KEEP_TOP}",
                                  **(fitted or {})})


def assess(calibrator: MatchCalibrator, rows: np.ndarray, scenes: list[str]) -> dict:
    """The calibrator's figures on ``rows`` (``EvalResult.match_rows``) of other scenes (see the module docstring)."""
    if not len(rows):
        return {"pairs": 0}
    f = _features(rows)
    present = calibrator.probability(f["present_top"])
    absent = calibrator.probability(f["absent_top"])
    t = calibrator.threshold
    in_top = rows[:, 3] <= KEEP_TOP
    scores = np.concatenate([present, absent])
    labels = np.concatenate([np.ones(len(present)), np.zeros(len(absent))])
    first = (rows[:, 0] <= rows[:, 1]).astype(float)  # the present top result is the product
    ece, table = reliability(np.concatenate([present, absent]), np.concatenate([first, np.zeros(len(absent))]))
    # scene bootstrap of the two shares at the threshold (recall@1 of a "rank" that is 1 when told "no close match")
    told_absent = np.where(absent < t, 1.0, np.inf)
    lost = np.where(present[in_top] < t, 1.0, np.inf)
    kept_scenes = [s for s, k in zip(scenes, in_top) if k]
    return {
        "pairs": int(len(rows)), "threshold": t, "auroc": auroc(scores, labels),
        "recall_at_1": float(first.mean()), "auroc_ceiling": float(0.5 + first.mean() / 2),
        "absent_told_no_close_match": float((absent < t).mean()),
        "absent_told_no_close_match_ci95": list(bootstrap_recall(told_absent, scenes, (1,))[1]),
        "present_told_no_close_match": float((present < t).mean()),
        "present_in_top10": int(in_top.sum()),
        "present_in_top10_lost": float((present[in_top] < t).mean()) if in_top.any() else float("nan"),
        "present_in_top10_lost_ci95": list(bootstrap_recall(lost, kept_scenes, (1,))[1]) if in_top.any() else [None, None],
        "ece": ece, "reliability": table,
        "mean_probability": {"present_top": float(present.mean()), "absent_top": float(absent.mean())},
    }
