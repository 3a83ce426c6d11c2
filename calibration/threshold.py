"""Image thresholds from station scores: a target false-alarm rate, or best F1 (numpy only).

Target false-alarm rate (FPR) on good parts, by order statistics. Let the N good-frame scores
be i.i.d. and the threshold be the r-th largest of them, ``t = X(N-r+1)``. The true FPR of that
threshold, ``F̄(t)``, is then distributed as ``Beta(r, N - r + 1)`` whatever the score
distribution (David & Nagaraja, *Order Statistics*, 3rd ed., §2.2; the same argument gives
Wilks' 1941 non-parametric tolerance limits), so

    P(FPR ≤ p) = P(Beta(r, N-r+1) ≤ p) = P(Binomial(N, p) ≥ r)      (exact, any N)

and ``E[FPR] = r / (N + 1)``. This module picks ``r`` two ways:

- ``"quantile"`` (default): ``r = round(target·(N+1))`` so that the expected FPR is the
  target; the realised FPR scatters around it with the Beta spread above.
- ``"conservative"``: the largest ``r`` with ``P(FPR ≤ target) ≥ confidence`` — a guarantee,
  at the price of a higher threshold. With the maximum as threshold (r = 1) it needs
  ``N ≥ ln(1-confidence) / ln(1-target)`` frames (2995 for 0.1 % at 95 %).

When ``target·(N+1) < 1`` no order statistic reaches the target. The threshold is then
extrapolated from a Gumbel fit (method of moments) to the scores — the image score is the
maximum of a smoothed map, and maxima tend to the Gumbel law (Fisher–Tippett–Gnedenko) — and
the reliability statement says that it is an extrapolation and how many frames would make it
empirical.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

__all__ = [
    "MIN_FRAMES",
    "CalibrationError",
    "F1Fit",
    "ThresholdFit",
    "best_f1_threshold",
    "binom_sf",
    "fit_threshold",
    "fpr_upper_bound",
    "frames_needed",
    "prob_fpr_below",
]

#: fewer good frames than this give no usable statement about a threshold
MIN_FRAMES = 20
EULER_GAMMA = 0.5772156649015329

Method = Literal["quantile", "conservative"]


class CalibrationError(ValueError):
    """Calibration cannot proceed (too few frames, bad scores, bad labelled set)."""


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_sf(r: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) ≥ r)``, summed in log space (exact for the N a station collects)."""
    if r <= 0:
        return 1.0
    if r > n:
        return 0.0
    logs = np.array([_log_binom_pmf(k, n, p) for k in range(r, n + 1)])
    top = logs.max()
    if not np.isfinite(top):
        return 0.0
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def prob_fpr_below(r: int, n: int, p: float) -> float:
    """Probability that the r-th largest of n good scores, as threshold, has FPR ≤ p."""
    return binom_sf(r, n, p)


def fpr_upper_bound(r: int, n: int, confidence: float = 0.95) -> float:
    """The FPR that the r-th largest of n scores stays under with probability ``confidence``.

    That is the ``confidence`` quantile of ``Beta(r, n-r+1)``, found by bisection on
    `prob_fpr_below` (monotone in p).
    """
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if prob_fpr_below(r, n, mid) >= confidence:
            hi = mid
        else:
            lo = mid
    return hi


def frames_needed(target_fpr: float, confidence: float = 0.95) -> int:
    """Good frames needed so that their maximum, as threshold, has FPR ≤ target at ``confidence``.

    ``1 - (1 - p)^N ≥ c``  ⇔  ``N ≥ ln(1 - c) / ln(1 - p)``.
    """
    _check_rate(target_fpr)
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence}")
    return int(math.ceil(math.log1p(-confidence) / math.log1p(-target_fpr) - 1e-9))


def _check_rate(target_fpr: float) -> None:
    if not 0.0 < target_fpr < 0.5:
        raise CalibrationError(
            f"target false-alarm rate must be in (0, 0.5), got {target_fpr}; e.g. 0.001 = one "
            "false alarm in a thousand good parts"
        )


def _check_scores(scores: np.ndarray, what: str = "good-frame scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size < MIN_FRAMES:
        raise CalibrationError(
            f"only {s.size} {what}: at least {MIN_FRAMES} are needed to set a threshold "
            "(pass a larger --frames)"
        )
    if not np.isfinite(s).all():
        raise CalibrationError(
            f"{int((~np.isfinite(s)).sum())} {what} are NaN/inf: the model or its inputs are "
            "broken (check the bundle with `trd-edge verify`)"
        )
    return s


@dataclass
class ThresholdFit:
    """A threshold for a target FPR and how far to trust it."""

    threshold: float
    method: str  # "quantile" | "conservative" | "gumbel-extrapolated"
    target_fpr: float
    n_frames: int
    rank: int | None  # r: the threshold is the r-th largest score (None: extrapolated)
    expected_fpr: float | None  # r / (N+1)
    prob_fpr_below_target: float | None  # P(FPR ≤ target)
    fpr_upper_95: float | None  # FPR not exceeded with 95 % probability
    empirical_fpr: float  # fraction of the calibration scores above the threshold
    frames_needed_95: int  # frames for the maximum to guarantee the target at 95 %
    statement: str

    def as_dict(self) -> dict:
        """Plain dict (JSON-friendly)."""
        return asdict(self)


def _gumbel_quantile(s: np.ndarray, q: float) -> float:
    """Quantile ``q`` of a Gumbel (max) law fitted to ``s`` by moments."""
    beta = float(s.std(ddof=1)) * math.sqrt(6.0) / math.pi
    mu = float(s.mean()) - EULER_GAMMA * beta
    return mu - beta * math.log(-math.log(q))


def fit_threshold(
    scores: np.ndarray,
    target_fpr: float,
    method: Method = "quantile",
    confidence: float = 0.95,
) -> ThresholdFit:
    """Threshold on good-frame image scores for a target FPR (see the module docstring).

    Raises `CalibrationError` for fewer than `MIN_FRAMES` scores, non-finite scores or a bad
    target. The ``statement`` field is the sentence the report prints.
    """
    _check_rate(target_fpr)
    s = _check_scores(scores)
    n = s.size
    desc = np.sort(s)[::-1]
    need = frames_needed(target_fpr, 0.95)
    if method == "quantile":
        r = int(round(target_fpr * (n + 1)))
    elif method == "conservative":
        r = 0
        while r + 1 <= n and prob_fpr_below(r + 1, n, target_fpr) >= confidence:
            r += 1
    else:
        raise CalibrationError(f"unknown threshold method {method!r}; use quantile|conservative")

    if r >= 1:
        thr = float(desc[r - 1])
        p_ok = prob_fpr_below(r, n, target_fpr)
        upper = fpr_upper_bound(r, n, 0.95)
        expected = r / (n + 1)
        emp = float((s > thr).mean())
        statement = (
            f"threshold = the {_ordinal(r)} highest of {n} good-frame scores: expected "
            f"false-alarm rate {expected:.4f} (target {target_fpr:g}); P(FPR <= target) = "
            f"{p_ok:.2f}; with 95 % probability FPR <= {upper:.4f}. "
            + _guarantee_hint(method, n, need)
        )
        return ThresholdFit(
            thr, method, target_fpr, n, r, expected, p_ok, upper, emp, need, statement
        )

    # Not enough frames for an order statistic at this target: extrapolate the tail.
    thr = max(_gumbel_quantile(s, 1.0 - target_fpr), float(desc[0]))
    emp = float((s > thr).mean())
    p_max = prob_fpr_below(1, n, target_fpr)
    upper = fpr_upper_bound(1, n, 0.95)
    statement = (
        f"{n} good frames cannot show a false-alarm rate of {target_fpr:g} "
        f"(that needs about {int(math.ceil(1 / target_fpr))} frames for an expected rate and "
        f">= {need} for a 95 % guarantee): threshold extrapolated from a Gumbel fit to the "
        f"scores, at or above the highest score. Measured is only that the highest score "
        f"has FPR <= {upper:.4f} with 95 % probability; the rest rests on the fit. Collect "
        f"more good frames to confirm."
    )
    return ThresholdFit(
        thr, "gumbel-extrapolated", target_fpr, n, None, None, p_max, upper, emp, need, statement
    )


def _guarantee_hint(method: str, n: int, need: int) -> str:
    if method == "conservative":
        return "Chosen so that FPR <= target with the requested confidence."
    if n >= need:
        return "For FPR <= target with 95 % confidence use --method conservative."
    return f"FPR <= target with 95 % confidence (--method conservative) needs >= {need} frames."


def _ordinal(r: int) -> str:
    if r == 1:
        return "1st"
    if r == 2:
        return "2nd"
    if r == 3:
        return "3rd"
    return f"{r}th"


@dataclass
class F1Fit:
    """The threshold that maximises F1 on a labelled set."""

    threshold: float
    f1: float
    precision: float
    recall: float
    n_good: int
    n_defect: int
    statement: str

    def as_dict(self) -> dict:
        """Plain dict (JSON-friendly)."""
        return asdict(self)


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> F1Fit:
    """Threshold maximising F1 (defect = positive, rule ``score > threshold``).

    Candidates are the midpoints between consecutive distinct scores (so the chosen value does
    not sit on a sample), plus one just below the lowest score. Ties in F1 go to the higher
    threshold (fewer false alarms).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if s.shape != y.shape:
        raise CalibrationError(f"{s.size} scores but {y.size} labels")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise CalibrationError(
            f"the labelled set has {n_neg} good and {n_pos} defective frames; F1 calibration "
            "needs both (an MVTec 3D-AD style test folder with good/ and defect folders)"
        )
    if not np.isfinite(s).all():
        raise CalibrationError("labelled-set scores contain NaN/inf; check the model")
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1e-6 * max(1.0, abs(u[0]))], (u[:-1] + u[1:]) / 2.0])
    pred = s[None, :] > cands[:, None]
    tp = (pred & (y == 1)).sum(axis=1)
    fp = (pred & (y == 0)).sum(axis=1)
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    rec = tp / n_pos
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    best = np.flatnonzero(f1 == f1.max())[-1]  # highest threshold among ties
    thr = float(cands[best])
    statement = (
        f"best-F1 threshold on {n_neg} good + {n_pos} defective labelled frames: F1 "
        f"{f1[best]:.3f} (precision {prec[best]:.3f}, recall {rec[best]:.3f})"
    )
    return F1Fit(thr, float(f1[best]), float(prec[best]), float(rec[best]), n_neg, n_pos, statement)
