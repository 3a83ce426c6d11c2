"""Issue 12 items 4-6: unusable inputs end with one line that names the problem and the fix.

- a model file damaged after hashing (an export cut short by a full disk) whose hash matches;
- a replay (`folder:`) in which no frame can be used: exit 5, not 0;
- an empty or foreign `.db3` given as a RealSense recording.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from edge.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from conftest_export import write_toy_bundle  # noqa: E402

SIZE = 64


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["run", "--mqtt", "none", "--station", "st1", "--quiet", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_corrupt_model_with_matching_hash_names_the_file_and_the_fix(tmp_path, capsys):
    from edge.backends import BackendError, create_backend
    from edge.bundle import file_entry, load_bundle

    bundle = write_toy_bundle(tmp_path / "bundle", size=SIZE, fp16=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    rel = manifest["files"]["model"]["path"]
    model = bundle / rel
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # cut short
    manifest["files"]["model"] = file_entry(bundle, rel).model_dump()  # ...and hashed so
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(BackendError) as err:
        create_backend("onnxruntime", load_bundle(bundle))
    text = str(err.value)
    assert str(model) in text and "re-export the bundle" in text and "damaged" in text

    rc, _, stderr = _run(capsys, "--bundle", str(bundle), "--camera",
                         f"synthetic:puck?size={SIZE}", "--max-frames", "1")  # fmt: skip
    assert rc == 2
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(model) in lines[0] and "Traceback" not in stderr


def test_folder_replay_without_a_usable_frame_exits_non_zero(tmp_path, tiny_dataset, capsys):
    folder = tmp_path / "replay"
    shutil.copytree(tiny_dataset / "puck" / "test", folder)
    for tiff in folder.rglob("*.tiff"):
        tiff.write_bytes(b"II*\x00garbage")  # every frame unreadable
    bundle = write_toy_bundle(tmp_path / "bundle", size=SIZE, fp16=False)
    rc, stdout, stderr = _run(capsys, "--bundle", str(bundle), "--camera", f"folder:{folder}")
    assert rc == 5
    assert "0 verdicts" in stdout
    line = [ln for ln in stderr.splitlines() if ln.startswith("trd-edge run:")]
    assert len(line) == 1 and f"no verdict from folder:{folder}" in line[0]
    assert "unusable" in line[0] and "replace them" in line[0]

    # The same bundle on the good folder still exits 0: the code is about the input.
    rc, _, _ = _run(capsys, "--bundle", str(bundle), "--camera",
                    f"folder:{tiny_dataset / 'puck' / 'test'}")  # fmt: skip
    assert rc == 0


@pytest.mark.parametrize("kind", ["empty", "text", "other sqlite"])
def test_unusable_db3_is_explained_before_librealsense(tmp_path, kind):
    from edge.sources.base import SourceError
    from edge.sources.realsense import RealSenseSource

    path = tmp_path / "rec.db3"
    if kind == "empty":
        path.touch()
        want = "is empty (0 bytes)"
    elif kind == "text":
        path.write_text("not a recording\n")
        want = "not an SQLite file"
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE parts (id INTEGER)")
        want = "not a rosbag2 recording (no topics/messages tables; has parts)"
    with pytest.raises(SourceError, match=r"record") as err:
        RealSenseSource(path)
    assert want in str(err.value) and str(path) in str(err.value)
    assert "SQL logic error" not in str(err.value)


def test_real_db3_recording_passes_the_file_check(tmp_path):
    from rs_fixtures import make_recording, rs_or_skip

    rs_or_skip()
    from edge.sources.realsense import RealSenseSource

    rec = make_recording(tmp_path / "ok.db3", n=3)
    RealSenseSource(rec.path)  # no SourceError: the check accepts what librealsense writes


def test_recording_without_a_depth_colour_pair_exits_non_zero(tmp_path, capsys):
    from rs_fixtures import make_recording, rs_or_skip

    rs_or_skip()
    rec = make_recording(tmp_path / "colour-only.db3", n=4, depth_missing=(0, 1, 2, 3))
    bundle = write_toy_bundle(tmp_path / "bundle", size=SIZE, fp16=False)
    rc, stdout, stderr = _run(capsys, "--bundle", str(bundle), "--camera", f"file:{rec.path}")
    assert rc == 5, stdout + stderr
    line = [ln for ln in stderr.splitlines() if ln.startswith("trd-edge run:")]
    assert len(line) == 1 and "no depth+colour frame pair" in line[0]
