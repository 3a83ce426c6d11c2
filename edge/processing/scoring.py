"""Score postprocessing shared by evaluation and the live station (numpy + opencv, no scipy).

Implements TRD scoring (trd-model.md §8, steps 3-6): per-modality z-scoring with validation
statistics, fusion by plain sum, Gaussian smoothing (reflect, truncate 4; sigma 4·S/256 px for
S×S maps: the reference's 4 px, radius 16, at 256², see `smoothing_sigma`) and the image score
as the maximum of the smoothed map. Bundles record the rule in ``scoring.smoothing``. With
``scoring.region: part`` the smoothed maps are restricted to the part's foreground before the
maximum (`restrict_to_region`): background texture cannot set the score. The edge
runtime does not ship scipy, so the smoothing reproduces
`scipy.ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=4.0)` with OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, model_validator

DEFAULT_SIGMA = 4.0
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter default

# Where the image score is taken: the whole map (TRD, §8 step 6) or the part's foreground only
# (`PreparedSample.foreground`, from the background-plane fit). Recorded as `scoring.region`
# in bundles and `score_region` in run.json; absent = "frame".
ScoreRegion = Literal["frame", "part"]
SCORE_REGIONS: tuple[str, ...] = ("frame", "part")


# How the two branches' maps become one: "sum" of the z-scored maps (TRD, §8 step 4; every run
# and bundle before the choice) or "max" of each branch's map in units of its own good image
# scores (`ScoreStats.with_branch_scores`): a defect one branch sees is not buried under the
# other branch's noise on the same part (docs/any-shape.md, "fusion by the larger branch").
Fusion = Literal["sum", "max"]
FUSIONS: tuple[str, ...] = ("sum", "max")


class ScoreStats(BaseModel):
    """Per-modality statistics of raw validation maps (one scalar mean and std per modality),
    and with ``fusion`` "max" the mean and std of each branch's good image scores."""

    rgb_mean: float
    rgb_std: float
    x3d_mean: float
    x3d_std: float
    n_maps: int
    source: str = "validation"
    fusion: Fusion = "sum"
    rgb_image_mean: float | None = None
    rgb_image_std: float | None = None
    x3d_image_mean: float | None = None
    x3d_image_std: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ScoreStats:
        for name, mean, std in (
            ("rgb", self.rgb_mean, self.rgb_std),
            ("3d", self.x3d_mean, self.x3d_std),
        ):
            if not (math.isfinite(mean) and math.isfinite(std)):
                raise ValueError(
                    f"{name} score statistics are not finite (mean={mean}, std={std}): "
                    "the validation maps contain NaN/inf; check the model and its inputs"
                )
            # relative floor: a constant map leaves ~1e-17 of float rounding, not exactly 0
            if std <= 1e-12 * max(1.0, abs(mean)):
                raise ValueError(
                    f"{name} score std is {std}: the {name} validation maps are constant, so "
                    "they cannot be z-scored; recompute the statistics on real validation "
                    "maps (a constant map usually means a broken or untrained branch)"
                )
        if self.fusion == "max":
            for name, mean, std in (
                ("rgb", self.rgb_image_mean, self.rgb_image_std),
                ("3d", self.x3d_image_mean, self.x3d_image_std),
            ):
                if mean is None or std is None or not (math.isfinite(mean) and math.isfinite(std)):
                    raise ValueError(
                        f"fusion 'max' needs the {name} branch's good image-score mean and std "
                        f"(got {mean}, {std}); recalibrate (trd-edge calibrate) or use fusion 'sum'"
                    )
                if std <= 1e-12 * max(1.0, abs(mean)):
                    raise ValueError(
                        f"the {name} branch's good image scores are all equal ({mean}): fusion "
                        "'max' cannot scale by their spread; calibrate on more good parts or "
                        "use fusion 'sum'"
                    )
        return self

    def with_branch_scores(self, rgb_scores: np.ndarray, x3d_scores: np.ndarray) -> ScoreStats:
        """These statistics, fused by "max": each branch's smoothed map is brought to units of
        its good image scores' spread (``rgb_scores`` / ``x3d_scores``: the branches' image
        scores of good parts under these statistics, `branch_image_scores`)."""
        a = np.asarray(rgb_scores, np.float64)
        b = np.asarray(x3d_scores, np.float64)
        if a.size < 2 or b.size < 2:
            raise ValueError(
                f"fusion 'max' needs the image scores of at least 2 good parts per branch, got "
                f"{a.size}; add validation (or station) good parts"
            )
        return ScoreStats.model_validate({  # validated: model_copy would not check the spread
            **self.model_dump(), "fusion": "max",
            "rgb_image_mean": float(a.mean()), "rgb_image_std": float(a.std()),
            "x3d_image_mean": float(b.mean()), "x3d_image_std": float(b.std()),
        })


class StatsAccumulator:
    """Streaming mean and population std over all pixels of all maps, per modality (§8 step 3).

    Per-batch means and sums of squared deviations are merged in float64 (Chan et al.'s
    parallel update), which stays accurate where a naive sum of squares would cancel.
    """

    def __init__(self) -> None:
        self._n = 0  # pixels per modality (both modalities see the same count)
        self._maps = 0
        self._mean = {"rgb": 0.0, "3d": 0.0}
        self._m2 = {"rgb": 0.0, "3d": 0.0}

    def add(self, map_rgb: np.ndarray, map_3d: np.ndarray) -> None:
        """Add raw (unnormalised, unsmoothed) maps of shape (H,W), (B,H,W) or (B,1,H,W)."""
        a = _as_batch(map_rgb, "map_rgb")
        b = _as_batch(map_3d, "map_3d")
        if a.shape != b.shape:
            raise ValueError(f"map_rgb {a.shape} and map_3d {b.shape} must have the same shape")
        n_new = a.size
        if n_new == 0:
            return
        for key, m in (("rgb", a), ("3d", b)):
            m = m.astype(np.float64, copy=False)
            mean_b = float(m.mean())
            m2_b = float(np.square(m - mean_b).sum())
            n_tot = self._n + n_new
            delta = mean_b - self._mean[key]
            self._mean[key] += delta * n_new / n_tot
            self._m2[key] += m2_b + delta * delta * self._n * n_new / n_tot
        self._n += n_new
        self._maps += a.shape[0]

    @property
    def n_maps(self) -> int:
        """Number of maps added so far."""
        return self._maps

    def result(self, source: str = "validation") -> ScoreStats:
        """The statistics so far; raises if nothing was added or a modality is constant."""
        if self._n == 0:
            raise ValueError("no maps were added: cannot compute score statistics")
        return ScoreStats(
            rgb_mean=self._mean["rgb"],
            rgb_std=math.sqrt(self._m2["rgb"] / self._n),
            x3d_mean=self._mean["3d"],
            x3d_std=math.sqrt(self._m2["3d"] / self._n),
            n_maps=self._maps,
            source=source,
        )


def _as_batch(m: np.ndarray, name: str) -> np.ndarray:
    """View a map as (B,H,W): accepts (H,W), (B,H,W) or (B,1,H,W)."""
    m = np.asarray(m)
    if m.ndim == 2:
        return m[None]
    if m.ndim == 3:
        return m
    if m.ndim == 4 and m.shape[1] == 1:
        return m[:, 0]
    raise ValueError(f"{name} has shape {m.shape}; expected (H,W), (B,H,W) or (B,1,H,W)")


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """1-D Gaussian kernel exactly as scipy.ndimage builds it (radius int(truncate*sigma+0.5))."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(
    m: np.ndarray, sigma: float = DEFAULT_SIGMA, work_dtype: type = np.float64
) -> np.ndarray:
    """Gaussian smoothing of a map (H,W) or a batch of maps (B,H,W), each map separately.

    Equals `scipy.ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=4.0)` (per map):
    scipy's "reflect" (d c b a | a b c d) is OpenCV's BORDER_REFLECT. Computed in float64
    (``work_dtype`` float32 halves the cost: the station's choice, differences ~1e-6 of the
    map's range); a float input keeps its dtype, anything else comes back as float64.
    """
    arr = np.asarray(m)
    if arr.ndim not in (2, 3):
        raise ValueError(f"gaussian_smooth expects (H,W) or (B,H,W), got shape {arr.shape}")
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    k = gaussian_kernel(sigma)
    src = arr[None] if arr.ndim == 2 else arr
    out = np.empty(src.shape, dtype=work_dtype)
    for i, img in enumerate(src):
        out[i] = _sep_filter(np.ascontiguousarray(img, dtype=work_dtype), k.astype(work_dtype))
    out = out.astype(out_dtype, copy=False)
    return out[0] if arr.ndim == 2 else out


def _sep_filter(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable filter, BORDER_REFLECT. OpenCV mirrors repeatedly when the kernel radius
    exceeds the map size, as scipy does (checked in tests down to 1x1 maps)."""
    depth = cv2.CV_64F if img.dtype == np.float64 else cv2.CV_32F
    return cv2.sepFilter2D(img, depth, k, k, borderType=cv2.BORDER_REFLECT)


def normalise(
    m: np.ndarray, mean: float, std: float, modality: str = "map", dtype: type = np.float64
) -> np.ndarray:
    """z-score a raw map with validation statistics (§8 step 4), in float64 (or ``dtype``)."""
    if not std > 0:
        raise ValueError(f"{modality} std is {std}; it must be > 0 (recompute the statistics)")
    out = np.array(m, dtype=dtype)  # a copy: normalised in place below
    out -= dtype(mean)
    out /= dtype(std)
    return out


def fuse(norm_rgb: np.ndarray, norm_3d: np.ndarray) -> np.ndarray:
    """Fusion of normalised maps: a plain sum (§8 step 4)."""
    return norm_rgb + norm_3d


smooth = gaussian_smooth


@dataclass
class ScoredMaps:
    """Smoothed, normalised maps, each (B,H,W) float32."""

    fused: np.ndarray
    rgb: np.ndarray
    x3d: np.ndarray
    # with a region: per map, True where the region was empty and the whole frame was scored
    on_frame: np.ndarray | None = None


def smoothing_sigma(map_size: int) -> float:
    """Gaussian sigma for a map of `map_size` pixels: the paper's 4 px at 256², scaled.

    TRD smooths 256×256 maps with sigma 4. A light model at 64 px sees the same part in a
    quarter of the pixels, so the same physical smoothing is sigma 1; a fixed 4 px would blur
    a small defect into the background.
    """
    return DEFAULT_SIGMA * map_size / 256.0


def score_maps(
    map_rgb: np.ndarray,
    map_3d: np.ndarray,
    stats: ScoreStats,
    sigma: float | None = None,
    work_dtype: type = np.float64,
    region: np.ndarray | None = None,
) -> ScoredMaps:
    """Normalise, fuse and smooth raw maps (§8 steps 4-5); maps are (H,W), (B,H,W) or (B,1,H,W).

    `sigma` defaults to `smoothing_sigma(H)` (4 at 256², as the paper). ``work_dtype``
    float32 is the station's (`edge.inspector`): half the cost, scores within ~1e-6.
    ``region`` (bool, (H,W) or (B,H,W), e.g. the part's foreground): after smoothing, every
    map is restricted to it (`restrict_to_region`), so image scores, defect regions and
    heatmaps all see the part only; None scores the whole frame.

    Per-modality maps are normalised and smoothed the same way (§8, diagnostics). Smoothing is
    linear, so the fused map is the sum of the smoothed per-modality maps: this equals
    smoothing the fused sum up to float rounding and saves a third filter pass. With
    ``stats.fusion`` "max" each smoothed branch map is then brought to units of its good image
    scores (mean 0, std 1 over good parts) and the fused map is their per-pixel maximum; the
    returned branch maps are in those units too, so the fused map is always the larger of them.
    """
    a = _as_batch(map_rgb, "map_rgb")
    b = _as_batch(map_3d, "map_3d")
    if a.shape != b.shape:
        raise ValueError(f"map_rgb {a.shape} and map_3d {b.shape} must have the same shape")
    if sigma is None:
        sigma = smoothing_sigma(a.shape[-2])
    na = normalise(a, stats.rgb_mean, stats.rgb_std, "rgb", work_dtype)
    nb = normalise(b, stats.x3d_mean, stats.x3d_std, "3d", work_dtype)
    rgb = gaussian_smooth(na, sigma, work_dtype)
    x3d = gaussian_smooth(nb, sigma, work_dtype)
    if stats.fusion == "max":  # each branch in units of its good image scores' spread
        rgb = (rgb - work_dtype(stats.rgb_image_mean)) / work_dtype(stats.rgb_image_std)
        x3d = (x3d - work_dtype(stats.x3d_image_mean)) / work_dtype(stats.x3d_image_std)
        fused = np.maximum(rgb, x3d)
    else:
        fused = fuse(rgb, x3d)
    on_frame = None
    if region is not None:
        mask = _as_batch(np.asarray(region, dtype=bool), "region")
        if mask.shape[-2:] != a.shape[-2:] or mask.shape[0] not in (1, a.shape[0]):
            raise ValueError(
                f"region {mask.shape} does not match the maps {a.shape}: pass the foreground "
                "of the samples the maps were computed from (PreparedSample.foreground, S×S)"
            )
        mask = np.broadcast_to(mask, a.shape)
        fused, on_frame = restrict_to_region(fused, mask)
        rgb, _ = restrict_to_region(rgb, mask)
        x3d, _ = restrict_to_region(x3d, mask)
    return ScoredMaps(
        fused=fused.astype(np.float32), rgb=rgb.astype(np.float32), x3d=x3d.astype(np.float32),
        on_frame=on_frame,
    )


def branch_image_scores(
    map_rgb: np.ndarray, map_3d: np.ndarray, stats: ScoreStats, region: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each branch's image scores (B,) under ``stats``' normalisation alone (z-scored, smoothed,
    restricted to ``region``, maximum): what `ScoreStats.with_branch_scores` takes."""
    pixel = stats.model_copy(update={"fusion": "sum"})
    scored = score_maps(map_rgb, map_3d, pixel, region=region)
    return image_scores(scored.rgb), image_scores(scored.x3d)


def restrict_to_region(maps: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps (B,H,W) with every pixel outside ``region`` (bool (B,H,W)) set to the map's
    minimum inside it: the maximum, the regions above any threshold and a heatmap's hot spots
    then come from the region only, and the outside reads as the region's calmest value.

    A map whose region is empty (no part found) is kept whole: the frame is scored, and the
    second value (bool (B,)) says so for that map.
    """
    has = region.any(axis=(-2, -1))
    inside_min = np.where(region, maps, np.inf).min(axis=(-2, -1))
    keep = region | ~has[:, None, None]
    out = np.where(keep, maps, inside_min[:, None, None].astype(maps.dtype))
    return out, ~has


def foreground_region(region: str, foreground: np.ndarray | None) -> np.ndarray | None:
    """The mask `score_maps` takes for a scoring ``region``: None for "frame", for "part" the
    foreground (which then must be given) with its holes filled (`fill_holes`)."""
    if region == "frame":
        return None
    if region != "part":
        raise ValueError(f"scoring region {region!r} is not one of {SCORE_REGIONS}")
    if foreground is None:
        raise ValueError(
            "scoring region 'part' needs the samples' foreground (PreparedSample.foreground)"
        )
    return fill_holes(foreground)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """A bool mask (H,W) or (B,H,W) with every background pocket it encloses set: the area
    inside the part's outline. A hole punched through a part is no point above the background
    plane, so the foreground leaves it out, yet it is where that defect is (docs/any-shape.md:
    41 % of the disc's "both" defect pixels). Pockets open to the frame's edge stay out."""
    m = np.asarray(mask, dtype=bool)
    batch = m[None] if m.ndim == 2 else m
    out = np.empty_like(batch)
    for i, one in enumerate(batch):
        h, w = one.shape
        outside = np.zeros((h + 2, w + 2), np.uint8)  # a ring of background around the frame
        outside[1:-1, 1:-1] = one
        flood = np.zeros((h + 4, w + 4), np.uint8)  # floodFill's own mask, 2 px larger
        cv2.floodFill(outside, flood, (0, 0), 2)  # every background pixel the ring reaches
        out[i] = outside[1:-1, 1:-1] != 2
    return out[0] if m.ndim == 2 else out


def image_scores(maps: np.ndarray) -> np.ndarray:
    """Image score = max over each map (§8 step 6): (B,H,W) -> (B,), (H,W) -> shape ()."""
    arr = np.asarray(maps)
    if arr.ndim < 2:
        raise ValueError(f"image_scores expects maps (..., H, W), got shape {arr.shape}")
    return arr.max(axis=(-2, -1)).astype(np.float64)


def image_score(m: np.ndarray) -> float:
    """Score of one (H,W) map as a Python float."""
    return float(np.asarray(m).max())


@dataclass
class Region:
    """One connected region of a map above threshold, in map pixel coordinates."""

    x: int
    y: int
    w: int
    h: int
    area_px: int
    peak: float

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the bounding box."""
        return (self.x, self.y, self.w, self.h)

    def as_dict(self) -> dict:
        """Plain dict (JSON-friendly)."""
        return asdict(self)


def defect_regions(fused_map: np.ndarray, threshold: float, min_area_px: int = 1) -> list[Region]:
    """Connected components (8-connectivity) of `fused_map > threshold`, highest peak first.

    Regions smaller than `min_area_px` pixels are dropped (specks from noise).
    """
    m = np.asarray(fused_map)
    if m.ndim != 2:
        raise ValueError(f"defect_regions expects one (H,W) map, got shape {m.shape}")
    mask = (m > threshold).astype(np.uint8)
    n, labels, st, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return []
    peaks = np.full(n, -np.inf)
    lab = labels.ravel()
    fg = lab > 0
    np.maximum.at(peaks, lab[fg], m.ravel()[fg].astype(np.float64))
    regions = [
        Region(
            x=int(st[i, cv2.CC_STAT_LEFT]),
            y=int(st[i, cv2.CC_STAT_TOP]),
            w=int(st[i, cv2.CC_STAT_WIDTH]),
            h=int(st[i, cv2.CC_STAT_HEIGHT]),
            area_px=int(st[i, cv2.CC_STAT_AREA]),
            peak=float(peaks[i]),
        )
        for i in range(1, n)
        if st[i, cv2.CC_STAT_AREA] >= min_area_px
    ]
    regions.sort(key=lambda r: r.peak, reverse=True)
    return regions
