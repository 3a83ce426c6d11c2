"""Model bundle: manifest round trip, calibration history, and clear errors on tampering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest_export import write_toy_bundle

from edge.bundle import SCHEMA_VERSION, BundleError, StatsSpec, load_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_toy_bundle(tmp_path / "bundle", size=32)


def test_load_roundtrip_and_model_id(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert b.image_size == 32
    assert [t.name for t in b.manifest.io.inputs] == ["rgb", "x3d"]
    assert b.manifest.io.outputs[0].shape == [1, 1, 32, 32]
    assert len(b.model_id) == 12
    assert b.file_path("model_fp16").name == "model.fp16.onnx"
    assert b.score_stats().x3d_std == pytest.approx(0.3)


def test_calibration_history_and_atomic_save(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    model_id = b.model_id
    new = StatsSpec(rgb_mean=2.0, rgb_std=1.0, x3d_mean=0.5, x3d_std=0.2, n_maps=10)
    b.record_calibration(new, 4.5, "station-f1", note="line 3")
    b.save_manifest()
    assert not [p for p in bundle_dir.iterdir() if p.name.endswith(".tmp")]
    again = load_bundle(bundle_dir)
    assert again.manifest.scoring.threshold == 4.5
    assert again.manifest.scoring.stats.rgb_mean == 2.0
    hist = again.manifest.scoring.history
    assert len(hist) == 1 and hist[0].threshold == 3.0 and hist[0].threshold_method == "test"
    assert again.model_id == model_id  # re-calibration does not change the model id


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "empty")


def test_invalid_json(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_dir)


def test_newer_schema_asks_for_upgrade(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    major = int(SCHEMA_VERSION.split(".")[0])
    raw["schema_version"] = f"{major + 1}.0"
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="upgrade trd-edge"):
        load_bundle(bundle_dir)


def test_schema_violation_is_reported(bundle_dir: Path) -> None:
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    del raw["model"]["image_size"]
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="image_size"):
        load_bundle(bundle_dir)


def test_manifest_records_the_smoothing_rule(bundle_dir: Path) -> None:
    """scoring.smoothing says what edge.processing.scoring does: sigma 4·S/256 px (1 px at 64², 4 at 256²)."""
    from edge.processing.scoring import smoothing_sigma

    raw = json.loads((bundle_dir / "manifest.json").read_text())
    assert raw["scoring"]["smoothing"]["rule"] == "4*S/256"
    assert smoothing_sigma(32) == 0.5 and smoothing_sigma(256) == 4.0
    raw["scoring"]["smoothing"]["sigma"] = 0.5  # the rule's value at 32 px: accepted
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    assert load_bundle(bundle_dir).manifest.scoring.smoothing.sigma == 0.5
    del raw["scoring"]["smoothing"]  # bundles before the section: same rule, still load
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    assert load_bundle(bundle_dir).manifest.scoring.smoothing.rule == "4*S/256"
    raw["scoring"]["smoothing"] = {"rule": "4*S/256", "sigma": 4.0}  # fixed 4 px: not what we do
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="sigma 0.5"):
        load_bundle(bundle_dir)


def test_missing_file_is_named(bundle_dir: Path) -> None:
    (bundle_dir / "model.fp16.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.fp16\.onnx.*missing"):
        load_bundle(bundle_dir)


def test_edited_file_gives_hash_error(bundle_dir: Path) -> None:
    path = bundle_dir / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx.*changed.*re-export or restore"):
        load_bundle(bundle_dir)
    # hashing can be skipped explicitly (e.g. a quick `inspect`)
    assert load_bundle(bundle_dir, verify_hashes=False).image_size == 32


def test_wrong_input_size(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    ok = np.zeros((1, 3, 32, 32), np.float32)
    b.check_frame(ok, ok[0])
    with pytest.raises(BundleError, match=r"\(1, 3, 64, 64\).*expects \(1, 3, 32, 32\)"):
        b.check_frame(np.zeros((1, 3, 64, 64), np.float32), ok)
    with pytest.raises(BundleError, match="float32"):
        b.check_frame(ok, ok.astype(np.float64))


def test_missing_fp16_file_names_fix(tmp_path: Path) -> None:
    b = load_bundle(write_toy_bundle(tmp_path / "b", fp16=False))
    with pytest.raises(BundleError, match="--fp16"):
        b.file_path("model_fp16")


def test_edge_runtime_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import edge.bundle, edge.backends, edge.backends.onnxruntime_backend\n"
        "import edge.backends.tensorrt_build, edge.backends.tensorrt_backend\n"
        "assert 'torch' not in sys.modules, 'edge imported torch'\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
