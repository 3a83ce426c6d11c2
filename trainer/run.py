"""The training run directory: what `trd-edge train` writes and everything downstream reads.

```
RUN_DIR/
  run.json          RunInfo: configuration, preprocessing, git revision, per-epoch history
  checkpoint.pt     model + optimiser + scheduler state (resumable)
  calibration.json  validation score statistics and image threshold (written after training)
  metrics.json      the last `trd-edge eval` result (optional)
```
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.processing.preprocess import PreprocessConfig
from edge.processing.scoring import ScoreStats
from edge.sources.acquisition import Acquisition
from trainer.choices import AutoChoices

if TYPE_CHECKING:  # torch-side types only for annotations
    from trainer.model import TRD

RUN_SCHEMA_VERSION = "1.0"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
CALIBRATION_FILE = "calibration.json"
METRICS_FILE = "metrics.json"


# The authors' epochs per dataset (trd-model.md §7); an explicit --epochs wins.
DEFAULT_EPOCHS: dict[str, int] = {"mvtec3d": 200, "eyecandies": 100}


class RunError(RuntimeError):
    """A run directory is missing, incomplete or inconsistent."""


DEFAULT_IMAGE_SIZE = 256  # the authors' input side


class TrainConfig(BaseModel):
    """Everything that determines a training run (recorded in run.json)."""

    model_config = ConfigDict(extra="forbid")

    data_root: str = Field(description="dataset root holding <category>/train, validation, test")
    category: str = Field(description="object category (one model per category)")
    modality: Literal["depth", "normal"] = Field("normal", description="3D image type")
    backbone: Literal["resnet18", "wide_resnet50_2"] = Field("wide_resnet50_2")
    image_size: int | None = Field(
        DEFAULT_IMAGE_SIZE, ge=32, description="square input side, a multiple of 32; None: "
        "chosen from the data with choose_from_data (trainer/choices.py), else the default",
    )
    epochs: int | None = Field(
        None, ge=1, description="None: the authors' count for the detected dataset kind "
        "(DEFAULT_EPOCHS: MVTec 3D-AD 200, Eyecandies 100); run.json holds the resolved number",
    )
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.005, gt=0, description="Adam learning rate (TRD: 0.005)")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas (TRD: 0.5, 0.999)")
    gamma: float = Field(0.95, gt=0, le=1, description="ExponentialLR decay per epoch")
    teacher_weights: str = Field("imagenet", description="imagenet | random | PATH")
    seed: int = 42
    device: str = "cpu"
    deterministic: bool = Field(
        True, description="the reference's cuDNN setup (deterministic kernels, no benchmark) "
        "plus torch.use_deterministic_algorithms (warn only); False: cudnn.benchmark for speed",
    )
    num_workers: int = Field(0, ge=0)
    sobel_ksize: int | None = Field(
        None, description="normal modality: Sobel aperture override (None: the category's "
        "reference aperture, or with choose_from_data the one chosen from the data)",
    )
    # Runs recorded before it have no key: no smoothing.
    depth_smoothing: float | None = Field(
        0.0, ge=0, description="σ (model px) of the height smoothing before the 3D image "
        "(PreprocessConfig.depth_smoothing; 0 = off; None = from the data set's camera record "
        "(trainer.train.resolve_depth_smoothing), or without one and with choose_from_data "
        "from the depth noise's grain on the good parts (trainer.choices))",
    )
    # Runs recorded before it have no key: a Gaussian.
    depth_filter: Literal["gaussian", "bilateral"] | None = Field(
        "gaussian", description="how the heights are smoothed (PreprocessConfig.depth_filter); "
        "None: bilateral for the working pipeline, which keeps steps and holes sharp "
        "(trainer.train.resolve_depth_filter)",
    )
    depth_noise: float | None = Field(
        0.0, ge=0, description="the heights' per-pixel noise std in m, the bilateral filter's "
        "range (PreprocessConfig.depth_noise); None: measured on the good training parts "
        "(trainer.choices.depth_noise) when the run smooths bilaterally",
    )
    # Runs recorded before it have no key: no outline smoothing.
    outline_smoothing: float | None = Field(
        0.0, ge=0, le=4, description="σ (model px) by which the aligned part's outline is "
        "smoothed, its heights and mask warped bilinearly (PreprocessConfig.outline_smoothing); None: 0 "
        "(trainer.train.resolve_outline_smoothing; measured, docs/any-shape.md)",
    )
    align: Literal["none", "principal-axis", "auto"] | None = Field(
        "none", description="pose normalisation of freely lying parts (edge/processing/pose.py); None: "
        "chosen from the data with choose_from_data, else 'none'",
    )
    # Runs recorded before it have no key: nothing was chosen for them.
    choose_from_data: bool = Field(
        False, description="choose the settings left None (align, sobel_ksize) from the good "
        "training images (trainer/choices.py); run.json records the choice as auto_choices",
    )
    # The default is what runs recorded without the key did; None (the CLI's) is chosen at
    # training (trainer.train.resolve_augment).
    augment: Literal["none", "rot90", "rotate", "outline"] | None = Field(
        "none", description="training augmentation: rot90 turns parts by multiples of 90°, "
        "rotate by a random ±15° after the alignment, outline smooths half the parts' "
        "aligned edges (trainer/augment.py); None: outline where the working pipeline turns "
        "parts to their pose, else none"
    )
    # Runs recorded before preprocessing version 2 have no key: they used the reference path.
    preprocess: Literal["reference", "working"] = Field(
        "reference", description="preprocessing pipeline (edge.processing.preprocess.PreprocessConfig)"
    )
    roi: tuple[float, float, float, float] | None = Field(
        None, description="region of interest, fractions of the frame (x0, y0, x1, y1)"
    )
    # Runs recorded before the choice existed have no key: they resized with INTER_AREA.
    rgb_resize: Literal["area", "pil-bilinear"] = Field(
        "area", description="reference pipeline's RGB/mask resize (PreprocessConfig.rgb_resize)"
    )
    # Runs recorded before it have no key: no dropout fill.
    fill_dropouts: bool | None = Field(
        False, description="fill the part's depth dropouts before the 3D image "
        "(PreprocessConfig.fill_dropouts; working pipeline only); None: on for the working "
        "pipeline (trainer.train.resolve_fill_dropouts)",
    )
    # Runs recorded before it have no key: camera z.
    heights: Literal["camera", "plane"] | None = Field(
        "camera", description="what the 3D image is computed from (PreprocessConfig.heights; "
        "working pipeline only); None: heights above the table for the working pipeline "
        "(trainer.train.resolve_heights)",
    )
    # Runs recorded before it have no key: the sum (TRD).
    score_fusion: Literal["sum", "max"] | None = Field(
        "sum", description="how the branches' maps are fused (edge.processing.scoring.Fusion): "
        "sum of the z-scored maps (TRD), or max of each branch in units of its good image "
        "scores; None: max for the working pipeline, sum for the reference one "
        "(trainer.train.resolve_score_fusion); the bundle records it in scoring.stats",
    )
    # Runs recorded before it have no key: they scored the whole frame.
    score_region: Literal["frame", "part"] | None = Field(
        "frame", description="where the image score is taken (edge.processing.scoring): frame = "
        "the whole map (TRD), part = the part's foreground only; None: part for the working "
        "pipeline, frame for the reference one and for Eyecandies (trainer.train."
        "resolve_score_region); the bundle records it as scoring.region",
    )


class EpochRecord(BaseModel):
    """One finished epoch."""

    epoch: int
    loss_rgb: float
    loss_3d: float
    lr: float
    seconds: float


class RunInfo(BaseModel):
    """run.json: the provenance of a trained model."""

    schema_version: str = RUN_SCHEMA_VERSION
    config: TrainConfig
    preprocess: PreprocessConfig
    git_revision: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    dataset_kind: str = "mvtec3d"
    # where config.epochs came from; None in runs recorded before it was
    epochs_source: Literal["explicit", "dataset-default"] | None = None
    n_train: int = 0
    n_validation: int = 0
    epochs_done: int = 0
    history: list[EpochRecord] = Field(default_factory=list)
    torch_version: str | None = None
    # what choose_from_data chose and why; None when nothing was chosen (older runs)
    auto_choices: AutoChoices | None = None
    # the training data's depth acquisition chain (edge.sources.acquisition.read_acquisition);
    # None in runs recorded before it
    acquisition: Acquisition | None = None


class Calibration(BaseModel):
    """Validation-split score statistics and the fused image-score threshold."""

    stats: ScoreStats
    threshold: float
    threshold_method: str
    validation_image_scores: list[float] = Field(default_factory=list)


@dataclass
class LoadedRun:
    """A run loaded for inference."""

    path: Path
    model: TRD
    info: RunInfo
    calibration: Calibration | None
    metrics: dict | None


def resolve_epochs(cfg: TrainConfig, kind: str) -> tuple[TrainConfig, str]:
    """``cfg`` with its epochs filled in for dataset ``kind``, and where the number came from."""
    if cfg.epochs is not None:
        return cfg, "explicit"
    return cfg.model_copy(update={"epochs": DEFAULT_EPOCHS[kind]}), "dataset-default"


def git_revision(start: Path | None = None) -> str | None:
    """The git revision of the code that trains (with `+dirty` for local changes), if known."""
    here = start or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=here, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def write_json(path: Path, model: BaseModel | dict) -> None:
    """Write JSON atomically (a crash never leaves half a file behind)."""
    text = model.model_dump_json(indent=2) if isinstance(model, BaseModel) else json.dumps(
        model, indent=2
    )
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def read_run_info(run_dir: Path) -> RunInfo:
    """Read run.json with an error that says what to do when it is missing."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise RunError(
            f"{run_dir} is not a training run (no {RUN_FILE}); "
            "pass the --out directory of `trd-edge train`."
        )
    return RunInfo.model_validate_json(path.read_text())


def read_calibration(run_dir: Path) -> Calibration | None:
    """The run's validation calibration, or None before it has been computed."""
    path = Path(run_dir) / CALIBRATION_FILE
    return Calibration.model_validate_json(path.read_text()) if path.is_file() else None


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """Load a trained run's model (eval mode), provenance, calibration and metrics."""
    import torch

    from trainer.model import TRD

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    ckpt_path = run_dir / CHECKPOINT_FILE
    if not ckpt_path.is_file():
        raise RunError(f"{ckpt_path} is missing: the run never finished an epoch.")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    model = TRD(backbone=info.config.backbone)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return LoadedRun(run_dir, model, info, read_calibration(run_dir), metrics)
