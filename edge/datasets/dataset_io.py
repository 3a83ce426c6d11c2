"""Torch-free readers for RGB-D anomaly-detection datasets on disk.

Two layouts are understood (auto-detected per category):

* MVTec 3D-AD (also written by `edge.datasets.synthetic`):
  ``<root>/<category>/{train,validation,test}/<type>/{rgb/*.png, xyz/*.tiff, gt/*.png}``.
  Every sub-folder of a split is a defect type; ``good`` has label 0 and needs no ``gt``.
* Preprocessed Eyecandies (design/trd-model.md §9.5):
  ``<root>/<Class>/{train/good, validation/good, test/good, test/bad}/{rgb,normals,depth,gt}/NNN.png``.

Every problem is a `DatasetError` naming the file or folder and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import tifffile

__all__ = [
    "SPLITS",
    "DatasetError",
    "DatasetKind",
    "RawSample",
    "SampleRecord",
    "dataset_kind",
    "list_samples",
    "load_raw",
    "read_gt",
    "read_png_rgb",
    "read_xyz_tiff",
]

SPLITS = ("train", "validation", "test")
DatasetKind = Literal["mvtec3d", "eyecandies"]
_GOOD = "good"


class DatasetError(ValueError):
    """A dataset file or folder is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class SampleRecord:
    """Where one sample lives on disk and what it is."""

    category: str
    split: str
    defect_type: str  # "good" or the defect folder name ("bad" for Eyecandies)
    label: int  # 0 good, 1 anomalous
    rgb_path: Path
    geom_path: Path  # xyz TIFF (MVTec 3D-AD) or normals PNG (Eyecandies)
    gt_path: Path | None  # None for good samples (all-zero mask)
    name: str  # file stem, e.g. "000"
    kind: DatasetKind = "mvtec3d"


@dataclass
class RawSample:
    """Decoded files of one sample at their native resolution."""

    rgb: np.ndarray  # uint8 H×W×3, RGB order
    xyz: np.ndarray | None  # float32 H×W×3 metres, zeros = missing (MVTec 3D-AD)
    normals: np.ndarray | None  # uint8 H×W×3 (Eyecandies)
    gt: np.ndarray | None  # uint8 H×W, 0 / 255; None for good samples


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _category_dir(root: Path, category: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder; check the path")
    cat_dir = root / category
    if not cat_dir.is_dir():
        raise DatasetError(
            f"category '{category}' not found under {root}; available: "
            f"{', '.join(_subdirs(root)) or '(none)'}"
        )
    return cat_dir


def dataset_kind(root: str | Path, category: str) -> DatasetKind:
    """'mvtec3d' if the category's sample folders hold ``xyz/``, 'eyecandies' if ``normals/``."""
    cat_dir = _category_dir(Path(root), category)
    for split in SPLITS:
        split_dir = cat_dir / split
        if not split_dir.is_dir():
            continue
        for type_name in _subdirs(split_dir):
            if (split_dir / type_name / "xyz").is_dir():
                return "mvtec3d"
            if (split_dir / type_name / "normals").is_dir():
                return "eyecandies"
    raise DatasetError(
        f"cannot tell the dataset layout of {cat_dir}: no <split>/<type>/xyz (MVTec 3D-AD) or "
        "<split>/<type>/normals (preprocessed Eyecandies) folder found"
    )


def list_samples(root: str | Path, category: str, split: str) -> list[SampleRecord]:
    """All samples of one category and split, sorted by defect type then file name.

    Checks that every RGB image has its 3D file (and ``gt`` for defects); raises `DatasetError`
    for a missing category/split, missing partner files or an empty split.
    """
    root = Path(root)
    kind = dataset_kind(root, category)
    cat_dir = root / category
    split_dir = cat_dir / split
    if not split_dir.is_dir():
        existing = [s for s in _subdirs(cat_dir) if s in SPLITS] or _subdirs(cat_dir)
        raise DatasetError(
            f"split '{split}' not found at {split_dir}; available: {', '.join(existing) or '(none)'}"
        )
    geom_dir, geom_ext = ("xyz", ".tiff") if kind == "mvtec3d" else ("normals", ".png")
    records: list[SampleRecord] = []
    for type_name in _subdirs(split_dir):
        type_dir = split_dir / type_name
        rgb_dir = type_dir / "rgb"
        if not rgb_dir.is_dir():
            raise DatasetError(f"{type_dir} has no rgb/ folder; every sample folder needs rgb/")
        is_good = type_name == _GOOD
        for rgb_path in sorted(rgb_dir.glob("*.png")):
            name = rgb_path.stem
            geom_path = type_dir / geom_dir / f"{name}{geom_ext}"
            if not geom_path.is_file() and kind == "mvtec3d":
                alt = geom_path.with_suffix(".tif")
                geom_path = alt if alt.is_file() else geom_path
            if not geom_path.is_file():
                raise DatasetError(
                    f"{rgb_path} has no matching 3D file {geom_path}; add it or remove the image"
                )
            gt_path = None
            if not is_good:
                gt_path = type_dir / "gt" / f"{name}.png"
                if not gt_path.is_file():
                    hint = (
                        " (the reference preprocess_eyecandies.py forgets the masks of bad "
                        "samples: copy <id>_mask.png into test/bad/gt)"
                        if kind == "eyecandies"
                        else ""
                    )
                    raise DatasetError(
                        f"defect sample {rgb_path} has no ground-truth mask {gt_path}; "
                        f"every defect sample needs gt/<name>.png{hint}"
                    )
            records.append(
                SampleRecord(
                    category=category,
                    split=split,
                    defect_type=type_name,
                    label=0 if is_good else 1,
                    rgb_path=rgb_path,
                    geom_path=geom_path,
                    gt_path=gt_path,
                    name=name,
                    kind=kind,
                )
            )
    if not records:
        raise DatasetError(
            f"split {split_dir} is empty: no <type>/rgb/*.png images found; check the download"
        )
    return records


def _to_u8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)  # 16-bit PNG: keep the top 8 bits
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(img * 255.0, 0, 255).astype(np.uint8)
    raise DatasetError(f"{path} has unsupported pixel type {img.dtype}; save it as 8-bit PNG")


def _imread(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise DatasetError(f"{path} does not exist")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DatasetError(f"{path} is unreadable or corrupt (not a valid image); replace the file")
    return img


def read_png_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 H×W×3 RGB (grey is replicated, alpha dropped, 16-bit scaled)."""
    path = Path(path)
    img = _imread(path)
    if img.ndim == 2:
        img = cv2.cvtColor(_to_u8(img, path), cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(_to_u8(img, path), cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(_to_u8(img, path), cv2.COLOR_BGR2RGB)
    else:
        raise DatasetError(f"{path} has shape {img.shape}; expected a grey, RGB or RGBA image")
    return np.ascontiguousarray(img)


def read_gt(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask as uint8 H×W with values 0 / 255 (any non-zero is defect)."""
    path = Path(path)
    img = _imread(path)
    if img.ndim == 3:
        img = img[..., :3].max(axis=2)
    return np.where(img > 0, 255, 0).astype(np.uint8)


def read_xyz_tiff(path: str | Path) -> np.ndarray:
    """Read an organised cloud TIFF as float32 H×W×3 (NaN/inf → 0 = missing point)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    try:
        xyz = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for broken files
        raise DatasetError(
            f"{path} is unreadable or corrupt ({type(exc).__name__}: {exc}); replace the file"
        ) from exc
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise DatasetError(
            f"{path} has shape {xyz.shape}; expected an organised point cloud H×W×3 "
            "(x, y, z per pixel)"
        )
    if not np.issubdtype(xyz.dtype, np.floating):
        raise DatasetError(f"{path} has dtype {xyz.dtype}; expected float32 coordinates in metres")
    xyz = np.nan_to_num(xyz.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(xyz)


def load_raw(record: SampleRecord) -> RawSample:
    """Decode the files of one record; checks that all images share the RGB size."""
    rgb = read_png_rgb(record.rgb_path)
    xyz = normals = None
    if record.kind == "eyecandies":
        normals = read_png_rgb(record.geom_path)
        geom = normals
    else:
        xyz = read_xyz_tiff(record.geom_path)
        geom = xyz
    if geom.shape[:2] != rgb.shape[:2]:
        raise DatasetError(
            f"{record.geom_path} is {geom.shape[1]}×{geom.shape[0]} but {record.rgb_path} is "
            f"{rgb.shape[1]}×{rgb.shape[0]}; the 3D data must be at the RGB resolution"
        )
    gt = None
    if record.gt_path is not None:
        gt = read_gt(record.gt_path)
        if gt.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{record.gt_path} is {gt.shape[1]}×{gt.shape[0]} but {record.rgb_path} is "
                f"{rgb.shape[1]}×{rgb.shape[0]}; the mask must match the image"
            )
    return RawSample(rgb=rgb, xyz=xyz, normals=normals, gt=gt)
