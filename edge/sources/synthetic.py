"""The synthetic RGB-D scene generator as a camera (``synthetic[:category][?...]``).

Lets the whole edge loop run with no hardware: every frame is a fresh `edge.datasets.synthetic` scene,
defective with probability ``defect_rate`` (defect type drawn uniformly from
`edge.datasets.synthetic.DEFECT_TYPES`). Each frame's ``meta`` carries the truth — ``label`` (0 good,
1 defective), ``defect_type``, ``category`` — so a run can be scored against it.
"""

from __future__ import annotations

import time

import numpy as np

from edge.frames import Frame, Intrinsics
from edge.sources.base import FrameSource, FrameTimeout, SourceError
from edge.sources.options import SyntheticOptions
from edge.sources.pacing import Pacer

__all__ = ["SyntheticSource"]


class SyntheticSource(FrameSource):
    """Endless (or ``max_frames``-long) stream of synthetic scenes."""

    def __init__(self, options: SyntheticOptions | None = None, max_consecutive_errors: int = 50):
        super().__init__(max_consecutive_errors)
        self.options = options or SyntheticOptions()
        self.name = f"synthetic:{self.options.category}"
        self._generator = None
        self._defect_types: tuple[str, ...] = ()
        self._rng = np.random.default_rng(self.options.seed)
        self._count = 0
        self._pacer = Pacer(self.options.fps)
        self.intrinsics: Intrinsics | None = None

    def _open(self) -> None:
        from edge.datasets.synthetic import DEFECT_TYPES, SceneGenerator

        opts = self.options
        try:
            self._generator = SceneGenerator(opts.category, image_size=opts.size, seed=opts.seed)
        except ValueError as exc:
            raise SourceError(f"synthetic camera: {exc}") from exc
        self._defect_types = tuple(DEFECT_TYPES)
        # Defect choices use their own stream so they do not depend on how many random numbers
        # a scene consumes.
        self._rng = np.random.default_rng([opts.seed, 1])
        self._count = 0
        fx, fy, cx, cy = self._generator.intrinsics
        self.intrinsics = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=opts.size, height=opts.size)

    def _grab(self, timeout_s: float) -> Frame | None:
        opts = self.options
        if opts.max_frames is not None and self._count >= opts.max_frames:
            return None
        if not self._pacer.wait(timeout_s):
            raise FrameTimeout(f"{self.name}: next frame not due within {timeout_s:.2f} s")
        started = time.perf_counter()
        host_ts = time.time()
        defect = "good"
        if self._rng.random() < opts.defect_rate:
            defect = str(self._rng.choice(self._defect_types))
        scene = self._generator.sample(defect)
        number = self._count
        self._count += 1
        return Frame(
            rgb=scene.rgb,
            xyz=scene.xyz.astype(np.float32, copy=False),
            frame_number=number,
            camera_timestamp_ms=None,
            host_timestamp=host_ts,
            source=self.name,
            intrinsics=self.intrinsics,
            meta={
                "label": 0 if defect == "good" else 1,
                "defect_type": defect,
                "category": opts.category,
            },
            capture_ms=(time.perf_counter() - started) * 1000.0,
        )
