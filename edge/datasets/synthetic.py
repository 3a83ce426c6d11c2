"""Synthetic RGB-D scenes with controlled anomalies, written in the MVTec 3D-AD layout.

A scene is one object ("puck": a bevelled disc with an embossed ring and a rubbery ring
texture; "bracket": a rounded plate with two through holes, a raised flange and brushed-metal
texture; "block": a square block with a printed grid; "hexagon": a hexagonal part with a
round recess; "disc": a round part with an asymmetric printed arrow) lying on a slightly tilted
background plane, seen by a pinhole camera about 0.5 m
away. As at a real station the camera mounting (distance, plane tilt) is fixed per category;
parts wobble slightly (±3 mm, ±0.5°) and vary in position, rotation (0–360°), size, colour and
texture. The block, hexagon and disc lie on a support whose tilt also varies per sample (±1.4°,
a conveyor's belt), to exercise pose normalisation of shapes whose second moments are isotropic.
The organised cloud is computed per pixel along the camera rays, with mild Gaussian depth noise
and a few small missing-point dropouts (``(0,0,0)`` like a real sensor). Good samples vary
within what a fixed station sees.

Why the defects are built this way: the point of the data set is to tell whether a model uses
*both* modalities, so each defect class is visible in exactly the modalities its name says.

* ``color`` — a stain or a scratch painted into the albedo only. The geometry is not touched,
  so the point cloud is bit-identical to the same scene rendered good.
* ``geometry`` — a bump or dent of 2–4 mm on the object surface. The RGB image is rendered from
  albedo times a shading term computed from the *defect-free* shape, so the defect never reaches
  the colour image: RGB is bit-identical to the good twin. Only the 3D branch can see it.
* ``both`` — a hole or crack: the surface drops by several mm and the albedo darkens.

Defects cover 5–10 % of the object area (large enough at 64–128 px), are placed on the object's
top surface (never on the background) and the ground-truth mask is exactly the set of pixels
whose albedo or geometry was changed. Every random choice of a scene is drawn before the defect,
and the noise fields are drawn once per scene, so a defective scene and its good twin
(`SceneGenerator.sample_with_twin`) differ only inside the mask.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from edge.datasets.sensors import (
    SENSORS,
    SensorDraw,
    SensorSpec,
    StereoSensor,
    get_sensor,
    station_average_frames,
)
from edge.sources.acquisition import Acquisition, parse_filter_spec, write_acquisition
from edge.sources.options import FilterOptions

__all__ = [
    "CATEGORIES",
    "DEFECT_TYPES",
    "SceneGenerator",
    "SyntheticScene",
    "add_synth_arguments",
    "run_synth",
    "write_dataset",
]

# New categories go at the end: write_dataset seeds each category by its index here, so the
# data of the earlier ones stays bit-identical.
CATEGORIES = ("puck", "bracket", "block", "hexagon", "disc")
# Parts that exercise pose normalisation of any shape (issue 13): isotropic second moments, any
# angle, and a support whose tilt varies a little per sample as on a real conveyor.
_CONVEYOR_TILT = {"block": 0.025, "hexagon": 0.025, "disc": 0.025}  # ± dz/dx, dz/dy (≤ ~2°)
DEFECT_TYPES = ("color", "geometry", "both")

# Camera: the image spans about 12 cm at 0.5 m, so objects fill roughly half of the frame.
_FIELD_AT_HALF_METRE = 0.12
_CORNER_MARGIN = 6  # px kept free of dropouts so the corner plane fit stays valid


@dataclass
class SyntheticScene:
    """One rendered scene at ``image_size``² pixels."""

    rgb: np.ndarray  # uint8 H×W×3, RGB
    xyz: np.ndarray  # float32 H×W×3, metres, (0,0,0) = no return
    mask: np.ndarray  # bool H×W, True exactly on the defect
    defect: str  # "good" or one of DEFECT_TYPES
    intrinsics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # fx, fy, cx, cy
    # the part's turn (rad): its own +u axis points this way in the image (x right, y down);
    # ground truth for pose tests
    angle: float = 0.0


@dataclass
class _Base:
    """Everything random about a good scene (shape, pose, colours, noise fields)."""

    z_bg: np.ndarray  # background depth along each ray
    lu: np.ndarray  # object-local coordinates (m) of the background intersection
    lv: np.ndarray
    height: np.ndarray  # defect-free object height above the plane (m)
    top: np.ndarray  # bool: object surface where defects may go
    albedo: np.ndarray  # float32 H×W×3 in [0,1]
    shading: np.ndarray  # float32 H×W, from the defect-free shape only
    rgb_noise: np.ndarray
    depth_noise: np.ndarray
    dropout: np.ndarray  # bool: missing points
    object_colour: np.ndarray
    sensor: SensorDraw | None = None  # this capture's camera noise (`--sensor`), else None
    angle: float = 0.0  # the part's turn (rad), `SyntheticScene.angle`


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-ish low-frequency noise: a coarse random grid upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _sample_texture(tex: np.ndarray, lu: np.ndarray, lv: np.ndarray, extent: float) -> np.ndarray:
    """Look up an object-attached texture covering [−extent, extent]² metres."""
    n = tex.shape[0]
    mx = ((lu + extent) / (2 * extent) * (n - 1)).astype(np.float32)
    my = ((lv + extent) / (2 * extent) * (n - 1)).astype(np.float32)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _printed(base: np.ndarray, ink: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Albedo of a print: ``ink`` (RGB) laid over ``base`` (H×W×3) with coverage ``cover`` (H×W)."""
    return base * (1 - cover[..., None]) + ink[None, None, :] * cover[..., None]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _rounded_rect_sdf(lu: np.ndarray, lv: np.ndarray, half_l: float, half_w: float, r: float):
    """Signed distance (m) to a rounded rectangle; negative inside."""
    qx = np.abs(lu) - (half_l - r)
    qy = np.abs(lv) - (half_w - r)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


class SceneGenerator:
    """Seeded generator of synthetic RGB-D scenes for one object category."""

    def __init__(
        self,
        category: str = "puck",
        image_size: int = 128,
        seed: int = 0,
        sensor: str | SensorSpec | None = None,
        distance: float | None = None,
        dent_depth: tuple[float, float] = (0.002, 0.004),
        dent_diameter: tuple[float, float] | None = None,
        fixture_angle: float | None = None,
    ):
        """Args:
            category: one of `CATEGORIES`.
            image_size: side of the square images (px).
            seed: seeds every random choice of the scenes.
            sensor: ``None``/``"ideal"`` (mild Gaussian depth noise, no quantisation: the data
                every earlier release wrote, bit for bit), a name in `edge.datasets.sensors.SENSORS` or
                a `SensorSpec`. The sensor's noise has its own random stream, so the scenes
                (parts, poses, defects) are the same with every sensor for a seed.
            distance: camera-to-support distance (m) of this category's station; ``None``
                keeps the category's own (0.46–0.54 m). When set, the image spans 12 cm of the
                support at that distance, so parts keep their size in pixels.
            dent_depth: range (m) of the depth/height of ``geometry`` defects; a fixed value
                ``(d, d)`` gives every dent and bump that depth, with the same scenes.
            dent_diameter: range (m) of the diameter of ``geometry`` defects on the part's top
                (the diameter of the circle of the dent's area; dents are ellipses of axis
                ratio 0.7–1). ``None`` (default): 5–10 % of the top's area, 10–15 mm across
                on the puck, the data every earlier release wrote. A fixed ``(w, w)`` gives
                every dent that diameter with the same scenes (the random draw that sized the
                dent picks the diameter in the range instead).
            fixture_angle: ``None`` (default): parts lie at any angle, shifted a little. A
                number: every part lies in a fixture, centred, at that angle (degrees, 0 =
                along the image's x axis). The turn and shift are still drawn, so everything
                else (sizes, prints, tilts, defects, noise) is the free-lying data's.
        """
        if category not in CATEGORIES:
            raise ValueError(f"unknown synthetic category '{category}'; choose from {CATEGORIES}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {image_size}")
        self.category = category
        self.image_size = int(image_size)
        self.rng = np.random.default_rng(seed)
        if distance is not None and not 0.05 <= distance <= 5.0:
            raise ValueError(f"distance must be 0.05–5 m, got {distance}")
        self.distance = distance
        lo, hi = (float(v) for v in dent_depth)
        if not 0 < lo <= hi:
            raise ValueError(f"dent_depth must be 0 < min <= max (m), got {dent_depth}")
        self.dent_depth = (lo, hi)
        if dent_diameter is not None:
            wlo, whi = (float(v) for v in dent_diameter)
            if not 0 < wlo <= whi:
                raise ValueError(
                    f"dent_diameter must be 0 < min <= max (m), got {dent_diameter}")
            dent_diameter = (wlo, whi)
        self.dent_diameter = dent_diameter
        self.fixture_angle = None if fixture_angle is None else float(fixture_angle)
        n = self.image_size
        self.f = n * (0.5 if distance is None else distance) / _FIELD_AT_HALF_METRE
        spec = get_sensor(sensor)
        self.sensor = StereoSensor(spec, self.f) if spec is not None else None
        self._sensor_rng = np.random.default_rng([seed, 0x5E45])  # never touches self.rng
        self.c = (n - 1) / 2.0
        grid = (np.arange(n, dtype=np.float64) - self.c) / self.f
        self._rx, self._ry = np.meshgrid(grid, grid)

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """Pinhole intrinsics ``(fx, fy, cx, cy)`` in pixels."""
        return (self.f, self.f, self.c, self.c)

    # ---------------------------------------------------------------- public API
    def sample(self, defect: str = "good") -> SyntheticScene:
        """Draw one scene; ``defect`` is "good" or one of `DEFECT_TYPES`."""
        return self.sample_with_twin(defect)[0]

    def sample_with_twin(self, defect: str = "good") -> tuple[SyntheticScene, SyntheticScene]:
        """Draw one scene and also render the same scene without the defect (its good twin).

        Consumes the same random numbers as `sample`, so both give the same scene for a seed.
        """
        if defect != "good" and defect not in DEFECT_TYPES:
            raise ValueError(f"unknown defect '{defect}'; choose 'good' or one of {DEFECT_TYPES}")
        base = self._draw_base()
        good = self._render(base, defect="good", region=None, spec={})
        if defect == "good":
            return good, good
        region, spec = self._draw_defect(base, defect)
        return self._render(base, defect, region, spec), good

    def sample_still(self, defect: str = "good", n_frames: int = 2) -> list[SyntheticScene]:
        """One part standing still, captured ``n_frames`` times (a station averaging frames).

        Same scene, defect, exposure and white balance in every frame; the sensor's depth noise
        and flying pixels are drawn afresh per frame (temporal noise). Without a sensor the
        frames are identical (the ideal noise is part of the scene).
        """
        if defect != "good" and defect not in DEFECT_TYPES:
            raise ValueError(f"unknown defect '{defect}'; choose 'good' or one of {DEFECT_TYPES}")
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        base = self._draw_base()
        region, spec = self._draw_defect(base, defect) if defect != "good" else (None, {})
        first = base.sensor
        frames = []
        for i in range(n_frames):
            if i:
                base.sensor = self._draw_sensor(colour_from=first)
            frames.append(self._render(base, defect, region, spec))
        return frames

    # ---------------------------------------------------------------- scene drawing
    @property
    def _station(self) -> tuple[float, float, float]:
        """Camera distance and background slopes dz/dx, dz/dy of this category's station.

        Derived from the category name only, so every split and seed of a data set sees the
        same mounting (as at a real station).
        """
        st = np.random.default_rng(zlib.crc32(self.category.encode()))
        d0 = float(st.uniform(0.46, 0.54))
        a, b = st.uniform(-0.06, 0.06, size=2)  # ≤ ~3.4° tilt of the support plane
        if self.distance is not None:
            d0 = float(self.distance)
        return d0, float(a), float(b)

    def _draw_base(self) -> _Base:
        rng, n = self.rng, self.image_size
        # A station's camera is mounted once: distance and plane tilt are fixed per category
        # (`_station`); parts only wobble a little on the conveyor.
        d_station, a_station, b_station = self._station
        d0 = d_station + rng.uniform(-0.003, 0.003)
        a, b = (a_station, b_station) + rng.uniform(-0.008, 0.008, size=2)  # ≤ ~0.5° wobble
        if self.category in _CONVEYOR_TILT:  # (drawn only for these: older data unchanged)
            tilt = _CONVEYOR_TILT[self.category]
            a, b = (a, b) + rng.uniform(-tilt, tilt, size=2)
        z_bg = d0 / (1.0 - a * self._rx - b * self._ry)
        xb, yb = self._rx * z_bg, self._ry * z_bg
        x0, y0 = rng.uniform(-0.006, 0.006, size=2)
        theta = rng.uniform(0, 2 * np.pi)
        if self.fixture_angle is not None:  # (drawn all the same: the rest stays as it was)
            x0 = y0 = 0.0
            theta = math.radians(self.fixture_angle)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        lu = cos_t * (xb - x0) + sin_t * (yb - y0)
        lv = -sin_t * (xb - x0) + cos_t * (yb - y0)

        tex_n = 96
        extent = 0.07
        tex_noise = _sample_texture(
            rng.standard_normal((12, 12)).astype(np.float32).repeat(8, 0).repeat(8, 1),
            lu,
            lv,
            extent,
        )
        tex_noise = cv2.GaussianBlur(tex_noise.astype(np.float32), (0, 0), 1.5)
        if self.category == "puck":
            height, nominal, obj_albedo, bg_colour = self._puck(rng, lu, lv, tex_noise)
        elif self.category == "bracket":
            height, nominal, obj_albedo, bg_colour = self._bracket(
                rng, lu, lv, tex_noise, tex_n, extent
            )
        elif self.category == "block":
            height, nominal, obj_albedo, bg_colour = self._block(rng, lu, lv, tex_noise)
        elif self.category == "hexagon":
            height, nominal, obj_albedo, bg_colour = self._hexagon(
                rng, lu, lv, tex_noise, tex_n, extent
            )
        else:
            height, nominal, obj_albedo, bg_colour = self._disc(rng, lu, lv, tex_noise)
        # Flat top surfaces, one pixel clear of the bevelled rim: defects stay on the object.
        top = cv2.erode((height >= 0.8 * nominal).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if not top.any():
            raise RuntimeError("synthetic object fell outside the image; this is a bug")

        bg_noise = _smooth_noise(rng, (n, n), 6)
        bg_albedo = bg_colour[None, None, :] * (1.0 + 0.06 * bg_noise[..., None])
        obj = (height > 0)[..., None]
        albedo = np.where(obj, obj_albedo, bg_albedo).astype(np.float32)

        # Lambertian shading of the defect-free shape (baked like albedo; defects never enter).
        slope_scale = self.f / z_bg
        gy, gx = np.gradient(height)
        gx, gy = gx * slope_scale, gy * slope_scale
        light = np.array([-0.4, -0.5, 0.77])
        light /= np.linalg.norm(light)
        shade = (-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(1 + gx**2 + gy**2)
        shading = (0.35 + 0.65 * np.clip(shade, 0, None) / light[2]).astype(np.float32)

        rgb_noise = rng.normal(0.0, 0.01, size=(n, n, 3)).astype(np.float32)
        depth_noise = rng.normal(0.0, 0.00015, size=(n, n))
        dropout = np.zeros((n, n), np.uint8)
        scale = n / 128.0
        for _ in range(int(rng.integers(1, 5))):
            cx, cy = rng.integers(_CORNER_MARGIN, n - _CORNER_MARGIN, size=2)
            axes = (max(1, round(rng.uniform(0.5, 2.5) * scale)),) * 2
            cv2.ellipse(dropout, (int(cx), int(cy)), axes, 0, 0, 360, 1, -1)
        return _Base(
            z_bg=z_bg,
            lu=lu,
            lv=lv,
            height=height,
            top=top,
            albedo=albedo,
            shading=shading,
            rgb_noise=rgb_noise,
            depth_noise=depth_noise,
            dropout=dropout.astype(bool),
            object_colour=obj_albedo.reshape(-1, 3)[top.ravel()].mean(axis=0),
            sensor=self._draw_sensor(),
            angle=float(theta),
        )

    def _draw_sensor(self, colour_from: SensorDraw | None = None) -> SensorDraw | None:
        if self.sensor is None:
            return None
        n = self.image_size
        return self.sensor.draw(self._sensor_rng, (n, n), colour_from)

    def _puck(
        self, rng: np.random.Generator, lu: np.ndarray, lv: np.ndarray, tex_noise: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Bevelled disc with an embossed ring groove; dark rubber with fine concentric rings."""
        r = rng.uniform(0.024, 0.030)
        h = rng.uniform(0.010, 0.016)
        bevel = 0.003
        rho = np.hypot(lu, lv)
        height = h * _smoothstep((r - rho) / bevel)
        groove_r = r * rng.uniform(0.55, 0.65)
        height -= 0.001 * np.exp(-(((rho - groove_r) / 0.001) ** 2)) * (height > 0)
        colour = np.array([0.22, 0.20, 0.19]) * rng.uniform(0.85, 1.15, size=3)
        rings = np.sin(2 * np.pi * rho / 0.0012 + rng.uniform(0, 2 * np.pi))
        albedo = colour[None, None, :] * (1 + 0.10 * tex_noise[..., None] + 0.05 * rings[..., None])
        bg = np.array([0.70, 0.70, 0.66]) * rng.uniform(0.92, 1.08, size=3)
        return height, h, albedo, bg

    def _bracket(
        self,
        rng: np.random.Generator,
        lu: np.ndarray,
        lv: np.ndarray,
        tex_noise: np.ndarray,
        tex_n: int,
        extent: float,
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Rounded plate with two through holes and a raised flange; brushed light metal."""
        half_l = rng.uniform(0.038, 0.044)
        half_w = rng.uniform(0.017, 0.021)
        t = rng.uniform(0.007, 0.009)
        plate = _smoothstep(-_rounded_rect_sdf(lu, lv, half_l, half_w, 0.005) / 0.0015)
        flange = (lu > half_l - 0.015).astype(np.float64)
        height = plate * (t + 0.010 * flange)
        for hx in (-0.5 * half_l, 0.1 * half_l):
            height *= np.hypot(lu - hx, lv) > 0.0045
        colour = np.array([0.62, 0.64, 0.70]) * rng.uniform(0.9, 1.1, size=3)
        stripes = rng.standard_normal((tex_n, 1)).astype(np.float32).repeat(tex_n, axis=1)
        brushed = _sample_texture(stripes, lu, lv, extent)
        albedo = colour[None, None, :] * (
            1 + 0.05 * tex_noise[..., None] + 0.06 * brushed[..., None]
        )
        bg = np.array([0.20, 0.22, 0.26]) * rng.uniform(0.9, 1.1, size=3)
        return height, t, albedo, bg

    def _block(
        self, rng: np.random.Generator, lu: np.ndarray, lv: np.ndarray, tex_noise: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Square block (isotropic second moments) with a printed grid centred on its top: it
        looks the same under a quarter turn, so only its angle modulo 90° can be normalised."""
        half = rng.uniform(0.020, 0.024)
        h = rng.uniform(0.010, 0.014)
        height = h * _smoothstep(-_rounded_rect_sdf(lu, lv, half, half, 0.002) / 0.0015)
        # One print for every part of a product: 4×4 cells, lines about 1.6 mm wide (1.7 px at
        # 128 px; thinner lines alias differently at every angle). The first version drew 4 or 5
        # cells per part with 1 mm lines (docs/any-shape.md measured block with it).
        pitch = 2 * half / 4
        # distance to the nearest grid line (lines through the centre, every `pitch`)
        du = np.abs((lu / pitch + 0.5) % 1.0 - 0.5) * pitch
        dv = np.abs((lv / pitch + 0.5) % 1.0 - 0.5) * pitch
        line = 1.0 - _smoothstep((np.minimum(du, dv) - 0.0008) / 0.0004)
        colour = np.array([0.80, 0.74, 0.58]) * rng.uniform(0.92, 1.08, size=3)
        ink = np.array([0.12, 0.14, 0.30]) * rng.uniform(0.9, 1.1, size=3)
        base = colour[None, None, :] * (1 + 0.05 * tex_noise[..., None])
        albedo = _printed(base, ink, line)
        bg = np.array([0.30, 0.30, 0.32]) * rng.uniform(0.9, 1.1, size=3)
        return height, h, albedo, bg

    def _hexagon(
        self,
        rng: np.random.Generator,
        lu: np.ndarray,
        lv: np.ndarray,
        tex_noise: np.ndarray,
        tex_n: int,
        extent: float,
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Hexagonal part (six-fold symmetric outline) with a shallow round recess in the
        centre; bead-blasted metal."""
        apothem = rng.uniform(0.020, 0.024)
        h = rng.uniform(0.008, 0.012)
        # distance to a regular hexagon with flats at ±apothem (max over its three normals)
        d = np.zeros_like(lu)
        for k in range(3):
            ang = k * math.pi / 3
            d = np.maximum(d, np.abs(lu * math.cos(ang) + lv * math.sin(ang)))
        height = h * _smoothstep((apothem - d) / 0.0015)
        rho = np.hypot(lu, lv)
        recess_r = apothem * rng.uniform(0.40, 0.50)
        height -= 0.0015 * _smoothstep((recess_r - rho) / 0.001)
        colour = np.array([0.55, 0.56, 0.58]) * rng.uniform(0.9, 1.1, size=3)
        grain = _sample_texture(
            rng.standard_normal((tex_n, tex_n)).astype(np.float32), lu, lv, extent
        )
        albedo = colour[None, None, :] * (
            1 + 0.05 * tex_noise[..., None] + 0.04 * grain[..., None]
        )
        bg = np.array([0.18, 0.24, 0.20]) * rng.uniform(0.9, 1.1, size=3)
        return height, h, albedo, bg

    def _disc(
        self, rng: np.random.Generator, lu: np.ndarray, lv: np.ndarray, tex_noise: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Round part whose outline says nothing about its angle; a printed arrow (shaft and
        head along +u) does: only the content can settle its pose."""
        r = rng.uniform(0.023, 0.027)
        h = rng.uniform(0.006, 0.010)
        rho = np.hypot(lu, lv)
        height = h * _smoothstep((r - rho) / 0.002)
        un, vn = lu / r, lv / r
        # off-centre, so its ink's centroid points along +u (a centred print would balance)
        shaft = (un > -0.15) & (un < 0.30) & (np.abs(vn) < 0.09)
        head = (un >= 0.30) & (un < 0.75) & (np.abs(vn) < 0.30 * (0.75 - un) / 0.45)
        arrow = cv2.GaussianBlur((shaft | head).astype(np.float32), (0, 0), 0.6)
        colour = np.array([0.86, 0.86, 0.82]) * rng.uniform(0.95, 1.05, size=3)
        ink = np.array([0.60, 0.12, 0.10]) * rng.uniform(0.9, 1.1, size=3)
        base = colour[None, None, :] * (1 + 0.04 * tex_noise[..., None])
        albedo = _printed(base, ink, arrow)
        bg = np.array([0.25, 0.27, 0.33]) * rng.uniform(0.9, 1.1, size=3)
        return height, h, albedo, bg

    # ---------------------------------------------------------------- defects
    def _defect_centre(self, base: _Base, radius_px: float) -> tuple[int, int]:
        """A top-surface pixel at least ``radius_px`` from the object's edge."""
        dist = cv2.distanceTransform(base.top.astype(np.uint8), cv2.DIST_L2, 5)
        ys, xs = np.nonzero(dist >= min(radius_px, dist.max()) * 0.999)
        i = int(self.rng.integers(len(ys)))
        return int(xs[i]), int(ys[i])

    def _blob(self, centre: tuple[int, int], radius: float) -> np.ndarray:
        """Irregular blob: a circle whose radius varies with angle (harmonics 2–4)."""
        n = self.image_size
        yy, xx = np.mgrid[0:n, 0:n]
        dx, dy = xx - centre[0], yy - centre[1]
        phi = np.arctan2(dy, dx)
        edge = np.ones_like(phi)
        for k in (2, 3, 4):
            edge += self.rng.uniform(0.0, 0.12) * np.cos(k * phi + self.rng.uniform(0, 2 * np.pi))
        return np.hypot(dx, dy) < radius * edge

    def _ellipse(self, centre: tuple[int, int], radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Rotated ellipse of area π·radius² and its ellipsoidal cap profile (1 at the centre)."""
        n = self.image_size
        ratio = self.rng.uniform(0.7, 1.0)
        ang = self.rng.uniform(0, np.pi)
        ra, rb = radius / math.sqrt(ratio), radius * math.sqrt(ratio)
        yy, xx = np.mgrid[0:n, 0:n]
        dx, dy = xx - centre[0], yy - centre[1]
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        rho2 = (u / ra) ** 2 + (v / rb) ** 2
        # Ellipsoidal cap: full height at the centre, steep walls at the rim.
        cap = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
        return rho2 < 1.0, cap

    def _stroke(self, centre: tuple[int, int], radius: float, jagged: bool) -> np.ndarray:
        """A scratch or crack: a (jagged) polyline of area about π·radius²."""
        n = self.image_size
        length = 5.0 * radius
        width = max(2, round(math.pi * radius**2 / length))
        ang = self.rng.uniform(0, np.pi)
        steps = 6 if jagged else 1
        ts = np.linspace(-0.5, 0.5, steps + 1) * length
        lateral = self.rng.uniform(-0.15, 0.15, size=steps + 1) * length if jagged else 0 * ts
        pts = np.stack(
            [
                centre[0] + ts * math.cos(ang) - lateral * math.sin(ang),
                centre[1] + ts * math.sin(ang) + lateral * math.cos(ang),
            ],
            axis=1,
        )
        canvas = np.zeros((n, n), np.uint8)
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 1, thickness=int(width))
        return canvas.astype(bool)

    def _draw_defect(self, base: _Base, defect: str) -> tuple[np.ndarray, dict]:
        rng = self.rng
        area = float(np.count_nonzero(base.top))
        share = rng.uniform(0.05, 0.10)
        if defect == "geometry" and self.dent_diameter is not None:
            # The same draw, mapped onto the diameter range: the scenes stay those of any size.
            lo, hi = self.dent_diameter
            diameter = lo + (share - 0.05) / 0.05 * (hi - lo)
            z_top = float(np.median((base.z_bg - base.height)[base.top]))
            radius = 0.5 * diameter * self.f / z_top  # a pixel spans z/f metres there
        else:
            radius = math.sqrt(share * area / math.pi)
        centre = self._defect_centre(base, radius)
        cap = None
        if defect == "geometry":
            region, cap = self._ellipse(centre, radius)  # bumps and dents are round
        elif rng.random() < 0.5:
            region = self._blob(centre, radius)  # stain / hole
        else:
            region = self._stroke(centre, radius, jagged=(defect == "both"))  # scratch / crack
        region &= base.top
        region[centre[1], centre[0]] = True  # the centre is on the top surface: never empty
        spec: dict = {"centre": centre, "radius": radius}
        if defect == "color":
            palette = np.array(
                [[0.60, 0.28, 0.10], [0.92, 0.90, 0.82], [0.12, 0.22, 0.62], [0.15, 0.45, 0.15]]
            )
            dist = np.linalg.norm(palette - base.object_colour, axis=1)
            choice = np.argsort(dist)[::-1][int(rng.integers(2))]
            spec.update(colour=palette[choice], alpha=rng.uniform(0.7, 0.9))
        elif defect == "geometry":
            sign = 1.0 if rng.random() < 0.5 else -1.0
            spec.update(amplitude=sign * rng.uniform(*self.dent_depth), cap=cap)
        else:  # both
            spec.update(depth=rng.uniform(0.003, 0.006), darken=rng.uniform(0.2, 0.35))
        return region, spec

    # ---------------------------------------------------------------- rendering
    def _render(
        self, base: _Base, defect: str, region: np.ndarray | None, spec: dict
    ) -> SyntheticScene:
        albedo = base.albedo
        height = base.height
        if defect == "color":
            a = spec["alpha"]
            # Keep a little of the surface texture inside the stain so it looks painted on.
            texture = albedo.mean(axis=2, keepdims=True) / max(base.object_colour.mean(), 1e-3)
            stained = (1 - a) * albedo + a * spec["colour"][None, None, :] * texture
            albedo = np.where(region[..., None], stained, albedo)
        elif defect == "geometry":
            bump = spec["amplitude"] * spec["cap"]  # > 0 everywhere inside the region
            height = np.where(region, height + bump, height)
        elif defect == "both":
            height = np.where(region, np.maximum(height - spec["depth"], 0.0), height)
            albedo = np.where(region[..., None], albedo * spec["darken"], albedo)

        # Same dtype for every defect, so pixels outside the mask round exactly like the twin.
        albedo = albedo.astype(np.float32, copy=False)
        linear = albedo * base.shading[..., None]
        if base.sensor is not None:
            linear = self.sensor.colour(linear, base.sensor)
        rgb = np.clip(linear + base.rgb_noise, 0.0, 1.0)
        rgb_u8 = np.round(rgb * 255).astype(np.uint8)

        if base.sensor is None:
            z = base.z_bg - height + base.depth_noise
        else:  # the sensor's noise replaces the ideal one; 0 = no return
            z = self.sensor.depth(base.z_bg - height, base.sensor)
        xyz = np.stack([self._rx * z, self._ry * z, z], axis=-1).astype(np.float32)
        xyz[base.dropout] = 0.0
        mask = region.copy() if region is not None else np.zeros(z.shape, bool)
        return SyntheticScene(
            rgb=rgb_u8, xyz=xyz, mask=mask, defect=defect, intrinsics=self.intrinsics,
            angle=base.angle,
        )


def _split_plan(
    n_train: int, n_validation: int, n_test_good: int, n_test_per_defect: int | dict[str, int]
) -> list[tuple[str, str, int]]:
    plan = [("train", "good", n_train), ("validation", "good", n_validation)]
    plan.append(("test", "good", n_test_good))
    per = (n_test_per_defect if isinstance(n_test_per_defect, dict)
           else dict.fromkeys(DEFECT_TYPES, n_test_per_defect))
    unknown = set(per) - set(DEFECT_TYPES)
    if unknown:
        raise ValueError(f"unknown defect types {sorted(unknown)}; choose from {DEFECT_TYPES}")
    # (the plan's order, not the counts, seeds each folder: a count of 0 changes no other folder)
    return plan + [("test", d, per.get(d, 0)) for d in DEFECT_TYPES]


def write_dataset(
    out: Path,
    categories=CATEGORIES,
    image_size: int = 128,
    n_train: int = 60,
    n_validation: int = 12,
    n_test_good: int = 12,
    n_test_per_defect: int | dict[str, int] = 12,
    seed: int = 0,
    progress: bool = True,
    sensor: str | SensorSpec | None = None,
    distance: float | dict[str, float] | None = None,
    average_frames: int = 1,
    dent_depth: tuple[float, float] = (0.002, 0.004),
    dent_diameter: tuple[float, float] | None = None,
    filters: FilterOptions | None = None,
    fixture_angle: float | None = None,
) -> None:
    """Write a synthetic data set in the MVTec 3D-AD layout under ``out``.

    ``<out>/<category>/{train,validation,test}/<type>/{rgb,xyz,gt}/NNN.{png,tiff}``; gt (0/255)
    only under test (all zero for test/good, as in MVTec 3D-AD), plus
    ``<category>/calibration/camera_parameters.json`` with the pinhole intrinsics. Each
    (category, split, type) folder has its own seed derived from ``seed``, so changing one count
    does not change the other folders.

    ``n_test_per_defect`` may map defect types to counts (missing types: none written).
    ``sensor``, ``distance``, ``dent_depth`` and ``dent_diameter`` are passed to
    `SceneGenerator` (``distance`` may map category names to distances), as is ``fixture_angle``
    (every part centred at that angle: a fixture's data, otherwise the free-lying data's). With a sensor, ``<category>/calibration/sensor.json`` records the
    sensor, its distance and the RMS depth error the model predicts there. ``average_frames``
    > 1 writes each part as the station's temporal average of that many captures
    (`edge.sources.averaging`, as ``camera.realsense.average_frames`` records it).

    ``filters`` (with a sensor) passes every capture through librealsense's own spatial /
    temporal / hole-filling filters before averaging, as the station does
    (`edge.sources.rs_depth_filter`); each part is captured `frames_per_part` times (the
    temporal filter's history) and the last filtered capture, or the mean with averaging, is
    the sample. ``<category>/calibration/acquisition.json`` records the chain
    (`edge.sources.acquisition`).
    """
    from tqdm import tqdm

    spec = get_sensor(sensor)
    filters = filters if filters is not None and filters.any_enabled else None
    if filters is not None and spec is None:
        raise ValueError("--filters needs a --sensor other than ideal (the ideal data has no "
                         "depth units or stereo noise for librealsense's filters to work on)")
    if filters is not None and filters.decimation > 1:  # before anything is written
        raise ValueError(f"decimation {filters.decimation} changes the depth resolution; the "
                         "sensor model's data cannot repeat the station's registration of the "
                         "smaller image (leave decimation out of --filters)")
    n_still = frames_per_part(filters, average_frames)

    out = Path(out)
    categories = tuple(categories)
    for c in categories:
        if c not in CATEGORIES:
            raise ValueError(f"unknown synthetic category '{c}'; choose from {CATEGORIES}")
    plan = _split_plan(n_train, n_validation, n_test_good, n_test_per_defect)
    total = len(categories) * sum(p[2] for p in plan)
    with tqdm(total=total, desc="synth", disable=not progress, unit="img") as bar:
        for ci, category in enumerate(CATEGORIES):
            if category not in categories:
                continue
            cat_dir = out / category
            for pi, (split, dtype, count) in enumerate(plan):
                if count <= 0:
                    continue
                sub_seed = int(np.random.SeedSequence([seed, ci, pi]).generate_state(1)[0])
                gen = SceneGenerator(
                    category, image_size, seed=sub_seed, sensor=spec,
                    distance=_distance_for(distance, category), dent_depth=dent_depth,
                    dent_diameter=dent_diameter, fixture_angle=fixture_angle,
                )
                type_dir = cat_dir / split / dtype
                for sub in ("rgb", "xyz") + (("gt",) if split == "test" else ()):
                    (type_dir / sub).mkdir(parents=True, exist_ok=True)
                chain = _filter_chain(gen, filters) if filters is not None else None
                for i in range(count):
                    if chain is not None:
                        scene = _filtered_part(gen, chain, dtype, n_still, average_frames)
                    elif average_frames <= 1:
                        scene = gen.sample(dtype)
                    else:
                        scene = _averaged(gen.sample_still(dtype, average_frames))
                    name = f"{i:03d}"
                    cv2.imwrite(
                        str(type_dir / "rgb" / f"{name}.png"),
                        cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR),
                    )
                    # Contiguous H×W×3 float32 in one page, like MVTec 3D-AD (explicit, because
                    # tifffile's default for 3-sample data is changing).
                    tifffile.imwrite(
                        type_dir / "xyz" / f"{name}.tiff", scene.xyz, photometric="rgb"
                    )
                    if split == "test":
                        cv2.imwrite(
                            str(type_dir / "gt" / f"{name}.png"),
                            scene.mask.astype(np.uint8) * 255,
                        )
                    bar.update(1)
                if chain is not None:
                    chain.close()
            calib = cat_dir / "calibration"
            calib.mkdir(parents=True, exist_ok=True)
            station = SceneGenerator(
                category, image_size, sensor=spec, distance=_distance_for(distance, category)
            )
            fx, fy, cx, cy = station.intrinsics
            (calib / "camera_parameters.json").write_text(
                json.dumps({"fx": fx, "fy": fy, "cx": cx, "cy": cy, "unit": "m"}, indent=2)
            )
            if station.sensor is not None:
                record = _sensor_record(station) | {"average_frames": average_frames}
                (calib / "sensor.json").write_text(json.dumps(record, indent=2))
            write_acquisition(cat_dir, Acquisition(
                source="sensor-model" if spec is not None else "synthetic",
                filters=filters or FilterOptions(), average_frames=average_frames,
                depth_units_m=spec.depth_unit_m if spec is not None else None,
                frames_per_part=n_still if filters is not None else None,
                note="trd-edge synth" + (
                    f": librealsense filters on the sensor model, {n_still} still frame(s) "
                    "per part" if filters is not None else ": no filters"),
            ))


# Still frames per part when the temporal filter runs without averaging: its history needs
# frames of the part standing still (at 30 fps a part stopping ~0.3 s); the sample is the last.
TEMPORAL_STILL_FRAMES = 8


def frames_per_part(filters: FilterOptions | None, average_frames: int) -> int:
    """Captures of each part the data set's filters see: ``average_frames`` when averaging,
    `TEMPORAL_STILL_FRAMES` for the temporal filter alone, else 1."""
    if average_frames > 1:
        return average_frames
    return TEMPORAL_STILL_FRAMES if filters is not None and filters.temporal else 1


def _filter_chain(gen: SceneGenerator, filters: FilterOptions):
    """librealsense's filters on a software depth sensor with this generator's camera."""
    from edge.frames import Intrinsics
    from edge.sources.rs_depth_filter import DepthFilterChain

    assert gen.sensor is not None
    n = gen.image_size
    intr = Intrinsics(fx=gen.f, fy=gen.f, cx=gen.c, cy=gen.c, width=n, height=n)
    # disparities in the real camera's pixels (see edge.sources.rs_depth_filter)
    baseline_mm = gen.sensor.spec.baseline_m * 1000.0 / gen.sensor.scale
    return DepthFilterChain(filters, intr, gen.sensor.spec.depth_unit_m, baseline_mm)


def _filtered_part(gen: SceneGenerator, chain, defect: str, n_still: int,
                   average_frames: int) -> SyntheticScene:
    """One part: ``n_still`` captures through the filters (a fresh history), then the
    station's mean of them (``average_frames`` > 1) or the last one."""
    scenes = gen.sample_still(defect, n_still) if n_still > 1 else [gen.sample(defect)]
    chain.new_part()
    filtered = [filter_scene(s, chain, gen) for s in scenes]
    return _averaged(filtered) if average_frames > 1 else filtered[-1]


def filter_scene(scene: SyntheticScene, chain, gen: SceneGenerator) -> SyntheticScene:
    """``scene`` with its depth passed through ``chain`` (a `DepthFilterChain`) as Z16."""
    from edge.sources.rs_software import xyz_to_depth

    units = chain.depth_units
    z = chain(xyz_to_depth(scene.xyz, units)).astype(np.float64) * units
    xyz = np.stack([gen._rx * z, gen._ry * z, z], axis=-1).astype(np.float32)
    return dataclasses.replace(scene, xyz=xyz)


def _averaged(scenes: list[SyntheticScene]) -> SyntheticScene:
    """The station's valid-aware temporal mean of captures of one still part."""
    from edge.frames import Frame
    from edge.sources.averaging import average_frames

    mean = average_frames([Frame(rgb=s.rgb, xyz=s.xyz, frame_number=i)
                           for i, s in enumerate(scenes)])
    first = scenes[0]
    return SyntheticScene(mean.rgb, mean.xyz, first.mask, first.defect, first.intrinsics,
                          first.angle)


def _distance_for(distance: float | dict[str, float] | None, category: str) -> float | None:
    if isinstance(distance, dict):
        return distance.get(category)
    return distance


def _sensor_record(gen: SceneGenerator) -> dict:
    """What a data set's ``sensor.json`` says: the model and what it predicts at the station."""
    assert gen.sensor is not None
    sensor = gen.sensor
    d0 = gen._station[0]
    return {
        "sensor": dataclasses.asdict(sensor.spec),
        "distance_m": d0,
        "depth_rms_m": float(sensor.spec.depth_rms(d0)),
        "plane_rms_m": sensor.expected_rms(d0),
        "noise_correlation_px": sensor.correlation_px,
        "camera_px_per_image_px": 1.0 / sensor.scale,
    }


def _mm_range(flag: str):
    """An argparse type for ``3`` or ``1,5`` (mm) → (min, max) metres, named by ``flag``."""

    def parse(text: str) -> tuple[float, float]:
        try:
            vals = [float(v) / 1000.0 for v in text.split(",")]
        except ValueError:
            vals = []
        if len(vals) not in (1, 2) or not 0 < vals[0] <= vals[-1]:
            raise argparse.ArgumentTypeError(f"{flag} takes MM or MIN,MAX in mm, got {text!r}")
        return vals[0], vals[-1]

    return parse


_parse_dent_depth = _mm_range("--dent-depth")
_parse_dent_diameter = _mm_range("--dent-diameter")


def _parse_distance(text: str) -> float | dict[str, float]:
    """``0.55`` for every category, or ``puck=0.55,bracket=0.5``."""
    try:
        if "=" not in text:
            return float(text)
        out = {}
        for item in text.split(","):
            name, _, value = item.partition("=")
            out[name.strip()] = float(value)
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--distance takes metres (0.55) or CATEGORY=metres pairs (puck=0.55,bracket=0.5), "
            f"got {text!r}"
        ) from None


def _parse_filters(text: str) -> FilterOptions:
    try:
        return parse_filter_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `trd-edge synth` options to ``parser`` (for the CLI to wire to `run_synth`)."""
    parser.add_argument("--out", type=Path, required=True, help="output root folder")
    parser.add_argument(
        "--categories",
        default=",".join(CATEGORIES),
        help=f"comma-separated categories out of {', '.join(CATEGORIES)}",
    )
    parser.add_argument("--image-size", dest="image_size", type=int, default=128)
    parser.add_argument("--n-train", dest="n_train", type=int, default=60)
    parser.add_argument("--n-validation", dest="n_validation", type=int, default=12)
    parser.add_argument("--n-test-good", dest="n_test_good", type=int, default=12)
    parser.add_argument("--n-test-per-defect", dest="n_test_per_defect", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sensor",
        default="ideal",
        choices=["ideal", *SENSORS],
        help="depth camera model (edge/datasets/sensors.py): ideal = mild noise, no quantisation (the "
        "default data); d435 / d405 = Intel's RMS model, correlated noise, depth units, IR "
        "shadows, flying pixels, exposure and white-balance changes",
    )
    parser.add_argument(
        "--distance",
        type=_parse_distance,
        default=None,
        help="camera distance in m (0.55), or per category (puck=0.55,bracket=0.5); default: "
        "each category's own, 0.46-0.54 m",
    )
    parser.add_argument(
        "--depth-unit",
        dest="depth_unit",
        type=float,
        default=None,
        help="depth unit in m with --sensor (default: the camera's, 0.001 D435 / 0.0001 D405)",
    )
    parser.add_argument(
        "--dent-depth",
        dest="dent_depth",
        type=_parse_dent_depth,
        default=(0.002, 0.004),
        help="depth of the geometry defects in mm: MIN,MAX or one value (default 2,4); the "
        "scenes stay the same, so one trained run can be evaluated per depth",
    )
    parser.add_argument(
        "--dent-diameter",
        dest="dent_diameter",
        type=_parse_dent_diameter,
        default=None,
        help="diameter of the geometry defects in mm: MIN,MAX or one value (default: 5-10 %% "
        "of the part's top area, 10-15 mm on the puck); the scenes stay the same",
    )
    parser.add_argument(
        "--average-frames",
        dest="average_frames",
        type=int,
        default=None,
        help="with --sensor: write each part as the mean of N captures of it standing still "
        "(what a station with camera.realsense.average_frames=N records); default: the "
        "station default for the camera at that distance (frames that bring the depth noise "
        "to 0.2 mm: 32 for a D435 at 0.55 m, 2 for a D405 at 0.2 m; 1 with --sensor ideal)",
    )
    parser.add_argument(
        "--filters",
        type=_parse_filters,
        default=None,
        help="with --sensor: pass every capture through librealsense's own filters, as a "
        "station with camera.realsense.filters does: spatial[=ALPHA:DELTA], "
        "temporal[=ALPHA:DELTA], hole_filling[=MODE], comma-separated (e.g. "
        "spatial,temporal,hole_filling=1); each of the part's averaged frames is filtered, "
        f"and with --average-frames 1 the temporal filter sees {TEMPORAL_STILL_FRAMES} still "
        "frames per part (the last is the sample). Needs pyrealsense2",
    )
    parser.add_argument(
        "--subpixel",
        type=float,
        default=None,
        help="RMS disparity error in px with --sensor (default 0.08, Intel's typical value)",
    )
    parser.add_argument(
        "--fixtured",
        dest="fixture_angle",
        type=float,
        nargs="?",
        const=0.0,
        default=None,
        metavar="DEG",
        help="every part lies in a fixture, centred, at DEG degrees (default 0: along the "
        "image's x axis); without it parts lie at any angle, shifted a little. Sizes, prints, "
        "tilts, defects and noise are the same either way",
    )
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """CLI handler for `trd-edge synth`; returns the process exit code."""
    raw = args.categories
    if raw is None:
        raw = CATEGORIES
    elif isinstance(raw, str):
        raw = [raw]
    # Accept "--categories a b" (nargs="+") as well as "--categories a,b".
    cats = [c.strip() for item in raw for c in str(item).split(",") if c.strip()]
    try:
        spec = get_sensor(
            getattr(args, "sensor", "ideal"),
            depth_unit_m=getattr(args, "depth_unit", None),
            subpixel=getattr(args, "subpixel", None),
        )
        distance = getattr(args, "distance", None)
        overrides = (getattr(args, "depth_unit", None), getattr(args, "subpixel", None))
        given = getattr(args, "average_frames", None)
        if spec is None and (any(v is not None for v in overrides) or (given or 1) > 1):
            raise ValueError(
                "--depth-unit, --subpixel and --average-frames need a --sensor other than ideal"
            )
        if given is not None and given < 1:
            raise ValueError(f"--average-frames must be at least 1, got {given}")
        # each category's camera distance, read once (its default station depends on it)
        d0s = {c: SceneGenerator(c, args.image_size, sensor=spec,
                                 distance=_distance_for(distance, c))._station[0]
               for c in cats} if spec is not None else {}
        averages = {c: given if given is not None
                    else station_average_frames(spec, d0s[c]) if spec is not None else 1
                    for c in cats}
        for average in sorted(set(averages.values())):  # (categories have their own seeds)
            _write_group(args, [c for c in cats if averages[c] == average], spec, distance,
                         average)
    except ValueError as exc:
        print(f"trd-edge synth: {exc}")
        return 2
    print(f"wrote synthetic data set for {', '.join(cats)} to {args.out}")
    for cat, d0 in d0s.items():
        lo, hi = spec.ideal_range_m
        note = "" if lo <= d0 <= hi else f" (outside the {spec.name}'s ideal {lo}-{hi} m)"
        n = averages[cat]
        mean = (f", mean of {n} still frames ({spec.plane_rms(d0) / n**0.5 * 1e3:.2f} mm"
                + (", the station default" if given is None else "") + ")") if n > 1 else ""
        print(f"  {cat}: {spec.name} at {d0:.3f} m{note}: depth RMS "
              f"{float(spec.depth_rms(d0)) * 1e3:.2f} mm, unit {spec.depth_unit_m * 1e3:g} mm"
              + mean)
    return 0


def _write_group(args: argparse.Namespace, cats: list[str], spec: SensorSpec | None, distance,
                 average: int) -> None:
    """One `write_dataset` call for the categories that average the same number of frames."""
    write_dataset(
        Path(args.out),
        categories=tuple(cats),
        image_size=args.image_size,
        n_train=args.n_train,
        n_validation=args.n_validation,
        n_test_good=args.n_test_good,
        n_test_per_defect=args.n_test_per_defect,
        seed=args.seed,
        progress=getattr(args, "progress", True),
        sensor=spec,
        distance=distance,
        average_frames=average,
        dent_depth=getattr(args, "dent_depth", (0.002, 0.004)),
        dent_diameter=getattr(args, "dent_diameter", None),
        filters=getattr(args, "filters", None),
        fixture_angle=getattr(args, "fixture_angle", None),
    )
