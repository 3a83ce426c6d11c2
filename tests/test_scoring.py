"""edge/processing/scoring.py: smoothing vs scipy, streaming statistics, score maps, defect regions."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from edge.processing.scoring import (
    ScoreStats,
    StatsAccumulator,
    defect_regions,
    gaussian_smooth,
    image_scores,
    score_maps,
    smoothing_sigma,
)


def _scipy_smooth(m: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    return gaussian_filter(np.asarray(m, np.float64), sigma, mode="reflect", truncate=4.0)


@pytest.mark.parametrize("shape", [(64, 64), (32, 48), (8, 8), (5, 40), (1, 1)])
def test_gaussian_smooth_matches_scipy(shape):
    # includes maps smaller than the 16 px radius, where the border is mirrored repeatedly
    m = np.random.default_rng(0).normal(size=shape)
    np.testing.assert_allclose(gaussian_smooth(m), _scipy_smooth(m), atol=1e-9)


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_gaussian_smooth_other_sigma(sigma):
    m = np.random.default_rng(1).normal(size=(40, 33))
    np.testing.assert_allclose(gaussian_smooth(m, sigma), _scipy_smooth(m, sigma), atol=1e-9)


def test_gaussian_smooth_batch_smooths_each_map_separately():
    rng = np.random.default_rng(2)
    b = rng.normal(size=(3, 32, 32)).astype(np.float32)
    b[1] += 100.0  # would bleed into neighbours if the batch were filtered as one volume
    out = gaussian_smooth(b)
    assert out.shape == b.shape and out.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(out[i], _scipy_smooth(b[i]), atol=1e-4)


def test_gaussian_smooth_rejects_bad_shape():
    with pytest.raises(ValueError, match="expects"):
        gaussian_smooth(np.zeros((2, 1, 8, 8)))


def test_stats_accumulator_matches_numpy_on_concatenated_maps():
    rng = np.random.default_rng(3)
    # a large offset makes a naive sum-of-squares variance lose precision
    rgb = [1e4 + rng.normal(0, 0.5, size=s) for s in [(2, 16, 16), (1, 1, 16, 16), (16, 16)]]
    x3d = [rng.gamma(2.0, 0.1, size=np.shape(m)) for m in rgb]
    acc = StatsAccumulator()
    for a, b in zip(rgb, x3d, strict=True):
        acc.add(a.astype(np.float32) if a.ndim == 2 else a, b)
    st = acc.result()
    all_rgb = np.concatenate([np.asarray(a, np.float64).ravel() for a in rgb])
    all_rgb[-256:] = np.asarray(rgb[-1], np.float32).ravel()  # the one added as float32
    all_3d = np.concatenate([b.ravel() for b in x3d])
    assert st.n_maps == 4
    assert st.rgb_mean == pytest.approx(all_rgb.mean(), rel=1e-12)
    assert st.rgb_std == pytest.approx(all_rgb.std(), rel=1e-7)  # population std
    assert st.x3d_mean == pytest.approx(all_3d.mean(), rel=1e-12)
    assert st.x3d_std == pytest.approx(all_3d.std(), rel=1e-9)


def test_stats_zero_std_names_the_modality():
    acc = StatsAccumulator()
    acc.add(np.random.default_rng(0).random((2, 8, 8)), np.full((2, 8, 8), 0.3))
    with pytest.raises(ValueError, match="3d"):
        acc.result()
    with pytest.raises(ValueError, match="rgb"):
        ScoreStats(rgb_mean=0.0, rgb_std=0.0, x3d_mean=0.0, x3d_std=1.0, n_maps=1)
    with pytest.raises(ValueError, match="no maps"):
        StatsAccumulator().result()


def test_stats_reject_mismatched_maps():
    with pytest.raises(ValueError, match="same shape"):
        StatsAccumulator().add(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_score_maps_normalises_fuses_and_smooths():
    rng = np.random.default_rng(4)
    a = rng.normal(0.5, 0.1, size=(2, 1, 32, 32))
    b = rng.normal(0.2, 0.05, size=(2, 1, 32, 32))
    st = ScoreStats(rgb_mean=0.5, rgb_std=0.1, x3d_mean=0.2, x3d_std=0.05, n_maps=10)
    out = score_maps(a, b, st, sigma=4.0)
    assert out.fused.shape == out.rgb.shape == out.x3d.shape == (2, 32, 32)
    assert out.fused.dtype == np.float32
    for i in range(2):
        na = (a[i, 0] - 0.5) / 0.1
        nb = (b[i, 0] - 0.2) / 0.05
        np.testing.assert_allclose(out.fused[i], _scipy_smooth(na + nb), atol=1e-5)
        np.testing.assert_allclose(out.rgb[i], _scipy_smooth(na), atol=1e-5)
        np.testing.assert_allclose(out.x3d[i], _scipy_smooth(nb), atol=1e-5)
    single = score_maps(a[0, 0], b[0, 0], st, sigma=4.0)  # (H,W) input -> batch of one
    np.testing.assert_allclose(single.fused[0], out.fused[0], atol=1e-6)


def test_default_smoothing_scales_with_map_size():
    """sigma 4 px at 256² (the paper), the same physical blur at other sizes."""
    assert smoothing_sigma(256) == 4.0 and smoothing_sigma(64) == 1.0
    rng = np.random.default_rng(5)
    a = rng.normal(size=(1, 64, 64))
    st = ScoreStats(rgb_mean=0.0, rgb_std=1.0, x3d_mean=0.0, x3d_std=1.0, n_maps=1)
    out = score_maps(a, np.zeros_like(a), st)
    np.testing.assert_allclose(out.rgb[0], _scipy_smooth(a[0], 1.0), atol=1e-5)


def test_image_scores_is_max_per_map():
    m = np.zeros((3, 8, 8))
    m[0, 2, 3], m[1, 7, 7], m[2] = 5.0, -1.0, -2.0
    np.testing.assert_array_equal(image_scores(m), [5.0, 0.0, -2.0])
    assert float(image_scores(m[0])) == 5.0


def test_defect_regions_on_a_drawn_map():
    m = np.zeros((40, 50), np.float32)
    cv2.rectangle(m, (5, 6), (9, 10), 2.0, -1)  # 5x5 block at x=5..9, y=6..10
    m[8, 7] = 3.0  # its peak
    m[20, 20] = m[21, 21] = m[22, 22] = 4.0  # diagonal line: one region with 8-connectivity
    cv2.rectangle(m, (30, 30), (44, 35), 1.5, -1)  # 15x6 block
    m[33, 40] = 1.0  # a hole below threshold inside it
    m[0, 49] = 5.0  # a single-pixel speck
    regions = defect_regions(m, threshold=1.2)
    assert [r.peak for r in regions] == [5.0, 4.0, 3.0, 1.5]
    speck, diag, block, big = regions
    assert diag.bbox == (20, 20, 3, 3) and diag.area_px == 3
    assert block.bbox == (5, 6, 5, 5) and block.area_px == 25
    assert big.bbox == (30, 30, 15, 6) and big.area_px == 15 * 6 - 1
    assert speck.bbox == (49, 0, 1, 1)
    assert [r.peak for r in defect_regions(m, 1.2, min_area_px=2)] == [4.0, 3.0, 1.5]
    assert defect_regions(m, threshold=10.0) == []


def test_edge_scoring_imports_neither_torch_nor_scipy():
    code = (
        "import sys, edge.processing.scoring; "
        "bad = [m for m in ('torch', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_float32_smoothing_at_the_station_matches_float64() -> None:
    """The station smooths in float32 (half the cost); eval keeps float64: same scores."""
    from edge.processing.scoring import ScoreStats, image_scores, score_maps

    rng = np.random.default_rng(3)
    a, b = rng.random((2, 256, 256)).astype(np.float32), rng.random((2, 256, 256)).astype(np.float32)
    st = ScoreStats(rgb_mean=0.4, rgb_std=0.1, x3d_mean=0.5, x3d_std=0.2, n_maps=2)
    m64, m32 = score_maps(a, b, st), score_maps(a, b, st, work_dtype=np.float32)
    assert np.abs(m64.fused - m32.fused).max() < 1e-5
    np.testing.assert_allclose(image_scores(m32.fused), image_scores(m64.fused), atol=1e-5)
