"""What every frame source delivers: one RGB image and its organised point cloud.

A `Frame` is the unit that flows through the edge run loop (capture → preprocess → infer →
postprocess → publish). Every source — a live RealSense, a recording, a dataset folder, the
synthetic camera — produces the same thing, so the rest of the loop never asks where a frame
came from. The cloud follows the MVTec 3D-AD convention: ``H×W×3`` float32 metres, organised
like the image, ``(0, 0, 0)`` where the camera saw nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Frame", "Intrinsics"]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the image the cloud is organised like (pixels), plus depth scale.

    ``depth_scale`` is metres per raw depth unit (RealSense Z16: usually 0.001); ``None`` for
    sources that never had raw depth (xyz TIFFs, synthetic scenes).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    depth_scale: float | None = None
    # Lens distortion as librealsense reports it (rs.distortion name in lower case, 5 coeffs);
    # D400 depth streams and most colour streams report zeros.
    model: str = "none"
    coeffs: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(
                f"intrinsics need positive focal lengths, got fx={self.fx}, fy={self.fy}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"intrinsics need a positive image size, got {self.width}x{self.height}"
            )

    def scaled(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of the same camera at another resolution (after a resize)."""
        sx, sy = width / self.width, height / self.height
        # Pixel centres sit at integer coordinates, so the principal point scales about -0.5.
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
            depth_scale=self.depth_scale,
            model=self.model,
            coeffs=self.coeffs,
        )


@dataclass
class Frame:
    """One synchronised RGB + 3D capture.

    Attributes:
        rgb: ``H×W×3`` uint8, RGB channel order.
        xyz: ``H×W×3`` float32 metres, organised like ``rgb``; zeros where there is no return.
        frame_number: the camera's frame counter (the colour stream's for RealSense), or the
            index in a replayed folder / synthetic sequence.
        camera_timestamp_ms: the camera's timestamp in milliseconds, when it has one.
        host_timestamp: ``time.time()`` when the frame was received on this machine.
        source: a short description of where it came from (e.g. ``realsense:123456``).
        intrinsics: the intrinsics the cloud was computed with, when known.
        meta: free-form extras; replayed and synthetic frames carry ground truth here
            (``label`` 0/1, ``defect_type``, ``category``, ``split``, ``name``, ...). A camera
            asked for a bundle's working grid (`Inspector.attach`) delivers the grid itself
            (``rgb``/``xyz`` G×G over the region of interest) and says so: ``working_grid``
            ({"size": G, "roi": fractions or None}) and ``camera_size`` ((H, W) of the full
            colour image, for verdict regions in camera pixels).
        capture_ms: wall time spent waiting for / converting this frame, in milliseconds.
    """

    rgb: np.ndarray
    xyz: np.ndarray
    frame_number: int
    camera_timestamp_ms: float | None = None
    host_timestamp: float = field(default_factory=time.time)
    source: str = ""
    intrinsics: Intrinsics | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    capture_ms: float = 0.0

    def __post_init__(self) -> None:
        rgb, xyz = self.rgb, self.xyz
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(
                f"Frame.rgb must be an H×W×3 array, got {getattr(rgb, 'shape', type(rgb).__name__)}"
            )
        if rgb.dtype != np.uint8:
            raise ValueError(f"Frame.rgb must be uint8, got {rgb.dtype}")
        if not isinstance(xyz, np.ndarray) or xyz.ndim != 3 or xyz.shape[2] != 3:
            raise ValueError(
                f"Frame.xyz must be an organised H×W×3 cloud, got "
                f"{getattr(xyz, 'shape', type(xyz).__name__)}"
            )
        if xyz.dtype != np.float32:
            raise ValueError(f"Frame.xyz must be float32 metres, got {xyz.dtype}")
        if rgb.shape[:2] != xyz.shape[:2]:
            raise ValueError(
                f"Frame.rgb {rgb.shape[:2]} and Frame.xyz {xyz.shape[:2]} differ in size; the "
                "cloud must be organised like the image (align depth to colour first)"
            )

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image and the cloud."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])
