"""Batched anomaly maps from a TRD model, and the validation calibration built on them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from edge.processing.scoring import (
    FUSIONS,
    StatsAccumulator,
    branch_image_scores,
    foreground_region,
    image_scores,
    score_maps,
)
from trainer.model import TRD
from trainer.run import Calibration


@dataclass
class MapBatch:
    """Raw per-modality maps for one batch, with the batch's labels."""

    map_rgb: np.ndarray  # (B, S, S) float32
    map_3d: np.ndarray
    batch: dict

    def region(self, region: str) -> np.ndarray | None:
        """The mask `score_maps` takes for scoring ``region`` ("frame" | "part")."""
        fg = self.batch.get("foreground")
        return foreground_region(region, None if fg is None else fg.numpy())


@torch.no_grad()
def iter_maps(model: TRD, loader: DataLoader, device: str = "cpu") -> Iterator[MapBatch]:
    """Run the model over a loader and yield raw (unnormalised) maps per batch."""
    model.eval()
    for batch in loader:
        m_rgb, m_3d = model.anomaly_maps(batch["rgb"].to(device), batch["x3d"].to(device))
        yield MapBatch(
            m_rgb[:, 0].float().cpu().numpy(), m_3d[:, 0].float().cpu().numpy(), batch
        )


def threshold_from_scores(scores: np.ndarray) -> tuple[float, str]:
    """Fused image-score threshold from good validation samples.

    mean + 3σ of the good scores, never below their maximum: no false alarm on the validation
    set, and a margin that grows with their spread. `trd-edge calibrate` refits it at the station
    for a target false-alarm rate.
    """
    scores = np.asarray(scores, dtype=np.float64)
    thr = max(float(scores.mean() + 3.0 * scores.std()), float(scores.max()))
    return thr, "max(validation mean + 3 std, validation max)"


def calibrate_on(
    model: TRD, loader: DataLoader, device: str = "cpu", region: str = "frame",
    fusion: str = "sum",
) -> Calibration:
    """Per-modality statistics over all validation pixels (TRD §8.3) and the image threshold,
    fitted on image scores taken over ``region`` (the run's ``score_region``, as the station
    scores with the bundle's ``scoring.region``). The statistics use every pixel either way.
    ``fusion`` "max" adds each branch's validation image-score mean and std
    (`ScoreStats.with_branch_scores`)."""
    batches = list(iter_maps(model, loader, device))
    if not batches:
        raise ValueError("the validation split is empty: cannot fit score statistics")
    acc = StatsAccumulator()
    for b in batches:
        acc.add(b.map_rgb, b.map_3d)
    stats = acc.result()
    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r} is not one of {FUSIONS}")
    masks = [b.region(region) for b in batches]  # each batch's mask once, for both passes
    if fusion == "max":
        per = [branch_image_scores(b.map_rgb, b.map_3d, stats, m)
               for b, m in zip(batches, masks, strict=True)]
        stats = stats.with_branch_scores(np.concatenate([p[0] for p in per]),
                                         np.concatenate([p[1] for p in per]))
    scores = np.concatenate(
        [image_scores(score_maps(b.map_rgb, b.map_3d, stats, region=m).fused)
         for b, m in zip(batches, masks, strict=True)]
    )
    thr, method = threshold_from_scores(scores)
    return Calibration(
        stats=stats,
        threshold=thr,
        threshold_method=method,
        validation_image_scores=[float(s) for s in scores],
    )
