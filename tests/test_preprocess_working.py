"""The 'working' preprocessing pipeline (issue 18): the 3D image computed at the model's grid
over the ROI, so its cost and its result follow the model's input, not the camera."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_export import write_toy_bundle  # noqa: E402

from edge.bundle import BundleError, load_bundle
from edge.datasets.synthetic import SceneGenerator
from edge.frames import Frame
from edge.processing.preprocess import PreprocessConfig, preprocess

S = 64


def _scene(size: int = S, defect: str = "geometry", seed: int = 0, category: str = "bracket"):
    return SceneGenerator(category, image_size=size, seed=seed).sample(defect)


def _cfg(**kw) -> PreprocessConfig:
    return PreprocessConfig(image_size=S, **kw)


@pytest.mark.parametrize("modality", ["normal", "depth"])
def test_working_equals_reference_when_the_frame_is_the_model_size(modality: str) -> None:
    scene = _scene()
    ref = preprocess(scene.rgb, scene.xyz, _cfg(modality=modality, pipeline="reference"))
    work = preprocess(scene.rgb, scene.xyz, _cfg(modality=modality, pipeline="working"))
    np.testing.assert_array_equal(work.rgb_u8, ref.rgb_u8)
    np.testing.assert_array_equal(work.foreground, ref.foreground)
    # float32 Sobel on the working path (float64 in the reference): rounding only
    np.testing.assert_allclose(work.x3d_vis, ref.x3d_vis, atol=5e-6)
    np.testing.assert_allclose(work.x3d, ref.x3d, atol=5e-5)
    np.testing.assert_allclose(work.rgb, ref.rgb, atol=1e-6)


def test_working_result_does_not_depend_on_the_camera_resolution() -> None:
    """The same scene seen by a 4× finer camera: the working pipeline gives exactly the model
    input it gives at the model's size; the reference pipeline (normals at full resolution)
    does not, which is why a bundle records which one it was trained with."""
    scene = _scene(defect="both")
    rgb4 = cv2.resize(scene.rgb, (4 * S, 4 * S), interpolation=cv2.INTER_NEAREST)
    xyz4 = cv2.resize(scene.xyz, (4 * S, 4 * S), interpolation=cv2.INTER_NEAREST)
    for align in ("none", "principal-axis"):
        cfg = _cfg(pipeline="working", align=align)
        small, big = preprocess(scene.rgb, scene.xyz, cfg), preprocess(rgb4, xyz4, cfg)
        np.testing.assert_array_equal(big.rgb_u8, small.rgb_u8)
        np.testing.assert_allclose(big.x3d_vis, small.x3d_vis, atol=1e-6)
    ref_small = preprocess(scene.rgb, scene.xyz, _cfg(pipeline="reference"))
    ref_big = preprocess(rgb4, xyz4, _cfg(pipeline="reference"))
    assert np.abs(ref_big.x3d_vis - ref_small.x3d_vis).max() > 0.05


def test_roi_is_the_rectangle_the_model_sees() -> None:
    scene = _scene(size=128, defect="color")
    roi = (0.25, 0.125, 0.75, 0.875)
    x0, y0, x1, y1 = 32, 16, 96, 112
    with_roi = preprocess(scene.rgb, scene.xyz, _cfg(pipeline="working", roi=roi))
    cropped = preprocess(scene.rgb[y0:y1, x0:x1], scene.xyz[y0:y1, x0:x1],
                         _cfg(pipeline="working"))
    np.testing.assert_array_equal(with_roi.rgb_u8, cropped.rgb_u8)
    np.testing.assert_allclose(with_roi.x3d_vis, cropped.x3d_vis, atol=1e-6)
    assert with_roi.roi_px == (x0, y0, x1, y1)
    # a ground-truth mask follows: a square at camera (40..48, 60..68) → model pixels
    gt = np.zeros((128, 128), np.uint8)
    gt[60:68, 40:48] = 255
    m = with_roi.mask_to_model(gt)
    ys, xs = np.nonzero(m)
    assert (xs.min(), ys.min()) == ((40 - x0), (60 - y0) * S // (y1 - y0))
    assert m.shape == (S, S) and 0 < m.sum() <= 64


@pytest.mark.parametrize("bad", [(0.5, 0.0, 0.4, 1.0), (0.0, 0.0, 1.2, 1.0), (0.1, 0.1, 0.1, 0.9)])
def test_roi_must_be_a_rectangle_inside_the_frame(bad) -> None:
    with pytest.raises(ValueError, match="roi must be fractions"):
        _cfg(pipeline="working", roi=bad)


def test_framed_inputs_are_refused_where_they_cannot_be_right() -> None:
    scene = _scene()
    with pytest.raises(ValueError, match="reference pipeline"):
        preprocess(scene.rgb, scene.xyz, _cfg(pipeline="reference"), framed=True)
    big = _scene(size=2 * S)
    with pytest.raises(ValueError, match="working grid"):
        preprocess(big.rgb, big.xyz, _cfg(pipeline="working"), framed=True)


def test_bundles_without_a_pipeline_are_the_reference(tmp_path: Path) -> None:
    """Bundles exported before preprocessing version 2 keep working, as they were trained."""
    b = load_bundle(write_toy_bundle(tmp_path / "old", size=S, fp16=False))
    assert "pipeline" not in b.manifest.preprocess
    assert b.preprocess_config().pipeline == "reference"


def test_a_preprocessing_this_build_cannot_repeat_is_refused(tmp_path: Path) -> None:
    folder = write_toy_bundle(tmp_path / "new", size=S, fp16=False, pipeline="working")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["preprocess"]["pipeline"] = "working-v3"  # from a newer trd-edge
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="update trd-edge or re-export"):
        load_bundle(folder).preprocess_config()


def test_inspector_refuses_frames_registered_for_another_grid(tmp_path: Path) -> None:
    from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge.inspector import Inspector

    bundle = load_bundle(write_toy_bundle(tmp_path / "b", size=S, fp16=False,
                                          pipeline="working"))
    ins = Inspector(bundle, OnnxRuntimeBackend(bundle))
    assert ins.working_grid == {"size": S, "roi": None}
    scene = _scene(size=32)
    frame = Frame(rgb=scene.rgb, xyz=scene.xyz.astype(np.float32), frame_number=1,
                  meta={"working_grid": {"size": 32, "roi": None}})
    with pytest.raises(BundleError, match="one source feeds one bundle"):
        ins.inspect(frame)
    # frames at the bundle's grid go straight through; regions map to the camera's pixels
    scene = _scene(size=S, defect="color")
    frame = Frame(rgb=scene.rgb, xyz=scene.xyz.astype(np.float32), frame_number=2,
                  meta={"working_grid": {"size": S, "roi": None}, "camera_size": (720, 1280)})
    out = ins.inspect(frame)
    assert out.view_camera == (0.0, 0.0, 1280.0, 720.0)
