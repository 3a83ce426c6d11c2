"""Replay MVTec 3D-AD style files as frames (``folder:DIR``), to check a station on a dataset.

``DIR`` may be
- a category folder ``<root>/<category>`` with ``train/validation/test`` splits — read through
  `edge.datasets.dataset_io.list_samples`, exactly as training and evaluation list it;
- a split folder or a single ``<type>`` folder (``.../test/geometry``);
- any folder with ``rgb/*.png`` and ``xyz/*.tiff`` sub-folders, at any depth below ``DIR``.

Samples play in sorted order (splits in train → validation → test order for a category
folder). ``meta`` carries ``name``, ``path`` and, when the layout tells, ``category``,
``split``, ``defect_type`` and ``label`` (0 for ``good``, 1 for any other type). A file that
cannot be read is a counted error and the replay goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edge.datasets.dataset_io import SPLITS, DatasetError, list_samples, read_png_rgb, read_xyz_tiff
from edge.frames import Frame
from edge.sources.base import FrameError, FrameSource, FrameTimeout, SourceError
from edge.sources.options import FolderOptions
from edge.sources.pacing import Pacer

__all__ = ["FolderSource", "ReplayItem", "discover"]


@dataclass(frozen=True)
class ReplayItem:
    """One rgb/xyz pair to replay and what is known about it."""

    rgb_path: Path
    xyz_path: Path
    meta: dict


def _xyz_partner(rgb_path: Path) -> Path | None:
    xyz_dir = rgb_path.parent.parent / "xyz"
    for ext in (".tiff", ".tif"):
        candidate = xyz_dir / f"{rgb_path.stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _layout_meta(sample_dir: Path) -> dict:
    """category/split/defect_type/label from ``<category>/<split>/<type>`` when it fits."""
    meta: dict = {}
    if sample_dir.parent.name in SPLITS:
        meta["defect_type"] = sample_dir.name
        meta["label"] = 0 if sample_dir.name == "good" else 1
        meta["split"] = sample_dir.parent.name
        meta["category"] = sample_dir.parent.parent.name
    return meta


def _from_category(cat_dir: Path, split: str | None) -> list[ReplayItem]:
    splits = [s for s in SPLITS if (cat_dir / s).is_dir() and (split is None or s == split)]
    if not splits:
        raise SourceError(f"{cat_dir}: no split folder{f' {split!r}' if split else ''} found")
    items: list[ReplayItem] = []
    for s in splits:
        try:
            records = list_samples(cat_dir.parent, cat_dir.name, s)
        except DatasetError as exc:
            raise SourceError(f"folder source: {exc}") from exc
        for rec in records:
            if rec.kind != "mvtec3d":
                raise SourceError(
                    f"{cat_dir} holds preprocessed Eyecandies (normals PNGs); the folder source "
                    "needs xyz TIFFs (MVTec 3D-AD layout)"
                )
            meta = {
                "category": rec.category,
                "split": rec.split,
                "defect_type": rec.defect_type,
                "label": rec.label,
                "name": rec.name,
                "path": str(rec.rgb_path),
            }
            if rec.gt_path is not None:
                meta["gt_path"] = str(rec.gt_path)
            items.append(ReplayItem(rec.rgb_path, rec.geom_path, meta))
    return items


def _from_tree(root: Path, split: str | None) -> list[ReplayItem]:
    sample_dirs = sorted(
        {p.parent for p in root.rglob("rgb") if p.is_dir() and (p.parent / "xyz").is_dir()}
    )
    if (root / "rgb").is_dir() and (root / "xyz").is_dir():
        sample_dirs = sorted(set(sample_dirs) | {root})
    items: list[ReplayItem] = []
    for sample_dir in sample_dirs:
        meta = _layout_meta(sample_dir)
        if split is not None and meta.get("split") != split:
            continue
        for rgb_path in sorted((sample_dir / "rgb").glob("*.png")):
            xyz_path = _xyz_partner(rgb_path)
            if xyz_path is None:
                raise SourceError(
                    f"{rgb_path} has no matching xyz/{rgb_path.stem}.tiff; add it or remove the "
                    "image"
                )
            item_meta = dict(meta, name=rgb_path.stem, path=str(rgb_path))
            gt = sample_dir / "gt" / f"{rgb_path.stem}.png"
            if gt.is_file():
                item_meta["gt_path"] = str(gt)
            items.append(ReplayItem(rgb_path, xyz_path, item_meta))
    return items


def discover(root: str | Path, split: str | None = None) -> list[ReplayItem]:
    """Every rgb/xyz pair under ``root`` in replay order; `SourceError` if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"folder source: {root} does not exist or is not a folder")
    is_category = any((root / s).is_dir() for s in SPLITS) and not (root / "rgb").is_dir()
    items = _from_category(root, split) if is_category else _from_tree(root, split)
    if not items:
        where = f" in split {split!r}" if split else ""
        raise SourceError(
            f"folder source: no rgb/*.png + xyz/*.tiff pairs found under {root}{where}; expected "
            "the MVTec 3D-AD layout <category>/<split>/<type>/{rgb,xyz}/"
        )
    return items


class FolderSource(FrameSource):
    """Replays a folder of MVTec 3D-AD style samples as a finite (or looping) camera."""

    def __init__(
        self,
        root: str | Path,
        options: FolderOptions | None = None,
        max_consecutive_errors: int = 50,
    ) -> None:
        super().__init__(max_consecutive_errors)
        self.root = Path(root)
        self.options = options or FolderOptions()
        self.name = f"folder:{self.root}"
        self.items: list[ReplayItem] = []
        self._index = 0
        self._count = 0
        self._pacer = Pacer(self.options.fps)

    def _open(self) -> None:
        self.items = discover(self.root, self.options.split)
        self._index = 0
        self._count = 0

    def _grab(self, timeout_s: float) -> Frame | None:
        if self._index >= len(self.items):
            if not self.options.loop:
                return None
            self._index = 0
        if not self._pacer.wait(timeout_s):
            raise FrameTimeout(f"{self.name}: next frame not due within {timeout_s:.2f} s")
        item = self.items[self._index]
        self._index += 1
        number = self._count
        self._count += 1
        host_ts = time.time()
        started = time.perf_counter()
        try:
            rgb = read_png_rgb(item.rgb_path)
            xyz = read_xyz_tiff(item.xyz_path)
            return Frame(
                rgb=rgb,
                xyz=xyz,
                frame_number=number,
                camera_timestamp_ms=None,
                host_timestamp=host_ts,
                source=self.name,
                intrinsics=None,
                meta=dict(item.meta),
                capture_ms=(time.perf_counter() - started) * 1000.0,
            )
        except (DatasetError, ValueError) as exc:
            raise FrameError(f"{item.rgb_path.name}: {exc}") from exc
