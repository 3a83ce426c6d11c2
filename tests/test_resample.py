"""The reference's RGB/mask resize (`edge/processing/resample.py`, PreprocessConfig.rgb_resize) against Pillow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.processing.preprocess import (
    PreprocessConfig,
    preprocess,
    preprocess_normals_png,
    resize_mask,
)
from edge.processing.resample import pil_bilinear_resize

Image = pytest.importorskip("PIL.Image")


def _pil(img: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))


def _sharp(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Filled rectangles, 1-px lines and pixel noise: every edge a resize can get wrong."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(2, w // 3 + 3)),
                                      y0 + int(rng.integers(2, h // 3 + 3))), colour, -1)
    for _ in range(40):
        p = [int(v) for v in rng.integers(0, min(h, w), 4)]
        cv2.line(img, (p[0], p[1]), (p[2], p[3]), tuple(int(c) for c in rng.integers(0, 256, 3)), 1)
    img[::7, ::5] = rng.integers(0, 256, img[::7, ::5].shape, dtype=np.uint8)
    return img


@pytest.mark.parametrize(
    ("h", "w", "out_h", "out_w"),
    [(800, 800, 256, 256), (512, 512, 256, 256), (480, 640, 256, 256), (400, 600, 200, 321),
     (100, 70, 256, 256), (3, 5, 64, 64), (256, 300, 256, 256), (64, 64, 64, 64)],
)
def test_equals_pillow_bilinear(h: int, w: int, out_h: int, out_w: int) -> None:
    img = _sharp(h, w)
    ours = pil_bilinear_resize(img, out_w, out_h)
    assert ours.shape == (out_h, out_w, 3) and ours.dtype == np.uint8
    # contract: within 1/255 of Pillow; the fixed-point arithmetic makes it identical
    np.testing.assert_array_equal(ours, _pil(img, out_w, out_h))
    grey = img[..., 1]
    np.testing.assert_array_equal(pil_bilinear_resize(grey, out_w, out_h), _pil(grey, out_w, out_h))


def test_area_is_not_pillow_on_a_sharp_image() -> None:
    """The deviation docs/design-notes.md records: INTER_AREA vs the reference on 800² → 256²."""
    img = _sharp(800, 800)
    area = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA).astype(np.int16)
    diff = np.abs(area - _pil(img, 256, 256))
    assert diff.max() > 20 and diff.mean() > 0.5


def _flat_box(h: int, w: int) -> np.ndarray:
    """An organised cloud: a plane 0.5 m away with a 2 cm box in the middle."""
    xyz = np.zeros((h, w, 3), np.float32)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    xyz[..., 0], xyz[..., 1] = (u - w / 2) / 500.0, (v - h / 2) / 500.0
    xyz[..., 2] = 0.5
    xyz[h // 3: 2 * h // 3, w // 3: 2 * w // 3, 2] = 0.48
    return xyz


@pytest.mark.parametrize("modality", ["depth", "normal"])
def test_reference_pipeline_resizes_rgb_and_masks_like_pillow(modality: str) -> None:
    rgb, xyz = _sharp(200, 240), _flat_box(200, 240)
    cfg = PreprocessConfig(image_size=64, modality=modality, rgb_resize="pil-bilinear")
    out = preprocess(rgb, xyz, cfg)
    np.testing.assert_array_equal(out.rgb_u8, _pil(rgb, 64, 64))
    gt = np.zeros((200, 240), np.uint8)
    gt[50:53, 60:130] = 255  # a thin scratch: area averaging and Pillow keep different pixels
    want = (_pil(gt, 64, 64) > 127).astype(np.float32)  # PIL 'L' → ToTensor → > 0.5
    np.testing.assert_array_equal(resize_mask(gt, 64, "pil-bilinear"), want)
    np.testing.assert_array_equal(out.mask_to_model(gt), want)


def test_default_keeps_area_for_existing_bundles() -> None:
    """A bundle's preprocess without the key (every bundle so far) keeps computing INTER_AREA."""
    cfg = PreprocessConfig.model_validate({"image_size": 64, "modality": "depth"})
    assert cfg.rgb_resize == "area"
    rgb, xyz = _sharp(200, 240), _flat_box(200, 240)
    out = preprocess(rgb, xyz, cfg)
    np.testing.assert_array_equal(
        out.rgb_u8, cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    )
    assert not np.array_equal(out.rgb_u8, _pil(rgb, 64, 64))


def test_eyecandies_normals_go_through_the_rgb_resize() -> None:
    rgb, normals = _sharp(512, 512, seed=1), _sharp(512, 512, seed=2)
    cfg = PreprocessConfig(image_size=256, rgb_resize="pil-bilinear")
    out = preprocess_normals_png(rgb, normals, cfg)
    np.testing.assert_array_equal(out.rgb_u8, _pil(rgb, 256, 256))
    np.testing.assert_allclose(
        out.x3d_vis, _pil(normals, 256, 256).transpose(2, 0, 1) / np.float32(255.0), atol=1e-7
    )


def test_working_pipeline_refuses_pil_bilinear() -> None:
    with pytest.raises(ValidationError, match="reference pipeline only"):
        PreprocessConfig(pipeline="working", rgb_resize="pil-bilinear")
    with pytest.raises(ValidationError):
        PreprocessConfig(rgb_resize="bicubic")
