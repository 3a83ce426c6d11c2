"""Synthetic scenes as a two-sensor RealSense recording: depth and colour at their own sizes.

A D435 delivers depth from its stereo pair (often 1280×720) and colour from a separate RGB
sensor (often 1920×1080) about 15 mm beside it, with another field of view. Our other
recordings had depth already registered to colour; this one is made like the camera's: each
synthetic scene is rendered in the colour camera's frame, resampled to the colour resolution,
and its points are moved into the depth camera (`depth_to_color` inverted) and z-buffered into
the depth image (`edge.processing.registration.splat_depth`). The station must then register depth back
to colour itself, through ``rs.align`` or `edge.processing.registration`, exactly as with a real camera.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.frames import Intrinsics
from edge.processing.geometry import depth_to_xyz
from edge.processing.registration import Extrinsics, WorkingGrid, splat_depth

__all__ = ["D435_BASELINE_M", "camera_pair", "scene_frames", "write_camera_recording"]

# The D435's RGB sensor sits about 15 mm from the depth origin (left imager) along x.
D435_BASELINE_M = 0.015


def camera_pair(
    scene_intrinsics: tuple[float, float, float, float],
    scene_size: int,
    depth_size: tuple[int, int],
    color_size: tuple[int, int],
    depth_fov_scale: float = 1.25,
    baseline_m: float = D435_BASELINE_M,
) -> tuple[Intrinsics, Intrinsics, Extrinsics]:
    """Depth intrinsics, colour intrinsics and depth→colour extrinsics for a scene rendered
    square at ``scene_size`` px and stretched to ``color_size`` (W, H); the depth camera sees
    ``depth_fov_scale`` × the colour field of view (a D435's depth FOV is wider than its RGB)."""
    fx, fy, cx, cy = scene_intrinsics
    base = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=scene_size, height=scene_size)
    color = base.scaled(*color_size)
    dw, dh = depth_size
    depth = Intrinsics(
        fx=color.fx * dw / color.width / depth_fov_scale,
        fy=color.fy * dh / color.height / depth_fov_scale,
        cx=(dw - 1) / 2, cy=(dh - 1) / 2, width=dw, height=dh, depth_scale=0.001,
    )
    # colour = depth + baseline along x: points move by -baseline into the colour frame
    extr = Extrinsics(np.eye(3), np.array([-baseline_m, 0.0, 0.0]))
    return depth, color, extr


def scene_frames(
    category: str,
    n_frames: int,
    depth_size: tuple[int, int],
    color_size: tuple[int, int],
    scene_size: int = 256,
    seed: int = 0,
    defect_rate: float = 0.3,
    depth_units: float = 0.001,
) -> tuple[Intrinsics, Intrinsics, Extrinsics, Iterator[tuple], list[dict]]:
    """Intrinsics, extrinsics, the frames ``(rgb, depth_z16, number)`` and their truth."""
    from edge.datasets.synthetic import DEFECT_TYPES, SceneGenerator

    gen = SceneGenerator(category, image_size=scene_size, seed=seed)
    d_intr, c_intr, d2c = camera_pair(gen.intrinsics, scene_size, depth_size, color_size)
    c2d_rot, c2d_t = d2c.rotation.T, -d2c.rotation.T @ d2c.translation
    rng = np.random.default_rng([seed, 7])
    truth: list[dict] = []
    depth_grid = WorkingGrid(
        camera_size=(d_intr.height, d_intr.width), roi=(0, 0, d_intr.width, d_intr.height),
        grid_w=d_intr.width, grid_h=d_intr.height,
    )

    def frames() -> Iterator[tuple]:
        for i in range(n_frames):
            defect = "good"
            if rng.random() < defect_rate:
                defect = str(rng.choice(DEFECT_TYPES))
            truth.append({"defect_type": defect, "label": int(defect != "good")})
            scene = gen.sample(defect)
            rgb = cv2.resize(scene.rgb, color_size, interpolation=cv2.INTER_LINEAR)
            z = cv2.resize(scene.xyz[..., 2], color_size, interpolation=cv2.INTER_NEAREST)
            xyz = depth_to_xyz(z, c_intr.fx, c_intr.fy, c_intr.cx, c_intr.cy)
            pts = xyz.reshape(-1, 3)
            pts = pts[pts[:, 2] > 0] @ c2d_rot.T + c2d_t
            depth_m = splat_depth(pts.astype(np.float32), d_intr, depth_grid)
            raw = np.rint(depth_m / depth_units).astype(np.uint16)
            yield rgb, raw, i

    return d_intr, c_intr, d2c, frames(), truth


def write_camera_recording(
    path: str | Path,
    category: str = "puck",
    n_frames: int = 10,
    depth_size: tuple[int, int] = (1280, 720),
    color_size: tuple[int, int] = (1920, 1080),
    scene_size: int = 256,
    seed: int = 0,
    defect_rate: float = 0.3,
    fps: int = 30,
) -> list[dict]:
    """Record ``n_frames`` synthetic scenes as a D435-like ``.db3`` (depth and colour at their
    own sizes, 15 mm apart); returns each frame's truth (``defect_type``, ``label``)."""
    from edge.sources.rs_software import write_recording

    d_intr, c_intr, d2c, frames, truth = scene_frames(
        category, n_frames, depth_size, color_size, scene_size, seed, defect_rate
    )
    write_recording(path, frames, d_intr, fps=fps, color_intrinsics=c_intr, depth_to_color=d2c)
    return truth


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.sources.rs_scenes OUT.db3 [--depth 1280x720] [--color 1920x1080]
    [--frames 40] [--category puck]``: a D435-like recording for `trd-edge bench --camera
    file:OUT.db3` on any machine (torch-free; a Jetson makes its own)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edge.sources.rs_scenes", description=main.__doc__)
    ap.add_argument("out")
    ap.add_argument("--depth", type=_size, default=(1280, 720), help="depth stream WxH")
    ap.add_argument("--color", type=_size, default=(1920, 1080), help="colour stream WxH")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--category", default="puck")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    truth = write_camera_recording(a.out, a.category, a.frames, a.depth, a.color,
                                   scene_size=512, seed=a.seed)
    print(f"wrote {a.out}: {len(truth)} frames, depth {a.depth[0]}x{a.depth[1]}, "
          f"colour {a.color[0]}x{a.color[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
