"""Formula-driven training images: coloured IFS fractals on procedural backgrounds.

Follows FractalDB (Kataoka et al., "Pre-training without Natural Images", ACCV 2020 / IJCV
2022): a *category* is an iterated function system (IFS) of 2-4 random affine maps; an image of
the category is the attractor rendered with the chaos game. Categories whose attractor fills
too little or too much of the canvas are redrawn (the paper's "filling rate" check).
Intra-category variation comes from a small random scaling of one map (FractalDB's
"weighting" augmentation), random colour, flips, position and scale; the background is a smooth
random field so the network also sees low-frequency shading like real surfaces. No natural image
and no download is involved, and everything is driven by one numpy ``Generator``: the same seed
gives the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FractalCategory", "ProceduralImages", "sample_categories"]

_FILL_RANGE = (0.05, 0.45)  # accepted fraction of canvas pixels covered by the attractor
_CHAINS = 256  # parallel chaos-game chains
_BURN_IN = 12  # iterations discarded before points are kept (attractor convergence)


@dataclass(frozen=True)
class FractalCategory:
    """One IFS: ``maps`` is (K, 2, 3) ``[A | b]``, ``probs`` (K,) sampling weights ∝ |det A|."""

    maps: np.ndarray
    probs: np.ndarray


def _random_ifs(rng: np.random.Generator) -> FractalCategory:
    k = int(rng.integers(2, 5))
    maps = rng.uniform(-1.0, 1.0, size=(k, 2, 3))
    # Contractive maps only (singular values < 1), else the chaos game diverges.
    for i in range(k):
        u, s, vt = np.linalg.svd(maps[i, :, :2])
        maps[i, :, :2] = u @ np.diag(np.minimum(s, rng.uniform(0.3, 0.9, size=2))) @ vt
    det = np.abs(np.linalg.det(maps[:, :, :2])) + 1e-3
    return FractalCategory(maps=maps, probs=det / det.sum())


def _chaos_points(cat: FractalCategory, rng: np.random.Generator, steps: int) -> np.ndarray:
    """Attractor points (N, 2) of ``cat`` from ``_CHAINS`` parallel chaos-game chains."""
    pts = rng.uniform(-1, 1, size=(_CHAINS, 2))
    out = []
    for t in range(_BURN_IN + steps):
        idx = rng.choice(len(cat.probs), size=_CHAINS, p=cat.probs)
        a = cat.maps[idx]
        pts = np.einsum("nij,nj->ni", a[:, :, :2], pts) + a[:, :, 2]
        if t >= _BURN_IN:
            out.append(pts)
    return np.concatenate(out)


def _raster(points: np.ndarray, size: int, margin: float = 0.1) -> np.ndarray:
    """Binary-ish (float32 in [0,1]) canvas of the points, fitted into the frame."""
    lo, hi = points.min(0), points.max(0)
    scale = (1 - 2 * margin) * size / max(float((hi - lo).max()), 1e-6)
    centre = (lo + hi) / 2
    px = np.round((points - centre) * scale + size / 2).astype(np.int64)
    keep = np.all((px >= 0) & (px < size), axis=1)
    canvas = np.zeros((size, size), np.float32)
    canvas[px[keep, 1], px[keep, 0]] = 1.0
    return canvas


def sample_categories(
    n: int, seed: int, size: int = 64, max_tries: int = 200
) -> list[FractalCategory]:
    """Draw ``n`` IFS categories whose attractors pass the filling-rate check at ``size``²."""
    if n < 1:
        raise ValueError(f"need at least one fractal category, got n={n}")
    rng = np.random.default_rng(seed)
    cats: list[FractalCategory] = []
    while len(cats) < n:
        for _ in range(max_tries):
            cat = _random_ifs(rng)
            fill = float(_raster(_chaos_points(cat, rng, 40), size).mean())
            if _FILL_RANGE[0] <= fill <= _FILL_RANGE[1]:
                cats.append(cat)
                break
        else:
            raise RuntimeError(
                f"no IFS passed the filling-rate check {_FILL_RANGE} in {max_tries} tries at "
                f"{size} px; use a larger image size"
            )
    return cats


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


class ProceduralImages:
    """Labelled batches of formula-driven RGB images (FractalDB-style classification data).

    Args:
        n_classes: number of IFS categories (class labels ``0..n_classes-1``).
        image_size: square side in pixels.
        seed: seeds the categories and the image stream.
    """

    def __init__(self, n_classes: int = 64, image_size: int = 64, seed: int = 0) -> None:
        if image_size < 16:
            raise ValueError(f"image_size {image_size} is too small for fractals (use >= 16)")
        self.n_classes = n_classes
        self.image_size = image_size
        self.categories = sample_categories(n_classes, seed, image_size)
        self.rng = np.random.default_rng([seed, 1])

    def image(self, label: int) -> np.ndarray:
        """One float32 ``(S, S, 3)`` image in [0, 1] of class ``label``."""
        rng, s = self.rng, self.image_size
        cat = self.categories[label]
        maps = cat.maps.copy()
        j = int(rng.integers(len(maps)))
        maps[j, :, :2] *= rng.uniform(0.85, 1.05)  # FractalDB intra-class weighting
        pts = _chaos_points(FractalCategory(maps, cat.probs), rng, 60)
        if rng.random() < 0.5:
            pts[:, 0] = -pts[:, 0]
        shape = _raster(pts, s, margin=rng.uniform(0.03, 0.2))
        shape = cv2.GaussianBlur(shape, (0, 0), rng.uniform(0.3, 1.0))
        shape = np.clip(shape * rng.uniform(1.5, 3.0), 0.0, 1.0)
        fg = rng.uniform(0, 1, size=3).astype(np.float32)
        bg = rng.uniform(0, 1, size=3).astype(np.float32)
        shade = 1.0 + 0.15 * _smooth_field(rng, s, int(rng.integers(2, 7)))
        img = (bg * shade[..., None]) * (1 - shape[..., None]) + fg * shape[..., None]
        img += rng.normal(0.0, 0.02, size=img.shape).astype(np.float32)
        return np.clip(img, 0.0, 1.0).astype(np.float32)

    def batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images (B, 3, S, S) float32 in [0,1], labels (B,) int64)``, balanced at random."""
        labels = self.rng.integers(self.n_classes, size=batch_size)
        images = np.stack([self.image(int(k)).transpose(2, 0, 1) for k in labels])
        return images, labels.astype(np.int64)
