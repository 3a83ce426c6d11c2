"""The model bundle: a self-describing, verifiable folder the edge runtime loads.

Layout (see ``shared/design/architecture.md``)::

    BUNDLE/
      manifest.json         pydantic ``Manifest`` (schema_version, model, preprocess, io, files,
                            scoring, provenance, metrics, engines, acquisition)
      model.onnx            FP32 per-frame graph: inputs rgb, x3d -> outputs map_rgb, map_3d
      model.fp16.onnx       FP16 body, FP32 score head and FP32 I/O (optional)
      model.int8.onnx       INT8 QDQ body for onnxruntime, FP32 normalisation, head and I/O
      model.int8.trt.onnx   the same, symmetric INT8 for TensorRT (both optional; how they
                            were calibrated is in ``quantization``, export/int8.py)
      engines/<gpu>-sm<cc>-trt<ver>-<precision>.plan   built on the target, never shipped

Loading verifies the schema and every file's sha256 and says exactly what is wrong.
This module is torch-free (it runs on the edge device).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.sources.acquisition import Acquisition

# 1.1: graphs take uint8 RGB (1,S,S,3) and the 3D image (1,3,S,S) in [0,1] and normalise
# inside; preprocessing records `pipeline` (a 1.0 bundle is float32 normalised I/O, reference).
SCHEMA_VERSION = "1.1"
MANIFEST_NAME = "manifest.json"
MODEL_FP32 = "model"  # key in Manifest.files
MODEL_FP16 = "model_fp16"
MODEL_INT8 = "model_int8"
MODEL_INT8_TRT = "model_int8_trt"
INPUT_NAMES = ("rgb", "x3d")
OUTPUT_NAMES = ("map_rgb", "map_3d")


class BundleError(ValueError):
    """A bundle is missing, malformed, tampered with, or does not fit the data given to it."""


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError as exc:
        raise BundleError(f"schema_version {version!r} is not of the form MAJOR.MINOR") from exc


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks (ONNX files reach ~1.7 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    """ISO-8601 UTC timestamp used for ``created`` / ``fitted_at`` fields."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(_Strict):
    """Which network this bundle holds."""

    backbone: str
    image_size: int = Field(gt=0)
    modality: Literal["depth", "normal"]
    variant: str  # e.g. "trd-resnet18-64-depth"


class TensorSpec(_Strict):
    name: str
    shape: list[int]
    dtype: str = "float32"


class IOSpec(_Strict):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class FileEntry(_Strict):
    path: str  # relative to the bundle folder
    sha256: str
    bytes: int


class StatsSpec(_Strict):
    """Per-modality raw-map statistics (mirrors ``edge.processing.scoring.ScoreStats``)."""

    rgb_mean: float
    rgb_std: float
    x3d_mean: float
    x3d_std: float
    n_maps: int = 0
    source: str = ""
    # bundles before the choice have no keys: the sum of the z-scored maps (TRD)
    fusion: Literal["sum", "max"] = "sum"
    rgb_image_mean: float | None = None
    rgb_image_std: float | None = None
    x3d_image_mean: float | None = None
    x3d_image_std: float | None = None


class CalibrationRecord(_Strict):
    stats: StatsSpec | None = None
    threshold: float | None = None
    threshold_method: str | None = None
    fitted_at: str = Field(default_factory=utc_now)
    note: str = ""


SIGMA_RULE = "4*S/256"


class SmoothingSpec(_Strict):
    """How maps are smoothed before the image score (``edge.processing.scoring.smoothing_sigma``).

    Gaussian, reflect border, truncate 4, with sigma in map pixels proportional to the map side
    S: the reference's 4 px at 256² (1 px at 64²). A manifest without this section (bundles
    exported before it was recorded) is scored with the same rule.
    """

    rule: Literal["4*S/256"] = Field(SIGMA_RULE, description="sigma = 4·S/256 map pixels")
    sigma: float | None = Field(None, gt=0, description="the rule's value at this bundle's S")


class ScoringSpec(_Strict):
    """Current score normalisation + threshold, and every previous calibration (newest last)."""

    smoothing: SmoothingSpec = Field(default_factory=SmoothingSpec)
    # where the image score is taken (edge.processing.scoring.score_maps): the whole map, or the
    # part's foreground only; bundles exported before it have no key and score the frame
    region: Literal["frame", "part"] = Field(
        "frame", description="frame: max over the whole map (TRD); part: over the foreground"
    )
    stats: StatsSpec | None = None
    threshold: float | None = None
    threshold_method: str | None = None
    fitted_at: str | None = None
    note: str = ""
    history: list[CalibrationRecord] = Field(default_factory=list)


class Provenance(_Strict):
    dataset: str = ""
    category: str = ""
    epochs: int | None = None
    seed: int | None = None
    git_revision: str | None = None
    teacher_weights: str | None = None
    run_dir: str | None = None
    created: str = Field(default_factory=utc_now)


class EngineEntry(_Strict):
    """A TensorRT engine built on a target machine (not covered by ``files``)."""

    path: str
    sha256: str
    bytes: int
    precision: str
    gpu: str
    compute_capability: str
    trt_version: str
    built: str = Field(default_factory=utc_now)
    layer_precisions: dict[str, int] = Field(default_factory=dict)


class QuantizedGraph(_Strict):
    """One INT8 graph of a bundle: its file, runtime and quantised types."""

    path: str
    runtime: str
    activations: str
    weights: str
    op_types: list[str]
    int8_convolutions: int = 0
    fp32_convolutions: int = 0


class QuantizationSpec(_Strict):
    """How the INT8 graphs were made (``trd-edge export --int8``, ``export/int8.py``)."""

    tool: str  # e.g. "onnxruntime.quantization.quantize_static 1.32.0"
    format: Literal["QDQ"] = "QDQ"
    calibration_method: str
    calibration_source: str  # the frame source the good calibration frames came from
    calibration_frames: int = Field(ge=1)
    graphs: dict[str, QuantizedGraph] = Field(default_factory=dict)  # files key -> graph
    # reason -> node names left FP32 ("input normalisation", "score head", "kept fp32 ...")
    excluded_nodes: dict[str, list[str]] = Field(default_factory=dict)
    created: str = Field(default_factory=utc_now)


class Manifest(_Strict):
    """``manifest.json`` of a model bundle."""

    schema_version: str = SCHEMA_VERSION
    model: ModelSpec
    preprocess: dict[str, Any]
    io: IOSpec
    files: dict[str, FileEntry]
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    provenance: Provenance = Field(default_factory=Provenance)
    metrics: dict[str, Any] | None = None
    engines: dict[str, EngineEntry] = Field(default_factory=dict)
    quantization: QuantizationSpec | None = None  # present with model.int8.onnx
    # how the training data's depth was acquired (filters, frames averaged): the station
    # repeats it (edge.sources.acquisition); None in bundles exported before it (not checked)
    acquisition: Acquisition | None = None

    @model_validator(mode="after")
    def _check_sigma(self) -> Manifest:
        # The station smooths with edge.processing.scoring's rule; a manifest that claims another sigma
        # would be scored differently from what it says, so it is refused.
        from edge.processing.scoring import smoothing_sigma

        recorded = self.scoring.smoothing.sigma
        expected = smoothing_sigma(self.model.image_size)
        if recorded is not None and abs(recorded - expected) > 1e-9 * expected:
            raise ValueError(
                f"scoring.smoothing.sigma is {recorded} but this trd-edge smooths "
                f"{self.model.image_size}² maps with sigma {expected} ({SIGMA_RULE}); "
                "re-export the bundle"
            )
        return self


def default_io(image_size: int, host_normalised: bool = False) -> IOSpec:
    """The tensor contract of a TRD graph: two inputs, two (1,1,S,S) float32 maps.

    Since schema 1.1 the graph normalises its inputs itself: ``rgb`` is the resized uint8 image
    (1,S,S,3, HWC as the camera delivers it: a quarter of the bytes, no float conversion or
    transpose on the host) and ``x3d`` the 3D image in [0,1] (1,3,S,S) float32, exactly as
    preprocessing computes it (float16 would round the FP32 model's input; the 3D image is
    already at the model's size, so its bytes are few).
    ``host_normalised`` gives the 1.0 contract: both (1,3,S,S) float32, normalised by the host.
    """
    s = int(image_size)
    if host_normalised:
        inputs = [TensorSpec(name=n, shape=[1, 3, s, s]) for n in INPUT_NAMES]
    else:
        inputs = [
            TensorSpec(name="rgb", shape=[1, s, s, 3], dtype="uint8"),
            TensorSpec(name="x3d", shape=[1, 3, s, s], dtype="float32"),
        ]
    return IOSpec(
        inputs=inputs, outputs=[TensorSpec(name=n, shape=[1, 1, s, s]) for n in OUTPUT_NAMES]
    )


def io_is_raw(io: IOSpec) -> bool:
    """Whether a graph normalises inside (schema 1.1: its ``rgb`` input is uint8)."""
    return any(t.name == "rgb" and t.dtype == "uint8" for t in io.inputs)


def model_inputs(io: IOSpec | None, sample: Any) -> tuple[np.ndarray, np.ndarray]:
    """The two input arrays a graph with contract ``io`` takes, from an
    ``edge.processing.preprocess.PreparedSample``: uint8 RGB and the [0,1] 3D image for a graph that
    normalises inside (1.1), normalised float32 for a 1.0 graph or ``io`` None (torch)."""
    if io is not None and io_is_raw(io):
        return sample.rgb_u8[None], sample.x3d_vis[None]
    return sample.rgb[None], sample.x3d[None]


def file_entry(bundle_dir: Path, rel_path: str) -> FileEntry:
    """Hash a file inside ``bundle_dir`` into a manifest entry."""
    path = Path(bundle_dir) / rel_path
    return FileEntry(path=rel_path, sha256=sha256_file(path), bytes=path.stat().st_size)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Bundle:
    """A loaded bundle: its folder and validated manifest."""

    path: Path
    manifest: Manifest

    @property
    def image_size(self) -> int:
        return self.manifest.model.image_size

    @property
    def model_id(self) -> str:
        """Short id of the model weights (unchanged by re-calibration or engine builds)."""
        digest = hashlib.sha256()
        for name in sorted(self.manifest.files):
            digest.update(f"{name}:{self.manifest.files[name].sha256};".encode())
        return digest.hexdigest()[:12]

    def has_file(self, name: str) -> bool:
        return name in self.manifest.files

    def file_path(self, name: str) -> Path:
        """Absolute path of a manifest file entry (e.g. ``"model"``, ``"model_fp16"``)."""
        if name not in self.manifest.files:
            raise BundleError(
                f"bundle {self.path} has no {name!r} file (it has: "
                f"{', '.join(sorted(self.manifest.files)) or 'none'}); "
                + {
                    MODEL_FP16: "re-export with `trd-edge export --fp16`",
                    MODEL_INT8: "re-export with `trd-edge export --int8 --calibration-frames "
                    "SOURCE`",
                    MODEL_INT8_TRT: "re-export with `trd-edge export --int8 "
                    "--calibration-frames SOURCE`",
                }.get(name, "re-export it")
            )
        return self.path / self.manifest.files[name].path

    def preprocess_config(self):
        """The bundle's ``edge.processing.preprocess.PreprocessConfig`` (what the model was trained on)."""
        from edge.processing.preprocess import PreprocessConfig

        try:
            return PreprocessConfig(**self.manifest.preprocess)
        except ValidationError as exc:
            raise BundleError(
                f"bundle {self.path}: its preprocessing {self.manifest.preprocess} is not one "
                f"this trd-edge can repeat ({exc.errors()[0]['msg']}); update trd-edge or "
                "re-export the bundle"
            ) from exc

    def score_stats(self):
        """The bundle's ``edge.processing.scoring.ScoreStats``, or None before any calibration."""
        spec = self.manifest.scoring.stats
        if spec is None:
            return None
        from edge.processing.scoring import ScoreStats

        return ScoreStats(**spec.model_dump())

    def check_frame(self, rgb: np.ndarray, x3d: np.ndarray) -> None:
        """Raise ``BundleError`` unless both inputs have the bundle's input shapes and dtypes."""
        for name, arr, spec in zip(INPUT_NAMES, (rgb, x3d), self.manifest.io.inputs, strict=True):
            expected = tuple(spec.shape)
            shape = tuple(np.shape(arr))
            if shape != expected and shape != expected[1:]:
                raise BundleError(
                    f"input {name!r} has shape {shape} but bundle {self.path.name} (model "
                    f"{self.model_id}) expects {expected} (image_size "
                    f"{self.image_size}); preprocess frames with the bundle's PreprocessConfig"
                )
            if np.asarray(arr).dtype != np.dtype(spec.dtype):
                raise BundleError(
                    f"input {name!r} has dtype {np.asarray(arr).dtype}, expected {spec.dtype} "
                    "(edge.bundle.model_inputs picks the arrays a bundle takes)"
                )

    def record_calibration(
        self, stats: StatsSpec | None, threshold: float | None, method: str | None, note: str = ""
    ) -> None:
        """Make (stats, threshold) current, pushing the previous values onto ``history``.

        Call ``save_manifest()`` afterwards to persist.
        """
        scoring = self.manifest.scoring
        if scoring.stats is not None or scoring.threshold is not None:
            scoring.history.append(
                CalibrationRecord(
                    stats=scoring.stats,
                    threshold=scoring.threshold,
                    threshold_method=scoring.threshold_method,
                    fitted_at=scoring.fitted_at or utc_now(),
                    note=scoring.note,
                )
            )
        scoring.stats = stats
        scoring.threshold = threshold
        scoring.threshold_method = method
        scoring.fitted_at = utc_now()
        scoring.note = note

    def save_manifest(self) -> Path:
        """Atomically rewrite ``manifest.json`` from ``self.manifest``."""
        path = self.path / MANIFEST_NAME
        atomic_write_text(path, self.manifest.model_dump_json(indent=2) + "\n")
        return path

    def verify_files(self) -> None:
        """Check every manifest file exists with its recorded size and sha256."""
        for name, entry in self.manifest.files.items():
            path = self.path / entry.path
            if not path.is_file():
                raise BundleError(
                    f"bundle {self.path}: file {entry.path!r} ({name}) listed in the manifest is "
                    "missing; copy the whole bundle folder or re-export it"
                )
            size = path.stat().st_size
            if size != entry.bytes or sha256_file(path) != entry.sha256:
                raise BundleError(
                    f"bundle {self.path}: file {entry.path!r} ({name}) has changed since export "
                    f"(sha256/size mismatch: {size} bytes, manifest says {entry.bytes}); "
                    "re-export or restore the original file"
                )

    def engine_path(self, key: str) -> Path:
        return self.path / "engines" / f"{key}.plan"


def load_bundle(path: str | os.PathLike, verify_hashes: bool = True) -> Bundle:
    """Load and validate a bundle folder.

    Raises ``BundleError`` naming the problem: missing folder or manifest, invalid JSON, a
    schema newer than this trd-edge, a manifest that does not validate, a missing or changed file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist (create it with trd-edge export)")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(
            f"{folder} has no {MANIFEST_NAME}: not a model bundle (create it with trd-edge export)"
        )
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(
            f"{manifest_path} is not valid JSON ({exc}); re-export the bundle"
        ) from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object, got {type(raw).__name__}")
    version = str(raw.get("schema_version", ""))
    if not version:
        raise BundleError(f"{manifest_path} has no schema_version; re-export the bundle")
    if _version_tuple(version) > _version_tuple(SCHEMA_VERSION):
        raise BundleError(
            f"{manifest_path} has schema_version {version}, newer than the {SCHEMA_VERSION} this "
            "trd-edge supports; upgrade trd-edge"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{manifest_path} does not match the manifest schema:\n{exc}") from exc
    bundle = Bundle(path=folder.resolve(), manifest=manifest)
    if verify_hashes:
        bundle.verify_files()
    return bundle
