"""THE definition of what the TRD model sees (torch-free; numpy + OpenCV).

Training, evaluation, calibration and the live loop all call `preprocess` (organised clouds:
MVTec 3D-AD xyz TIFFs, RealSense frames after `depth_to_xyz`, synthetic scenes) or
`preprocess_normals_png` (the pre-computed normals of preprocessed Eyecandies). The steps follow
the authors' reference code as specified in design/trd-model.md §9.2–§9.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.geometry import check_xyz, fill_holes, foreground_mask, normals_image
from edge.pose import Pose, estimate_pose

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOBEL_KSIZE_BY_CATEGORY",
    "PreparedSample",
    "PreprocessConfig",
    "preprocess",
    "preprocess_normals_png",
    "resize_mask",
    "resize_rgb",
    "sobel_ksize_for",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Per-class Sobel aperture of the reference normal pipeline (§9.4); every other class uses 5.
SOBEL_KSIZE_BY_CATEGORY: dict[str, int] = {"cookie": 3, "dowel": 7, "foam": 7, "tire": 7}
_DEFAULT_SOBEL_KSIZE = 5


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
    align: Literal["none", "principal-axis"] = Field(
        "none",
        description="'principal-axis': turn and centre the part by its mask's principal axis "
        "before the model (edge/pose.py), for parts that lie at any angle.",
    )
    sobel_ksize: int = Field(
        _DEFAULT_SOBEL_KSIZE,
        description="OpenCV Sobel aperture for normals (1, 3, 5 or 7); see sobel_ksize_for().",
    )
    mean: tuple[float, float, float] = Field(
        IMAGENET_MEAN, description="Per-channel mean for normalisation (RGB and 3D images)."
    )
    std: tuple[float, float, float] = Field(
        IMAGENET_STD, description="Per-channel std for normalisation (RGB and 3D images)."
    )

    @field_validator("sobel_ksize")
    @classmethod
    def _check_ksize(cls, v: int) -> int:
        if v not in (1, 3, 5, 7):
            raise ValueError(f"sobel_ksize must be 1, 3, 5 or 7 (OpenCV Sobel), got {v}")
        return v

    @field_validator("std")
    @classmethod
    def _check_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"std values must be positive, got {v}")
        return v


@dataclass
class PreparedSample:
    """One sample as the model sees it (all CHW, side S)."""

    rgb: np.ndarray  # float32 (3,S,S), normalised
    x3d: np.ndarray  # float32 (3,S,S), normalised depth or normal image
    foreground: np.ndarray  # bool (S,S), object pixels after background-plane removal
    x3d_vis: np.ndarray  # float32 (3,S,S) in [0,1], the 3D image before normalisation
    pose: Pose | None = None  # set when the part was aligned (cfg.align); maps are in its frame


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be an H×W×3 RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (0–255), got dtype {rgb.dtype}")
    return rgb


def _normalise(img_hwc01: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(((img_hwc01 - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def _resize_smooth(img: np.ndarray, size: int) -> np.ndarray:
    """Antialiased resize: area averaging when shrinking, bilinear when enlarging."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if (size < h and size < w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def resize_rgb(rgb_u8_hwc: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 S×S×3 in [0,1] (antialiased, like torchvision Resize on PIL)."""
    rgb = _check_rgb(rgb_u8_hwc)
    return _resize_smooth(rgb, size).astype(np.float32) / 255.0


def _minmax_foreground(z: np.ndarray) -> np.ndarray:
    """Min over non-zero z, max over all → [0, 1]; zeros stay where z was 0 (before rescale)."""
    valid = z != 0
    if not valid.any():
        return np.zeros_like(z, dtype=np.float32)
    z_min = float(z[valid].min())
    z_max = float(z.max())
    span = max(z_max - z_min, 1e-12)
    return np.where(valid, (z - z_min) / span, 0.0).astype(np.float32)


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
    z = xyz_s[..., 2] * mask
    valid = z != 0
    depth = _minmax_foreground(z)
    depth = np.where(valid, 0.8 * depth + 0.1, 0.0).astype(np.float32)
    depth = fill_holes(depth, cfg.fill_iterations)
    return np.repeat(depth[..., None], 3, axis=2), mask


def _normal_image(xyz: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """§9.4: full-resolution plane mask, min–max, fill, Sobel normals, × mask, bilinear resize."""
    s = cfg.image_size
    mask = foreground_mask(xyz, cfg.plane_distance, cfg.closing_iterations)
    z = _minmax_foreground(xyz[..., 2] * mask)
    z = fill_holes(z, cfg.fill_iterations)
    normals = normals_image(z, cfg.sobel_ksize) * mask[..., None].astype(np.float32)
    normals = cv2.resize(normals, (s, s), interpolation=cv2.INTER_LINEAR)
    return normals, resize_mask(mask.astype(np.uint8), s) > 0


def preprocess(
    rgb_u8_hwc: np.ndarray, xyz_f32_hwc: np.ndarray, cfg: PreprocessConfig
) -> PreparedSample:
    """Turn an RGB image and its organised point cloud into the model inputs.

    ``rgb_u8_hwc``: uint8 H×W×3 RGB. ``xyz_f32_hwc``: float H×W×3 in metres, ``(0,0,0)`` = no
    return, same H×W as the RGB image. Raises ``ValueError`` on wrong shapes/dtypes, a size
    mismatch, or a cloud without any valid point.
    """
    rgb = _check_rgb(rgb_u8_hwc)
    xyz = check_xyz(xyz_f32_hwc)
    if rgb.shape[:2] != xyz.shape[:2]:
        raise ValueError(
            f"rgb {rgb.shape[:2]} and xyz {xyz.shape[:2]} sizes differ; the cloud must be "
            "organised at the RGB resolution (align depth to colour first)"
        )
    pose = None
    if cfg.align == "principal-axis":
        pose = estimate_pose(xyz, cfg.plane_distance, cfg.closing_iterations)
        if pose is not None:
            rgb, xyz = pose.warp(rgb), pose.warp(xyz, nearest=True)
    if cfg.modality == "depth":
        vis, fg = _depth_image(xyz, cfg)
    else:
        vis, fg = _normal_image(xyz, cfg)
    vis = np.clip(vis, 0.0, 1.0).astype(np.float32)
    return PreparedSample(
        rgb=_normalise(resize_rgb(rgb, cfg.image_size), cfg),
        x3d=_normalise(vis, cfg),
        foreground=np.ascontiguousarray(fg, dtype=bool),
        x3d_vis=np.ascontiguousarray(vis.transpose(2, 0, 1)),
        pose=pose,
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
    vis = resize_rgb(normals_u8_hwc, cfg.image_size)
    return PreparedSample(
        rgb=_normalise(resize_rgb(rgb, cfg.image_size), cfg),
        x3d=_normalise(vis, cfg),
        foreground=np.ascontiguousarray(vis.max(axis=2) > 0),
        x3d_vis=np.ascontiguousarray(vis.transpose(2, 0, 1)),
    )


def resize_mask(gt_u8_hw: np.ndarray, size: int) -> np.ndarray:
    """Ground-truth mask → float32 S×S in {0,1}: binarise, smooth resize, then > 0.5.

    Any non-zero pixel counts as defect (accepts 0/255 and 0/1 masks, 8 or 16 bit).
    """
    gt = np.asarray(gt_u8_hw)
    if gt.ndim == 3:
        gt = gt.max(axis=2)
    if gt.ndim != 2:
        raise ValueError(f"mask must be H×W (or H×W×C), got shape {np.asarray(gt_u8_hw).shape}")
    binary = (gt > 0).astype(np.float32)
    resized = _resize_smooth(binary, size)
    return (resized > 0.5).astype(np.float32)
