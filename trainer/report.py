"""Visual evaluation report: per-sample heatmap sheets, ROC, PRO and score histograms (PNG).

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend
switch), so it is safe in headless runs and threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from trainer.metrics import (
    UndefinedMetricError,
    aupro,
    cut_curve,
    image_auroc,
    pro_curve_exact,
    roc_points,
)

log = logging.getLogger(__name__)

ROWS_PER_SHEET = 6
PRO_LIMIT = 0.3
HEAT_CMAP = "turbo"
OK_COLOR = "#1a9641"
NG_COLOR = "#d7191c"
MODALITY_COLORS = {"fused": "black", "rgb": "#2c7bb6", "3d": "#fdae61"}
MODALITY_NAMES = {"fused": "fused", "rgb": "RGB only", "3d": "3D only"}


@dataclass
class ReportSample:
    """One test sample as the report draws it (maps already normalised and smoothed)."""

    name: str
    defect_type: str
    label: int  # 1 = defect
    rgb_vis: np.ndarray  # (H,W,3) float in [0,1]
    x3d_vis: np.ndarray  # (H,W,3) float in [0,1]
    gt: np.ndarray  # (H,W) {0,1}
    fused: np.ndarray  # (H,W)
    rgb_map: np.ndarray  # (H,W)
    x3d_map: np.ndarray  # (H,W)
    score: float


@dataclass
class Curve:
    """A plotted curve: points, its area (AUROC / AUPRO) and a legend name."""

    x: np.ndarray
    y: np.ndarray
    area: float | None
    label: str


def build_curves(
    image_scores: Mapping[str, np.ndarray],
    image_labels: np.ndarray,
    defect_types: Sequence[str],
    maps: Mapping[str, np.ndarray] | None = None,
    gts: np.ndarray | None = None,
    pro_limit: float = PRO_LIMIT,
) -> dict:
    """The `curves` argument of `write_report` from full test-set results.

    `image_scores` / `maps` are keyed by modality ("fused", "rgb", "3d"); `maps` (N,H,W) and
    `gts` (N,H,W) are optional (no PRO plot without them). Curves that are undefined for the
    data (one class only, no defect region) are left out.
    """
    labels = np.asarray(image_labels)
    types = np.asarray(list(defect_types))
    curves: dict = {"roc": {}, "pro": {}, "scores": {}}
    for name, s in image_scores.items():
        try:
            fpr, tpr = roc_points(s, labels)
            curves["roc"][name] = Curve(
                fpr, tpr, image_auroc(s, labels), MODALITY_NAMES.get(name, name)
            )
        except UndefinedMetricError:
            pass
    if maps is not None and gts is not None:
        for name, m in maps.items():
            try:
                fpr, pro = pro_curve_exact(m, gts)
            except UndefinedMetricError:
                continue
            x, y = cut_curve(fpr, pro, pro_limit)
            curves["pro"][name] = Curve(
                x, y, aupro(fpr, pro, pro_limit), MODALITY_NAMES.get(name, name)
            )
    fused = np.asarray(image_scores.get("fused", next(iter(image_scores.values()), [])))
    for t in _ordered_types(types.tolist()):
        curves["scores"][t] = fused[types == t]
    return curves


def write_report(
    out_dir: str | Path,
    samples: Sequence[ReportSample],
    curves: Mapping,
    threshold: float | None,
) -> list[Path]:
    """Write the report PNGs into `out_dir` and return their paths.

    - `samples_NN.png`: one sheet per batch of up to 6 samples (rows) with RGB, 3D image,
      ground truth, fused heatmap over RGB with the GT contour, and the per-modality heatmaps;
    - `roc.png`, `pro.png` from `curves["roc"]` / `curves["pro"]` (dicts of `Curve`);
    - `scores.png`: image-score histograms per defect type from `curves["scores"]`
      (defect type -> scores), or from the samples when absent.
    Figures with nothing to draw are skipped (logged).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if samples:
        ranges = _heat_ranges(samples, threshold)
        for i in range(0, len(samples), ROWS_PER_SHEET):
            p = out / f"samples_{i // ROWS_PER_SHEET:02d}.png"
            _sample_sheet(samples[i : i + ROWS_PER_SHEET], ranges, threshold, p)
            paths.append(p)
    roc = curves.get("roc") or {}
    if roc:
        paths.append(_curve_plot(roc, out / "roc.png", "roc"))
    else:
        log.info("report: no ROC curve to draw (needs good and defect samples)")
    pro = curves.get("pro") or {}
    if pro:
        paths.append(_curve_plot(pro, out / "pro.png", "pro"))
    else:
        log.info("report: no PRO curve to draw (needs ground-truth defect regions)")
    scores = curves.get("scores")
    if not scores and samples:
        types = [s.defect_type for s in samples]
        sc = np.asarray([s.score for s in samples])
        scores = {t: sc[np.asarray(types) == t] for t in _ordered_types(types)}
    if scores:
        paths.append(_score_hist(scores, threshold, out / "scores.png"))
    return paths


# --------------------------------------------------------------------------- helpers


def _ordered_types(types: Sequence[str]) -> list[str]:
    """'good' first, then defect types alphabetically."""
    uniq = sorted(set(types))
    return (["good"] if "good" in uniq else []) + [t for t in uniq if t != "good"]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def _heat_ranges(
    samples: Sequence[ReportSample], threshold: float | None
) -> dict[str, tuple[float, float]]:
    """One colour range per map kind across all samples, so rows are comparable.

    The low end is a robust 1st percentile (the flat good background); the high end covers the
    largest value and, for the fused map, the threshold, so "hot" always means "above it".
    """
    ranges = {}
    for key in ("fused", "rgb_map", "x3d_map"):
        vals = np.concatenate([np.asarray(getattr(s, key), np.float64).ravel() for s in samples])
        lo, hi = float(np.percentile(vals, 1)), float(vals.max())
        if key == "fused" and threshold is not None:
            hi = max(hi, threshold + 0.25 * abs(threshold - lo))
        ranges[key] = (lo, hi if hi > lo else lo + 1.0)
    return ranges


def _verdict(s: ReportSample, threshold: float | None) -> tuple[str, str]:
    """Title line and colour for the fused panel."""
    if threshold is None:
        return f"score {s.score:.2f}", "black"
    ng = s.score > threshold
    text = f"score {s.score:.2f} {'>' if ng else '≤'} {threshold:.2f} → {'NG' if ng else 'OK'}"
    if ng and not s.label:
        text += " (false alarm)"
    elif not ng and s.label:
        text += " (missed)"
    return text, NG_COLOR if ng else OK_COLOR


def _sample_sheet(
    samples: Sequence[ReportSample],
    ranges: Mapping[str, tuple[float, float]],
    threshold: float | None,
    path: Path,
) -> None:
    cols = ["RGB", "3D image", "ground truth", "fused map + GT", "RGB map", "3D map"]
    n = len(samples)
    fig = Figure(figsize=(2.3 * len(cols) + 0.8, 2.45 * n + 0.9), layout="constrained")
    axes = fig.subplots(n, len(cols), squeeze=False)
    cmap = matplotlib.colormaps[HEAT_CMAP]
    heat_images = {}
    for r, s in enumerate(samples):
        ax = axes[r]
        ax[0].imshow(np.clip(s.rgb_vis, 0, 1))
        ax[1].imshow(np.clip(s.x3d_vis, 0, 1))
        ax[2].imshow(s.gt, cmap="gray", vmin=0, vmax=1)
        ax[3].imshow(np.clip(s.rgb_vis, 0, 1))
        heat_images["fused"] = ax[3].imshow(
            s.fused, cmap=cmap, alpha=0.5, vmin=ranges["fused"][0], vmax=ranges["fused"][1]
        )
        if np.any(s.gt > 0.5):
            ax[3].contour(s.gt > 0.5, levels=[0.5], colors="white", linewidths=1.2)
        if threshold is not None and np.any(s.fused > threshold):
            ax[3].contour(
                s.fused, levels=[threshold], colors="red", linewidths=0.9, linestyles="--"
            )
        for c, key in ((4, "rgb_map"), (5, "x3d_map")):
            heat_images[key] = ax[c].imshow(
                getattr(s, key), cmap=cmap, vmin=ranges[key][0], vmax=ranges[key][1]
            )
        text, color = _verdict(s, threshold)
        ax[3].set_xlabel(text, color=color, fontsize=8.5, fontweight="bold", labelpad=2)
        ax[0].set_ylabel(f"{s.defect_type}\n{s.name}", fontsize=8.5)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        if r == 0:
            for a, title in zip(ax, cols, strict=True):
                a.set_title(title, fontsize=9.5)
    labels = {"fused": "fused z-score", "rgb_map": "RGB z-score", "x3d_map": "3D z-score"}
    for c, key in ((3, "fused"), (4, "rgb_map"), (5, "x3d_map")):
        # A fresh opaque mappable: the overlay's alpha would wash out the fused colour bar.
        sm = ScalarMappable(norm=heat_images[key].norm, cmap=cmap)
        cb = fig.colorbar(
            sm, ax=list(axes[:, c]), orientation="horizontal", fraction=0.04, pad=0.01, aspect=25
        )
        cb.ax.tick_params(labelsize=7)
        cb.set_label(labels[key], fontsize=8)
        if c == 3 and threshold is not None:
            cb.ax.axvline(threshold, color="red", linewidth=1.5)
    note = "fused panel: white = ground truth"
    if threshold is not None:
        note += ", red dashed = map above threshold; verdict below it: red = NG, green = OK"
    fig.suptitle(f"Normalised anomaly maps (z-scores) — {note}", fontsize=9)
    _save(fig, path)


def _curve_plot(curves: Mapping[str, Curve], path: Path, kind: str) -> Path:
    fig = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = fig.subplots()
    for name, c in curves.items():
        area = "n/a" if c.area is None else f"{c.area:.3f}"
        metric = "AUROC" if kind == "roc" else f"AUPRO@{PRO_LIMIT:g}"
        ax.plot(
            c.x,
            c.y,
            label=f"{c.label} ({metric} {area})",
            color=MODALITY_COLORS.get(name),
            linewidth=2.0 if name == "fused" else 1.4,
            drawstyle="default",
        )
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlim(0, 1)
        ax.set_xlabel("false positive rate (good images flagged)")
        ax.set_ylabel("true positive rate (defects caught)")
        ax.set_title("Image-level ROC")
    else:
        ax.set_xlim(0, PRO_LIMIT)
        ax.set_xlabel("false positive rate (defect-free pixels)")
        ax.set_ylabel("per-region overlap")
        ax.set_title(f"PRO curve up to FPR {PRO_LIMIT:g}")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5)
    return _save(fig, path)


def _score_hist(scores: Mapping[str, np.ndarray], threshold: float | None, path: Path) -> Path:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    groups = {k: np.asarray(v, np.float64).ravel() for k, v in scores.items() if np.size(v)}
    everything = np.concatenate(list(groups.values()))
    edges = np.histogram_bin_edges(everything, bins=min(40, max(10, everything.size // 3)))
    if threshold is not None and (threshold < edges[0] or threshold > edges[-1]):
        edges = np.linspace(min(edges[0], threshold), max(edges[-1], threshold), edges.size)
    palette = matplotlib.colormaps["tab10"]
    ci = 0
    for name, v in groups.items():
        if name == "good":
            ax.hist(v, bins=edges, color=OK_COLOR, alpha=0.45, label=f"good (n={v.size})")
        else:
            ax.hist(
                v,
                bins=edges,
                histtype="step",
                linewidth=1.8,
                color=palette(ci % 10),
                label=f"{name} (n={v.size})",
            )
            ci += 1
    if threshold is not None:
        ax.axvline(
            threshold,
            color=NG_COLOR,
            linestyle="--",
            linewidth=1.8,
            label=f"threshold {threshold:.2f}",
        )
    ax.set_xlabel("image score (max of fused map)")
    ax.set_ylabel("images")
    ax.set_title("Image scores: good vs defect types")
    ax.legend(fontsize=8.5)
    ax.grid(alpha=0.3)
    return _save(fig, path)
