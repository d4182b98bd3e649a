"""A seeded discrete-event scheduler with virtual time in milliseconds.

Events are ``(time_ms, seq, callback, args)``; ``seq`` is a global counter so events at
the same virtual time run in the order they were scheduled, which makes a run a pure
function of its seed. Nothing here reads a real clock.
"""

from __future__ import annotations

import heapq
import random
from typing import Any, Callable


class SimulationLimitExceeded(Exception):
    """The run did more work than its named bound allows (a livelock or a sizing bug)."""


class Scheduler:
    """Virtual clock plus a priority queue of callbacks."""

    __slots__ = ("now_ms", "rng", "_queue", "_seq", "events_run", "events_max")

    def __init__(self, seed: int, *, events_max: int = 400_000) -> None:
        self.now_ms: float = 0.0
        self.rng = random.Random(seed)
        self._queue: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.events_run = 0
        #: Bound on events per run: a run that exceeds it is reported, not looped forever.
        self.events_max = events_max

    def at(self, time_ms: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``time_ms`` (never in the past)."""
        if time_ms < self.now_ms:
            time_ms = self.now_ms
        self._seq += 1
        heapq.heappush(self._queue, (time_ms, self._seq, fn, args))

    def after(self, delay_ms: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now_ms + max(0.0, delay_ms), fn, *args)

    def next_seq(self) -> int:
        """A strictly increasing stamp (used to order client history events)."""
        self._seq += 1
        return self._seq

    def pending(self) -> int:
        return len(self._queue)

    def run_until(self, end_ms: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run events with time <= ``end_ms``; return True if ``stop()`` became true."""
        q = self._queue
        while q and q[0][0] <= end_ms:
            time_ms, _, fn, args = heapq.heappop(q)
            self.now_ms = time_ms
            self.events_run += 1
            if self.events_run > self.events_max:
                raise SimulationLimitExceeded(
                    f"more than {self.events_max} events by t={time_ms:.1f}ms"
                )
            fn(*args)
            if stop is not None and stop():
                return True
        if self.now_ms < end_ms:
            self.now_ms = end_ms
        return False
