"""Request timeouts with one timer for all of them.

Every proposal and linearizable read waits on a future with a deadline. With
``asyncio.wait_for`` each wait costs a timer handle, a second future and two callbacks;
``DeadlineTimer`` keeps ``(deadline, seq, future)`` in a heap and one loop timer armed for
the earliest deadline still pending. When a deadline passes, its future (if still
pending) gets ``TimeoutError`` -- what ``wait_for`` raised -- and the waiter handles it
as before. Futures that finish early are dropped lazily: when they reach the top of the
heap, or in a sweep once the heap holds more than ``COMPACT_MIN_ENTRIES`` and twice the
entries it held after the previous sweep (amortised O(1) per request).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time

COMPACT_MIN_ENTRIES = 4096   # no sweep of finished futures below this heap size


class DeadlineTimer:
    """Fail futures with TimeoutError at their deadlines (time.monotonic() seconds)."""

    __slots__ = ("_heap", "_seq", "_handle", "_armed_at", "_compact_at")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._compact_at = COMPACT_MIN_ENTRIES

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, fut: asyncio.Future, deadline: float) -> None:
        heap = self._heap
        if len(heap) >= self._compact_at:
            self._compact()
        heapq.heappush(heap, (deadline, next(self._seq), fut))
        if deadline < self._armed_at:
            self._arm(deadline)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf
        self._heap.clear()

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        heap = self._heap
        now = time.monotonic()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_exception(TimeoutError())
        if heap:
            self._arm(heap[0][0])

    def _compact(self) -> None:
        heap = [item for item in self._heap if not item[2].done()]
        heapq.heapify(heap)
        self._heap = heap
        self._compact_at = max(COMPACT_MIN_ENTRIES, 2 * len(heap))
