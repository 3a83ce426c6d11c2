"""Depth smoothing chosen from the data (`trainer.choices.choose_depth_smoothing`): the depth
noise's correlation length is measured on good parts and fed to the camera-record rule."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.datasets.dataset_io import RawSample
from edge.datasets.sensors import FINE_NOISE_SMOOTHING_PX
from edge.processing.geometry import depth_to_xyz
from trainer.choices import (
    AutoChoices,
    SmoothingChoice,
    choose_depth_smoothing,
    correlation_length,
    describe,
    variogram_ratio,
)

N = 160
F = 700.0


def _plate(noise_mm: float, grain_px: float, seed: int = 0, unit_m: float = 0.0) -> np.ndarray:
    """A 10-mm plate on a flat table 0.5 m away, depth noise of ``noise_mm`` RMS whose
    autocorrelation falls to 1/e at ``grain_px`` pixels (white noise through a Gaussian of
    σ = grain/2: its autocorrelation is exp(−l²/4σ²)), depth rounded to ``unit_m``."""
    rng = np.random.default_rng(seed)
    depth = np.full((N, N), 0.5)
    depth[40:120, 30:130] -= 0.010
    noise = rng.standard_normal((N, N))
    if grain_px > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), grain_px / 2.0, borderType=cv2.BORDER_REFLECT)
    depth += noise / noise.std() * noise_mm * 1e-3
    if unit_m:
        depth = np.round(depth / unit_m) * unit_m
    return depth_to_xyz(depth.astype(np.float32), F, F, N / 2, N / 2)


@pytest.mark.parametrize("grain", [2.0, 4.0, 6.0])
def test_the_noise_grain_is_measured_on_the_part(grain) -> None:
    lengths = [correlation_length(variogram_ratio(_plate(0.5, grain, seed))) for seed in range(3)]
    assert np.median(lengths) == pytest.approx(grain, rel=0.25)


def test_pixel_noise_reads_as_no_grain_and_the_model_inverts() -> None:
    assert correlation_length(variogram_ratio(_plate(0.3, 0.0))) < 0.8
    for length in (0.5, 1.0, 3.0, 10.0):
        ratio = math.sqrt(-math.expm1(-1 / length**2) / -math.expm1(-64 / length**2))
        assert correlation_length(ratio) == pytest.approx(length, rel=1e-6)
    assert correlation_length(0.1) == math.inf  # below long-range noise's 1/8


def test_a_part_quantised_flat_has_no_measurable_noise() -> None:
    assert variogram_ratio(_plate(0.05, 0.0, unit_m=0.001)) is None


def _raws(noise_mm: float, grain: float) -> list[RawSample]:
    rgb = np.zeros((N, N, 3), np.uint8)
    return [RawSample(rgb=rgb, xyz=_plate(noise_mm, grain, seed), normals=None, gt=None)
            for seed in range(3)]


def test_fine_noise_is_smoothed_coarse_noise_is_not() -> None:
    fine = choose_depth_smoothing(_raws(0.4, 1.0), model_px_per_data_px=0.8)
    assert fine.value == FINE_NOISE_SMOOTHING_PX
    assert fine.noise_correlation_px == pytest.approx(0.8, rel=0.4)
    # the same grain seen through a model that magnifies it (grain 8 data px = 6.4 model px)
    coarse = choose_depth_smoothing(_raws(0.4, 8.0), model_px_per_data_px=0.8)
    assert coarse.value == 0.0
    assert coarse.noise_correlation_px > 4.0
    line = describe(AutoChoices(align={"value": "none", "source": "flag"},
                                depth_smoothing=fine))
    assert f"depth smoothing σ {FINE_NOISE_SMOOTHING_PX:g} px (data" in line
    assert fine.images == coarse.images == 3
    # noise coarser than the measurement reaches is not "no noise": the line tells them apart
    lines = {n: describe(AutoChoices(align={"value": "none", "source": "flag"},
                                     depth_smoothing=SmoothingChoice(
                                         value=0.0, source="data", images=n)))
             for n in (0, 3)}
    assert "no depth noise measurable" in lines[0]
    assert "correlated over longer than the measurement reaches" in lines[3]


@pytest.mark.parametrize(("sensor", "distance"), [("d405", 0.2), ("d435", 0.55)])
def test_the_measured_grain_agrees_with_the_camera_record_which_wins(tmp_path, sensor,
                                                                     distance) -> None:
    """On camera-model data the measurement gives the record's choice; where a record exists
    `trd-edge train` uses the record (it knows the camera) and measures nothing."""
    import json

    from edge.datasets.dataset_io import list_samples, load_raw
    from edge.datasets.sensors import depth_smoothing_for
    from edge.datasets.synthetic import write_dataset
    from trainer.run import TrainConfig
    from trainer.train import resolve_choices, resolve_depth_smoothing

    write_dataset(tmp_path, categories=("bracket",), image_size=192, n_train=4, n_validation=0,
                  n_test_good=0, n_test_per_defect=0, seed=0, progress=False, sensor=sensor,
                  distance=distance)
    record = json.loads((tmp_path / "bracket/calibration/sensor.json").read_text())
    raws = [load_raw(r) for r in list_samples(tmp_path, "bracket", "train")]
    measured = choose_depth_smoothing(raws, model_px_per_data_px=128 / 192)
    assert measured.value == depth_smoothing_for(record["noise_correlation_px"] * 128 / 192)
    cfg = TrainConfig(data_root=str(tmp_path), category="bracket", image_size=128,
                      choose_from_data=True, depth_smoothing=None, align=None, sobel_ksize=None)
    resolved, choices = resolve_choices(cfg)
    assert choices.depth_smoothing is None and resolved.depth_smoothing is None
    assert resolve_depth_smoothing(resolved).depth_smoothing == measured.value
