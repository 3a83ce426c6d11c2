"""Training-time augmentation that keeps RGB and the 3D image physically consistent.

``rot90``: turn the scene by a multiple of 90° about the camera axis. The raw RGB image and the
raw organised point cloud are rotated together *before* preprocessing, so the 3D image (surface
normals or depth, both computed from the cloud's z on the pixel grid) is recomputed from the
rotated cloud: the normals' x/y directions turn with the part, exactly as if the part had lain
turned on the conveyor (a pinhole camera whose principal point is at the image centre sees a
scene turned about its optical axis as its image turned). The cloud's points are only
re-ordered, so the background-plane fit and the foreground mask are unchanged.

Why: a part that lies at any angle on the conveyor (our synthetic bracket, MVTec 3D-AD's bagel
or cookie) shows the student few of its orientations in a few dozen good images; without this
the student fails to reproduce the teacher on unseen orientations and good parts score high
(docs/offline-teachers.md). Mirroring is *not* offered: a mirrored part may be a different part
(left- and right-hand brackets). Frames that are not square are turned by 0° or 180° only: a
quarter turn would change how the square resize squeezes them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Augment = Literal["none", "rot90", "rotate", "outline"]

# ``outline``: half the training samples are preprocessed with the outline smoothing
# (`edge.processing.preprocess.smooth_outline`, σ OUTLINE_SIGMA) and half without, so the
# student sees an aligned part's edges both with the camera's pixel staircase and clean — as a
# part lying along the camera's grid shows them — while the station preprocesses as always
# (docs/any-shape.md, "Edges that do not depend on the camera's grid").
# The σ (model px) `--outline-smoothing` was measured at, too.
OUTLINE_SIGMA = 2.0
OUTLINE_SHARE = 0.5

# ``rotate``: a continuous turn of ±ROTATE_DEG after the alignment (issue 13). Alignment leaves
# a residue (a fraction of a degree on the synthetic parts, more on real ones: a worn edge, a
# print off by a few degrees); the student should not call that a defect. The turn is applied
# to the aligned frame (`edge.processing.preprocess.preprocess(turn_deg=...)`), so heights and RGB turn
# together and the normals are computed from the turned heights, as for a part lying so.
ROTATE_DEG = 15.0


def continuous_turn(rng: np.random.Generator) -> float:
    """A random turn (degrees) for ``rotate``, uniform in ±ROTATE_DEG."""
    return float(rng.uniform(-ROTATE_DEG, ROTATE_DEG))


def quarter_turns(rng: np.random.Generator, shape: tuple[int, ...]) -> int:
    """A random number of counter-clockwise quarter turns valid for a frame of ``shape``."""
    if shape[0] == shape[1]:
        return int(rng.integers(4))
    return 2 * int(rng.integers(2))


def rotate_raw(rgb: np.ndarray, xyz: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn an RGB image and its organised cloud (both H×W×…) by ``k`` × 90° counter-clockwise."""
    if k % 4 == 0:
        return rgb, xyz
    if k % 2 and rgb.shape[0] != rgb.shape[1]:
        raise ValueError(f"a quarter turn of a non-square {rgb.shape[:2]} frame changes its resize")
    return (
        np.ascontiguousarray(np.rot90(rgb, k, axes=(0, 1))),
        np.ascontiguousarray(np.rot90(xyz, k, axes=(0, 1))),
    )
