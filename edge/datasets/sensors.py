"""Stereo depth-camera models for synthetic RGB-D data (`trd-edge synth --sensor`).

A RealSense D400 camera finds, for each pixel of its left imager, the disparity ``d`` (px) of
the matching patch in the right imager; depth is ``z = f·B / d`` (``f`` focal length in px,
``B`` baseline). An RMS disparity error ``σ_d`` (Intel calls it the *subpixel* RMS; ~0.08 px
is typical for a well-textured scene) becomes a depth RMS that grows with distance squared:

    σ_z ≈ z² · σ_d / (f · B)                                                      (Intel)

Sources (read Dec 2026):

* Intel, "Tuning depth cameras for best performance" (Grunnet-Jepsen, Sweetser, Woodfill;
  https://dev.intelrealsense.com/docs/tuning-depth-cameras-for-best-performance): the RMS
  formula above, ``f = ½·Xres / tan(HFOV/2)``, subpixel ≈ 0.08 px, and 848×480 as the D435's
  optimal depth resolution.
* Intel RealSense D400 series datasheet (doc. 337029): D435 baseline 50 mm, depth FOV
  87°×58°, min-Z ≈ 195 mm at 848×480; D405 baseline 18 mm, FOV 87°×58°, ideal range
  7–50 cm, min-Z 100 mm at 1280×720 (70 mm at 848×480).
* librealsense PR #8946: a D405's default depth unit is 0.1 mm (0.0001 m); other D400s 1 mm.
* librealsense advanced-mode presets: census window ``param-censususize/vsize`` = 9 px.

What the model does (`StereoSensor.depth`), all in the camera's geometry, then sampled on the
synthetic image's pixel grid (the station registers depth onto its working grid by projecting
camera pixels, so every grid pixel carries one camera pixel's error, unaveraged):

1. **Correlated noise.** The matcher compares 9×9 windows, so neighbouring disparities share
   most of their evidence: the disparity noise is white noise smoothed by a Gaussian whose
   variance equals a 9-px box's (σ_k = 9/√12 camera px), rescaled to unit variance and
   multiplied by σ_d. Its autocorrelation is ``exp(−lag² / 4σ_k²)``: correlation length
   (1/e) ``2σ_k`` (`StereoSensor.correlation_px`). Depth ``f·B / (f·B/z + σ_d·n)`` then has
   the RMS of the formula at every distance.
2. **IR shadow / occlusion.** A background point next to a height step is hidden from the
   right imager by the nearer surface: depth is invalid (0) there. Computed exactly per image
   row from the true disparities (the band is ``f·B·(1/z_near − 1/z_far)`` px wide, to the left
   of a raised part in the left-imager image); nothing else becomes a hole.
3. **Flying pixels.** Where the matching window straddles a depth step (within a quarter of
   the window of it, and the step is > `SensorSpec.rim_sigmas` × σ_z), a share
   `SensorSpec.flying_prob` of pixels report a depth between the two surfaces.
4. **Quantisation** to the depth unit (Z16 raw units × depth scale), and invalid below min-Z.

Colour (`StereoSensor.colour`): a per-scene exposure gain (log-normal) and white-balance gains
of red and blue, as auto-exposure and auto white balance move from part to part.

Not modelled: the matcher's low-pass of the geometry itself (fattening of small features),
the projector's own shadow, subpixel non-linearity ("pixel locking"), lens distortion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

__all__ = [
    "FINE_NOISE_MAX_PX",
    "FINE_NOISE_SMOOTHING_PX",
    "MAX_STATION_FRAMES",
    "SENSORS",
    "STATION_NOISE_GOAL_M",
    "SensorDraw",
    "SensorSpec",
    "StereoSensor",
    "station_average_frames",
    "depth_smoothing_for",
    "get_sensor",
]


@dataclass(frozen=True)
class SensorSpec:
    """A stereo depth camera, from its datasheet (see the module docstring for sources).

    Attributes:
        name: short name (``d435``).
        baseline_m: distance between the two imagers.
        hfov_deg: horizontal depth field of view.
        width_px: depth stream width the parameters refer to (the camera's optimal mode).
        subpixel: RMS disparity error in px (Intel: ~0.08 on a textured target).
        census_px: side of the stereo matching window in camera px.
        depth_unit_m: default depth unit (metres per Z16 step).
        min_z_m: nearest measurable depth at ``width_px`` (datasheet min-Z).
        ideal_range_m: the datasheet's recommended working range.
        flying_prob: share of rim pixels whose depth lies between the two surfaces. This and
            the fields below are model choices, not datasheet values.
        rim_sigmas: a depth step counts as a rim when larger than this many σ_z.
        exposure_sd: standard deviation of ln(exposure gain) from scene to scene.
        white_balance_sd: standard deviation of ln(red, blue gain) from scene to scene.
    """

    name: str
    baseline_m: float
    hfov_deg: float
    width_px: int
    subpixel: float
    census_px: int
    depth_unit_m: float
    min_z_m: float
    ideal_range_m: tuple[float, float]
    flying_prob: float = 0.3
    rim_sigmas: float = 8.0
    exposure_sd: float = 0.08
    white_balance_sd: float = 0.03

    @property
    def focal_px(self) -> float:
        """Focal length in camera px: ``½·width / tan(HFOV/2)``."""
        return 0.5 * self.width_px / math.tan(math.radians(self.hfov_deg) / 2)

    def depth_rms(self, z: np.ndarray | float) -> np.ndarray | float:
        """Intel's RMS depth error (m) at depth ``z`` (m): ``z²·subpixel / (f·B)``."""
        return np.square(z) * self.subpixel / (self.focal_px * self.baseline_m)

    def plane_rms(self, z: float, depth_unit_m: float | None = None) -> float:
        """RMS a plane fit should measure at ``z``: noise plus quantisation (unit²/12)."""
        unit = self.depth_unit_m if depth_unit_m is None else depth_unit_m
        return float(math.sqrt(float(self.depth_rms(z)) ** 2 + unit**2 / 12.0))


SENSORS: dict[str, SensorSpec] = {
    "d435": SensorSpec(
        name="d435", baseline_m=0.050, hfov_deg=87.0, width_px=848, subpixel=0.08,
        census_px=9, depth_unit_m=0.001, min_z_m=0.195, ideal_range_m=(0.3, 3.0),
    ),
    "d405": SensorSpec(
        name="d405", baseline_m=0.018, hfov_deg=87.0, width_px=1280, subpixel=0.08,
        census_px=9, depth_unit_m=0.0001, min_z_m=0.10, ideal_range_m=(0.07, 0.5),
    ),
}


# The averaged plane RMS a station aims for by default: where the measured curves find 2 mm
# dents (geometry-only AUROC >= 0.95) on every seed — D435 at 0.55 m averaging 32 still frames
# (0.20 mm): 1.00 / 0.95 / seed 1 in docs/sensor-model.md; 16 frames (0.28 mm) gave 0.97 / 0.98
# / 0.90 over three seeds.
STATION_NOISE_GOAL_M = 0.20e-3
MAX_STATION_FRAMES = 64


def station_average_frames(
    spec: SensorSpec, distance_m: float, depth_unit_m: float | None = None
) -> int:
    """Still frames a station with ``spec`` at ``distance_m`` averages by default.

    The smallest power of two that brings the plane RMS (noise and quantisation, ÷ √N for N
    frames of temporal noise) down to `STATION_NOISE_GOAL_M`, at most `MAX_STATION_FRAMES`:
    32 for a D435 at 0.55 m (1.12 mm), 2 for a D405 at 0.2 m (0.27 mm), 1 where one frame is
    already that quiet.
    """
    need = (spec.plane_rms(distance_m, depth_unit_m) / STATION_NOISE_GOAL_M) ** 2
    n = 1
    while n < need and n < MAX_STATION_FRAMES:
        n *= 2
    return n


def get_sensor(
    name: str | SensorSpec | None,
    depth_unit_m: float | None = None,
    subpixel: float | None = None,
) -> SensorSpec | None:
    """The spec called ``name`` (None for ``ideal``/None), with optional overrides.

    Raises ValueError for an unknown name or a non-positive override.
    """
    if name is None or (isinstance(name, str) and name == "ideal"):
        return None
    if isinstance(name, SensorSpec):
        spec = name
    else:
        if name not in SENSORS:
            raise ValueError(f"unknown sensor '{name}'; choose ideal or one of {tuple(SENSORS)}")
        spec = SENSORS[name]
    changes: dict[str, float] = {}
    if depth_unit_m is not None:
        if not depth_unit_m > 0:
            raise ValueError(f"depth unit must be positive, got {depth_unit_m}")
        changes["depth_unit_m"] = float(depth_unit_m)
    if subpixel is not None:
        if not subpixel >= 0:
            raise ValueError(f"subpixel must be >= 0, got {subpixel}")
        changes["subpixel"] = float(subpixel)
    return replace(spec, **changes) if changes else spec


@dataclass
class SensorDraw:
    """The random part of one capture (drawn once, so a defect and its good twin share it)."""

    noise: np.ndarray  # H×W float32, unit-variance disparity noise, spatially correlated
    fly_u: np.ndarray  # H×W float32 in [0, 1): a rim pixel flies when below flying_prob
    fly_t: np.ndarray  # H×W float32 in [0, 1): where between the two surfaces it lands
    gain: float  # exposure gain of the colour image
    white_balance: np.ndarray  # (3,) gains of R, G (=1), B


class StereoSensor:
    """A `SensorSpec` seen on an image grid of focal length ``grid_focal_px`` (square pixels).

    The synthetic image is a crop of the camera image resampled to the grid; ``scale`` is grid
    px per camera px, so window sizes and disparity bands convert with it while the depth error
    of a pixel does not change.
    """

    def __init__(self, spec: SensorSpec, grid_focal_px: float) -> None:
        if grid_focal_px <= 0:
            raise ValueError(f"grid focal length must be positive, got {grid_focal_px}")
        self.spec = spec
        self.grid_focal_px = float(grid_focal_px)
        self.scale = self.grid_focal_px / spec.focal_px
        # Gaussian with the variance of a census-wide box (w²/12), in grid px.
        self.kernel_sigma_px = spec.census_px / math.sqrt(12.0) * self.scale
        self._fb_cam = spec.focal_px * spec.baseline_m  # disparity (camera px) × depth (m)

    @property
    def correlation_px(self) -> float:
        """Lag (grid px) at which the noise autocorrelation falls to 1/e (= 2σ_k)."""
        return 2.0 * self.kernel_sigma_px

    def expected_rms(self, z: float) -> float:
        """RMS depth error (m) at ``z`` incl. quantisation: what a plane fit should measure."""
        return self.spec.plane_rms(z)

    # ------------------------------------------------------------------ random draws
    def _correlated(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        s = self.kernel_sigma_px
        if s < 0.3:  # the window is smaller than a grid pixel: no visible correlation
            return rng.standard_normal(shape).astype(np.float32)
        r = math.ceil(3 * s)
        # Filter a larger field and crop: a reflected border would repeat noise and raise the
        # variance at the image edges.
        white = rng.standard_normal((shape[0] + 2 * r, shape[1] + 2 * r))
        k = cv2.getGaussianKernel(2 * r + 1, s, cv2.CV_64F)
        field = cv2.sepFilter2D(white, cv2.CV_64F, k, k)[r:-r, r:-r]
        # Filtering white noise scales its variance by Σk² per axis: undo it (unit variance).
        return (field / float(np.sum(k**2))).astype(np.float32)

    def draw(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int],
        colour_from: SensorDraw | None = None,
    ) -> SensorDraw:
        """Draw one capture's noise; ``colour_from`` keeps another capture's exposure and
        white balance (consecutive frames of one part: the camera's auto modes hold still)."""
        noise = self._correlated(rng, shape)
        fly_u = rng.random(shape, dtype=np.float32)
        fly_t = rng.random(shape, dtype=np.float32)
        if colour_from is not None:
            gain, wb = colour_from.gain, colour_from.white_balance
        else:
            gain = float(np.exp(rng.normal(0.0, self.spec.exposure_sd)))
            r, b = np.exp(rng.normal(0.0, self.spec.white_balance_sd, size=2))
            wb = np.array([r, 1.0, b], np.float32)
        return SensorDraw(noise, fly_u, fly_t, gain, wb)

    # ------------------------------------------------------------------ depth
    def shadow(self, z: np.ndarray) -> np.ndarray:
        """Pixels hidden from the right imager by a nearer surface (bool H×W).

        The right imager sits ``B`` to the right, so a point at column ``u`` appears at
        ``u − D`` there (``D = f_grid·B/z``). A pixel is hidden when some pixel to its right
        lands at or left of it: ``min_{q>u}(q − D_q) < u − D_u``.
        """
        disparity = self.grid_focal_px * self.spec.baseline_m / np.maximum(z, 1e-6)
        u2 = np.arange(z.shape[1])[None, :] - disparity
        # Minimum over the pixels strictly to the right: reversed running minimum, shifted.
        suffix = np.minimum.accumulate(u2[:, ::-1], axis=1)[:, ::-1]
        right = np.full_like(u2, np.inf)
        right[:, :-1] = suffix[:, 1:]
        return right < u2 - 1e-3

    def _rims(self, z: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rim pixels (the window straddles a step) and the near/far depths around them."""
        k = max(3, 2 * round(self.spec.census_px * self.scale / 4) + 1)
        kernel = np.ones((k, k), np.uint8)
        near = cv2.erode(z, kernel, borderType=cv2.BORDER_REPLICATE)
        far = cv2.dilate(z, kernel, borderType=cv2.BORDER_REPLICATE)
        return (far - near) > self.spec.rim_sigmas * sigma, near, far

    def depth(self, z: np.ndarray, draw: SensorDraw) -> np.ndarray:
        """Measured depth (m, float64 H×W; 0 = no return) for the true depth ``z`` (m)."""
        z = np.asarray(z, np.float64)
        spec = self.spec
        disparity = self._fb_cam / np.maximum(z, 1e-6) + spec.subpixel * draw.noise
        with np.errstate(divide="ignore"):
            measured = np.where(disparity > 0, self._fb_cam / disparity, 0.0)
        rim, near, far = self._rims(z, np.asarray(spec.depth_rms(z)))
        fly = rim & (draw.fly_u < spec.flying_prob)
        measured = np.where(fly, near + draw.fly_t * (far - near), measured)
        quantised = np.rint(measured / spec.depth_unit_m) * spec.depth_unit_m
        invalid = self.shadow(z) | (quantised < spec.min_z_m)
        return np.where(invalid, 0.0, quantised)

    # ------------------------------------------------------------------ colour
    @staticmethod
    def colour(linear_rgb: np.ndarray, draw: SensorDraw) -> np.ndarray:
        """The colour image (float32, before sensor noise and clipping) under this capture's
        exposure gain and white balance."""
        gains = (draw.gain * draw.white_balance).astype(np.float32)
        return linear_rgb.astype(np.float32, copy=False) * gains[None, None, :]


# Height smoothing before the 3D image vs the noise's grain, measured with the README recipe
# (docs/sensor-model.md, "Detection vs dent depth"): fine-grained noise (a D405 at 0.2 m,
# correlation length 1.6 px of a 128-px model) is detected better after a Gaussian on the
# heights (2 mm dents: 0.77 without, 0.91 at σ = 1.5 px, 0.98 at σ = 3 px); coarse noise (a
# D435 at 0.55 m, 6.8 px, about a dent's own scale) worse after any smoothing, because a
# low-pass then removes more of a dent's rim than of the noise. Two cameras measured: a step
# rule, not a fitted curve.
FINE_NOISE_MAX_PX = 3.0
FINE_NOISE_SMOOTHING_PX = 3.0


def depth_smoothing_for(correlation_px: float) -> float:
    """σ (model px) of the height smoothing for depth noise whose autocorrelation falls to
    1/e at ``correlation_px`` model pixels: `FINE_NOISE_SMOOTHING_PX` for fine-grained noise
    (below `FINE_NOISE_MAX_PX`), else 0 (off)."""
    if not correlation_px >= 0:
        raise ValueError(f"correlation length must be >= 0 px, got {correlation_px}")
    return FINE_NOISE_SMOOTHING_PX if correlation_px < FINE_NOISE_MAX_PX else 0.0
