"""Evaluation metrics for anomaly detection: AUROC, AP, F1-max and the PRO curve (trd-model.md §10).

Scores are "higher = more anomalous". Labels and ground-truth masks are binarised at 0.5.
Pixel metrics sort the scores once: over ~6 M pixels everything takes a few seconds. ROC/AP/F1
are derived from one cumulative true/false-positive count per distinct score, the same
quantities `sklearn.metrics` uses (the tests check agreement with it).

PRO (per-region overlap, Bergmann et al., MVTec AD / MVTec 3D-AD): for each threshold, the mean
over all ground-truth connected components (8-connectivity) of the fraction of the component
above the threshold, plotted against the false-positive rate over all defect-free pixels.
Two variants: the exact curve of the official MVTec 3D-AD evaluation (every distinct score is a
threshold) and the 100-threshold M3DM-style curve used by TRD's current scripts.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

AUPRO_LIMITS = (0.3, 0.1, 0.05, 0.01)
METRIC_KEYS = (
    "image_auroc",
    "pixel_auroc",
    "aupro@0.3",
    "aupro@0.1",
    "aupro@0.05",
    "aupro@0.01",
    "image_ap",
    "pixel_ap",
    "image_f1_max",
    "pixel_f1_max",
)
F1_EPS = 1e-7  # as in the reference: F1 = 2PR / (P + R + 1e-7)


class UndefinedMetricError(ValueError):
    """A metric is undefined for this data (e.g. no defect samples, no defect-free pixels)."""


# --------------------------------------------------------------------------- input handling


def _scores(x: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    s = np.asarray(x)
    if not np.issubdtype(s.dtype, np.number) and s.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {s.dtype}")
    s = s.ravel()
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or inf; fix the model outputs before evaluating")
    return s


def _labels(x: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    return np.asarray(x).ravel() > 0.5


def _maps_and_gts(maps: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks as (N,H,W) arrays of equal shape."""
    m = np.asarray(maps)
    g = np.asarray(gts)
    if m.ndim == 2:
        m = m[None]
    if g.ndim == 2:
        g = g[None]
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if g.ndim == 4 and g.shape[1] == 1:
        g = g[:, 0]
    if m.ndim != 3 or m.shape != g.shape:
        raise ValueError(
            f"anomaly maps {np.shape(maps)} and ground-truth masks {np.shape(gts)} must both be "
            "(N,H,W) (or (N,1,H,W)) with the same shape: resize the masks to the map size"
        )
    return m, g > 0.5


# --------------------------------------------------------------------------- ROC / PR family


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid rule (np.trapezoid needs numpy >= 2; the runtime allows 1.24)."""
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def _binary_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative false/true positives at each distinct score, thresholds descending.

    Entry i counts samples with score >= the i-th largest distinct score.
    """
    order = np.argsort(scores)[::-1]
    s = scores[order]
    y = labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = (last + 1) - tps
    return fps, tps


def _auroc(fps: np.ndarray, tps: np.ndarray) -> float:
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        raise UndefinedMetricError("AUROC needs both positive and negative samples")
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return _trapezoid(fpr, tpr)


def _ap(fps: np.ndarray, tps: np.ndarray) -> float:
    """Average precision, sum over thresholds of (R_k - R_{k-1}) * P_k (as sklearn)."""
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        raise UndefinedMetricError("average precision needs both positive and negative samples")
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _f1_max(fps: np.ndarray, tps: np.ndarray) -> float:
    """Max F1 over thresholds; the appended (P=1, R=0) end point of a PR curve is not used."""
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        raise UndefinedMetricError("F1-max needs both positive and negative samples")
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.max(2 * precision * recall / (precision + recall + F1_EPS)))


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image-level ROC AUC (labels 1 = defect)."""
    return _auroc(*_binary_curve(_scores(scores, "scores"), _labels(labels, "labels")))


def image_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image-level average precision."""
    return _ap(*_binary_curve(_scores(scores, "scores"), _labels(labels, "labels")))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """F1-max from the precision-recall curve: F1 = 2PR/(P+R+1e-7), maximised over thresholds."""
    return _f1_max(*_binary_curve(_scores(scores, "scores"), _labels(labels, "labels")))


def pixel_auroc(maps: np.ndarray, gts: np.ndarray) -> float:
    """ROC AUC over every pixel of every map."""
    m, g = _maps_and_gts(maps, gts)
    return _auroc(*_binary_curve(_scores(m, "maps"), g.ravel()))


def pixel_ap(maps: np.ndarray, gts: np.ndarray) -> float:
    """Average precision over every pixel of every map."""
    m, g = _maps_and_gts(maps, gts)
    return _ap(*_binary_curve(_scores(m, "maps"), g.ravel()))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) for plotting, starting at (0, 0)."""
    fps, tps = _binary_curve(_scores(scores, "scores"), _labels(labels, "labels"))
    if tps[-1] == 0 or fps[-1] == 0:
        raise UndefinedMetricError("a ROC curve needs both positive and negative samples")
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


# --------------------------------------------------------------------------- PRO


def _components(gts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat component id per pixel (0 = defect-free, 1..C global ids) and component sizes."""
    comp = np.zeros(gts.shape, dtype=np.int32)
    offset = 0
    for i, g in enumerate(gts):
        n, lab = cv2.connectedComponents(g.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        if n > 1:
            comp[i] = np.where(lab > 0, lab + offset, 0)
            offset += n - 1
    sizes = np.bincount(comp.ravel(), minlength=offset + 1)[1:]
    return comp.ravel(), sizes


def _check_pro_defined(comp: np.ndarray, n_comp: int) -> int:
    n_ok = int(np.count_nonzero(comp == 0))
    if n_comp == 0:
        raise UndefinedMetricError("PRO needs at least one defect region in the ground truth")
    if n_ok == 0:
        raise UndefinedMetricError("PRO needs defect-free pixels to measure false positives")
    return n_ok


def pro_curve_exact(maps: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve (fpr, pro), as the official MVTec 3D-AD evaluation computes it.

    Every distinct score is a threshold (pixel positive if score >= threshold). Each defect-free
    pixel adds 1/N_ok to the FPR, each pixel of component c adds 1/(C*|c|) to the PRO; sorting
    once and taking cumulative sums gives the whole curve in O(N log N). Padded with (0, 0) and
    (1, 1); fpr is non-decreasing.
    """
    m, g = _maps_and_gts(maps, gts)
    s = _scores(m, "maps")
    comp, sizes = _components(g)
    n_ok = _check_pro_defined(comp, sizes.size)
    order = np.argsort(s)[::-1]
    s_sorted = s[order]
    comp_sorted = comp[order]
    del order
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    fpr = np.cumsum(comp_sorted == 0, dtype=np.int64)[last] / n_ok
    w = np.r_[0.0, 1.0 / (sizes.size * sizes.astype(np.float64))]
    pro = np.cumsum(w[comp_sorted])[last]
    np.clip(pro, 0.0, 1.0, out=pro)  # float accumulation can overshoot 1 by ~1e-15
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0]


def pro_curve_100(
    maps: np.ndarray, gts: np.ndarray, num_thresholds: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """M3DM-style PRO curve with `num_thresholds` thresholds (trd-model.md §10).

    Thresholds are the sorted defect-free scores at integer positions
    `linspace(0, N-1, num_thresholds)` (truncated); at position p, FPR = 1 - (p+1)/N and a pixel
    counts if its score is strictly above the threshold. (1, 1) is prepended and the curve is
    returned with increasing FPR.
    """
    m, g = _maps_and_gts(maps, gts)
    s = _scores(m, "maps")
    comp, sizes = _components(g)
    n_ok = _check_pro_defined(comp, sizes.size)
    ok_sorted = np.sort(s[comp == 0])
    pos = np.linspace(0, n_ok - 1, num=num_thresholds).astype(np.int64)
    thr = ok_sorted[pos]  # non-decreasing
    fpr = 1.0 - (pos + 1) / n_ok
    # A defect pixel with k thresholds strictly below its score is above thresholds 0..k-1.
    defect = comp > 0
    k = np.searchsorted(thr, s[defect], side="left")
    t1 = num_thresholds + 1
    hist = np.bincount((comp[defect] - 1).astype(np.int64) * t1 + k, minlength=sizes.size * t1)
    not_above = np.cumsum(hist.reshape(sizes.size, t1), axis=1)[:, :num_thresholds]
    pro = (1.0 - not_above / sizes[:, None]).mean(axis=0)
    return np.r_[1.0, fpr][::-1].copy(), np.r_[1.0, pro][::-1].copy()


def aupro(fpr: np.ndarray, pro: np.ndarray, limit: float = 0.3) -> float:
    """Area under the PRO curve up to FPR `limit`, divided by `limit` (so 1.0 is perfect).

    Trapezoid rule over the points with fpr <= limit, plus a partial trapezoid to `limit` with
    the PRO value interpolated linearly between the neighbouring points (as the official code).
    """
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(pro, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"fpr {x.shape} and pro {y.shape} must be 1-D with >= 2 equal points")
    if np.any(np.diff(x) < 0):
        raise ValueError("fpr must be non-decreasing (pass the curve in increasing FPR order)")
    if not (x[0] <= limit <= x[-1]) or limit <= 0:
        raise ValueError(f"limit {limit} must be in (0, max fpr] = (0, {x[-1]}]")
    n_in = int(np.searchsorted(x, limit, side="right"))  # points with fpr <= limit
    area = _trapezoid(x[:n_in], y[:n_in])
    if x[n_in - 1] < limit:
        i = n_in  # first point beyond the limit; exists because limit <= x[-1]
        y_lim = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y[i - 1] + y_lim) * (limit - x[i - 1])
    return float(area / limit)


def cut_curve(
    fpr: np.ndarray, pro: np.ndarray, limit: float = 0.3, max_points: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """A curve (increasing fpr) cut at `limit` with an interpolated end point, thinned to at
    most `max_points` points for plotting."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(pro, dtype=np.float64)
    n_in = int(np.searchsorted(x, limit, side="right"))
    if 0 < n_in < x.size and x[n_in - 1] < limit:
        i = n_in
        y_lim = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
        x, y = np.r_[x[:n_in], limit], np.r_[y[:n_in], y_lim]
    else:
        x, y = x[:n_in], y[:n_in]
    if x.size > max_points:
        keep = np.unique(np.linspace(0, x.size - 1, max_points).astype(np.int64))
        x, y = x[keep], y[keep]
    return x, y


def pro_points(
    maps: np.ndarray, gts: np.ndarray, limit: float = 0.3, max_points: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve cut at FPR `limit` (interpolated end point), thinned for plotting."""
    return cut_curve(*pro_curve_exact(maps, gts), limit=limit, max_points=max_points)


# --------------------------------------------------------------------------- bundles


def _or_none(fn, *args) -> float | None:
    try:
        return fn(*args)
    except UndefinedMetricError:
        return None


def compute_metrics(
    image_scores: np.ndarray,
    image_labels: np.ndarray,
    maps: np.ndarray | None,
    gts: np.ndarray | None,
) -> dict[str, float | None]:
    """All §10 metrics (exact PRO) as a JSON-ready dict with exactly `METRIC_KEYS`.

    A metric that is undefined for the data (one class only, no defect region, `maps`/`gts`
    None for image-only evaluation) is None rather than an error.
    """
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    s = _scores(image_scores, "image_scores")
    y = _labels(image_labels, "image_labels")
    if s.shape != y.shape:
        raise ValueError(f"{s.size} image scores but {y.size} image labels")
    if s.size:
        curve = _binary_curve(s, y)
        out["image_auroc"] = _or_none(_auroc, *curve)
        out["image_ap"] = _or_none(_ap, *curve)
        out["image_f1_max"] = _or_none(_f1_max, *curve)
    if maps is None or gts is None:
        return out
    m, g = _maps_and_gts(maps, gts)
    if m.size == 0:
        return out
    curve = _binary_curve(_scores(m, "maps"), g.ravel())
    out["pixel_auroc"] = _or_none(_auroc, *curve)
    out["pixel_ap"] = _or_none(_ap, *curve)
    out["pixel_f1_max"] = _or_none(_f1_max, *curve)
    del curve
    try:
        fpr, pro = pro_curve_exact(m, g)
    except UndefinedMetricError:
        return out
    for lim in AUPRO_LIMITS:
        out[f"aupro@{lim}"] = aupro(fpr, pro, lim)
    return out


def pro_metrics_100(
    maps: np.ndarray, gts: np.ndarray, num_thresholds: int = 100
) -> dict[str, float | None]:
    """AUPRO at the §10 limits from the 100-threshold curve, for comparison with M3DM/TRD
    numbers; keys `aupro100@0.3` etc., None when PRO is undefined."""
    keys = [f"aupro100@{lim}" for lim in AUPRO_LIMITS]
    try:
        fpr, pro = pro_curve_100(maps, gts, num_thresholds)
    except UndefinedMetricError:
        return dict.fromkeys(keys)
    return {k: aupro(fpr, pro, lim) for k, lim in zip(keys, AUPRO_LIMITS, strict=True)}
