"""Torch Dataset over the torch-free readers (`edge.datasets.dataset_io`) and preprocessing (`edge.processing.preprocess`).

The model sees exactly what the edge station computes: this module only converts the
`PreparedSample` arrays to tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edge.datasets.dataset_io import SampleRecord, load_raw
from edge.processing.preprocess import PreprocessConfig, preprocess, preprocess_normals_png
from trainer.augment import (
    OUTLINE_SHARE,
    OUTLINE_SIGMA,
    Augment,
    continuous_turn,
    quarter_turns,
    rotate_raw,
)

__all__ = ["RGBDDataset", "make_loader"]


class RGBDDataset(Dataset):
    """Samples as dicts: ``rgb`` (3,S,S), ``x3d`` (3,S,S), ``mask`` (1,S,S) float {0,1},
    ``foreground`` (S,S) bool (the part, `PreparedSample.foreground`: where ``scoring.region:
    part`` scores), ``label`` int, ``defect_type`` str, ``name`` str.

    ``augment="rot90"`` turns each sample by a random multiple of 90° (RGB and cloud together,
    `trainer.augment`), ``"rotate"`` by a random ±15° after the alignment; both drawn from a
    generator seeded with ``seed``.
    """

    def __init__(
        self,
        records: Sequence[SampleRecord],
        cfg: PreprocessConfig,
        augment: Augment = "none",
        seed: int = 0,
    ):
        self.records = list(records)
        self.cfg = cfg
        self.augment = augment
        self._rng = np.random.default_rng(seed)
        if augment != "none" and any(r.kind == "eyecandies" for r in self.records):
            raise ValueError(
                f"--augment {augment} needs point clouds to recompute the normals of a turned part; "
                "preprocessed Eyecandies ships normal images only: use --augment none"
            )
        if cfg.modality == "depth" and any(r.kind == "eyecandies" for r in self.records):
            raise ValueError(
                "preprocessed Eyecandies has no point clouds, only surface-normal images: "
                "modality 'depth' is not available, use --modality normal"
            )

    @property
    def rng(self) -> np.random.Generator:
        """The augmentation generator (a checkpoint saves its state, so a resume continues it)."""
        return self._rng

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        raw = load_raw(record)
        k = 0  # quarter turns applied to this sample
        if record.kind == "eyecandies":
            prepared = preprocess_normals_png(raw.rgb, raw.normals, self.cfg)
        else:
            rgb, xyz = raw.rgb, raw.xyz
            turn = 0.0
            cfg = self.cfg
            if self.augment == "rot90":
                k = quarter_turns(self._rng, rgb.shape)
                rgb, xyz = rotate_raw(rgb, xyz, k)
            elif self.augment == "rotate":
                turn = continuous_turn(self._rng)
            elif self.augment == "outline" and self._rng.random() < OUTLINE_SHARE:
                cfg = cfg.model_copy(update={"outline_smoothing": OUTLINE_SIGMA})
            try:
                prepared = preprocess(rgb, xyz, cfg, turn_deg=turn)
            except ValueError as exc:  # name the file: preprocessing errors do not know it
                raise ValueError(f"{record.geom_path}: {exc}") from exc
        size = self.cfg.image_size
        if raw.gt is not None:
            # the mask follows the part: ROI, working grid and the aligned frame
            mask = prepared.mask_to_model(np.ascontiguousarray(np.rot90(raw.gt, k)))
        else:
            mask = np.zeros((size, size), np.float32)
        return {
            "rgb": torch.from_numpy(prepared.rgb),
            "x3d": torch.from_numpy(prepared.x3d),
            "mask": torch.from_numpy(mask)[None],
            "foreground": torch.from_numpy(prepared.foreground),
            "label": int(record.label),
            "defect_type": record.defect_type,
            "name": record.name,
        }


def make_loader(
    records: Sequence[SampleRecord],
    cfg: PreprocessConfig,
    batch_size: int = 8,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    augment: Augment = "none",
) -> DataLoader:
    """DataLoader over `records` (from `list_samples`); shuffling and augmentation are
    reproducible via `seed`."""
    dataset = RGBDDataset(list(records), cfg, augment=augment, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
    )
