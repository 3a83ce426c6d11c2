"""``trd-edge export``: a trained run -> a model bundle (manifest + FP32 ONNX [+ FP16 ONNX]
[+ INT8 QDQ ONNX calibrated on good frames, export/int8.py]).

One graph per frame: inputs ``rgb`` and ``x3d`` (1,3,S,S) float32, outputs ``map_rgb`` and
``map_3d`` (1,1,S,S) float32 (raw per-modality maps; normalisation, fusion, smoothing and the
image score follow in ``edge.processing.scoring``). Exported with the TorchScript exporter
(``dynamo=False``, opset 17): it needs only ``onnx`` and writes one self-contained file (the
full-size graph is ~1.7 GB, under protobuf's 2 GB limit).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.bundle import (
    INPUT_NAMES,
    MANIFEST_NAME,
    MODEL_FP16,
    MODEL_FP32,
    OUTPUT_NAMES,
    SCHEMA_VERSION,
    Manifest,
    ModelSpec,
    Provenance,
    ScoringSpec,
    SmoothingSpec,
    StatsSpec,
    atomic_write_text,
    default_io,
    file_entry,
    load_bundle,
)
from edge.processing.scoring import smoothing_sigma
from export.fp16 import HalfBody, check_fp16_graph

log = logging.getLogger(__name__)

OPSET = 17
FILE_NAMES = {MODEL_FP32: "model.onnx", MODEL_FP16: "model.fp16.onnx"}
# FP32 ONNX vs torch FP32 on the same CPU: only float reordering differs.
EXPORT_PARITY_TOL = 1e-3


class ExportError(RuntimeError):
    """The run cannot be exported (or the export does not reproduce the model)."""


class RawInputs(nn.Module):
    """The schema-1.1 input contract around a TRD: uint8 RGB (1,S,S,3) and the 3D image in
    [0,1] (1,3,S,S) float32 in, cast and ImageNet normalisation inside the graph.

    The host then sends the resized camera bytes as they are (no float conversion, no
    transpose, a quarter of the bytes); the arithmetic runs where the accelerator is. The
    normalisation stays FP32 in an FP16 export (HalfBody casts after it).
    """

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor, x3d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = rgb.permute(0, 3, 1, 2).float() / 255.0
        r = (r - self.mean) / self.std
        x = (x3d.float() - self.mean) / self.std
        return self.model(r, x)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    image_size: int,
    fp16: bool = False,
    norm: tuple | None = None,
) -> Path:
    """Export ``model`` (a TRD, eval mode) as one ONNX graph; FP16 body if ``fp16``.

    ``norm`` = (mean, std): the graph takes the schema-1.1 raw inputs and normalises them
    (`RawInputs`); None gives the 1.0 contract (normalised float32 inputs).
    """
    path = Path(path)
    module = HalfBody(model) if fp16 else model.eval()
    s = int(image_size)
    dummy = (torch.zeros(1, 3, s, s), torch.zeros(1, 3, s, s))
    if norm is not None:
        module = RawInputs(module, *norm).eval()
        dummy = (torch.zeros(1, s, s, 3, dtype=torch.uint8), torch.zeros(1, 3, s, s))
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation/tracer chatter
        torch.onnx.export(
            module,
            dummy,
            os.fspath(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            do_constant_folding=True,
        )
    os.replace(tmp, path)
    return path


def onnx_matches_torch(
    model: nn.Module, onnx_path: Path, image_size: int, seed: int = 0, norm: tuple | None = None
) -> float:
    """Max |map difference| between onnxruntime (CPU) and torch FP32 on one random frame."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    s = int(image_size)
    if norm is None:
        rgb, x3d = (rng.standard_normal((1, 3, s, s)).astype(np.float32) for _ in range(2))
        feed, ref_in = {"rgb": rgb, "x3d": x3d}, (torch.from_numpy(rgb), torch.from_numpy(x3d))
    else:
        rgb_u8 = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
        vis = rng.random((1, 3, s, s)).astype(np.float32)
        mean = np.asarray(norm[0], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(norm[1], np.float32).reshape(1, 3, 1, 1)
        rgb_n = (rgb_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std
        x3d_n = (vis - mean) / std
        feed = {"rgb": rgb_u8, "x3d": vis}
        ref_in = (torch.from_numpy(rgb_n.astype(np.float32)), torch.from_numpy(x3d_n))
    sess = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(list(OUTPUT_NAMES), feed)
    with torch.inference_mode():
        ref = model.eval()(*ref_in)
    return max(float(np.abs(o - r.numpy()).max()) for o, r in zip(out, ref, strict=True))


def _stats_spec(stats) -> StatsSpec | None:
    if stats is None:
        return None
    data = stats.model_dump() if hasattr(stats, "model_dump") else dict(vars(stats))
    return StatsSpec(**{k: data[k] for k in StatsSpec.model_fields if k in data})


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).is_file():
            raise ExportError(
                f"{out} exists, is not empty and is not a model bundle; choose an empty or new "
                "--out folder"
            )
        # Re-export over an old bundle: its engines were built from the old graph.
        shutil.rmtree(out / "engines", ignore_errors=True)
        for name in (*FILE_NAMES.values(), "model.int8.onnx", "model.int8.trt.onnx"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    fp16: bool = False,
    check: bool = True,
    int8_source: str | None = None,
    int8_frames: int = 64,
    int8_method: str = "minmax",
) -> Path:
    """Export a trained run into a bundle folder and return its path.

    Writes ``model.onnx`` (and ``model.fp16.onnx`` if ``fp16``) and ``manifest.json`` with the
    run's preprocessing, validation score statistics and threshold, provenance and metrics.
    With ``check`` the FP32 graph is compared with torch on one frame and the FP16 graph's
    dtypes are verified; a mismatch raises ``ExportError``. ``int8_source`` (good frames: the
    training set, a folder, a recording, ``synthetic:CATEGORY``) adds the INT8 graphs
    calibrated on ``int8_frames`` of its frames (`export.int8.add_int8`).
    """
    from trainer.run import load_run

    run_dir, out = Path(run_dir), Path(out_dir)
    loaded = load_run(run_dir, device="cpu")
    cfg, info = loaded.info.config, loaded.info
    size = int(info.preprocess.image_size)
    if size != int(cfg.image_size):
        raise ExportError(f"{run_dir}: preprocess image_size {size} != config {cfg.image_size}")
    _prepare_out_dir(out)

    model = loaded.model.eval()
    norm = (tuple(info.preprocess.mean), tuple(info.preprocess.std))
    files = {MODEL_FP32: FILE_NAMES[MODEL_FP32]}
    fp32_path = export_onnx(model, out / files[MODEL_FP32], size, norm=norm)
    if check:
        err = onnx_matches_torch(model, fp32_path, size, norm=norm)
        if not err <= EXPORT_PARITY_TOL:
            raise ExportError(
                f"exported {fp32_path.name} differs from torch by {err:.3g} (> "
                f"{EXPORT_PARITY_TOL}); the graph does not reproduce the model"
            )
        log.info("model.onnx matches torch: max |Δmap| = %.2e", err)
    if fp16:
        files[MODEL_FP16] = FILE_NAMES[MODEL_FP16]
        fp16_path = export_onnx(model, out / files[MODEL_FP16], size, fp16=True, norm=norm)
        if check:
            try:
                check_fp16_graph(fp16_path)
            except ValueError as exc:
                raise ExportError(str(exc)) from exc

    calib = loaded.calibration
    smoothing = SmoothingSpec(sigma=smoothing_sigma(size))  # what edge.processing.scoring will use
    region = cfg.score_region or "frame"  # where the run's threshold was fitted (run.json)
    scoring = ScoringSpec(smoothing=smoothing, region=region)
    if calib is not None:
        scoring = ScoringSpec(
            smoothing=smoothing,
            region=region,
            stats=_stats_spec(calib.stats),
            threshold=float(calib.threshold),
            threshold_method=calib.threshold_method,
            fitted_at=info.created,
            note="validation split of the training run",
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelSpec(
            backbone=cfg.backbone,
            image_size=size,
            modality=info.preprocess.modality,
            variant=f"trd-{cfg.backbone}-{size}-{info.preprocess.modality}",
        ),
        preprocess=info.preprocess.model_dump(mode="json"),
        io=default_io(size),
        files={k: file_entry(out, v) for k, v in files.items()},
        scoring=scoring,
        provenance=Provenance(
            dataset=str(cfg.data_root),
            category=cfg.category,
            epochs=int(info.epochs_done or cfg.epochs),
            seed=cfg.seed,
            git_revision=info.git_revision,
            teacher_weights=str(cfg.teacher_weights),
            run_dir=os.fspath(run_dir.resolve()),
        ),
        metrics=loaded.metrics,
        acquisition=info.acquisition,
    )
    atomic_write_text(out / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
    bundle = load_bundle(out)  # round-trip: what we wrote must load and verify
    if int8_source:
        _add_int8(bundle, int8_source, int8_frames, int8_method)
    return out


def _add_int8(bundle, source: str, frames: int, method: str) -> None:
    from export.int8 import Int8Error, add_int8

    try:
        add_int8(bundle, source, frames, method)
    except Int8Error as exc:
        raise ExportError(str(exc)) from exc
    load_bundle(bundle.path)


def run_export(args) -> int:
    """Handler of ``trd-edge export --run RUN_DIR --out BUNDLE_DIR [--fp16] [--int8
    --calibration-frames SOURCE [--frames N] [--calibration-method M]]``."""
    int8 = bool(getattr(args, "int8", False))
    source = getattr(args, "calibration_frames", None)
    if int8 and not source:
        raise ExportError(
            "--int8 needs --calibration-frames SOURCE: good frames to calibrate on (the "
            "training data root, a folder of good parts, a recording file:REC.db3, or "
            "synthetic:CATEGORY)"
        )
    if source and not int8:
        raise ExportError("--calibration-frames is for --int8; add --int8")
    out = export_bundle(
        args.run,
        args.out,
        fp16=bool(getattr(args, "fp16", False)),
        int8_source=source if int8 else None,
        int8_frames=int(getattr(args, "frames", None) or 64),
        int8_method=getattr(args, "calibration_method", None) or "minmax",
    )
    bundle = load_bundle(out)
    m = bundle.manifest
    print(f"bundle {out} (model {bundle.model_id}, {m.model.variant})")
    for name, entry in m.files.items():
        print(
            f"  {entry.path:<18} {entry.bytes / 1e6:9.1f} MB  sha256 {entry.sha256[:16]}  ({name})"
        )
    if m.quantization is not None:
        q = m.quantization
        print(
            f"  int8: calibrated on {q.calibration_frames} good frames of "
            f"{q.calibration_source} ({q.calibration_method}); FP32: "
            + ", ".join(f"{k} ({len(v)} nodes)" for k, v in q.excluded_nodes.items())
        )
    if m.scoring.threshold is None:
        print("  no score statistics/threshold yet: run calibration before going live")
    return 0


def add_export_args(parser) -> None:
    """Arguments of ``trd-edge export`` (for the CLI's sub-parser)."""
    parser.add_argument("--run", required=True, help="run directory from `trd-edge train`")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument(
        "--fp16", action="store_true", help="also write model.fp16.onnx (FP16 body, FP32 head)"
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (onnxruntime) and model.int8.trt.onnx (TensorRT): "
        "INT8 QDQ body, FP32 normalisation, head and I/O; needs --calibration-frames",
    )
    parser.add_argument(
        "--calibration-frames",
        metavar="SOURCE",
        default=None,
        help="good frames for --int8: the training data root (its train split), a folder of "
        "good parts, a recording (file:REC.db3) or synthetic:CATEGORY",
    )
    parser.add_argument(
        "--frames", type=int, default=64, help="calibration frames for --int8 (default 64)"
    )
    parser.add_argument(
        "--calibration-method",
        choices=["minmax", "entropy", "percentile"],
        default="minmax",
        help="onnxruntime calibration method for --int8 (default minmax)",
    )


def export_model_bundle(
    model: nn.Module,
    out_dir: str | Path,
    image_size: int,
    backbone: str,
    modality: str = "depth",
    fp16: bool = False,
    int8_source: str | None = None,
    int8_frames: int = 16,
    **preprocess,
) -> Path:
    """Bundle a model that has no run directory (benchmarks, tests): graphs + a bare manifest.

    No score statistics, threshold or provenance: not for a station, only for timing/parity.
    ``preprocess``: more `PreprocessConfig` fields (default: the working pipeline).
    ``int8_source``: add the INT8 graphs calibrated on that many frames of this source.
    """
    from edge.processing.preprocess import PreprocessConfig

    out = Path(out_dir)
    _prepare_out_dir(out)
    pre = PreprocessConfig(
        image_size=image_size, modality=modality, **{"pipeline": "working", **preprocess}
    )
    norm = (tuple(pre.mean), tuple(pre.std))
    files = {MODEL_FP32: FILE_NAMES[MODEL_FP32]}
    export_onnx(model, out / files[MODEL_FP32], image_size, norm=norm)
    if fp16:
        files[MODEL_FP16] = FILE_NAMES[MODEL_FP16]
        export_onnx(model, out / files[MODEL_FP16], image_size, fp16=True, norm=norm)
    manifest = Manifest(
        model=ModelSpec(
            backbone=backbone,
            image_size=image_size,
            modality=modality,
            variant=f"trd-{backbone}-{image_size}-{modality}",
        ),
        preprocess=pre.model_dump(mode="json"),
        io=default_io(image_size),
        files={k: file_entry(out, v) for k, v in files.items()},
        provenance=Provenance(dataset="none (untrained model)"),
    )
    atomic_write_text(out / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
    if int8_source:
        _add_int8(load_bundle(out), int8_source, int8_frames, "minmax")
    return out
