"""Antialiased bilinear resize equal to Pillow's ``Image.resize(size, Image.BILINEAR)``.

The authors' reference resizes RGB, ground-truth masks and Eyecandies' normal images with
torchvision ``Resize`` on PIL images, which calls ``Image.resize(..., BILINEAR)`` (trd-model.md
§8, §9.1, §9.5). The edge runtime ships neither PIL nor torchvision, so this module recomputes
that resampling with numpy. It follows the algorithm of Pillow's ``libImaging/Resample.c``
(``precompute_coeffs``, ``normalize_coeffs_8bpc``, the horizontal then vertical 8-bit passes),
written from its description, not copied:

* Each output pixel ``i`` has centre ``c = (i + 0.5) · in/out`` in input coordinates. When
  shrinking, the triangle filter ``max(0, 1 − |t|)`` is widened by ``s = max(in/out, 1)``, so
  its support is ``s`` input pixels on each side (this is the antialiasing); when enlarging it
  is plain bilinear interpolation with half-pixel centres.
* The taps are the inputs ``x`` in ``[int(c − s + 0.5), int(c + s + 0.5))`` clipped to the
  image, weighted ``filter((x − c + 0.5) / s)`` and normalised to sum 1.
* For 8-bit images the weights become fixed point with 22 fractional bits (rounded half away
  from zero); each pass adds half a unit, shifts right and clamps to 0–255. The horizontal pass
  runs first and is rounded to 8 bits before the vertical pass, as Pillow does.

Tested against Pillow in ``tests/test_resample.py`` (identical on the sizes tried; the contract
is within 1/255).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pil_bilinear_resize"]

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit channels


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices and fixed-point weights, each (out_size, K), for one axis.

    Taps beyond a pixel's own window have weight 0 and a clamped (valid) index.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the triangle filter's support is 1
    ksize = int(math.ceil(support)) * 2 + 1
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # C's (int) cast truncates toward zero
    xmin = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize, dtype=np.int64)
    t = ((taps[None, :] + xmin[:, None]).astype(np.float64) - centre[:, None] + 0.5) / filterscale
    weights = np.clip(1.0 - np.abs(t), 0.0, None)
    weights[taps[None, :] >= xmax[:, None]] = 0.0
    total = np.zeros(out_size, dtype=np.float64)
    for j in range(ksize):  # summed tap by tap, in Pillow's order
        total += weights[:, j]
    weights = np.divide(weights, total[:, None], out=np.zeros_like(weights),
                        where=total[:, None] != 0)
    scaled = weights * (1 << _PRECISION_BITS)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
    index = np.minimum(taps[None, :] + xmin[:, None], in_size - 1)
    return index, fixed


def _pass(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One 8-bit resampling pass along ``axis`` (0 rows, 1 columns) of an (H, W, C) image."""
    index, fixed = _coefficients(img.shape[axis], out_size)
    shape = [1, 1, 1]
    shape[axis] = out_size
    acc = np.full(
        (out_size, img.shape[1], img.shape[2]) if axis == 0 else
        (img.shape[0], out_size, img.shape[2]),
        1 << (_PRECISION_BITS - 1),
        dtype=np.int32,  # the triangle's weights are >= 0 and sum to 2**22: 255 * 2**22 fits
    )
    for j in range(index.shape[1]):
        w = fixed[:, j].astype(np.int32).reshape(shape)
        acc += np.take(img, index[:, j], axis=axis).astype(np.int32) * w
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def pil_bilinear_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a uint8 (H, W) or (H, W, C) image like Pillow's ``resize((width, height), BILINEAR)``.

    Args:
        img: uint8 image, one or more channels (each channel is resampled on its own).
        width: output width in pixels.
        height: output height in pixels.

    Returns:
        uint8 (height, width) or (height, width, C), the same layout as ``img``.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"pil_bilinear_resize takes uint8 images, got {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"output size must be positive, got {width}×{height}")
    out = arr[..., None] if arr.ndim == 2 else arr
    # Pillow skips a pass whose axis keeps its size (that pass would be the identity).
    if out.shape[1] != width:
        out = _pass(out, width, axis=1)
    if out.shape[0] != height:
        out = _pass(out, height, axis=0)
    out = np.ascontiguousarray(out)
    return out[..., 0] if arr.ndim == 2 else out
