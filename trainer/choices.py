"""Choices that make themselves: the model's input size, region of interest, Sobel aperture,
pose alignment, heights and depth smoothing, from the good training images (issue 13).
Torch-free; `trainer.train` calls `choose_from_data` for settings the user left open and records
the result in run.json (``auto_choices``).

**Alignment.** A part in a fixture sits at one place and angle; a part on a conveyor moves and
turns. `edge.processing.pose.pose_auto` on the good training images gives each one's centroid and angle:
when the centroids stay within ``FIXTURE_SHIFT`` of the frame and the angles within
``FIXTURE_TURN``, the part is fixtured and is not aligned ("none": nothing is warped, so nothing
can get worse); otherwise every part is brought to its canonical pose ("auto", any shape). The
outline's symmetry order per image is recorded too (what "auto" will do with the part).

**Sobel aperture.** The 3D image is Sobel surface normals of the min–max normalised height
(§9.4). A larger aperture averages more depth noise but has a larger gain (8 / 128 / 1920 per
unit slope for 3 / 5 / 7 taps), so on a part whose height range is small relative to the sensor
noise the normals of its flat top saturate with noise and a bump no longer shows
(docs/offline-teachers.md: the synthetic puck 0.81 → 1.00 with 3 taps, the bracket 0.84 → 0.55).
We measure that directly: the median tilt of the normals on the part's interior (mostly flat top,
the rim eroded away) for each aperture, and keep the largest aperture whose tilt stays at most
``MAX_FLAT_TILT_DEG``. Measured at 128 px on camera z: puck 5 taps 41°, bracket 5 taps 27°, 7
taps ≥ 80° on every part, 3 taps ≤ 8° (docs/any-shape.md); the threshold sits between the two
parts we know. It is measured on the heights the run will use (`heights_for`: above the table
for turned parts, where the bracket's 5 taps read 17°) but before any depth smoothing, which
widens steps and holes until the median counts them as tilt.

**Heights.** A turned part meets the table's tilt from a different side on every image, so on
camera z its flat top takes a different normal each time; heights above the fitted table carry
the part only (`edge.processing.geometry.plane_depth`, `heights_for`).

**Depth smoothing.** The camera-record rule (`edge.datasets.sensors.depth_smoothing_for`:
σ = 3 model px for noise whose grain is under 3 model px, none for coarser noise, where a
low-pass removes more of a dent's rim than noise — docs/sensor-model.md) needs the noise's
correlation length; without a record it is measured on the good parts: the median absolute
height difference of neighbours over that of points 8 px apart (`variogram_ratio`) gives it
for Gaussian-correlated noise (`correlation_length`). On synth bracket data: pixel noise
0.7 data px (the default synth), D405 at 0.2 m 3.0 px (its record: 2.5), D435 at 0.55 m
longer than the lag (its record: 10.2). The working pipeline smooths bilaterally
(`edge.processing.preprocess.bilateral_heights`): its range is three times the heights'
per-pixel noise, measured here too (`depth_noise`), so steps and holes, tens of noise-σ high,
are not blurred into the flats beside them.

**Input size.** A print is fine detail the RGB branch must resolve: on the printed block a
stain over the grid needs 192 px (colour-only 0.88 at 128 px, 0.99 at 192 px), while a plain
part loses little at 128 px and costs 2.25× less (geometry-only at 128 / 192 px: bracket seed 0
0.953 / 0.920, seed 1 0.968 / 0.977; hexagon seed 0 0.978 / 1.000, seed 1 0.922 / 0.968: not
settled, docs/any-shape.md). The print is measured as its share of the part's interior — pixels whose grey level
stands 3 robust sigmas out of the surface's mottling (`edge.processing.pose.interior_ink`,
the print cue of the alignment) — median over the images: at least ``MIN_INK_SHARE`` gives
``IMAGE_SIZES[1]``, else ``IMAGE_SIZES[0]``. Measured on synth seed 0 (192-px data): block 0.30,
disc 0.11 (an arrow), hexagon 0.045, puck 0.024, bracket 0.017. The share is taken at the data's
own resolution: rendered at 128 px the bracket's brushed texture and step shading reach
0.03–0.10 (its median 0.08, at the threshold), so the rule wants the part imaged finer than
that (any real camera's frame; `trd-edge synth --image-size 192`).

**Region of interest** (working pipeline). The model sees the ROI resized to its grid, so a
part that covers a third of a wide view gets a third of the model's pixels. The ROI is the
square (in pixels) that holds the part of *every* good training image — all of them, not the
16: the extremes of where parts land are what counts — with ``ROI_MARGIN`` of its side to spare
on each side, centred on that box and shifted to stay inside the frame, and never narrower than
the working grid: a zoom must come from the camera's pixels — upsampled depth is a staircase
(nearest, so that no surface is invented between two) whose Sobel normals are noise (on 192-px
data a 1.45× zoom into a 192-px input cost the block's geometry-only 1.000 → 0.768, the disc's
1.000 → 0.917). When it would magnify less than ``MIN_ROI_ZOOM`` the whole frame is kept (a
part that fills the view, as in MVTec 3D-AD; a model grid as fine as the frame). The station
crops the same rectangle (it is the bundle's ``roi``), so parts must land where the training
parts did; the margin is the room for what they did not show, and a part across the edge is
flagged in its verdict (``extra.part_at_edge``). Measured on
synth (192-px data, 128-px input, a 1.5× zoom at the same cost): the hexagon's geometry-only
0.978 / 0.922 / 0.970 → 1.000 / 0.982 / 1.000 on seeds 0–2 (docs/any-shape.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, Field

from edge.datasets.dataset_io import SampleRecord, load_raw, read_xyz_tiff
from edge.datasets.sensors import FINE_NOISE_MAX_PX, depth_smoothing_for
from edge.processing.geometry import fit_background_plane, foreground_mask, plane_depth
from edge.processing.pose import interior_ink, outline_harmonics, pose_auto, symmetry_order
from edge.processing.preprocess import WHOLE_FRAME, PreprocessConfig, preprocess

APERTURES = (3, 5, 7)
MAX_FLAT_TILT_DEG = 33.0  # median interior normal tilt an aperture may reach (noise, not shape)
FIXTURE_SHIFT = 0.015  # centroid spread (std, fraction of the frame side) of a fixtured part
FIXTURE_TURN = 3.0  # angle spread (deg) of a fixtured part
VARIOGRAM_FAR_PX = 8  # the far lag of `variogram_ratio` (beyond a D435's ~7-px grain at 128)
MAX_IMAGES = 16  # good training images looked at (evenly spread over the split)
IMAGE_SIZES = (128, 192)  # a plain part's input side, a printed part's
MIN_INK_SHARE = 0.08  # share of the part's interior that is print, from which it is "printed"
ROI_MARGIN = 0.1  # room around the box of every training part, per side, as a share of its side
MIN_ROI_ZOOM = 1.15  # an ROI must magnify the part at least this much, else the whole frame


class AlignChoice(BaseModel):
    """How the alignment was chosen."""

    value: str
    source: str = Field(description="'flag' (given by the user) or 'data' (chosen here)")
    centroid_spread: float | None = Field(None, description="std of centroids / frame side")
    angle_spread_deg: float | None = Field(None, description="circular std of pose angles")
    symmetry_orders: dict[str, int] = Field(
        default_factory=dict, description="outline symmetry order → images (0 = round)"
    )


class SobelChoice(BaseModel):
    """How the Sobel aperture was chosen."""

    value: int
    source: str = Field(description="'flag', 'data' or 'default' (nothing to measure)")
    flat_tilt_deg: dict[str, float] = Field(
        default_factory=dict, description="aperture → median interior normal tilt (deg)"
    )


class SizeChoice(BaseModel):
    """How the model's input size was chosen."""

    value: int
    source: str = Field(description="'flag', 'data' or 'default' (nothing to measure)")
    ink_share: float | None = Field(
        None, description="median share of the part's interior that is print")


class RoiChoice(BaseModel):
    """How the region of interest was chosen."""

    value: tuple[float, float, float, float] | None = Field(
        description="fractions of the frame (x0, y0, x1, y1); None = the whole frame")
    source: str = Field(description="'flag', 'data' or 'default' (nothing to measure)")
    parts_box_px: tuple[int, int, int, int] | None = Field(
        None, description="box (x0, y0, x1, y1) holding every training part, frame pixels")
    frame_px: tuple[int, int] | None = Field(None, description="frame width, height")
    images: int = 0


class SmoothingChoice(BaseModel):
    """How the depth smoothing was chosen."""

    value: float = Field(description="σ in model pixels (0 = off)")
    source: str = Field(description="'data'")
    noise_correlation_px: float | None = Field(
        None, description="the depth noise's correlation length measured on the parts, model "
        "pixels (None: longer than the measurement reaches, or nothing measurable)")
    images: int = Field(0, description="images whose depth noise could be measured")


class AutoChoices(BaseModel):
    """run.json ``auto_choices``: what was chosen from the good training images, and why."""

    align: AlignChoice
    sobel_ksize: SobelChoice | None = None  # None for the depth modality
    image_size: SizeChoice | None = None  # None in runs recorded before the choice existed
    roi: RoiChoice | None = None  # None in runs recorded before the choice existed
    # None: given (flag), taken from the camera record, or recorded before the choice existed
    depth_smoothing: SmoothingChoice | None = None
    images: int = 0


def spread_sample(records: Sequence[SampleRecord], n: int) -> list[SampleRecord]:
    """At most ``n`` of ``records``, evenly spread over the list."""
    if len(records) <= n:
        return list(records)
    idx = np.linspace(0, len(records) - 1, n).round().astype(int)
    return [records[i] for i in idx]


def _part(xyz: np.ndarray):
    """The background plane and the part's foreground of one cloud (preprocessing's defaults)."""
    plane = fit_background_plane(xyz)
    return plane, foreground_mask(xyz, plane=plane)


def choose_align(raws: list) -> AlignChoice:
    """'none' for a fixtured part, 'auto' for one that moves or turns (module docstring)."""
    centres, angles, orders = [], [], {}
    side = 1.0
    for raw in raws:
        xyz = raw.xyz
        side = float(max(xyz.shape[:2]))
        plane, fg = _part(xyz)
        pose = pose_auto(xyz, fg, plane, raw.rgb)
        if pose is None:
            continue
        centres.append(pose.centre)
        angles.append(math.radians(pose.angle_deg))
        ys, xs = np.nonzero(fg)
        order = symmetry_order(outline_harmonics(fg, float(xs.mean()), float(ys.mean())))
        orders[str(order)] = orders.get(str(order), 0) + 1
    if len(centres) < 2:
        return AlignChoice(value="none", source="data", symmetry_orders=orders)
    c = np.asarray(centres) / side
    shift = float(np.sqrt(c.var(axis=0).sum()))
    resultant = abs(np.mean(np.exp(1j * np.asarray(angles))))
    turn = abs(math.degrees(math.sqrt(max(-2.0 * math.log(max(resultant, 1e-12)), 0.0))))
    fixtured = shift <= FIXTURE_SHIFT and turn <= FIXTURE_TURN
    return AlignChoice(
        value="none" if fixtured else "auto", source="data", centroid_spread=round(shift, 4),
        angle_spread_deg=round(turn, 2), symmetry_orders=orders,
    )


def ink_share(raw) -> float | None:
    """Share of the part's interior that is print (module docstring); None without a part."""
    _, fg = _part(raw.xyz)
    ys, xs = np.nonzero(fg)
    if len(xs) < 10:
        return None
    rms = math.sqrt(float(np.mean((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))) or 1.0
    ink = interior_ink(fg, raw.rgb, rms)
    return None if ink is None else float(np.mean(ink[3] > 0))


def choose_image_size(raws: list) -> SizeChoice:
    """``IMAGE_SIZES[1]`` for a printed part, ``IMAGE_SIZES[0]`` for a plain one."""
    shares = [v for v in (ink_share(r) for r in raws) if v is not None]
    if not shares:
        return SizeChoice(value=IMAGE_SIZES[0], source="default")
    share = float(np.median(shares))
    return SizeChoice(value=IMAGE_SIZES[1] if share >= MIN_INK_SHARE else IMAGE_SIZES[0],
                      source="data", ink_share=round(share, 3))


def parts_box(records: Sequence[SampleRecord]) -> tuple[tuple[int, int, int, int], int, int] | None:
    """The box (x0, y0, x1 exclusive, y1 exclusive) holding the part of every record, with the
    frame's width and height; None when no record shows a part or the frames differ in size."""
    box, frame = None, None
    for r in records:
        xyz = read_xyz_tiff(r.geom_path)  # the colour image is not needed here
        if frame not in (None, xyz.shape[:2]):
            return None
        frame = xyz.shape[:2]
        ys, xs = np.nonzero(_part(xyz)[1])
        if len(xs) < 10:
            continue
        b = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]),
                                     max(box[2], b[2]), max(box[3], b[3]))
    return None if box is None or frame is None else (box, frame[1], frame[0])


def choose_roi(records: Sequence[SampleRecord], grid: int) -> RoiChoice:
    """The square that holds every training part with ``ROI_MARGIN`` of its side to spare on
    each side, at least ``grid`` (the working grid's side) frame pixels wide, as fractions of
    the frame; the whole frame when that square does not fit or would leave less than
    ``MIN_ROI_ZOOM`` of zoom (module docstring)."""
    found = parts_box(records)
    if found is None:
        return RoiChoice(value=None, source="default", images=len(records))
    (x0, y0, x1, y1), w, h = found
    # never narrower than the grid: upsampled depth is blocky (nearest: no invented surfaces),
    # and Sobel normals of a staircase are noise (the block lost geometry 1.000 -> 0.768)
    side = max(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * ROI_MARGIN), float(grid))
    common = RoiChoice(value=None, source="data", parts_box_px=(x0, y0, x1, y1),
                       frame_px=(w, h), images=len(records))
    if side * MIN_ROI_ZOOM > min(w, h):
        return common
    side = int(math.ceil(side))
    # centred on the parts' box, shifted (not shrunk) to stay inside the frame
    sx = min(max(int(round((x0 + x1 - side) / 2)), 0), w - side)
    sy = min(max(int(round((y0 + y1 - side) / 2)), 0), h - side)
    roi = (sx / w, sy / h, (sx + side) / w, (sy + side) / h)
    return common.model_copy(update={"value": tuple(round(v, 4) for v in roi)})


def flat_tilt(raws: list, cfg: PreprocessConfig) -> float:
    """Median (over images) of the median normal tilt (deg) on each part's interior."""
    meds = []
    for raw in raws:
        p = preprocess(raw.rgb, raw.xyz, cfg)
        inner = cv2.erode(p.foreground.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        if inner.sum() < 10:
            continue
        nz = 2.0 * p.x3d_vis[2][inner] - 1.0
        meds.append(float(np.median(np.degrees(np.arccos(np.clip(nz, -1.0, 1.0))))))
    return float(np.median(meds)) if meds else 0.0


def _part_spreads(xyz: np.ndarray, lags: Sequence[int]) -> list[float]:
    """Median absolute height difference between points ``lag`` pixels apart (rows and
    columns), on the part (heights above the table, rim eroded), for each lag; 0 where no pair
    lies on the part. Medians: steps and holes are few pixels and do not move them."""
    plane = fit_background_plane(xyz)
    fg = foreground_mask(xyz, plane=plane)
    z = plane_depth(xyz, plane).astype(np.float64)
    on = (cv2.erode(fg.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & (z != 0)

    def spread(lag: int) -> float:
        a = on[:, :-lag] & on[:, lag:]
        b = on[:-lag] & on[lag:]
        d = np.concatenate([(z[:, lag:] - z[:, :-lag])[a], (z[lag:] - z[:-lag])[b]])
        return float(np.median(np.abs(d))) if d.size else 0.0

    return [spread(lag) for lag in lags]


def variogram_ratio(xyz: np.ndarray, far: int = VARIOGRAM_FAR_PX) -> float | None:
    """How much of the depth noise changes from one pixel to the next: the median absolute
    height difference between neighbours over that between points ``far`` pixels apart, on
    the part (`_part_spreads`). About 1 for pixel-independent noise, ``1/far`` for noise
    correlated over much more than ``far``. None where nothing varies (a part quantised flat)."""
    near, wide = _part_spreads(xyz, (1, far))
    return near / wide if near > 0 and wide > 0 else None


# median |a − b| of two independent N(0, s²) values is Φ⁻¹(3/4)·√2·s
_MEDIAN_ABS_DIFF_PER_STD = 0.6744897501960817 * math.sqrt(2.0)


def depth_noise(raws: list) -> float:
    """The heights' per-pixel noise std (m) on the good parts: the median absolute difference
    of neighbours (`_part_spreads`) read as that of independent Gaussian noise, median over
    the images; 0 where none varies. Sets the bilateral depth filter's range
    (`edge.processing.preprocess.bilateral_heights`)."""
    near = [v for v in (_part_spreads(raw.xyz, (1,))[0] for raw in raws) if v > 0]
    return float(np.median(near)) / _MEDIAN_ABS_DIFF_PER_STD if near else 0.0


def correlation_length(ratio: float, far: int = VARIOGRAM_FAR_PX) -> float:
    """The noise's correlation length (px; its autocorrelation falls to 1/e there) that gives
    a `variogram_ratio` of ``ratio`` for Gaussian-correlated noise, whose variogram is
    ``1 − exp(−(l/L)²)``: bisection (the ratio falls monotonically with L). ``inf`` below the
    ratio of infinitely long correlation (1/far)."""
    def model(length: float) -> float:
        return math.sqrt(-math.expm1(-1.0 / length**2) / -math.expm1(-(far / length) ** 2))

    if ratio <= 1.0 / far:
        return math.inf
    lo, hi = 1e-3, 1e4
    if ratio >= model(lo):
        return 0.0
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if model(mid) > ratio else (lo, mid)
    return math.sqrt(lo * hi)


def choose_depth_smoothing(raws: list, model_px_per_data_px: float) -> SmoothingChoice:
    """σ from the depth noise's grain, by the camera-record rule
    (`edge.datasets.sensors.depth_smoothing_for`): the correlation length is measured on the
    good parts (`variogram_ratio`, median over images) instead of read from ``sensor.json``."""
    ratios = [r for r in (variogram_ratio(raw.xyz) for raw in raws) if r is not None]
    if not ratios:
        return SmoothingChoice(value=0.0, source="data")
    length = correlation_length(float(np.median(ratios))) * model_px_per_data_px
    return SmoothingChoice(value=depth_smoothing_for(length), source="data",
                           noise_correlation_px=round(length, 2) if math.isfinite(length)
                           else None, images=len(ratios))


def model_px_per_frame_px(image_size: int, frame_width: int,
                          roi: tuple[float, float, float, float] | None) -> float:
    """How many model pixels one frame pixel becomes: the ROI's width (the whole frame without
    one) is resized to ``image_size``. Turns a length measured on the data (a noise grain) into
    the model pixels the smoothing rule is stated in."""
    x0, _, x1, _ = roi or WHOLE_FRAME
    return image_size / (frame_width * (x1 - x0))


def choose_sobel(raws: list, base: PreprocessConfig) -> SobelChoice:
    """The largest aperture whose flat-surface normal tilt stays ≤ ``MAX_FLAT_TILT_DEG``."""
    tilts = {k: flat_tilt(raws, base.model_copy(update={"sobel_ksize": k})) for k in APERTURES}
    ok = [k for k in APERTURES if tilts[k] <= MAX_FLAT_TILT_DEG]
    return SobelChoice(
        value=max(ok) if ok else APERTURES[0], source="data",
        flat_tilt_deg={str(k): round(v, 1) for k, v in tilts.items()},
    )


def turns_parts(pipeline: str, align: str | None) -> bool:
    """Whether the pipeline turns each part to its pose: the working pipeline with an alignment.
    The defaults that exist for turned parts (`heights_for`, `trainer.train.resolve_augment`)
    follow it; a fixtured part's inputs stay as before, the reference pipeline is the authors'."""
    return pipeline == "working" and (align or "none") != "none"


def heights_for(pipeline: str, align: str) -> Literal["camera", "plane"]:
    """What the 3D image is computed from when the user left it open: heights above the table
    where parts are turned (`turns_parts`: the table's tilt would reach each turned part from
    another side), camera z otherwise."""
    return "plane" if turns_parts(pipeline, align) else "camera"


def choose_from_data(
    records: Sequence[SampleRecord],
    base: PreprocessConfig,
    align: str | None,
    sobel_ksize: int | None,
    image_size: int | None = None,
    roi: tuple[float, float, float, float] | None = None,
    heights: str | None = None,
    smoothing: bool = False,
) -> AutoChoices:
    """Fill in the input size, region of interest, alignment and Sobel aperture left open
    (None) from the good training ``records``; given values are kept (``source="flag"``).
    ``base`` is the run's other preprocessing settings (its image size and ROI are replaced by
    the chosen ones; the aperture is measured through the chosen ROI, on ``heights`` or, left
    open, on what `heights_for` gives the chosen alignment). ``smoothing``: choose the depth
    smoothing too (`choose_depth_smoothing`; left to the caller when a flag or a camera record
    gives it)."""
    clouds = [r for r in records if r.kind != "eyecandies"]
    sample = spread_sample(clouds, MAX_IMAGES)
    raws = [load_raw(r) for r in sample]
    if image_size is None:
        size = choose_image_size(raws)
    else:
        size = SizeChoice(value=image_size, source="flag")
    if roi is not None:
        r = RoiChoice(value=roi, source="flag")
    elif base.pipeline == "working" and clouds:  # the ROI is the working pipeline's
        r = choose_roi(clouds, size.value * base.working_scale)
    else:
        r = RoiChoice(value=None, source="default")
    base = base.model_copy(update={"image_size": size.value, "roi": r.value})
    if align is None:
        a = choose_align(raws) if raws else AlignChoice(value="none", source="data")
    else:
        a = AlignChoice(value=align, source="flag")
    s = None
    if base.modality == "normal":
        if sobel_ksize is None and raws:
            h = heights or heights_for(base.pipeline, a.value)
            # on unsmoothed heights: smoothing widens steps and holes, which the median then
            # counts as tilt (the bracket flipped to 3 taps and lost geometry 0.95 → 0.65)
            s = choose_sobel(raws, base.model_copy(
                update={"align": a.value, "heights": h, "depth_smoothing": 0.0}))
        else:  # given, or no point clouds to measure (preprocessed Eyecandies): the default
            s = SobelChoice(value=sobel_ksize or base.sobel_ksize,
                            source="flag" if sobel_ksize is not None else "default")
    g = None
    if smoothing and raws:
        g = choose_depth_smoothing(
            raws, model_px_per_frame_px(size.value, raws[0].xyz.shape[1], r.value))
    return AutoChoices(align=a, sobel_ksize=s, image_size=size, roi=r, depth_smoothing=g,
                       images=len(raws))


def describe(choices: AutoChoices) -> str:
    """One line for the console: what was chosen and from what."""
    a = choices.align
    parts = [f"align {a.value} ({a.source}"]
    if a.source == "data" and a.angle_spread_deg is not None:
        parts[-1] += (f": centroids spread {a.centroid_spread:.3f} of the frame, angles "
                      f"{a.angle_spread_deg:.0f}°, outline symmetry orders {a.symmetry_orders}")
    parts[-1] += ")"
    if choices.sobel_ksize is not None:
        s = choices.sobel_ksize
        extra = ""
        if s.source == "data":
            tilts = ", ".join(f"{k}: {v:.0f}°" for k, v in s.flat_tilt_deg.items())
            extra = f": flat-surface normal tilt {tilts}; limit {MAX_FLAT_TILT_DEG:.0f}°"
        parts.append(f"Sobel aperture {s.value} ({s.source}{extra})")
    z = choices.image_size
    if z is not None:
        extra = ""
        if z.source == "data":
            extra = (f": print covers {z.ink_share:.0%} of the part's interior; from "
                     f"{MIN_INK_SHARE:.0%} a part counts as printed")
        parts.insert(0, f"input {z.value} px ({z.source}{extra})")
    r = choices.roi
    if r is not None:
        where = ("whole frame" if r.value is None
                 else "ROI " + ",".join(f"{v:.3f}" for v in r.value))
        extra = ""
        if r.source == "data" and r.parts_box_px is not None:
            extra = (f": {r.images} training parts lie in x {r.parts_box_px[0]}–"
                     f"{r.parts_box_px[2]}, y {r.parts_box_px[1]}–{r.parts_box_px[3]} of "
                     f"{r.frame_px[0]}×{r.frame_px[1]} px; margin {ROI_MARGIN:.0%}")
        parts.insert(1 if z is not None else 0, f"{where} ({r.source}{extra})")
    g = choices.depth_smoothing
    if g is not None:
        if g.images == 0:
            grain = "no depth noise measurable"
        else:
            over = ("longer than the measurement reaches" if g.noise_correlation_px is None
                    else f"{g.noise_correlation_px:.1f} model px")
            grain = f"depth noise correlated over {over}; smoothed below {FINE_NOISE_MAX_PX:g} px"
        parts.append(f"depth smoothing σ {g.value:g} px ({g.source}: {grain})")
    return f"chosen from {choices.images} good training images: " + "; ".join(parts)
