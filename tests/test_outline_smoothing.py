"""Outline smoothing after the alignment (`edge.processing.preprocess.smooth_outline`,
``PreprocessConfig.outline_smoothing``, `trainer.train.resolve_outline_smoothing`): a part
turned onto the grid keeps the camera's pixel staircase along its edges, except when it lay
along the camera's axes; smoothed, both look alike."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.datasets.synthetic import SceneGenerator
from edge.processing.preprocess import PreprocessConfig, preprocess, smooth_outline
from trainer.augment import OUTLINE_SIGMA as OUTLINE_SMOOTHING
from trainer.choices import depth_noise
from trainer.run import TrainConfig
from trainer.train import (
    keep_resumed_choices,
    preprocess_config_for,
    resolve_outline_smoothing,
)


def _edge_roughness(x3d_vis: np.ndarray, fg: np.ndarray) -> float:
    """Mean |Laplacian| of the 3D image in a band around the part's outline: the staircase's
    teeth are what it measures."""
    m = fg.astype(np.uint8)
    band = cv2.dilate(m, np.ones((5, 5), np.uint8)) - cv2.erode(m, np.ones((7, 7), np.uint8))
    lap = np.abs(np.stack([cv2.Laplacian(c, cv2.CV_32F) for c in x3d_vis])).sum(0)
    return float(lap[band > 0].mean())


@pytest.fixture(scope="module")
def brackets():
    """The same brackets lying along the camera's x axis and 30° across it."""
    return {a: [SceneGenerator("bracket", 160, seed=s, fixture_angle=a).sample("good")
                for s in (1, 2, 3)] for a in (0.0, 30.0)}


def test_a_part_along_the_grid_looks_like_one_across_it(brackets) -> None:
    noise = depth_noise(brackets[30.0])
    base = PreprocessConfig(pipeline="working", image_size=128, align="auto", heights="plane",
                            sobel_ksize=5, depth_smoothing=3.0, depth_filter="bilateral",
                            depth_noise=noise)
    ratio = {}
    for sigma in (0.0, OUTLINE_SMOOTHING):
        cfg = base.model_copy(update={"outline_smoothing": sigma})
        rough = {a: np.mean([_edge_roughness(p.x3d_vis, p.foreground)
                             for p in (preprocess(s.rgb, s.xyz, cfg) for s in scenes)])
                 for a, scenes in brackets.items()}
        ratio[sigma] = rough[0.0] / rough[30.0]
    assert ratio[0.0] < 0.9  # along the grid the edges are clean, across it they have teeth
    assert ratio[OUTLINE_SMOOTHING] > 0.93


def test_smooth_outline_straightens_teeth_and_keeps_flats() -> None:
    z = np.zeros((64, 64), np.float32)
    fg = np.zeros((64, 64), bool)
    fg[20:44, 10:54] = True
    fg[19, 10:54:3] = True  # teeth along the top and bottom edges, a pixel high
    fg[44, 11:54:3] = True
    z[fg] = 0.008
    zs, fs = smooth_outline(z, fg, OUTLINE_SMOOTHING)
    assert not fs[19].any() and not fs[44].any()  # the teeth go
    assert fs[20:44, 14:50].all()  # the edges stay where they were
    assert np.allclose(zs[fs], 0.008, atol=1e-6)  # a flat stays flat, to its edge
    assert (zs[~fs] == 0).all()
    same_z, same_fg = smooth_outline(z, fg, 0.0)
    assert same_z is z and same_fg is fg


def test_training_keeps_it_off_unless_asked_and_records_it(tmp_path) -> None:
    cfg = TrainConfig(data_root=str(tmp_path), category="bracket", preprocess="working",
                      align="auto", outline_smoothing=None)
    assert resolve_outline_smoothing(cfg).outline_smoothing == 0.0
    asked = resolve_outline_smoothing(cfg.model_copy(
        update={"outline_smoothing": OUTLINE_SMOOTHING}))
    assert asked.outline_smoothing == OUTLINE_SMOOTHING
    # the station repeats it: the run's preprocessing carries it
    assert preprocess_config_for(asked.model_copy(update={"image_size": 128})
                                 ).outline_smoothing == OUTLINE_SMOOTHING
    with pytest.raises(ValueError, match="working pipeline only"):
        resolve_outline_smoothing(cfg.model_copy(update={"preprocess": "reference",
                                                         "outline_smoothing": 1.0}))
    with pytest.raises(ValueError, match="working pipeline only"):
        PreprocessConfig(pipeline="reference", outline_smoothing=1.0)
    assert PreprocessConfig().outline_smoothing == 0.0  # every bundle before it
    # a run recorded before it resumes without it
    old = TrainConfig(data_root=str(tmp_path), category="bracket", preprocess="working",
                      align="auto").model_dump(exclude={"outline_smoothing"})
    pre = PreprocessConfig(pipeline="working").model_dump(exclude={"outline_smoothing"})
    (tmp_path / "run.json").write_text(json.dumps({"config": old, "preprocess": pre}))
    assert keep_resumed_choices(cfg, tmp_path).outline_smoothing == 0.0
