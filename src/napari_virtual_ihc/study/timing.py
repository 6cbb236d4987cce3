"""Active reading time: time between input events counts, pauses beyond an idle threshold do not."""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_IDLE_SECONDS = 60.0


class ActiveTimer:
    """Accumulates active seconds; ``touch()`` on every input event, ``take()`` when leaving a case.

    A gap between two touches counts in full up to ``idle_seconds``; anything longer is idle and only
    its first ``idle_seconds`` count (the reader may have been looking without touching anything).
    """

    def __init__(
        self, idle_seconds: float = DEFAULT_IDLE_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        self.idle_seconds = float(idle_seconds)
        self._clock = clock
        self._last: float | None = None
        self._active = 0.0

    def start(self) -> None:
        """Begin timing a case (showing it counts as the first input)."""
        self._last = self._clock()
        self._active = 0.0

    def touch(self) -> None:
        now = self._clock()
        if self._last is not None:
            self._active += min(max(now - self._last, 0.0), self.idle_seconds)
        self._last = now

    def take(self) -> float:
        """Active seconds since ``start``/last ``take`` (including up to now), and restart counting."""
        self.touch()
        active, self._active = self._active, 0.0
        return active
