"""Calibration report: a score histogram PNG and a short text summary.

matplotlib is optional on a station (it ships with the training extras): without it the text
report is still written and says that the picture was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CalibrationSummary", "histogram_png", "text_report", "write_report"]


@dataclass
class CalibrationSummary:
    """Everything the report shows (filled by `calibration.cli.calibrate`)."""

    bundle: str
    source: str
    backend: str
    n_frames: int
    skipped_defective: int
    scores: np.ndarray  # good-frame image scores under the new statistics
    threshold: float
    method: str
    statement: str
    stats: dict
    region: str = "frame"  # where image scores were taken (the bundle's scoring.region)
    previous_threshold: float | None = None
    previous_method: str | None = None
    previous_scores: np.ndarray | None = None  # the same frames under the previous statistics
    labelled_scores: np.ndarray | None = None  # F1 mode
    labelled_labels: np.ndarray | None = None
    geometry_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def fpr_on_frames(self) -> float:
        """Fraction of the calibration frames above the new threshold."""
        return float((self.scores > self.threshold).mean())

    @property
    def previous_fpr_on_frames(self) -> float | None:
        """Fraction of the same frames the previous calibration would have rejected."""
        if self.previous_scores is None or self.previous_threshold is None:
            return None
        return float((self.previous_scores > self.previous_threshold).mean())


def histogram_png(summary: CalibrationSummary, path: Path) -> Path | None:
    """Histogram of good-frame scores with the new (and previous) threshold; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = 2 if summary.previous_scores is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.hist(
        summary.scores,
        bins=min(60, max(10, summary.n_frames // 4)),
        color="tab:green",
        alpha=0.75,
        label=f"good frames (n={summary.n_frames})",
    )
    if summary.labelled_scores is not None and summary.labelled_labels is not None:
        bad = summary.labelled_scores[summary.labelled_labels == 1]
        if bad.size:
            ax.hist(
                bad,
                bins=min(40, max(5, bad.size // 2)),
                color="tab:red",
                alpha=0.6,
                label=f"labelled defects (n={bad.size})",
            )
    ax.axvline(
        summary.threshold,
        color="k",
        lw=2,
        label=f"station threshold {summary.threshold:.2f} ({summary.method})",
    )
    if summary.previous_threshold is not None and summary.previous_scores is None:
        ax.axvline(
            summary.previous_threshold,
            color="tab:orange",
            ls="--",
            label=f"previous threshold {summary.previous_threshold:.2f}",
        )
    ax.set_xlabel("image score (station statistics)")
    ax.set_ylabel("frames")
    ax.set_title("station calibration")
    ax.legend(fontsize=8)
    if panels == 2:
        ax2 = axes[0, 1]
        ax2.hist(
            summary.previous_scores,
            bins=min(60, max(10, summary.n_frames // 4)),
            color="tab:blue",
            alpha=0.75,
            label="same good frames",
        )
        if summary.previous_threshold is not None:
            fpr = summary.previous_fpr_on_frames
            ax2.axvline(
                summary.previous_threshold,
                color="tab:orange",
                ls="--",
                lw=2,
                label=f"previous threshold {summary.previous_threshold:.2f} "
                f"({fpr:.1%} of these frames rejected)",
            )
        ax2.set_xlabel("image score (previous statistics)")
        ax2.set_title(f"before: {summary.previous_method or 'previous calibration'}")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def text_report(summary: CalibrationSummary) -> str:
    """The short report printed by `trd-edge calibrate` (and saved as report.txt)."""
    s = summary.scores
    q = np.percentile(s, [50, 90, 99])
    st = summary.stats
    lines = [
        f"calibration of {summary.bundle}",
        f"  source {summary.source}, backend {summary.backend}",
        f"  {summary.n_frames} good frames"
        + (
            f" ({summary.skipped_defective} frames labelled defective by the source skipped)"
            if summary.skipped_defective
            else ""
        ),
        f"  statistics  rgb mean {st['rgb_mean']:.4g} std {st['rgb_std']:.4g}; "
        f"3d mean {st['x3d_mean']:.4g} std {st['x3d_std']:.4g}",
        f"  scored on   the {'part' if summary.region == 'part' else 'whole frame'} "
        f"(scoring.region {summary.region}, the bundle's, as the station scores)",
        f"  good scores p50 {q[0]:.3f}  p90 {q[1]:.3f}  p99 {q[2]:.3f}  max {s.max():.3f}",
        f"  threshold   {summary.threshold:.4f} ({summary.method}); "
        f"{summary.fpr_on_frames:.2%} of the calibration frames above it",
        f"  {summary.statement}",
    ]
    if summary.previous_threshold is not None:
        prev = f"  previous    {summary.previous_threshold:.4f} ({summary.previous_method})"
        fpr = summary.previous_fpr_on_frames
        if fpr is not None:
            prev += f": it would have rejected {fpr:.1%} of these good frames"
        lines.append(prev)
    if summary.geometry_lines:
        lines.append("geometry")
        lines += summary.geometry_lines
    for w in summary.warnings:
        lines.append(f"WARNING: {w}")
    if summary.files:
        lines.append("written")
        lines += [f"  {f}" for f in summary.files]
    return "\n".join(lines)


def write_report(summary: CalibrationSummary, folder: str | Path) -> list[Path]:
    """Write ``scores_histogram.png`` (if matplotlib is there), ``scores.csv`` and
    ``report.txt`` into ``folder``; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    png = histogram_png(summary, folder / "scores_histogram.png")
    if png is None:
        summary.warnings.append("matplotlib is not installed: histogram PNG skipped")
    else:
        written.append(png)
    csv = folder / "scores.csv"
    rows = ["frame,score"] + [f"{i},{v:.6f}" for i, v in enumerate(summary.scores)]
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    written.append(csv)
    txt = folder / "report.txt"
    summary.files = [*summary.files, *(str(p) for p in written), str(txt)]
    txt.write_text(text_report(summary) + "\n", encoding="utf-8")
    written.append(txt)
    return written
