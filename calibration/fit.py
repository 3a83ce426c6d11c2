"""Refit per-modality score statistics on station frames and score the frames with them.

The raw maps must be kept until the statistics are known (the image score is the maximum of
the map normalised *with* those statistics, then smoothed), so `MapStore` keeps them in a
disk-backed array: 2·S²·4 bytes per frame (0.5 MB at 256²), not RAM, so a long calibration on
a Jetson does not run out of memory. Each frame's foreground (S² bytes) is kept beside its maps,
so a bundle that scores the part (``scoring.region: part``) is calibrated on the same scores the
station computes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge.processing.scoring import (
    ScoreStats,
    StatsAccumulator,
    branch_image_scores,
    foreground_region,
    score_maps,
)

__all__ = ["MapStore", "fit_statistics", "image_scores"]


class MapStore:
    """Raw (map_rgb, map_3d) pairs and foregrounds of up to ``capacity`` frames, in temporary
    memmaps."""

    def __init__(self, capacity: int, image_size: int, folder: str | Path | None = None) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self._tmp = tempfile.TemporaryDirectory(prefix="trd-calib-", dir=folder)
        path = Path(self._tmp.name) / "maps.npy"
        self.maps = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(capacity, 2, image_size, image_size)
        )
        self.foreground = np.lib.format.open_memmap(
            Path(self._tmp.name) / "foreground.npy", mode="w+", dtype=bool,
            shape=(capacity, image_size, image_size),
        )
        self.count = 0
        self._acc = StatsAccumulator()

    def add(
        self, map_rgb: np.ndarray, map_3d: np.ndarray, foreground: np.ndarray | None = None
    ) -> None:
        """Store one frame's raw maps (each (S,S) or (1,1,S,S)) and its foreground (S,S bool,
        `PreparedSample.foreground`; None: the whole frame) and update the statistics."""
        if self.count >= self.maps.shape[0]:
            raise ValueError(f"map store is full ({self.maps.shape[0]} frames)")
        s = self.maps.shape[-1]
        self.maps[self.count, 0] = np.asarray(map_rgb, np.float32).reshape(s, s)
        self.maps[self.count, 1] = np.asarray(map_3d, np.float32).reshape(s, s)
        self.foreground[self.count] = (
            True if foreground is None else np.asarray(foreground, bool).reshape(s, s)
        )
        self._acc.add(self.maps[self.count, 0], self.maps[self.count, 1])
        self.count += 1

    def statistics(self, source: str) -> ScoreStats:
        """Mean/std per modality over every pixel of every stored map (as training does)."""
        return self._acc.result(source=source)

    def close(self) -> None:
        """Delete the backing file."""
        del self.maps
        del self.foreground
        self._tmp.cleanup()

    def __enter__(self) -> MapStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batches(
    store: MapStore, region: str, batch: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(first index, RGB maps, 3D maps, scoring mask) of the stored frames, ``batch`` at a time:
    how both fits below walk the store."""
    for i in range(0, store.count, batch):
        j = min(i + batch, store.count)
        yield (i, store.maps[i:j, 0], store.maps[i:j, 1],
               foreground_region(region, store.foreground[i:j]))


def fit_statistics(store: MapStore, source: str, fusion: str = "sum", region: str = "frame",
                   batch: int = 16) -> ScoreStats:
    """The station's per-modality statistics (raises ValueError for constant maps); with
    ``fusion`` "max" (the bundle's) also each branch's image-score mean and std over the stored
    good frames, scored over ``region`` as the live loop does."""
    stats = store.statistics(source)
    if fusion == "sum":
        return stats
    per = [branch_image_scores(a, b, stats, fg) for _, a, b, fg in _batches(store, region, batch)]
    return stats.with_branch_scores(np.concatenate([p[0] for p in per]),
                                    np.concatenate([p[1] for p in per]))


def image_scores(
    store: MapStore, stats: ScoreStats, region: str = "frame", batch: int = 16
) -> np.ndarray:
    """Fused image scores of every stored frame under ``stats`` (same rule as the live loop),
    over the whole map or, with ``region`` "part" (the bundle's ``scoring.region``), over
    each frame's stored foreground."""
    out = np.empty(store.count, np.float64)
    for i, a, b, fg in _batches(store, region, batch):
        maps = score_maps(a, b, stats, region=fg)
        out[i:i + len(a)] = maps.fused.reshape(len(a), -1).max(axis=1)
    return out
