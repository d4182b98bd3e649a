"""The Clock port: the runtime reads time only through it, so the simulator can drive
a virtual clock (with drift) instead of the real one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic_s(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts and durations)."""
        ...

    def wall_s(self) -> float:
        """Seconds since the Unix epoch (for humans and TTL display only, never ordering)."""
        ...


class RealClock:
    """The operating system's clocks."""

    __slots__ = ()

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wall_s(self) -> float:
        return time.time()
