"""DeadlineTimer: one loop timer fails each pending future at its deadline, and only those."""

from __future__ import annotations

import asyncio
import time

import pytest

from geokv.runtime import deadlines
from geokv.runtime.deadlines import DeadlineTimer


def test_pending_futures_fail_at_their_deadline_finished_ones_keep_their_result():
    async def main():
        loop = asyncio.get_running_loop()
        dt = DeadlineTimer()
        t0 = time.monotonic()
        late, early, done = loop.create_future(), loop.create_future(), loop.create_future()
        dt.add(late, t0 + 0.30)
        dt.add(early, t0 + 0.05)   # an earlier deadline re-arms the timer
        dt.add(done, t0 + 0.10)
        done.set_result("ok")
        with pytest.raises(TimeoutError):
            await early
        assert 0.04 <= time.monotonic() - t0 < 0.25
        assert not late.done()
        with pytest.raises(TimeoutError):
            await late
        assert time.monotonic() - t0 >= 0.29
        assert done.result() == "ok" and len(dt) == 0
        past = loop.create_future()
        dt.add(past, time.monotonic() - 1)  # already past: fails on the next loop step
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(past, 1.0)
        dt.close()

    asyncio.run(main())


def test_finished_futures_are_swept_so_the_heap_stays_bounded(monkeypatch):
    monkeypatch.setattr(deadlines, "COMPACT_MIN_ENTRIES", 64)

    async def main():
        loop = asyncio.get_running_loop()
        dt = DeadlineTimer()
        far = time.monotonic() + 60
        live = []
        for i in range(10_000):
            f = loop.create_future()
            dt.add(f, far)
            if i % 100 == 0:
                live.append(f)
            else:
                f.set_result(i)
        assert len(dt) < 64 + 2 * len(live) + 1, len(dt)
        assert all(not f.done() for f in live)
        dt.close()

    asyncio.run(main())
