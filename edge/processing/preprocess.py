"""THE definition of what the TRD model sees (torch-free; numpy + OpenCV).

Training, evaluation, calibration and the live loop all call `preprocess` (organised clouds:
MVTec 3D-AD xyz TIFFs, RealSense frames after `depth_to_xyz`, synthetic scenes) or
`preprocess_normals_png` (the pre-computed normals of preprocessed Eyecandies). The steps follow
the authors' reference code as specified in design/trd-model.md §9.2–§9.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.processing.geometry import (
    check_xyz,
    fill_dropouts,
    fill_holes,
    fit_background_plane,
    foreground_mask,
    normals_image,
    plane_depth,
)
from edge.processing.pose import Pose, estimate_pose, pose_auto, pose_from_mask
from edge.processing.registration import area_resize
from edge.processing.resample import pil_bilinear_resize

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOBEL_KSIZE_BY_CATEGORY",
    "WHOLE_FRAME",
    "PreparedSample",
    "PreprocessConfig",
    "RgbResize",
    "preprocess",
    "preprocess_normals_png",
    "resize_mask",
    "resize_rgb",
    "roi_pixels",
    "smooth_heights",
    "sobel_ksize_for",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ROI that is the whole frame: the view a config without ``roi`` has.
WHOLE_FRAME = (0.0, 0.0, 1.0, 1.0)

# Per-class Sobel aperture of the reference normal pipeline (§9.4); every other class uses 5.
SOBEL_KSIZE_BY_CATEGORY: dict[str, int] = {"cookie": 3, "dowel": 7, "foam": 7, "tire": 7}
_DEFAULT_SOBEL_KSIZE = 5

# How whole images (RGB, masks, Eyecandies normals) are brought to S×S on the reference path.
RgbResize = Literal["area", "pil-bilinear"]


def sobel_ksize_for(category: str) -> int:
    """Sobel aperture the reference uses for an MVTec 3D-AD class (5 unless listed)."""
    return SOBEL_KSIZE_BY_CATEGORY.get(category.lower(), _DEFAULT_SOBEL_KSIZE)


class PreprocessConfig(BaseModel):
    """Preprocessing parameters; stored in the model bundle so the station repeats them exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(
        256, ge=8, description="Side S of the square model input (TRD needs a multiple of 32)."
    )
    modality: Literal["depth", "normal"] = Field(
        "normal",
        description="3D image: 'depth' (min–max z replicated, §9.3) or 'normal' "
        "(Sobel surface normals, §9.4; the best reference setting).",
    )
    plane_distance: float = Field(
        0.005,
        gt=0,
        description="Points farther than this from the background plane are foreground "
        "(same unit as the cloud: metres).",
    )
    closing_iterations: int = Field(
        3, ge=0, description="3×3 morphological closing iterations on the foreground mask."
    )
    fill_iterations: int = Field(2, ge=0, description="3×3 hole-filling iterations.")
    # The default is what every bundle before this field was trained with (no fill).
    fill_dropouts: bool = Field(
        False,
        description="'working' only: fill the part's depth dropouts (no return inside the "
        "foreground) from the part's valid heights around them before the 3D image "
        "(edge.processing.geometry.fill_dropouts); `trd-edge train` sets it for the working "
        "pipeline. Off: what `fill_holes` leaves of a dropout reaches the normals as a spike.",
    )
    heights: Literal["camera", "plane"] = Field(
        "camera",
        description="'working' only: the 3D image from camera z ('camera', the authors' and "
        "every bundle before it) or from heights above the fitted background plane ('plane': "
        "the table's tilt does not reach the normals; edge.processing.geometry.plane_depth).",
    )
    align: Literal["none", "principal-axis", "auto"] = Field(
        "none",
        description="'principal-axis': turn and centre the part by its mask's principal axis "
        "before the model (edge/processing/pose.py), for parts that lie at any angle. 'auto': any shape "
        "(outline symmetry, then height or print settles the turn; edge.processing.pose.pose_auto).",
    )
    pipeline: Literal["reference", "working"] = Field(
        "reference",
        description="'reference': normals at the cloud's full resolution, then resized (the "
        "authors' MVTec 3D-AD recipe; what every bundle before preprocessing version 2 did). "
        "'working': everything at the model's working grid (image_size × working_scale over "
        "the ROI), so the cost follows the model, not the camera (`trd-edge train` default).",
    )
    working_scale: int = Field(
        1, ge=1, le=4, description="working grid side = image_size × this ('working' only)."
    )
    roi: tuple[float, float, float, float] | None = Field(
        None,
        description="Region of interest (x0, y0, x1, y1) as fractions of the frame; the model "
        "sees only this rectangle. None = the whole frame.",
    )
    sobel_ksize: int = Field(
        _DEFAULT_SOBEL_KSIZE,
        description="OpenCV Sobel aperture for normals (1, 3, 5 or 7); see sobel_ksize_for().",
    )
    depth_smoothing: float = Field(
        0.0,
        ge=0.0,
        le=16.0,
        description="σ (in model-input pixels) of the smoothing applied to the part's heights "
        "before the 3D image is computed (``depth_filter``: a Gaussian by normalised "
        "convolution over the foreground, or bilateral; the background never leaks in). 0 = "
        "off (every bundle before it). Measured against stereo depth noise in "
        "docs/sensor-model.md: on the D435 model it lowers detection.",
    )
    depth_filter: Literal["gaussian", "bilateral"] = Field(
        "gaussian",
        description="How ``depth_smoothing`` smooths: 'gaussian' (every bundle before this "
        "field) blurs across steps and holes too; 'bilateral' weighs each neighbour by its "
        "height difference as well (range σ = BILATERAL_RANGE × ``depth_noise``), so flats lose "
        "their noise while steps, holes and a dent's rim stay sharp (docs/any-shape.md).",
    )
    depth_noise: float = Field(
        0.0,
        ge=0.0,
        description="Per-pixel std (m) of the heights' noise, measured on the good training "
        "parts (trainer.choices.depth_noise); sets the bilateral filter's range. 0 with "
        "'gaussian', or where the depth shows no noise (nothing is then smoothed).",
    )
    outline_smoothing: float = Field(
        0.0,
        ge=0.0,
        le=4.0,
        description="'working' only: σ (model-input pixels) by which the part's outline is "
        "smoothed after the alignment (`smooth_outline`), the heights and mask then warped "
        "with bilinear weights instead of nearest. A part turned onto the "
        "grid keeps the camera's pixel staircase along every edge, rotated, except when it "
        "lay along the camera's axes: then its edges are clean, and the model had never seen "
        "that (docs/any-shape.md, 'Edges that do not depend on the camera's grid'). 0 = off "
        "(every bundle before it).",
    )
    mean: tuple[float, float, float] = Field(
        IMAGENET_MEAN, description="Per-channel mean for normalisation (RGB and 3D images)."
    )
    std: tuple[float, float, float] = Field(
        IMAGENET_STD, description="Per-channel std for normalisation (RGB and 3D images)."
    )
    # The default is what every bundle before this field was trained with: a station must
    # repeat its bundle's training exactly, so the reference's resize is opt-in.
    rgb_resize: RgbResize = Field(
        "area",
        description="How the reference pipeline resizes RGB, masks and Eyecandies normal images "
        "to S×S: 'area' (OpenCV INTER_AREA when shrinking, bilinear when enlarging) or "
        "'pil-bilinear' (Pillow's antialiased bilinear, what the authors' torchvision Resize "
        "computes; edge/processing/resample.py). The working pipeline always area-averages.",
    )

    @field_validator("sobel_ksize")
    @classmethod
    def _check_ksize(cls, v: int) -> int:
        if v not in (1, 3, 5, 7):
            raise ValueError(f"sobel_ksize must be 1, 3, 5 or 7 (OpenCV Sobel), got {v}")
        return v

    @field_validator("roi")
    @classmethod
    def _check_roi(
        cls, v: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if v is None:
            return v
        x0, y0, x1, y1 = v
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(
                f"roi must be fractions 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {v}"
            )
        return v

    @model_validator(mode="after")
    def _check_rgb_resize(self) -> PreprocessConfig:
        if self.rgb_resize != "area" and self.pipeline != "reference":
            raise ValueError(
                f"rgb_resize {self.rgb_resize!r} applies to the reference pipeline only: the "
                "working pipeline area-averages colour onto its grid (as the camera registers "
                "it); use pipeline 'reference' (--preprocess reference) or rgb_resize 'area'"
            )
        return self

    @model_validator(mode="after")
    def _check_depth_filter(self) -> PreprocessConfig:
        if self.depth_filter == "bilateral" and self.pipeline != "working":
            raise ValueError(
                "depth_filter 'bilateral' applies to the working pipeline only (its heights are "
                "on the square working grid); use pipeline 'working' or depth_filter 'gaussian'"
            )
        return self

    @model_validator(mode="after")
    def _check_outline_smoothing(self) -> PreprocessConfig:
        if self.outline_smoothing > 0 and self.pipeline != "working":
            raise ValueError(
                "outline_smoothing applies to the working pipeline only (it smooths the "
                "aligned part on the working grid); use pipeline 'working' or 0"
            )
        return self

    @property
    def working_size(self) -> int:
        """Side of the working grid the 'working' pipeline computes the 3D image on."""
        return self.image_size * self.working_scale

    @field_validator("std")
    @classmethod
    def _check_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"std values must be positive, got {v}")
        return v


@dataclass
class PreparedSample:
    """One sample as the model sees it (side S).

    ``rgb_u8`` and ``x3d_vis`` are what the images are before normalisation; ``rgb`` / ``x3d``
    (normalised float32 CHW, what training and bundles before schema 1.1 feed) are computed
    from them on first use, so a station whose graph normalises inside (uint8 input) never
    pays for them.
    """

    rgb_u8: np.ndarray  # uint8 (S,S,3) RGB, resized (and aligned) as the model sees it
    x3d_vis: np.ndarray  # float32 (3,S,S) in [0,1], the 3D image before normalisation
    foreground: np.ndarray  # bool (S,S), object pixels after background-plane removal
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pose: Pose | None = None  # set when the part was aligned (cfg.align); maps are in its frame
    # 'working' pipeline: the input-frame rectangle the model saw (x0, y0, x1, y1 pixels) and
    # the working grid side; None on the reference path (the whole frame, resized).
    roi_px: tuple[int, int, int, int] | None = None
    working: int | None = None
    rgb_resize: RgbResize = "area"  # how mask_to_model resizes, as the RGB was
    # 'working' pipeline: the part's foreground reaches the edge of the view (the ROI, or the
    # frame) before alignment, so part of it may lie outside what the model sees
    at_edge: bool = False
    _rgb: np.ndarray | None = field(default=None, repr=False)
    _x3d: np.ndarray | None = field(default=None, repr=False)

    @property
    def rgb(self) -> np.ndarray:
        """float32 (3,S,S), normalised with the bundle's mean/std."""
        if self._rgb is None:
            self._rgb = _normalise_hwc(self.rgb_u8.astype(np.float32) / 255.0, self.mean, self.std)
        return self._rgb

    @property
    def x3d(self) -> np.ndarray:
        """float32 (3,S,S), the normalised depth or normal image."""
        if self._x3d is None:
            m = np.asarray(self.mean, np.float32)[:, None, None]
            sd = np.asarray(self.std, np.float32)[:, None, None]
            self._x3d = np.ascontiguousarray((self.x3d_vis - m) / sd, dtype=np.float32)
        return self._x3d

    def mask_to_model(self, mask: np.ndarray) -> np.ndarray:
        """A mask of the input frame (ground truth, H×W, any non-zero = set) in the model's
        S×S frame (ROI, working grid, pose), as float32 {0, 1}."""
        s = self.rgb_u8.shape[0]
        gt = np.asarray(mask)
        if gt.ndim == 3:
            gt = gt.max(axis=2)
        binary = (gt > 0).astype(np.float32)
        if self.roi_px is not None and self.working is not None:
            x0, y0, x1, y1 = self.roi_px
            binary = area_resize(binary[y0:y1, x0:x1], self.working, self.working)
            binary = (binary > 0.5).astype(np.float32)
        if self.pose is not None:
            binary = self.pose.warp(binary, nearest=True)
        return resize_mask(binary, s, self.rgb_resize)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be an H×W×3 RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (0–255), got dtype {rgb.dtype}")
    return rgb


def _normalise_hwc(
    img_hwc01: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float32)
    sd = np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(((img_hwc01 - m) / sd).transpose(2, 0, 1), dtype=np.float32)


def _resize_smooth(img: np.ndarray, size: int, method: RgbResize = "area") -> np.ndarray:
    """Resize to size×size with ``method``.

    'area': OpenCV INTER_AREA when shrinking both sides, bilinear otherwise. This is *not*
    torchvision ``Resize`` on PIL (trd-model.md §9.1): on sharp 800² images it differs from
    it by up to 0.17 of the range (docs/design-notes.md). 'pil-bilinear': Pillow's
    antialiased bilinear (uint8 images only), equal to the reference.
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    if method == "pil-bilinear":
        return pil_bilinear_resize(img, size, size)
    interp = cv2.INTER_AREA if (size < h and size < w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _resize_u8(rgb_u8_hwc: np.ndarray, size: int, method: RgbResize = "area") -> np.ndarray:
    return np.ascontiguousarray(_resize_smooth(_check_rgb(rgb_u8_hwc), size, method))


def resize_rgb(rgb_u8_hwc: np.ndarray, size: int, method: RgbResize = "area") -> np.ndarray:
    """RGB uint8 H×W×3 → float32 S×S×3 in [0,1], resized with ``method`` (`_resize_smooth`)."""
    return _resize_u8(rgb_u8_hwc, size, method).astype(np.float32) / 255.0


def _minmax_foreground(z: np.ndarray) -> np.ndarray:
    """Min over non-zero z, max over all → [0, 1]; zeros stay where z was 0 (before rescale)."""
    valid = z != 0
    if not valid.any():
        return np.zeros_like(z, dtype=np.float32)
    z_min = float(z[valid].min())
    z_max = float(z.max())
    span = max(z_max - z_min, 1e-12)
    return np.where(valid, (z - z_min) / span, 0.0).astype(np.float32)


def smooth_heights(z: np.ndarray, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    """Gaussian-smooth a height image over its valid (non-zero) pixels only.

    Normalised convolution: ``G*(z·v) / G*v`` with ``v = z != 0``, so the zero background and
    holes do not pull the part's edge down; invalid pixels stay 0. ``sigma`` in pixels of
    ``z``'s grid (``sigma_y`` defaults to ``sigma_x``). float32.
    """
    z = np.asarray(z, np.float32)
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x <= 0 and sigma_y <= 0:
        return z
    valid = (z != 0).astype(np.float32)
    num = cv2.GaussianBlur(z, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y,
                           borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(valid, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y,
                           borderType=cv2.BORDER_CONSTANT)
    return np.where(valid > 0, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


# Bilateral range σ in units of the noise's std: a neighbour one noise-σ off keeps 95 % of its
# weight, a 10 mm step against 0.5 mm noise none (exp(-(20/3)²/2)); a dent's rim changes by
# less than the range across the filter's few pixels, so it is smoothed like a flat.
BILATERAL_RANGE = 3.0


def bilateral_heights(z: np.ndarray, sigma: float, noise: float) -> np.ndarray:
    """Edge-preserving smoothing of a height image: OpenCV's bilateral filter (Tomasi and
    Manduchi 1998) with spatial σ ``sigma`` px (window radius 1.5σ) and range σ
    ``BILATERAL_RANGE × noise`` (m). The background and unfilled holes (0) differ from the part
    by the camera's distance, so they carry no weight; they stay 0. float32; unchanged where
    ``noise`` is 0."""
    z = np.asarray(z, np.float32)
    if sigma <= 0 or noise <= 0:
        return z
    valid = z != 0
    x, y, w, h = cv2.boundingRect(valid.view(np.uint8))
    if w == 0:
        return z
    # only the part's box plus the window's radius (cvRound(1.5σ)) is filtered: every window
    # of a part pixel lies inside it, so the result is the whole frame's, at the part's cost
    # (a third to a sixth of the grid)
    m = int(math.ceil(1.5 * sigma)) + 1
    y0, x0 = max(y - m, 0), max(x - m, 0)
    y1, x1 = min(y + h + m, z.shape[0]), min(x + w + m, z.shape[1])
    out = np.zeros_like(z)
    box = np.ascontiguousarray(z[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = cv2.bilateralFilter(box, -1, BILATERAL_RANGE * float(noise),
                                            float(sigma))
    out[~valid] = 0.0
    return out


# σ (px) of the normalised convolution that gives a pixel the smoothed outline gains the heights
# of the part's pixels around it (a pixel or two away)
_GAINED_SIGMA = 0.7


def smooth_outline(z: np.ndarray, fg: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Heights ``z`` (0 = background) and foreground ``fg`` without the pixel staircase along
    the part's outline: the mask blurred by a Gaussian of ``sigma`` px and cut at one half (a
    straight edge stays where it was, its teeth go). The heights are left as they are: a pixel
    the mask loses becomes background, one it gains takes its neighbours' heights (normalised
    convolution over the valid pixels, σ `_GAINED_SIGMA`). float32 heights, bool foreground;
    unchanged for σ ≤ 0."""
    if sigma <= 0:
        return z, fg
    z = np.asarray(z, np.float32)
    valid = z != 0
    inside = cv2.GaussianBlur(np.asarray(fg, np.float32), (0, 0), sigma,
                              borderType=cv2.BORDER_CONSTANT) >= 0.5
    out = np.where(inside & valid, z, np.float32(0.0))
    gained = inside & ~valid
    if gained.any():
        v = valid.astype(np.float32)
        num = cv2.GaussianBlur(z * v, (0, 0), _GAINED_SIGMA, borderType=cv2.BORDER_CONSTANT)
        den = cv2.GaussianBlur(v, (0, 0), _GAINED_SIGMA, borderType=cv2.BORDER_CONSTANT)
        take = gained & (den > 1e-3)
        out[take] = num[take] / den[take]
    return out, out != 0


def _smoothed(z: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """``z`` (H×W heights, 0 = background) smoothed by ``cfg.depth_smoothing`` model pixels,
    converted to ``z``'s grid (``cfg.depth_filter``); unchanged (same object) when the option
    is off."""
    if cfg.depth_smoothing <= 0:
        return z
    h, w = z.shape
    s = cfg.image_size
    if cfg.depth_filter == "bilateral":  # the working grid is square: one σ
        return bilateral_heights(z, cfg.depth_smoothing * w / s, cfg.depth_noise)
    return smooth_heights(z, cfg.depth_smoothing * w / s, cfg.depth_smoothing * h / s)


def _depth_image(xyz: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """§9.3: nearest resize first, plane mask, foreground min–max → [0.1, 0.9], fill."""
    s = cfg.image_size
    xyz_s = cv2.resize(xyz, (s, s), interpolation=cv2.INTER_NEAREST)
    if not np.any(xyz_s[..., 2] != 0):
        raise ValueError(
            f"no valid 3D points left after resizing the cloud to {s}×{s}; "
            "the cloud is almost empty"
        )
    mask = foreground_mask(xyz_s, cfg.plane_distance, cfg.closing_iterations)
    z = _smoothed(xyz_s[..., 2] * mask, cfg)
    valid = z != 0
    depth = _minmax_foreground(z)
    depth = np.where(valid, 0.8 * depth + 0.1, 0.0).astype(np.float32)
    depth = fill_holes(depth, cfg.fill_iterations)
    return np.repeat(depth[..., None], 3, axis=2), mask


def _normal_image(xyz: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """§9.4: full-resolution plane mask, min–max, fill, Sobel normals, × mask, bilinear resize."""
    s = cfg.image_size
    mask = foreground_mask(xyz, cfg.plane_distance, cfg.closing_iterations)
    z = _minmax_foreground(_smoothed(xyz[..., 2] * mask, cfg))
    z = fill_holes(z, cfg.fill_iterations)
    normals = normals_image(z, cfg.sobel_ksize) * mask[..., None].astype(np.float32)
    normals = cv2.resize(normals, (s, s), interpolation=cv2.INTER_LINEAR)
    return normals, resize_mask(mask.astype(np.uint8), s) > 0


def preprocess(
    rgb_u8_hwc: np.ndarray,
    xyz_f32_hwc: np.ndarray,
    cfg: PreprocessConfig,
    framed: bool = False,
    turn_deg: float = 0.0,
) -> PreparedSample:
    """Turn an RGB image and its organised point cloud into the model inputs.

    ``rgb_u8_hwc``: uint8 H×W×3 RGB. ``xyz_f32_hwc``: float H×W×3 in metres, ``(0,0,0)`` = no
    return, same H×W as the RGB image. ``framed``: the inputs already are ``cfg``'s working grid
    over its ROI (a camera source registered depth there, `edge.processing.registration`), so the ROI is
    not cut again. ``turn_deg``: training's rotation augmentation only (`trainer.augment`):
    after the alignment the part is turned by this much more, RGB and heights together, and the
    normals are computed from the turned heights; a station never passes it. Raises
    ``ValueError`` on wrong shapes/dtypes, a size mismatch, or a cloud without any valid point.
    """
    rgb = _check_rgb(rgb_u8_hwc)
    xyz = check_xyz(xyz_f32_hwc)
    if rgb.shape[:2] != xyz.shape[:2]:
        raise ValueError(
            f"rgb {rgb.shape[:2]} and xyz {xyz.shape[:2]} sizes differ; the cloud must be "
            "organised at the RGB resolution (align depth to colour first)"
        )
    if cfg.pipeline == "working":
        return _preprocess_working(rgb, xyz, cfg, framed, turn_deg)
    if framed:
        raise ValueError(
            "this bundle preprocesses with the reference pipeline (full-resolution normals); "
            "a frame registered at a working grid cannot be used with it"
        )
    pose = None
    if cfg.align != "none":
        pose = estimate_pose(xyz, cfg.plane_distance, cfg.closing_iterations,
                             method=cfg.align, rgb=rgb)
    if turn_deg:
        pose = (pose or Pose.identity(xyz.shape[:2])).turned(turn_deg)
    if pose is not None:
        rgb, xyz = pose.warp(rgb), pose.warp(xyz, nearest=True)
    if cfg.modality == "depth":
        vis, fg = _depth_image(xyz, cfg)
    else:
        vis, fg = _normal_image(xyz, cfg)
    vis = np.clip(vis, 0.0, 1.0).astype(np.float32)
    return PreparedSample(
        rgb_u8=_resize_u8(rgb, cfg.image_size, cfg.rgb_resize),
        x3d_vis=np.ascontiguousarray(vis.transpose(2, 0, 1)),
        foreground=np.ascontiguousarray(fg, dtype=bool),
        mean=cfg.mean, std=cfg.std, pose=pose, rgb_resize=cfg.rgb_resize,
    )


def roi_pixels(cfg: PreprocessConfig, height: int, width: int) -> tuple[int, int, int, int]:
    """The ROI of a ``height × width`` frame in whole pixels (x0, y0, x1, y1)."""
    fx0, fy0, fx1, fy1 = cfg.roi or WHOLE_FRAME
    x0, y0 = int(round(fx0 * width)), int(round(fy0 * height))
    x1, y1 = int(round(fx1 * width)), int(round(fy1 * height))
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError(f"roi {cfg.roi} leaves {x1 - x0}×{y1 - y0} px of a {width}×{height} frame")
    return x0, y0, x1, y1


def _preprocess_working(
    rgb: np.ndarray, xyz: np.ndarray, cfg: PreprocessConfig, framed: bool, turn_deg: float = 0.0
) -> PreparedSample:
    """The 'working' pipeline: ROI → working grid → one plane fit and one mask, reused by the
    pose, the 3D image and the foreground; per-pixel work is on the grid only."""
    g, s = cfg.working_size, cfg.image_size
    h, w = rgb.shape[:2]
    if framed:
        if (h, w) != (g, g):
            raise ValueError(
                f"a framed input must be the {g}×{g} working grid, got {w}×{h}"
            )
        roi = (0, 0, w, h)
    else:
        roi = roi_pixels(cfg, h, w)
        x0, y0, x1, y1 = roi
        rgb = area_resize(rgb[y0:y1, x0:x1], g, g)
        xyz_roi = xyz[y0:y1, x0:x1]
        if xyz_roi.shape[:2] != (g, g):  # nearest: no invented depth between surfaces (§9.3)
            xyz_roi = cv2.resize(xyz_roi, (g, g), interpolation=cv2.INTER_NEAREST)
        xyz = xyz_roi
    if not np.any(xyz[..., 2] != 0):
        raise ValueError(
            f"no valid 3D points left in the {g}×{g} working grid; the cloud is almost empty"
        )
    plane = fit_background_plane(xyz)
    fg = foreground_mask(xyz, cfg.plane_distance, cfg.closing_iterations, plane=plane)
    at_edge = bool(fg[0].any() or fg[-1].any() or fg[:, 0].any() or fg[:, -1].any())
    pose = None
    # from here on only heights are needed
    z = plane_depth(xyz, plane) if cfg.heights == "plane" else np.ascontiguousarray(xyz[..., 2])
    if cfg.fill_dropouts:
        z = fill_dropouts(z, fg)
    if cfg.align != "none":
        pose = (pose_auto(xyz, fg, plane, rgb) if cfg.align == "auto"
                else pose_from_mask(xyz, fg, plane))
    if turn_deg:
        pose = (pose or Pose.identity(xyz.shape[:2])).turned(turn_deg)
    if pose is not None:  # (the plane and mask need no refit: a pixel warp keeps xyz)
        rgb = pose.warp(rgb)
        if cfg.outline_smoothing > 0:  # bilinear: a staircase's teeth are half-pixel steps
            z = pose.warp(z)
            fg = pose.warp(fg.astype(np.float32)) >= 0.5
        else:
            z = pose.warp(z, nearest=True)
            fg = pose.warp(fg.view(np.uint8), nearest=True) > 0
    z = _smoothed(z * fg, cfg)
    if cfg.outline_smoothing > 0:
        z, fg = smooth_outline(z, fg, cfg.outline_smoothing * g / s)
    if cfg.modality == "depth":
        depth = _minmax_foreground(z)
        depth = np.where(z != 0, 0.8 * depth + 0.1, 0.0).astype(np.float32)
        depth = fill_holes(depth, cfg.fill_iterations)
        vis = np.repeat(depth[..., None], 3, axis=2)
    else:
        zn = fill_holes(_minmax_foreground(z), cfg.fill_iterations)
        vis = normals_image(zn, cfg.sobel_ksize, dtype=np.float32)
        vis *= fg[..., None]
    if g != s:
        vis = cv2.resize(vis, (s, s), interpolation=cv2.INTER_LINEAR)
        fg = resize_mask(fg.astype(np.uint8), s) > 0
        rgb = area_resize(rgb, s, s)
    np.clip(vis, 0.0, 1.0, out=vis)
    return PreparedSample(
        rgb_u8=np.ascontiguousarray(rgb),
        x3d_vis=np.ascontiguousarray(vis.transpose(2, 0, 1), dtype=np.float32),
        foreground=np.ascontiguousarray(fg, dtype=bool),
        mean=cfg.mean, std=cfg.std, pose=pose,
        roi_px=None if framed else roi, working=g, at_edge=at_edge,
    )


def preprocess_normals_png(
    rgb_u8_hwc: np.ndarray, normals_u8_hwc: np.ndarray, cfg: PreprocessConfig
) -> PreparedSample:
    """Preprocessed Eyecandies: the normals PNG goes through the RGB transform (§9.5).

    ``foreground`` is every pixel whose normal encoding is not all zero (Eyecandies has no
    missing-point convention; on a full scene this is the whole image).
    """
    rgb = _check_rgb(rgb_u8_hwc)
    if normals_u8_hwc.ndim != 3 or normals_u8_hwc.shape[2] != 3:
        raise ValueError(f"normals must be an H×W×3 image, got shape {normals_u8_hwc.shape}")
    if normals_u8_hwc.dtype != np.uint8:
        raise ValueError(f"normals must be uint8 (0–255), got dtype {normals_u8_hwc.dtype}")
    if cfg.modality != "normal":
        raise ValueError(
            "preprocessed Eyecandies provides surface normals only: use modality 'normal' "
            "(--modality normal)"
        )
    if cfg.align != "none":
        raise ValueError(
            "pose alignment needs a point cloud to find the part; preprocessed Eyecandies has "
            "normal images only: train with --align none"
        )
    vis = resize_rgb(normals_u8_hwc, cfg.image_size, cfg.rgb_resize)
    return PreparedSample(
        rgb_u8=_resize_u8(rgb, cfg.image_size, cfg.rgb_resize),
        x3d_vis=np.ascontiguousarray(vis.transpose(2, 0, 1)),
        foreground=np.ascontiguousarray(vis.max(axis=2) > 0),
        mean=cfg.mean, std=cfg.std, rgb_resize=cfg.rgb_resize,
    )


def resize_mask(gt_u8_hw: np.ndarray, size: int, method: RgbResize = "area") -> np.ndarray:
    """Ground-truth mask → float32 S×S in {0,1}: binarise, resize with ``method``, then > 0.5.

    Any non-zero pixel counts as defect (accepts 0/255 and 0/1 masks, 8 or 16 bit).
    'pil-bilinear' resizes the 0/255 mask as the reference's PIL 'L' image (a pixel is set
    from 128/255 up).
    """
    gt = np.asarray(gt_u8_hw)
    if gt.ndim == 3:
        gt = gt.max(axis=2)
    if gt.ndim != 2:
        raise ValueError(f"mask must be H×W (or H×W×C), got shape {np.asarray(gt_u8_hw).shape}")
    if method == "pil-bilinear":
        resized = _resize_smooth((gt > 0).astype(np.uint8) * 255, size, method)
        return (resized > 127).astype(np.float32)
    binary = (gt > 0).astype(np.float32)
    resized = _resize_smooth(binary, size)
    return (resized > 0.5).astype(np.float32)
