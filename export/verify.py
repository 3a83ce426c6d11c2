"""``trd-edge verify``: do all backends give the same maps, scores and verdicts?

Runs every backend it can on the same preprocessed frames (onnxruntime FP32 - the reference -
onnxruntime FP16 and INT8 when the bundle has those graphs, torch when the run is known, TensorRT
when installed with an engine for this GPU), scores them with the bundle's statistics (``edge.processing.scoring``) and compares every pair:
max / mean |Δ raw map|, max |Δ image score| and the number of flipped verdicts
(``score > threshold``), split by direction (``a_only``: a flags, b passes) and, on labelled
frames, the defective frames ``a`` flags that ``b`` passes (``missed_defects``). It agrees when every pair is within the tolerance for its precision
pair and nothing flips. A TensorRT engine that flips a verdict is refused (renamed
``*.plan.refused`` and dropped from the manifest).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.backends.base import Backend, BackendError
from edge.bundle import MODEL_FP16, MODEL_INT8, Bundle, load_bundle, model_inputs
from edge.processing.scoring import (
    ScoreStats,
    StatsAccumulator,
    foreground_region,
    image_scores,
    score_maps,
)

log = logging.getLogger(__name__)

INT8_TOLERANCE = (0.25, 2.0)
# Tolerances per precision pair: raw maps (sum of three 1-cos levels, range [0, 6]) and image
# scores (z-scored with validation std, so "score units" are validation standard deviations).
# FP32 vs FP32 differs only by float reordering (different kernels); FP16 weights/activations
# differ by ~1e-3 relative in the features, which the FP32 head turns into ~1e-3 in the maps.
TOLERANCES: dict[frozenset[str], tuple[float, float]] = {
    frozenset({"fp32"}): (1e-3, 1e-2),
    frozenset({"fp32", "fp16"}): (2e-2, 0.25),
    frozenset({"fp16"}): (2e-2, 0.25),
    # INT8 (QDQ body, FP32 head): quantisation noise in the features, measured in docs/int8.md
    frozenset({"fp32", "int8"}): INT8_TOLERANCE,
    frozenset({"fp16", "int8"}): INT8_TOLERANCE,
    frozenset({"int8"}): INT8_TOLERANCE,
}
REFERENCE = "onnxruntime-fp32"
ALL_BACKENDS = (
    "onnxruntime-fp32",
    "onnxruntime-fp16",
    "onnxruntime-int8",
    "torch-fp32",
    "torch-fp16",
    "tensorrt-fp16",
    "tensorrt-int8",
)


@dataclass
class PairResult:
    a: str
    b: str
    max_abs_map: float
    mean_abs_map: float
    max_abs_score: float
    flipped: int
    n_frames: int
    tol_map: float
    tol_score: float
    a_only: int = 0  # frames a flags and b passes
    b_only: int = 0
    missed_defects: int | None = None  # labelled defective frames a flags and b passes
    good_flips: int | None = None  # labelled good frames whose verdict differs

    @property
    def agree(self) -> bool:
        return (
            self.flipped == 0
            and self.max_abs_map <= self.tol_map
            and self.max_abs_score <= self.tol_score
        )

    def as_dict(self) -> dict:
        return asdict(self) | {"agree": self.agree}


@dataclass
class Frames:
    samples: list  # edge.processing.preprocess.PreparedSample: each backend takes its own input contract
    source: str
    labels: list[int | None] | None = None  # 0 good / 1 defective, where the source knows

    def __len__(self) -> int:
        return len(self.samples)


# --------------------------------------------------------------------------- frames


def synthetic_frames(bundle: Bundle, n: int, seed: int = 0) -> Frames:
    """``n`` synthetic scenes (``edge.datasets.synthetic.SceneGenerator``) preprocessed for ``bundle``.

    Half are good, the rest cycle through the defect types, so verdicts on both sides of the
    threshold are exercised.
    """
    from edge.datasets.synthetic import CATEGORIES, DEFECT_TYPES, SceneGenerator
    from edge.processing.preprocess import preprocess

    cfg = bundle.preprocess_config()
    category = bundle.manifest.provenance.category
    if category not in CATEGORIES:
        category = CATEGORIES[0]
    gen = SceneGenerator(category=category, image_size=max(cfg.image_size, 64), seed=seed)
    samples, labels = [], []
    for i in range(n):
        defect = "good" if i % 2 == 0 else DEFECT_TYPES[(i // 2) % len(DEFECT_TYPES)]
        scene = gen.sample(defect)
        samples.append(preprocess(scene.rgb, scene.xyz, cfg))
        labels.append(int(defect != "good"))
    return Frames(samples, f"synthetic:{category}:seed{seed}", labels)


def _dataset_records(root: Path, category: str):
    from edge.datasets.dataset_io import list_samples

    if (root / category).is_dir():
        return list_samples(root, category, "test")
    if (root / "test").is_dir():  # the category folder itself
        return list_samples(root.parent, root.name, "test")
    raise ValueError(
        f"--frames {root}: expected a dataset root holding {category}/test or a category folder "
        "holding test/"
    )


def folder_frames(bundle: Bundle, root: Path, n: int) -> Frames:
    """Up to ``n`` test samples of a dataset folder (MVTec 3D-AD / Eyecandies layout)."""
    from edge.datasets.dataset_io import load_raw
    from edge.processing.preprocess import preprocess, preprocess_normals_png

    cfg = bundle.preprocess_config()
    records = _dataset_records(root, bundle.manifest.provenance.category)
    # take good and defective samples alike: spread over the sorted list
    idx = np.unique(np.linspace(0, len(records) - 1, min(n, len(records))).round().astype(int))
    samples = []
    for i in idx:
        raw = load_raw(records[i])
        if raw.xyz is not None:
            samples.append(preprocess(raw.rgb, raw.xyz, cfg))
        else:
            samples.append(preprocess_normals_png(raw.rgb, raw.normals, cfg))
    return Frames(samples, f"folder:{root}", [int(records[i].label) for i in idx])


def recording_frames(bundle: Bundle, path: Path, n: int) -> Frames:
    """Up to ``n`` frames of a recording, read through the edge frame sources."""
    from edge.processing.preprocess import preprocess

    try:
        from edge.sources import open_source  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ValueError(
            f"--frames {path}: reading recordings needs edge.sources.open_source, which this "
            "build lacks; pass a dataset folder instead"
        ) from exc
    cfg = bundle.preprocess_config()
    samples = []
    from edge.sources import SourceOptions
    from edge.sources.acquisition import station_options

    # a recording is read as the station reads it: the bundle's depth chain
    options = station_options(SourceOptions(), str(path), bundle.manifest.acquisition,
                              "the bundle")
    with open_source(str(path), options) as source:
        for frame in source:
            samples.append(preprocess(frame.rgb, frame.xyz, cfg))
            if len(samples) >= n:
                break
    if not samples:
        raise ValueError(f"--frames {path}: the recording delivered no frame")
    return Frames(samples, f"recording:{path}")


def load_frames(bundle: Bundle, frames: str | None, n: int, seed: int = 0) -> Frames:
    """Frames for verification: synthetic (default), a dataset folder, or a recording file."""
    if not frames:
        return synthetic_frames(bundle, n, seed)
    path = Path(frames)
    if path.is_dir():
        return folder_frames(bundle, path, n)
    if path.is_file():
        return recording_frames(bundle, path, n)
    raise ValueError(f"--frames {frames}: no such folder or recording file")


# --------------------------------------------------------------------------- backends


def _run_dir(bundle: Bundle, run: str | None) -> Path | None:
    if run:
        return Path(run)
    rd = bundle.manifest.provenance.run_dir
    return Path(rd) if rd and (Path(rd) / "checkpoint.pt").is_file() else None


def make_backend(label: str, bundle: Bundle, run_dir: Path | None) -> Backend:
    """Create one backend by label (``<name>-<precision>``), raising BackendError if impossible."""
    name, _, precision = label.partition("-")
    precision = precision or "fp32"
    if name == "onnxruntime":
        from edge.backends.onnxruntime_backend import OnnxRuntimeBackend

        if precision == "fp16" and not bundle.has_file(MODEL_FP16):
            raise BackendError("bundle has no model.fp16.onnx (export with --fp16)")
        if precision == "int8" and not bundle.has_file(MODEL_INT8):
            raise BackendError(
                "bundle has no model.int8.onnx (export with --int8 --calibration-frames SOURCE)"
            )
        return OnnxRuntimeBackend(bundle, precision=precision)
    if name == "torch":
        if run_dir is None:
            raise BackendError("the run directory is unknown (pass --run RUN_DIR)")
        try:
            import torch
        except ImportError as exc:
            raise BackendError("torch is not installed") from exc
        from export.torch_backend import TorchBackend

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if precision == "fp16" and device == "cpu":
            raise BackendError("torch FP16 is only compared on CUDA (CPU half is a slow emulation)")
        return TorchBackend(run_dir=run_dir, device=device, precision=precision)
    if name == "tensorrt":
        from edge.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, precision=precision)
    raise BackendError(f"unknown backend {label!r}; choose from {', '.join(ALL_BACKENDS)}")


def _expand(requested: list[str] | None) -> list[str]:
    if not requested:
        return list(ALL_BACKENDS)
    out = [REFERENCE]
    for r in requested:
        matches = [b for b in ALL_BACKENDS if b == r or b.startswith(r + "-")]
        if not matches:
            raise ValueError(f"unknown backend {r!r}; choose from {', '.join(ALL_BACKENDS)}")
        out += [m for m in matches if m not in out]
    return out


# --------------------------------------------------------------------------- comparison


def run_backend(backend: Backend, frames: Frames) -> np.ndarray:
    """Raw maps of every frame: (N, 2, S, S) float32 (rgb, 3d)."""
    out = [np.stack(backend.infer(*model_inputs(backend.io, s))) for s in frames.samples]
    return np.stack(out)


def compare(
    a: str,
    b: str,
    maps_a: np.ndarray,
    maps_b: np.ndarray,
    stats: ScoreStats,
    threshold: float,
    labels: list[int | None] | None = None,
    region: np.ndarray | None = None,
) -> PairResult:
    """Compare two backends' raw maps (N,2,S,S) via scores and verdicts.

    ``region`` (N,S,S) bool: the frames' foregrounds when the bundle scores the part
    (``scoring.region``), so scores and flips are the ones the station would see; the map
    differences are over the whole map either way."""
    sa = image_scores(score_maps(maps_a[:, 0], maps_a[:, 1], stats, region=region).fused)
    sb = image_scores(score_maps(maps_b[:, 0], maps_b[:, 1], stats, region=region).fused)
    diff = np.abs(maps_a.astype(np.float64) - maps_b)
    prec = frozenset({a.rpartition("-")[2], b.rpartition("-")[2]})
    tol_map, tol_score = TOLERANCES.get(prec, TOLERANCES[frozenset({"fp16"})])
    fa, fb = sa > threshold, sb > threshold
    missed = good_flips = None
    if labels is not None and all(v is not None for v in labels):
        y = np.asarray(labels)
        missed = int(np.sum(fa & ~fb & (y == 1)))
        good_flips = int(np.sum((fa != fb) & (y == 0)))
    return PairResult(
        a=a,
        b=b,
        max_abs_map=float(diff.max()),
        mean_abs_map=float(diff.mean()),
        max_abs_score=float(np.abs(sa - sb).max()),
        flipped=int(np.sum((sa > threshold) != (sb > threshold))),
        n_frames=len(sa),
        tol_map=tol_map,
        tol_score=tol_score,
        a_only=int(np.sum(fa & ~fb)),
        b_only=int(np.sum(fb & ~fa)),
        missed_defects=missed,
        good_flips=good_flips,
    )


def _refuse_tensorrt(bundle: Bundle, label: str, reason: str) -> None:
    from edge.backends.tensorrt_build import engine_key, gpu_info, import_tensorrt, refuse_engine

    gpu = gpu_info()
    precision = label.rpartition("-")[2]
    key = engine_key(gpu.name, gpu.compute_capability, import_tensorrt().__version__, precision)
    refuse_engine(bundle, key, reason)


@dataclass
class VerifyReport:
    pairs: list[PairResult]
    ran: list[str]
    skipped: dict[str, str]
    threshold: float
    threshold_note: str
    frames: str
    refused: list[str]

    @property
    def agree(self) -> bool:
        return bool(self.pairs) and all(p.agree for p in self.pairs) and not self.refused


def _stats_and_threshold(
    bundle: Bundle, ref_maps: np.ndarray, region: np.ndarray | None = None
) -> tuple[ScoreStats, float, str]:
    stats = bundle.score_stats()
    threshold = bundle.manifest.scoring.threshold
    note = "bundle calibration"
    if stats is None:
        acc = StatsAccumulator()
        acc.add(ref_maps[:, 0], ref_maps[:, 1])
        stats = acc.result(source="verify frames (bundle not calibrated)")
        note = "statistics from the verification frames (bundle not calibrated)"
    if threshold is None:
        ref_scores = image_scores(
            score_maps(ref_maps[:, 0], ref_maps[:, 1], stats, region=region).fused
        )
        threshold = float(np.median(ref_scores))
        note += "; no threshold in the bundle: median reference score used (worst case)"
    return stats, float(threshold), note


def verify(
    bundle: Bundle,
    backends: list[str] | None = None,
    frames: Frames | None = None,
    run_dir: Path | None = None,
    n_frames: int = 8,
) -> VerifyReport:
    """Run the backends on the same frames and compare every pair."""
    frames = frames or load_frames(bundle, None, n_frames)
    maps: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for label in _expand(backends):
        try:
            backend = make_backend(label, bundle, run_dir)
        except (BackendError, ImportError) as exc:
            if label == REFERENCE:
                raise
            skipped[label] = str(exc)
            log.info("verify: skipping %s: %s", label, exc)
            continue
        try:
            maps[label] = run_backend(backend, frames)
        finally:
            backend.close()
    # scores over the region the station scores (scoring.region: the part's foreground)
    region = foreground_region(bundle.manifest.scoring.region,
                               np.stack([s.foreground for s in frames.samples]))
    stats, threshold, note = _stats_and_threshold(bundle, maps[REFERENCE], region)
    pairs = [
        compare(a, b, maps[a], maps[b], stats, threshold, frames.labels, region)
        for a, b in itertools.combinations(list(maps), 2)
    ]
    refused = [
        label
        for label in maps
        if label.startswith("tensorrt") and any(p.flipped and label in (p.a, p.b) for p in pairs)
    ]
    for label in refused:
        worst = max((p for p in pairs if label in (p.a, p.b)), key=lambda p: p.flipped)
        _refuse_tensorrt(bundle, label, f"flips {worst.flipped} verdicts against {worst.a}")
    return VerifyReport(pairs, list(maps), skipped, threshold, note, frames.source, refused)


def format_report(rep: VerifyReport) -> str:
    """A plain-text table of the pairwise comparison."""
    lines = [
        f"frames: {rep.frames} ({rep.pairs[0].n_frames if rep.pairs else 0}); threshold "
        f"{rep.threshold:.4g} ({rep.threshold_note})",
        f"{'a':<18} {'b':<18} {'max|Δmap|':>10} {'mean|Δmap|':>11} {'max|Δscore|':>12} "
        f"{'flipped':>8} {'a only':>6} {'b only':>6} {'missed':>6}  tol(map, score)  ok",
    ]
    for p in rep.pairs:
        missed = "-" if p.missed_defects is None else str(p.missed_defects)
        lines.append(
            f"{p.a:<18} {p.b:<18} {p.max_abs_map:>10.2e} {p.mean_abs_map:>11.2e} "
            f"{p.max_abs_score:>12.2e} {p.flipped:>8} {p.a_only:>6} {p.b_only:>6} {missed:>6}"
            f"  ({p.tol_map:g}, {p.tol_score:g})  {'yes' if p.agree else 'NO'}"
        )
    for label, why in rep.skipped.items():
        lines.append(f"skipped {label}: {why}")
    if any(p.missed_defects for p in rep.pairs):
        lines.append("missed: labelled defective frames that a flags and b passes")
    for label in rep.refused:
        lines.append(f"REFUSED {label}: its engine flips verdicts and was taken out of service")
    lines.append("all backends agree" if rep.agree else "BACKENDS DISAGREE")
    return "\n".join(lines)


def run_verify(args) -> int:
    """Handler of ``trd-edge verify --bundle DIR [--backend ...] [--frames DIR_OR_RECORDING]
    [--json OUT] [--run RUN_DIR] [--n-frames N]``: exit 0 iff every backend agrees."""
    bundle = load_bundle(args.bundle)
    n = int(getattr(args, "n_frames", None) or 8)
    frames = load_frames(bundle, getattr(args, "frames", None), n, seed=0)
    rep = verify(
        bundle,
        backends=getattr(args, "backend", None) or None,
        frames=frames,
        run_dir=_run_dir(bundle, getattr(args, "run", None)),
    )
    print(format_report(rep))
    out = getattr(args, "json_out", None) or getattr(args, "json", None)
    if out:
        Path(out).write_text(json.dumps([p.as_dict() for p in rep.pairs], indent=2) + "\n")
    return 0 if rep.agree else 1


def add_verify_args(parser) -> None:
    """Arguments of ``trd-edge verify`` (for the CLI's sub-parser)."""
    parser.add_argument("--bundle", required=True, help="model bundle folder")
    parser.add_argument(
        "--backend",
        nargs="+",
        default=None,
        help=f"backends to compare with {REFERENCE} (default: all available): "
        + ", ".join(ALL_BACKENDS)
        + " or a family name (onnxruntime, torch, tensorrt)",
    )
    parser.add_argument(
        "--frames",
        default=None,
        help="dataset folder or recording (default: synthetic scenes)",
    )
    parser.add_argument("--n-frames", type=int, default=8, help="frames to compare")
    parser.add_argument("--run", default=None, help="run directory (torch reference)")
    parser.add_argument("--json", dest="json_out", default=None, help="write pair results here")
