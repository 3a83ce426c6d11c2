"""``trd-edge calibrate``: fit a station's score statistics, threshold and geometry record.

    trd-edge calibrate --bundle DIR --camera SOURCE --frames N
        [--target-fpr 0.001 | --f1 LABELLED_DIR] [--backend auto] [--report DIR]

1. Runs the bundle's deployed backend on N good frames from the station's own source (frames
   that the source itself labels defective — replayed test folders, the synthetic camera — are
   skipped and counted).
2. Refits the per-modality statistics on those raw maps (as training did on its validation
   split) and scores the frames with them.
3. Sets the threshold for the target false-alarm rate with a reliability statement
   (`calibration.threshold`), or for best F1 on a labelled MVTec 3D-AD style folder.
4. Records the geometry (depth scale, intrinsics, background plane, working range, holes) and
   compares it with the training data's when that data is reachable.
5. Writes the new calibration into the manifest (the previous one moves to ``history``),
   ``calibration/station.json`` into the bundle (older records under
   ``calibration/history/``), and a report (histogram PNG, scores.csv, report.txt).

Torch-free: runs on the station.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.fit import MapStore, fit_statistics, image_scores
from calibration.geometry import (
    GeometryAccumulator,
    StationRecord,
    compare_geometry,
    scene_lines,
    training_geometry,
)
from calibration.report import CalibrationSummary, text_report, write_report
from calibration.sensitivity import Sensitivity, sensitivity_for
from calibration.threshold import (
    MIN_FRAMES,
    CalibrationError,
    F1Fit,
    ThresholdFit,
    best_f1_threshold,
    fit_threshold,
)
from edge.bundle import Bundle, StatsSpec, atomic_write_text, load_bundle, utc_now
from edge.inspector import Inspector
from edge.processing.scoring import ScoreStats
from edge.sources import FrameTimeout, SourceError, SourceIdle, SourceOptions, open_source
from edge.sources.acquisition import station_options

__all__ = ["CalibrationResult", "add_calibrate_args", "calibrate", "run_calibrate"]

log = logging.getLogger(__name__)

STATION_FILE = "calibration/station.json"
MAX_TIMEOUTS = 6  # consecutive read timeouts (5 s each) before giving up on a live camera
# Placeholder normalisation so a bundle without statistics can still run through `Inspector`;
# only its prepare/infer steps are used here, never its scores.
_PLACEHOLDER = ScoreStats(
    rgb_mean=0.0, rgb_std=1.0, x3d_mean=0.0, x3d_std=1.0, n_maps=0, source="placeholder"
)


@dataclass
class CalibrationResult:
    """What one calibration produced (also what the tests look at)."""

    stats: ScoreStats
    threshold: float
    method: str
    fit: ThresholdFit | F1Fit
    scores: np.ndarray
    record: StationRecord
    summary: CalibrationSummary
    written: list[Path]


def _open_inspector(bundle: Bundle, backend_spec: str) -> Inspector:
    from edge.backends import create_backend
    from edge.commands.bench import parse_backend_spec

    name, opts = parse_backend_spec(backend_spec)
    backend = create_backend(name, bundle, **opts)
    return Inspector(bundle, backend, stats=_PLACEHOLDER, threshold=math.inf)


def _collect(
    inspector: Inspector,
    camera: str,
    n_frames: int,
    store: MapStore,
    geometry: GeometryAccumulator | None,
    options: SourceOptions | None,
    want_label: int | None = 0,
) -> tuple[int, int, list[int]]:
    """Run frames from ``camera`` into ``store``; returns (skipped defective, unusable, labels).

    ``want_label`` 0 keeps good frames only (skips frames the source labels 1); None keeps every
    frame and requires a label on each (F1 mode).
    """
    skipped = unusable = timeouts = 0
    idle_said = False
    labels: list[int] = []
    try:
        options = station_options(options or SourceOptions(), camera,
                                  inspector.bundle.manifest.acquisition,
                                  f"bundle {inspector.bundle.path.name}")
        source = open_source(camera, options)
        inspector.attach(source)  # registered at the bundle's working grid, as at the station
        source.open()
    except (SourceError, ValueError, OSError) as exc:
        raise CalibrationError(f"cannot open --camera {camera!r}: {exc}") from exc
    try:
        while store.count < n_frames:
            try:
                frame = source.read(timeout_s=5.0)
            except SourceIdle:  # an averaging camera: one frame per stop, this part has its own
                timeouts = 0  # frames do arrive
                if not idle_said:
                    idle_said = True
                    log.info("waiting for the next part: averaging gives one frame per stop "
                             "(camera.realsense.average_mode per-stop); move parts through")
                continue
            except FrameTimeout as exc:
                timeouts += 1
                if timeouts >= MAX_TIMEOUTS:
                    raise CalibrationError(
                        f"--camera {camera!r} delivered no frame for {5 * timeouts} s after "
                        f"{store.count} frames; check the camera and its cable"
                    ) from exc
                continue
            except SourceError as exc:
                raise CalibrationError(
                    f"--camera {camera!r} failed after {store.count} frames: {exc}"
                ) from exc
            timeouts = 0
            if frame is None:
                raise CalibrationError(
                    f"--camera {camera!r} ended after {store.count} usable frames "
                    f"({skipped} defective skipped, {unusable} unusable) but --frames asks for "
                    f"{n_frames}; record more good parts or lower --frames "
                    f"(at least {MIN_FRAMES})"
                )
            label = frame.meta.get("label")
            if want_label is None:
                if label is None:
                    raise CalibrationError(
                        f"frame {frame.frame_number} of {camera!r} has no label: the --f1 folder "
                        "must use the MVTec 3D-AD layout <category>/test/<good|defect>/rgb,xyz"
                    )
            elif label is not None and int(label) != want_label:
                skipped += 1
                if skipped > 20 * n_frames:
                    raise CalibrationError(f"{camera!r} delivers almost only defective frames")
                continue
            try:
                sample, _ = inspector.prepare(frame)
            except ValueError as exc:
                unusable += 1
                log.warning("frame %s unusable: %s", frame.frame_number, exc)
                if unusable > max(10, n_frames):
                    raise CalibrationError(
                        f"{unusable} frames of {camera!r} could not be preprocessed (last: "
                        f"{exc}); check the camera's depth stream"
                    ) from exc
                continue
            if geometry is not None:
                geometry.add(frame)
            m_rgb, m_3d, _ = inspector.infer(sample)
            store.add(m_rgb, m_3d, sample.foreground)
            if label is not None:
                labels.append(int(label))
            if store.count % max(1, n_frames // 10) == 0:
                log.info("calibration: %d / %d frames", store.count, n_frames)
    finally:
        source.close()
    return skipped, unusable, labels


def calibrate(
    bundle_dir: str | Path,
    camera: str,
    frames: int,
    target_fpr: float = 0.001,
    f1_dir: str | None = None,
    backend: str = "auto",
    report_dir: str | Path | None = None,
    method: str = "quantile",
    confidence: float = 0.95,
    write: bool = True,
    source_options: SourceOptions | None = None,
    compare_training: bool = True,
    expected_dent_m: float | None = None,
    expected_diameter_m: float | None = None,
) -> CalibrationResult:
    """Calibrate a bundle on a station source (see the module docstring); returns the result.

    ``expected_dent_m``: depth of the shallowest geometry defect the part must be checked for;
    the report warns when the measured depth noise hides it (`calibration.sensitivity`: found in
    90 % of dented parts at ``target_fpr``, for dents ``expected_diameter_m`` across or, without
    it, the measured 10–15 mm; with ``f1_dir`` the AUROC curves).

    Raises `CalibrationError` (a ValueError) with the fix for: fewer than `MIN_FRAMES` frames,
    a source that cannot be opened or ends early, a labelled set without both classes.
    """
    if frames < MIN_FRAMES:
        raise CalibrationError(
            f"--frames {frames} is too few: at least {MIN_FRAMES} good frames are needed "
            f"(a {target_fpr:g} false-alarm rate is only measured with about "
            f"{int(math.ceil(1 / target_fpr))})"
        )
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    pre = m.preprocess
    inspector = _open_inspector(bundle, backend)
    desc = inspector.backend.describe()
    backend_label = f"{inspector.backend.name}-{desc.get('precision', 'fp32')}"
    size = bundle.image_size
    geo = GeometryAccumulator(
        float(pre.get("plane_distance", 0.005)),
        int(pre.get("closing_iterations", 3)),
        every=max(1, frames // 100),
    )
    prev_stats = bundle.score_stats()
    prev_thr, prev_method = m.scoring.threshold, m.scoring.threshold_method
    labelled_scores = labelled_labels = None
    try:
        with MapStore(frames, size) as store:
            skipped, unusable, _ = _collect(
                inspector, camera, frames, store, geo, source_options, want_label=0
            )
            try:
                # the bundle's fusion stays; "max" is re-fitted on these good frames too
                stats = fit_statistics(store, f"station:{camera}",
                                       prev_stats.fusion if prev_stats is not None else "sum",
                                       inspector.region)
            except ValueError as exc:
                raise CalibrationError(f"cannot normalise the station maps: {exc}") from exc
            # over the same region the station scores (scoring.region)
            scores = image_scores(store, stats, inspector.region)
            prev_scores = (image_scores(store, prev_stats, inspector.region)
                           if prev_stats is not None else None)
        if f1_dir is None:
            fit: ThresholdFit | F1Fit = fit_threshold(scores, target_fpr, method, confidence)
            thr = fit.threshold
            method_str = f"station-fpr-{fit.method}(target={target_fpr:g},n={fit.n_frames})"
            statement = fit.statement
        else:
            labelled_scores, labelled_labels = _score_labelled(inspector, f1_dir, stats, size)
            fit = best_f1_threshold(labelled_scores, labelled_labels)
            thr = fit.threshold
            method_str = f"station-f1(good={fit.n_good},defect={fit.n_defect})"
            statement = (
                f"{fit.statement}; {float((scores > thr).mean()):.2%} of the {frames} station "
                "good frames are above it"
            )
    finally:
        inspector.backend.close()

    station_geo = geo.result()
    training, training_note = None, "not compared (--no-compare)"
    if compare_training:
        training, training_note = training_geometry(
            m.provenance.dataset, m.provenance.category, pre
        )
    plane_cut = float(pre.get("plane_distance", 0.005))
    warnings = (
        compare_geometry(station_geo, training, plane_cut)
        if station_geo
        else ["no frame gave a background plane: geometry not recorded"]
    )
    sensitivity: Sensitivity | None = None
    if station_geo is not None and station_geo.depth_noise_rms_m is not None:
        sensitivity = sensitivity_for(
            station_geo.depth_noise_rms_m, expected_dent_m,
            target_fpr=target_fpr if f1_dir is None else None,
            expected_diameter_m=expected_diameter_m,
        )
        if (w := sensitivity.warning()) is not None:
            warnings.append(w)
    elif expected_dent_m is not None:
        warnings.append(
            "the depth noise could not be measured (too little flat background around the "
            "part), so whether the expected geometry defects are visible is unknown"
        )
    intr = geo.intrinsics
    record = StationRecord(
        fitted_at=utc_now(),
        source=camera,
        depth_scale=getattr(intr, "depth_scale", None),
        intrinsics=(
            {k: float(getattr(intr, k)) for k in ("fx", "fy", "cx", "cy", "width", "height")}
            if intr is not None
            else None
        ),
        preprocess={
            k: pre[k]
            for k in (
                "image_size",
                "modality",
                "plane_distance",
                "closing_iterations",
                "fill_iterations",
            )
            if k in pre
        },
        station=station_geo,
        training=training,
        training_note=training_note,
        warnings=warnings,
        sensitivity=sensitivity.model_dump() if sensitivity is not None else None,
        calibration={
            "threshold": thr,
            "threshold_method": method_str,
            "backend": backend_label,
            "frames": frames,
            "skipped_defective": skipped,
            "unusable": unusable,
            "fit": fit.as_dict(),
            "stats": stats.model_dump(),
        },
    )
    summary = CalibrationSummary(
        bundle=str(bundle.path),
        source=camera,
        backend=backend_label,
        n_frames=frames,
        skipped_defective=skipped,
        scores=scores,
        threshold=thr,
        method=method_str,
        statement=statement,
        stats=stats.model_dump(),
        region=inspector.region,
        previous_threshold=prev_thr,
        previous_method=prev_method,
        previous_scores=prev_scores,
        labelled_scores=labelled_scores,
        labelled_labels=labelled_labels,
        geometry_lines=[
            *(scene_lines(station_geo) if station_geo else []),
            *(sensitivity.lines() if sensitivity is not None else []),
            f"  training geometry: {training_note}",
        ],
        warnings=list(warnings),
    )
    written: list[Path] = []
    if write:
        bundle.record_calibration(
            StatsSpec(**stats.model_dump()),
            thr,
            method_str,
            note=f"{camera}, {frames} good frames, {backend_label}: {statement}",
        )
        written.append(bundle.save_manifest())
        written.append(_write_station_record(bundle.path, record))
        summary.files = [str(p) for p in written]
    folder = (
        Path(report_dir)
        if report_dir is not None
        else (bundle.path / "calibration" if write else None)
    )
    if folder is not None:
        written += write_report(summary, folder)
    return CalibrationResult(stats, thr, method_str, fit, scores, record, summary, written)


def _score_labelled(
    inspector: Inspector, folder: str, stats: ScoreStats, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and labels of every frame of a labelled MVTec 3D-AD style folder."""
    from edge.sources.folder import discover

    path = folder.removeprefix("folder:")
    try:
        n = len(discover(path))
    except (SourceError, ValueError, OSError) as exc:
        raise CalibrationError(f"--f1 {folder}: {exc}") from exc
    with MapStore(n, size) as store:
        try:
            _, _, labels = _collect(
                inspector, f"folder:{path}", n, store, None, None, want_label=None
            )
        except CalibrationError as exc:
            if "ended after" not in str(exc):
                raise
            raise CalibrationError(f"--f1 {folder}: some frames could not be read") from exc
        scores = image_scores(store, stats, inspector.region)
    return scores, np.asarray(labels, dtype=int)


def _write_station_record(bundle_path: Path, record: StationRecord) -> Path:
    """Write ``calibration/station.json``; an existing record moves to ``calibration/history``."""
    path = bundle_path / STATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        hist = path.parent / "history"
        hist.mkdir(exist_ok=True)
        stamp = utc_now().replace(":", "").replace("+", "Z")
        target = hist / f"station-{stamp}.json"
        i = 1
        while target.exists():
            target = hist / f"station-{stamp}-{i}.json"
            i += 1
        path.replace(target)
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")
    return path


def add_calibrate_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trd-edge calibrate``."""
    parser.add_argument("--bundle", required=True, help="model bundle folder")
    parser.add_argument(
        "--camera",
        required=True,
        help="station source of GOOD parts: "
        "realsense[:SERIAL] | file:PATH.db3 | folder:DIR | synthetic[:CATEGORY]",
    )
    parser.add_argument(
        "--frames",
        type=int,
        required=True,
        help=f"good frames to use (>= {MIN_FRAMES}; ~1/target-fpr to measure "
        "the target, ~3/target-fpr for a 95 %% guarantee)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--target-fpr",
        type=float,
        default=0.001,
        help="false-alarm rate on good parts (default 0.001)",
    )
    mode.add_argument(
        "--f1",
        metavar="LABELLED_DIR",
        default=None,
        help="set the threshold for best F1 on this labelled MVTec 3D-AD style "
        "folder (good/ and defect sub-folders) instead",
    )
    parser.add_argument(
        "--method",
        choices=["quantile", "conservative"],
        default="quantile",
        help="quantile: expected FPR = target; conservative: FPR <= target with "
        "--confidence (needs more frames)",
    )
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--expected-dent-mm",
        type=float,
        default=None,
        help="depth of the shallowest dent/bump the part must be checked for: the report "
        "warns when the measured depth noise hides it (docs/sensor-model.md)",
    )
    parser.add_argument(
        "--expected-dent-diameter-mm",
        type=float,
        default=None,
        help="diameter of those dents/bumps (default: read at the measured 10-15 mm); the "
        "smallest depth the station finds at --target-fpr depends on it (docs/sensor-model.md)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="auto | onnxruntime | onnxruntime-fp16 | tensorrt (the one the station runs)",
    )
    parser.add_argument("--report", default=None, help="report folder (default BUNDLE/calibration)")
    parser.add_argument(
        "--dry-run", action="store_true", help="report only; leave the bundle unchanged"
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="do not look for the training data to compare geometry",
    )


def run_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``trd-edge calibrate``; prints the report, returns 0."""
    result = calibrate(
        args.bundle,
        args.camera,
        args.frames,
        target_fpr=args.target_fpr,
        f1_dir=args.f1,
        backend=args.backend,
        report_dir=args.report,
        method=args.method,
        confidence=args.confidence,
        write=not args.dry_run,
        compare_training=not args.no_compare,
        expected_dent_m=(args.expected_dent_mm / 1e3 if args.expected_dent_mm is not None
                         else None),
        expected_diameter_m=(args.expected_dent_diameter_mm / 1e3
                             if args.expected_dent_diameter_mm is not None else None),
    )
    print(text_report(result.summary))
    return 0
