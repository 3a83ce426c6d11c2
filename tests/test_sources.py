"""Frame sources without hardware: Frame checks, spec parsing, synthetic camera, folder replay,
the base-class error policy and `trd-edge record`."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edge.frames import Frame, Intrinsics
from edge.sources import (
    FrameError,
    FrameSource,
    SourceError,
    SourceOptions,
    open_source,
    parse_spec,
)
from edge.sources.folder import FolderSource
from edge.sources.synthetic import SyntheticSource


def _frame(h: int = 4, w: int = 5, **kw) -> Frame:
    return Frame(
        rgb=np.zeros((h, w, 3), np.uint8), xyz=np.zeros((h, w, 3), np.float32), frame_number=0, **kw
    )


# -- Frame -----------------------------------------------------------------------------------


def test_frame_checks_shapes_and_dtypes() -> None:
    assert _frame().size == (4, 5)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        Frame(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.float32), 0)
    with pytest.raises(ValueError, match="xyz must be float32"):
        Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float64), 0)
    with pytest.raises(ValueError, match="organised H×W×3"):
        Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((16, 3), np.float32), 0)
    with pytest.raises(ValueError, match="differ in size"):
        Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.float32), 0)


def test_intrinsics_validate_and_scale() -> None:
    with pytest.raises(ValueError, match="positive focal"):
        Intrinsics(fx=0, fy=1, cx=0, cy=0, width=4, height=4)
    intr = Intrinsics(fx=100, fy=100, cx=31.5, cy=23.5, width=64, height=48)
    half = intr.scaled(32, 24)
    assert (half.fx, half.cx, half.cy) == (50, 15.5, 11.5)  # centre of the image stays centre


# -- spec parsing ----------------------------------------------------------------------------


def test_parse_spec_kinds_and_overrides(tmp_path: Path) -> None:
    assert parse_spec("realsense") == ("realsense", "", {})
    assert parse_spec("realsense:0123?fps=15") == ("realsense", "0123", {"fps": "15"})
    assert parse_spec("file:/a/b.db3") == ("file", "/a/b.db3", {})
    assert parse_spec("/a/b.bag") == ("file", "/a/b.bag", {})
    assert parse_spec(str(tmp_path)) == ("folder", str(tmp_path), {})
    assert parse_spec("synthetic:bracket?defect_rate=0.5&seed=3") == (
        "synthetic",
        "bracket",
        {"defect_rate": "0.5", "seed": "3"},
    )
    with pytest.raises(SourceError, match="unknown camera spec"):
        parse_spec("webcam")
    with pytest.raises(SourceError, match="folder needs a path"):
        parse_spec("folder:")


def test_open_source_applies_options_and_rejects_unknown_keys() -> None:
    cfg = SourceOptions()
    cfg.synthetic.size = 48
    source = open_source("synthetic:bracket?defect_rate=0.5&seed=3", cfg)
    assert isinstance(source, SyntheticSource)
    opts = source.options
    assert (opts.category, opts.defect_rate, opts.seed, opts.size) == ("bracket", 0.5, 3, 48)
    rs_source = open_source("realsense:0042?fps=15&decimation=3")
    assert rs_source.options.serial == "0042" and rs_source.options.fps == 15
    assert rs_source.options.filters.decimation == 3
    with pytest.raises(SourceError, match="unknown option.*colour.*valid:.*defect_rate"):
        open_source("synthetic?colour=red")
    with pytest.raises(SourceError, match="defect_rate"):
        open_source("synthetic?defect_rate=2")


# -- base class ------------------------------------------------------------------------------


class _Scripted(FrameSource):
    """Yields frames per a script: 'f' a frame, 'e' a bad frame, then ends."""

    name = "scripted"

    def __init__(self, script: str, **kw) -> None:
        super().__init__(**kw)
        self.script = list(script)
        self.closed = 0

    def _open(self) -> None:
        pass

    def _grab(self, timeout_s: float) -> Frame | None:
        if not self.script:
            return None
        if self.script.pop(0) == "e":
            raise FrameError("corrupt")
        return _frame()

    def _close(self) -> None:
        self.closed += 1


def test_bad_frames_are_counted_and_skipped() -> None:
    source = _Scripted("fefeef")
    with source:
        frames = list(source)
        assert source.read() is None  # stays ended
    assert len(frames) == 3
    assert (source.stats.frames, source.stats.errors) == (3, 3)
    assert all(f.source == "scripted" for f in frames)
    assert source.closed == 1 and not source.is_open


def test_consecutive_bad_frames_limit_and_read_before_open() -> None:
    source = _Scripted("feeef", max_consecutive_errors=3)
    with pytest.raises(SourceError, match="not open"):
        source.read()
    with source:
        assert source.read() is not None
        with pytest.raises(SourceError, match="3 unusable frames in a row"):
            source.read()


# -- synthetic camera ------------------------------------------------------------------------


def test_synthetic_defect_rate_and_truth() -> None:
    source = open_source("synthetic:puck?defect_rate=0.3&seed=5&size=32&max_frames=300")
    with source:
        frames = list(source)
    assert len(frames) == 300 and source.stats.frames == 300
    labels = np.array([f.meta["label"] for f in frames])
    assert 0.22 < labels.mean() < 0.38
    types = {f.meta["defect_type"] for f in frames}
    assert types == {"good", "color", "geometry", "both"}
    for f in frames:
        assert f.meta["label"] == (f.meta["defect_type"] != "good")
        assert f.rgb.shape == (32, 32, 3) and f.xyz.dtype == np.float32
        assert f.xyz[..., 2].max() > 0
    assert [f.frame_number for f in frames] == list(range(300))
    assert frames[0].intrinsics is not None and frames[0].intrinsics.width == 32


def test_synthetic_is_reproducible_and_rates_at_the_extremes() -> None:
    def run(spec: str) -> list[Frame]:
        with open_source(spec) as src:
            return list(src)

    a = run("synthetic?seed=2&size=32&max_frames=5&defect_rate=0.5")
    b = run("synthetic?seed=2&size=32&max_frames=5&defect_rate=0.5")
    assert [f.meta for f in a] == [f.meta for f in b]
    assert all(np.array_equal(x.xyz, y.xyz) for x, y in zip(a, b, strict=True))
    assert all(f.meta["label"] == 0 for f in run("synthetic?size=32&max_frames=20&defect_rate=0"))
    assert all(f.meta["label"] == 1 for f in run("synthetic?size=32&max_frames=20&defect_rate=1"))


def test_synthetic_fps_paces_frames() -> None:
    with open_source("synthetic?size=32&fps=50&max_frames=6") as src:
        start = time.monotonic()
        frames = list(src)
        elapsed = time.monotonic() - start
    assert len(frames) == 6
    assert elapsed >= 5 / 50 * 0.9


def test_synthetic_unknown_category_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="unknown synthetic category"):
        open_source("synthetic:teapot?size=32").open()


# -- folder replay ---------------------------------------------------------------------------


def _expected_test_count(root: Path) -> int:
    return len(list((root / "puck" / "test").glob("*/rgb/*.png")))


def test_folder_replays_a_category_in_order_with_truth(tiny_dataset: Path) -> None:
    from edge.datasets.dataset_io import list_samples, load_raw

    source = open_source(f"folder:{tiny_dataset / 'puck'}?split=test")
    with source:
        frames = list(source)
    records = list_samples(tiny_dataset, "puck", "test")
    assert len(frames) == len(records) == _expected_test_count(tiny_dataset)
    for frame, rec in zip(frames, records, strict=True):
        assert frame.meta["label"] == rec.label
        assert frame.meta["defect_type"] == rec.defect_type
        assert frame.meta["split"] == "test" and frame.meta["category"] == "puck"
        raw = load_raw(rec)
        np.testing.assert_array_equal(frame.rgb, raw.rgb)
        np.testing.assert_array_equal(frame.xyz, raw.xyz)
    assert [f.frame_number for f in frames] == list(range(len(frames)))
    assert {f.meta["label"] for f in frames} == {0, 1}


def test_folder_all_splits_and_type_dir(tiny_dataset: Path) -> None:
    with open_source(f"folder:{tiny_dataset / 'puck'}") as src:
        splits = [f.meta["split"] for f in src]
    assert splits == sorted(splits, key=["train", "validation", "test"].index)
    assert len(splits) == len(list((tiny_dataset / "puck").glob("*/*/rgb/*.png")))
    type_dir = tiny_dataset / "puck" / "test" / "geometry"
    with FolderSource(type_dir) as src:
        frames = list(src)
    assert len(frames) == len(list((type_dir / "rgb").glob("*.png")))
    assert all(f.meta["defect_type"] == "geometry" and f.meta["label"] == 1 for f in frames)
    assert [f.meta["name"] for f in frames] == sorted(f.meta["name"] for f in frames)


def test_folder_any_tree_and_loop(tmp_path: Path, tiny_dataset: Path) -> None:
    plain = tmp_path / "captures" / "day1"
    shutil.copytree(tiny_dataset / "puck" / "train" / "good", plain)
    n = len(list((plain / "rgb").glob("*.png")))
    with open_source(f"folder:{tmp_path / 'captures'}?loop=true") as src:
        frames = [src.read() for _ in range(n + 2)]
    assert [f.meta["name"] for f in frames[n:]] == [frames[0].meta["name"], frames[1].meta["name"]]
    assert "label" not in frames[0].meta  # nothing in this layout says good or bad


def test_folder_corrupt_file_is_counted_and_replay_continues(tmp_path: Path, tiny_dataset: Path):
    tree = tmp_path / "puck_copy" / "test" / "good"
    shutil.copytree(tiny_dataset / "puck" / "test" / "good", tree)
    xyz_files = sorted((tree / "xyz").glob("*.tiff"))
    xyz_files[1].write_bytes(b"this is not a tiff")
    with open_source(f"folder:{tree}") as src:
        frames = list(src)
        stats = src.stats
    assert stats.errors == 1
    assert len(frames) == len(xyz_files) - 1
    assert frames[-1].meta["name"] == xyz_files[-1].stem


def test_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"folder:{tmp_path / 'missing'}").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no rgb/\\*.png \\+ xyz/\\*.tiff pairs"):
        open_source(f"folder:{tmp_path / 'empty'}").open()
    lonely = tmp_path / "lonely"
    (lonely / "rgb").mkdir(parents=True)
    (lonely / "xyz").mkdir()
    (lonely / "rgb" / "000.png").write_bytes(b"")
    with pytest.raises(SourceError, match="no matching xyz/000.tiff"):
        open_source(f"folder:{lonely}").open()


# -- trd-edge record -------------------------------------------------------------------------


def _record_args(out: Path, camera: str, frames: int, **kw) -> argparse.Namespace:
    base = dict(camera=camera, out=str(out), frames=frames, category="station", split="train")
    return argparse.Namespace(raw=False, **(base | kw))


def test_record_writes_good_frames_that_list_samples_reads(tmp_path: Path, capsys) -> None:
    from edge.datasets.dataset_io import list_samples, load_raw
    from edge.sources.record import run_record

    camera = "synthetic?size=32&defect_rate=0.5&seed=1"
    assert run_record(_record_args(tmp_path, camera, 6)) == 0
    assert "skipped" in capsys.readouterr().out  # defective parts are not training data
    records = list_samples(tmp_path, "station", "train")
    assert [r.name for r in records] == [f"{i:03d}" for i in range(6)]
    assert all(r.label == 0 and r.defect_type == "good" for r in records)
    # What was written is what the (reproducible) camera produced for its good frames.
    with open_source(camera) as src:
        good = [f for f in (src.read() for _ in range(40)) if f.meta["label"] == 0][:6]
    for rec, frame in zip(records, good, strict=True):
        raw = load_raw(rec)
        np.testing.assert_array_equal(raw.rgb, frame.rgb)
        np.testing.assert_array_equal(raw.xyz, frame.xyz)
    # A second session appends after the existing numbers, into another split too.
    assert run_record(_record_args(tmp_path, camera, 2)) == 0
    assert len(list_samples(tmp_path, "station", "train")) == 8
    assert run_record(_record_args(tmp_path, camera, 2, split="validation")) == 0
    assert len(list_samples(tmp_path, "station", "validation")) == 2


def test_record_reports_source_problems(tmp_path: Path, capsys) -> None:
    from edge.sources.record import run_record

    assert run_record(_record_args(tmp_path, f"folder:{tmp_path / 'nope'}", 3)) == 1
    assert "does not exist" in capsys.readouterr().out
    assert run_record(_record_args(tmp_path, "synthetic?size=32", 0)) == 2
    # A finite source that ends early: what there is gets written, and it says so.
    spec = "synthetic?size=32&max_frames=3&defect_rate=0"
    assert run_record(_record_args(tmp_path, spec, 5)) == 0
    assert "ended after 3 of 5" in capsys.readouterr().out
