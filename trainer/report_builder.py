"""Turn evaluation results into the report's pictures (`trd-edge eval --report DIR`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.datasets.dataset_io import SampleRecord, load_raw
from edge.processing.preprocess import PreprocessConfig, preprocess, preprocess_normals_png
from trainer.report import ReportSample, build_curves, write_report

log = logging.getLogger(__name__)


def pick_samples(types: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """Up to `k` indices spread evenly over the defect types (good included)."""
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for i, t in enumerate(types):
        by_type.setdefault(t, []).append(i)
    order = sorted(by_type, key=lambda t: (t != "good", t))
    per = max(1, k // max(1, len(order)))
    picked: list[int] = []
    for t in order:
        idx = by_type[t]
        picked.extend(int(i) for i in rng.choice(idx, size=min(per, len(idx)), replace=False))
    return sorted(picked)[:k]


def _visuals(rec: SampleRecord, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    raw = load_raw(rec)
    if raw.xyz is not None:
        prep = preprocess(raw.rgb, raw.xyz, cfg)
    else:
        prep = preprocess_normals_png(raw.rgb, raw.normals, cfg)
    # what the model saw (ROI, working grid, aligned frame): the maps are in this frame
    return prep.rgb_u8.astype(np.float32) / 255.0, prep.x3d_vis.transpose(1, 2, 0)


def build_report(
    out_dir: Path,
    records: Sequence[SampleRecord],
    cfg: PreprocessConfig,
    maps: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    labels: np.ndarray,
    gts: np.ndarray,
    types: Sequence[str],
    names: Sequence[str],
    threshold: float,
    n_samples: int = 12,
) -> list[Path]:
    """Write heatmap sheets for a spread of test samples plus ROC, PRO and score plots."""
    samples = []  # records are in loader order (no shuffling at evaluation)
    for i in pick_samples(types, n_samples):
        rgb_vis, x3d_vis = _visuals(records[i], cfg)
        samples.append(
            ReportSample(
                name=names[i], defect_type=types[i], label=int(labels[i]), rgb_vis=rgb_vis,
                x3d_vis=x3d_vis, gt=gts[i].astype(np.float32), fused=maps["fused"][i],
                rgb_map=maps["rgb"][i], x3d_map=maps["3d"][i], score=float(scores["fused"][i]),
            )
        )
    curves = build_curves(scores, labels, types, maps, gts)
    paths = write_report(out_dir, samples, curves, threshold)
    log.info("report: %d pictures in %s", len(paths), out_dir)
    return paths
