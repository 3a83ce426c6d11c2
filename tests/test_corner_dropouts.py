"""The background plane with a depth dropout over a corner of the view
(`edge.processing.geometry.fit_background_plane`): the reference fits it through three 3×3
corner patches; one without any return would put the plane through the camera's origin and the
whole table would count as part (seen on a fixtured bracket whose ROI corner held a dropout)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.datasets.synthetic import SceneGenerator
from edge.processing.geometry import fit_background_plane, foreground_mask
from edge.processing.preprocess import PreprocessConfig, preprocess


def _scene():
    return SceneGenerator("bracket", 128, seed=2, fixture_angle=0).sample("good")


def test_a_corner_without_depth_grows_until_it_has_some() -> None:
    scene = _scene()
    xyz = scene.xyz.copy()
    clean = fit_background_plane(xyz)
    fg = foreground_mask(xyz, plane=clean)
    xyz[-5:, :5] = 0.0  # no return over the bottom-left 3×3 patch and around it
    plane = fit_background_plane(xyz)
    holed = foreground_mask(xyz, plane=plane)
    assert np.count_nonzero(holed ^ fg) < 0.01 * fg.sum()  # the part, not the table
    # a patch with any return is the reference's, bit for bit
    xyz2 = scene.xyz.copy()
    xyz2[-3:, :2] = 0.0
    p = fit_background_plane(xyz2)
    ref = xyz2[-3:, :3].reshape(-1, 3).astype(np.float64).sum(0) / 3
    assert np.allclose(p.offset, float(p.normal @ ref))
    # preprocessing sees the part only
    cfg = PreprocessConfig(pipeline="working", image_size=64)
    assert preprocess(scene.rgb, xyz, cfg).foreground.mean() < 0.5


def test_a_view_without_depth_at_a_corner_is_refused_by_name() -> None:
    xyz = _scene().xyz.copy()
    xyz[64:, :64] = 0.0
    with pytest.raises(ValueError, match="bottom-left .* corner .* must show the table"):
        fit_background_plane(xyz)
