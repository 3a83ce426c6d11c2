"""The frame-source interface shared by cameras, recordings, folders and the synthetic camera.

Contract of `FrameSource.read`:
- returns a `Frame`;
- returns ``None`` when a finite source (recording, folder) has ended — and keeps doing so;
- raises `FrameTimeout` when a live source delivered nothing within ``timeout_s`` (the source
  stays open and keeps reconnecting: call ``read`` again, e.g. after checking a stop flag);
  its subclass `SourceIdle` says the source is working but has nothing to deliver yet (an
  averaging source waits for a still part, or for motion after a part's verdict): not a fault;
- raises `SourceError` for anything fatal (missing file, no camera, too many bad frames).

A single unusable frame (corrupt, stale, fails to convert) is not fatal: the subclass raises
`FrameError`, the base class counts it in ``stats.errors``, logs it and reads the next one, so a
run loop never stops on one bad frame. Frames the camera never delivered (gaps in its frame
counter) are counted in ``stats.dropped``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from edge.frames import Frame

__all__ = [
    "FrameError", "FrameSource", "FrameTimeout", "SourceError", "SourceIdle", "SourceStats",
]

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A frame source cannot deliver frames at all; the message says what to fix."""


class FrameTimeout(SourceError):
    """No frame arrived within the requested time; the source is still open and retrying."""


class SourceIdle(FrameTimeout):
    """The source received frames within the time but has none to deliver yet (by design: an
    averaging source waiting for a still part, or for motion after a part's verdict). Callers
    that only know `FrameTimeout` retry, which is right; a run loop need not warn."""


class FrameError(Exception):
    """One frame is unusable (corrupt, stale, conversion failed); the next one may be fine."""


@dataclass
class SourceStats:
    """Counters a run loop reports (metrics topic, logs, bench)."""

    frames: int = 0  # frames delivered by read()
    errors: int = 0  # frames received but unusable (counted and skipped)
    dropped: int = 0  # frames the camera numbered but never delivered (counter gaps)
    reconnects: int = 0  # successful reconnections of a live camera

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for JSON)."""
        return asdict(self)


class FrameSource(ABC):
    """Base class of every source: open/read/close, context manager, iteration, counters.

    Subclasses implement `_open`, `_grab` and `_close`; `_grab` returns a `Frame`, ``None`` at
    the end, raises `FrameError` for one bad frame, `FrameTimeout` when nothing came in time.
    """

    #: short description used in logs and ``Frame.source``
    name: str = "source"

    def __init__(self, max_consecutive_errors: int = 50) -> None:
        self.stats = SourceStats()
        self.max_consecutive_errors = max_consecutive_errors
        self._is_open = False
        self._ended = False
        self._consecutive_errors = 0

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether `open` succeeded and `close` has not been called."""
        return self._is_open

    def open(self) -> FrameSource:
        """Start the source (idempotent). Raises `SourceError` with a fix when it cannot."""
        if not self._is_open:
            self._open()
            self._is_open = True
            self._ended = False
            log.info("opened frame source %s", self.name)
        return self

    def close(self) -> None:
        """Stop the source and release the device/files (idempotent)."""
        if self._is_open:
            self._is_open = False
            try:
                self._close()
            finally:
                log.info("closed frame source %s (%s)", self.name, self.stats.as_dict())

    def __enter__(self) -> FrameSource:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames until the source ends; live timeouts are logged and waited through."""
        if not self._is_open:
            self.open()
        while True:
            try:
                frame = self.read()
            except SourceIdle:
                continue
            except FrameTimeout as exc:
                log.warning("%s", exc)
                continue
            if frame is None:
                return
            yield frame

    # -- reading -----------------------------------------------------------------------------
    def read(self, timeout_s: float = 5.0) -> Frame | None:
        """Next frame, or ``None`` at the end of a finite source (see the module docstring)."""
        if not self._is_open:
            raise SourceError(f"frame source {self.name} is not open; call open() or use `with`")
        if self._ended:
            return None
        deadline = time.monotonic() + timeout_s
        while True:
            started = time.perf_counter()
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                frame = self._grab(remaining)
            except FrameError as exc:
                self.stats.errors += 1
                self._consecutive_errors += 1
                log.warning(
                    "%s: skipped frame (%s); %d errors so far", self.name, exc, self.stats.errors
                )
                if self._consecutive_errors >= self.max_consecutive_errors:
                    raise SourceError(
                        f"{self.name}: {self._consecutive_errors} unusable frames in a row "
                        f"(last: {exc}); check the camera/recording"
                    ) from exc
                continue
            if frame is None:
                self._ended = True
                return None
            self._consecutive_errors = 0
            if frame.capture_ms == 0.0:
                frame.capture_ms = (time.perf_counter() - started) * 1000.0
            if not frame.source:
                frame.source = self.name
            self.stats.frames += 1
            return frame

    # -- for subclasses ----------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Acquire the device / files; raise `SourceError` with a fix when impossible."""

    @abstractmethod
    def _grab(self, timeout_s: float) -> Frame | None:
        """Deliver one frame (see class docstring)."""

    def _close(self) -> None:  # noqa: B027 - optional hook: most sources hold nothing
        """Release resources."""
