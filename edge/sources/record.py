"""``trd-edge record``: collect a station's own training set from any frame source.

Frames are written in the MVTec 3D-AD layout that training reads (`edge.datasets.dataset_io`)::

    <out>/<category>/<split>/good/rgb/NNN.png     (8-bit RGB)
    <out>/<category>/<split>/good/xyz/NNN.tiff    (float32 H×W×3 metres, zeros = no return)

Numbering continues after the files already there, so several sessions add up. Every
recorded frame is taken to show a good part (the operator records good parts); frames whose
source knows they are defective (synthetic camera, dataset replay: ``meta["label"] == 1``) are
skipped and counted. With ``--raw`` a live RealSense session is also recorded to
``<out>/recordings/<category>-<split>-<time>.db3`` (``rs.config.enable_record_to_file``), kept
outside the dataset tree so that dataset readers never see it.

``<out>/<category>/calibration/acquisition.json`` records how the depth was acquired
(`edge.sources.acquisition`: the RealSense filters and frames averaged the source applied;
nothing for folder replays and the synthetic camera); training copies it into the bundle and
the station repeats it. A session whose chain differs from the one already recorded in the
data set is refused: one data set, one acquisition chain.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from edge.frames import Frame
from edge.sources import SourceError, SourceOptions, open_source, parse_spec
from edge.sources.acquisition import (
    ACQUISITION_FILE,
    chain_settings,
    read_acquisition,
    source_acquisition,
    write_acquisition,
)

__all__ = ["add_record_arguments", "next_index", "run_record", "write_sample"]

log = logging.getLogger(__name__)


def add_record_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `trd-edge record` options to ``parser`` (for the CLI to wire to `run_record`)."""
    parser.add_argument(
        "--camera",
        required=True,
        help="frame source: realsense[:SERIAL] | file:PATH.db3 | folder:DIR | "
        "synthetic[:CATEGORY], optionally with ?key=value overrides",
    )
    parser.add_argument("--out", required=True, help="dataset root to write into")
    parser.add_argument("--frames", type=int, default=100, help="good frames to write")
    parser.add_argument(
        "--category", default="station", help="category folder name (default: station)"
    )
    parser.add_argument("--split", choices=["train", "validation"], default="train")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="live RealSense only: also keep the raw session as a .db3 recording",
    )
    return parser


def next_index(type_dir: Path) -> int:
    """First free sample number in ``type_dir/rgb`` (one past the highest numeric name)."""
    numbers = [int(p.stem) for p in (type_dir / "rgb").glob("*.png") if p.stem.isdigit()]
    return max(numbers, default=-1) + 1


def write_sample(type_dir: Path, index: int, frame: Frame) -> tuple[Path, Path]:
    """Write one frame as ``rgb/NNN.png`` + ``xyz/NNN.tiff`` under ``type_dir``."""
    name = f"{index:03d}"
    rgb_path = type_dir / "rgb" / f"{name}.png"
    xyz_path = type_dir / "xyz" / f"{name}.tiff"
    rgb_path.parent.mkdir(parents=True, exist_ok=True)
    xyz_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(rgb_path), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {rgb_path}; check the disk and permissions")
    # Three contiguous float32 samples per pixel, as MVTec 3D-AD stores its xyz TIFFs.
    tifffile.imwrite(xyz_path, np.ascontiguousarray(frame.xyz, dtype=np.float32), photometric="rgb")
    return rgb_path, xyz_path


def _options(args: argparse.Namespace, spec: str, out: Path) -> SourceOptions:
    options = SourceOptions()
    if not getattr(args, "raw", False):
        return options
    kind, _, _ = parse_spec(spec)
    if kind != "realsense":
        log.warning("--raw keeps a .db3 only for a live RealSense; ignored for %s", spec)
        return options
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = out / "recordings" / f"{args.category}-{args.split}-{stamp}.db3"
    rs_opts = options.realsense.model_copy(update={"record_to": raw})
    log.info("raw session recorded to %s", raw)
    return options.model_copy(update={"realsense": rs_opts})


def _chain_conflict(category_dir: Path, acquisition) -> str | None:
    """Why this session may not add to the data set (its recorded chain differs), or None."""
    if not (category_dir / "calibration" / ACQUISITION_FILE).is_file():
        return None
    before = read_acquisition(category_dir)
    old = chain_settings(before.filters, before.average_frames)
    new = chain_settings(acquisition.filters, acquisition.average_frames)
    if old == new:
        return None
    return (f"{category_dir} was recorded with {before.describe()} ({before.source}) but this "
            f"session applies {acquisition.describe()}: one data set holds one depth "
            "acquisition chain; record into another --out/--category, or set the same "
            "camera.realsense filters and average_frames (?key=value)")


def run_record(args: argparse.Namespace) -> int:
    """Handler of ``trd-edge record``; returns the process exit code (0 ok, 1 failed, 2 usage).

    Expects ``args.camera``, ``args.out``, ``args.frames``, ``args.category``, ``args.split``,
    ``args.raw`` (see `add_record_arguments`).
    """
    from tqdm import tqdm

    if args.frames <= 0:
        print(f"trd-edge record: --frames must be positive, got {args.frames}")
        return 2
    if args.split not in ("train", "validation"):
        print(f"trd-edge record: --split must be train or validation, got {args.split!r}")
        return 2
    out = Path(args.out).expanduser()
    type_dir = out / args.category / args.split / "good"
    start = next_index(type_dir)
    written = skipped = 0
    source = None
    try:
        options = _options(args, args.camera, out)
        acquisition = source_acquisition(args.camera, options)
        problem = _chain_conflict(out / args.category, acquisition)
        if problem:
            print(f"trd-edge record: {problem}")
            return 2
        source = open_source(args.camera, options)
        with source, tqdm(total=args.frames, desc="record", unit="frame") as bar:
            for frame in source:
                if frame.meta.get("label") == 1:
                    skipped += 1
                    continue
                write_sample(type_dir, start + written, frame)
                written += 1
                bar.update(1)
                if written >= args.frames:
                    break
    except SourceError as exc:
        print(f"trd-edge record: {exc}")
        return 1
    except ValueError as exc:  # a bad ?key=value of the camera spec
        print(f"trd-edge record: {exc}")
        return 2
    except KeyboardInterrupt:
        print(f"trd-edge record: interrupted after {written} frames")
    if written:
        path = write_acquisition(out / args.category,
                                 source_acquisition(args.camera, options, source))
        print(f"depth acquisition: {acquisition.describe()} ({acquisition.source}), "
              f"recorded in {path}")
    summary = (
        f"wrote {written} good frames to {type_dir} (numbers {start:03d}..{start + written - 1:03d})"
        if written
        else f"wrote no frames to {type_dir}"
    )
    if skipped:
        summary += f"; skipped {skipped} frames the source marks defective"
    print(summary)
    if source is not None:
        stats = source.stats
        print(
            f"source: {stats.frames} frames, {stats.errors} errors, {stats.dropped} dropped, "
            f"{stats.reconnects} reconnects"
        )
    if written < args.frames:
        print(f"trd-edge record: the source ended after {written} of {args.frames} frames")
        return 1 if written == 0 else 0
    return 0
