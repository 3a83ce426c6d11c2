"""Keep the station's per-frame numpy temporaries off fresh pages (glibc ``mallopt``).

glibc serves every allocation above its mmap threshold (128 KiB at start, raised dynamically
up to 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on free. A 256² frame's
float32 images are 256–768 KiB, so each temporary of the preprocessing costs page faults on
first touch: measured on one core, preprocessing with pose alignment at 256² took 5.5 ms with
the default and 3.0 ms with the threshold fixed at 32 MiB (the arithmetic is the same). Fixing
the threshold (and the trim threshold, so freed heap is kept for the next frame) makes those
allocations reuse the heap. The cost is memory that stays mapped at its steady-state peak,
which is what a station wants anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["keep_temporaries_on_heap"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)


def keep_temporaries_on_heap() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no glibc
    (musl, macOS) or it refuses — then nothing changes."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, 2 * _MAX_MMAP_THRESHOLD)) and ok
    log.debug("glibc mallopt thresholds set: %s", ok)
    return ok
