"""How sure a match is: a calibrated probability that a search result is the query's own product.

A result's features are its distance ``d`` to the query and its ``gap``: the distance of the
nearest *other* result minus ``d`` (positive for a top result that stands clear of the rest,
negative below the top). ``MatchCalibrator`` maps them through a logistic model fitted on
development pairs (``evaluation.calibration``): each pair asked with its product in the index and
with it removed (the case of a shop that does not carry it), labelled by whether the top result is
the query's own product. Below ``threshold`` the top result is "no close match in the catalog".

The calibrator belongs to one model (``model_fingerprint``): distances of another model mean
something else, so loading it for another model is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.files import write_json_atomic

FORMAT = "showroom.calibration"
VERSION = 1
FILE = "calibration.json"  # its name inside a serving generation


class CalibrationError(ValueError):
    """A calibration file that is missing, damaged, or made for another model."""


def match_features(distances: np.ndarray) -> np.ndarray:
    """float64 (Q, K, 2): (distance, gap) of each result of ``distances`` float (Q, K), each row a
    query's results (any order; ``inf`` = no result). gap = nearest other result's distance minus
    this one's (0 when a query has a single result)."""
    d = np.asarray(distances, np.float64)
    if d.ndim != 2:
        raise ValueError(f"distances must be (Q, K), got {d.shape}")
    if d.shape[1] < 2:
        return np.stack([d, np.zeros_like(d)], axis=-1)
    order = np.sort(d, axis=1)
    first, second = order[:, :1], order[:, 1:2]
    other = np.where(d == first, second, first)  # the top result's competitor is the second; everyone else's is the top
    gap = np.where(np.isfinite(other), other - d, 0.0)
    return np.stack([d, gap], axis=-1)


@dataclass(frozen=True)
class MatchCalibrator:
    """P(same product | distance, gap) = sigmoid(w0 + w1 * distance + w2 * gap).

    threshold: the top result's probability under which the answer is "no close match".
    model_fingerprint: the embedder whose distances it was fitted on. fitted: how (data, rule).
    """

    weights: tuple[float, float, float]
    threshold: float
    model_fingerprint: str
    fitted: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.weights) != 3 or not all(np.isfinite(self.weights)):
            raise CalibrationError(f"a calibrator needs 3 finite weights, got {self.weights}")
        if not 0.0 <= self.threshold <= 1.0:
            raise CalibrationError(f"threshold must be in [0, 1], got {self.threshold}")

    def probability(self, features: np.ndarray) -> np.ndarray:
        """float64 (...,): P(same product) of ``features`` float (..., 2) (``match_features``)."""
        f = np.asarray(features, np.float64)
        z = self.weights[0] + self.weights[1] * f[..., 0] + self.weights[2] * f[..., 1]
        return np.where(np.isfinite(f[..., 0]), 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))), 0.0)

    def results(self, distances: np.ndarray) -> np.ndarray:
        """float64 (Q, K): the probability of each result of ``distances`` (Q, K) (see ``match_features``)."""
        return self.probability(match_features(distances))

    def save(self, path: str | Path) -> Path:
        write_json_atomic(Path(path), {"format": FORMAT, "version": VERSION, **asdict(self)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, model_fingerprint: str | None = None) -> MatchCalibrator:
        """The calibrator saved at ``path``; refused (``CalibrationError``) when damaged or, given
        ``model_fingerprint``, fitted on another model's distances."""
        path = Path(path)
        fix = "fit one with python -m evaluation.evaluate --fit-calibration FILE on development scenes"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"calibration {path} not found; {fix}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"calibration {path} cannot be read ({exc}); {fix}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise CalibrationError(f"{path} is not a {FORMAT} v{VERSION} file; {fix}")
        try:
            out = cls(tuple(float(w) for w in data["weights"]), float(data["threshold"]), str(data["model_fingerprint"]),
                      dict(data.get("fitted") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{path} is damaged ({exc}); {fix}") from None
        if model_fingerprint is not None and out.model_fingerprint != model_fingerprint:
            raise CalibrationError(f"{path} was fitted on model {out.model_fingerprint[:12]}, not on {model_fingerprint[:12]}: "
                                   f"a model's distances mean nothing to another; {fix} with the served model")
        return out


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights float64 (F + 1,) (intercept first) of the logistic regression of ``y`` (N,) in {0, 1} on
    ``x`` (N, F), by Newton's method with a small L2 penalty on the slopes (finite on separable data)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or len(x) != len(y) or not len(y):
        raise ValueError(f"need x (N, F) and y (N,) with N > 0, got {x.shape} and {y.shape}")
    if y.min() == y.max():
        raise ValueError("fitting needs both positives and negatives")
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2 * len(y))
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -60, 60)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_calibrator(positives: np.ndarray, negatives: np.ndarray, model_fingerprint: str, *, keep_share: float = 0.95,
                   kept: np.ndarray | None = None, fitted: dict | None = None) -> MatchCalibrator:
    """A calibrator fitted on ``positives`` and ``negatives`` float (N, 2) / (M, 2) of ``match_features``.

    The threshold is chosen so that ``keep_share`` of the ``kept`` top-result probabilities' rows
    (float (R, 2): the top result's features of queries whose own product is in the index and
    found, e.g. in the top 10) stay at or above it: at most 1 - keep_share of them would lose
    their answer behind "no close match". Without ``kept``, the positives play that part."""
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    x = np.vstack([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    ok = np.isfinite(x).all(axis=1)
    w = fit_logistic(x[ok], y[ok])
    draft = MatchCalibrator((float(w[0]), float(w[1]), float(w[2])), 0.0, model_fingerprint)
    guard = draft.probability(pos if kept is None else np.asarray(kept, np.float64))
    guard = guard[np.isfinite(guard)]
    threshold = float(np.quantile(guard, 1.0 - keep_share, method="lower")) if len(guard) else 0.5
    return MatchCalibrator(draft.weights, threshold, model_fingerprint,
                           {"positives": int(ok[: len(pos)].sum()), "negatives": int(ok[len(pos):].sum()), "keep_share": keep_share,
                            **(fitted or {})})
