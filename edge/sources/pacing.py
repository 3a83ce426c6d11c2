"""Pace a software source like a camera running at a fixed frame rate."""

from __future__ import annotations

import time

__all__ = ["Pacer"]


class Pacer:
    """Sleeps so that successive `wait` calls return at most ``fps`` times per second.

    Slots are scheduled from the first call, so a slow consumer does not make the source
    "catch up" with a burst: a late slot simply starts the schedule again from now.
    """

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the next slot; returns False (without sleeping past it) if that is
        later than ``timeout_s`` from now."""
        if self.period <= 0.0:
            return True
        now = time.monotonic()
        if self._next is None or self._next < now:
            self._next = now
        delay = self._next - now
        if delay > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            return False
        if delay > 0:
            time.sleep(delay)
        self._next += self.period
        return True
