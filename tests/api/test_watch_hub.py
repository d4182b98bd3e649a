"""The watch hub over a real MVCCStore: live feed, catch-up, slow watchers, filters."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from geokv import errors
from geokv.kv import types as kvt
from geokv.kv.store import MVCCStore
from geokv.runtime import watch
from geokv.runtime.watch import WatchHub


class Driver:
    """Applies commands to the store and publishes their events, as the runtime does."""

    def __init__(self, path: str) -> None:
        self.store = MVCCStore(path)
        self.hub = WatchHub(self.store)
        self.index = itertools.count(1)

    def apply(self, *cmds) -> None:
        items = [(next(self.index), c) for c in cmds]
        events = []
        for _res, evs in self.store.apply_batch(items):
            events.extend(evs)
        self.hub.publish(events, self.store.revision)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def drv(tmp_path):
    d = Driver(str(tmp_path / "db"))
    yield d
    d.close()


async def drain(w, timeout_s: float = 0.05) -> list[tuple[int, bytes, int]]:
    out = []
    while True:
        batch = await w.next_batch(timeout_s)
        if batch is None:
            return out
        out.extend((e.type, e.kv.key, e.kv.mod_revision) for e in batch[0])


def test_live_events_match_key_and_prefix(drv):
    async def main():
        single = drv.hub.subscribe(b"a")
        prefix = drv.hub.subscribe(b"b", b"c")
        everything = drv.hub.subscribe(b"\x00", b"\x00")
        drv.apply(kvt.Put(b"a", b"1"), kvt.Put(b"b1", b"2"), kvt.Put(b"c", b"3"))
        drv.apply(kvt.DeleteRange(b"a"))
        assert await drain(single) == [(0, b"a", 2), (1, b"a", 5)]
        assert await drain(prefix) == [(0, b"b1", 3)]
        assert [k for _, k, _ in await drain(everything)] == [b"a", b"b1", b"c", b"a"]

    asyncio.run(main())


def test_filters_drop_puts_or_deletes(drv):
    async def main():
        noput = drv.hub.subscribe(b"k", b"", 0, False, [watch.FILTER_NOPUT])
        nodel = drv.hub.subscribe(b"k", b"", 0, False, [watch.FILTER_NODELETE])
        drv.apply(kvt.Put(b"k", b"1"))
        drv.apply(kvt.DeleteRange(b"k"))
        assert [t for t, _, _ in await drain(noput)] == [1]
        assert [t for t, _, _ in await drain(nodel)] == [0]

    asyncio.run(main())


def test_watch_from_the_past_catches_up_then_follows(drv):
    async def main():
        for i in range(5):
            drv.apply(kvt.Put(b"k", b"%d" % i))
        w = drv.hub.subscribe(b"k", b"", 3)
        assert not w.synced
        drv.apply(kvt.Put(b"k", b"live"))
        got = await drain(w)
        assert [rev for _, _, rev in got] == [3, 4, 5, 6, 7]
        assert w.synced

    asyncio.run(main())


def test_slow_watcher_moves_to_catch_up_and_loses_nothing(drv):
    async def main():
        w = drv.hub.subscribe(b"k", b"\x00")
        n = watch.WATCHER_QUEUE_BATCHES_MAX + 50
        for i in range(n):
            drv.apply(kvt.Put(b"k%05d" % i, b"v"))
        assert not w.synced  # its queue overflowed; publish stopped buffering for it
        assert drv.hub.statistics()["slow_watchers_total"] >= 1
        got = await drain(w)
        assert [rev for _, _, rev in got] == list(range(2, n + 2))
        drv.apply(kvt.Put(b"k-last", b"v"))
        assert [rev for _, _, rev in await drain(w)] == [n + 2]

    asyncio.run(main())


def test_catch_up_pages_keep_revisions_whole(drv, monkeypatch):
    monkeypatch.setattr(watch, "CATCHUP_EVENTS_MAX", 3)

    async def main():
        for i in range(4):
            drv.apply(kvt.Txn(success=[kvt.Put(b"a%d" % i, b"v"), kvt.Put(b"b%d" % i, b"v")]))
        w = drv.hub.subscribe(b"\x00", b"\x00", 1)
        batches = []
        while True:
            b = await w.next_batch(0.05)
            if b is None:
                break
            batches.append(sorted({e.kv.mod_revision for e in b[0]}))
        seen = [r for b in batches for r in b]
        assert seen == sorted(set(seen)) == [2, 3, 4, 5]  # every revision once, none split
        for b in batches:
            assert b  # no empty pages

    asyncio.run(main())


def test_compacted_start_revision_raises(drv):
    async def main():
        for i in range(5):
            drv.apply(kvt.Put(b"k", b"%d" % i))
        drv.apply(kvt.Compact(4))
        w = drv.hub.subscribe(b"k", b"", 2)
        with pytest.raises(errors.Compacted):
            await w.next_batch(0.05)

    asyncio.run(main())


def test_future_start_revision_waits_for_it(drv):
    async def main():
        w = drv.hub.subscribe(b"k", b"", 4)
        for i in range(4):
            drv.apply(kvt.Put(b"k", b"%d" % i))
        assert [rev for _, _, rev in await drain(w)] == [4, 5]

    asyncio.run(main())


def test_close_ends_iteration_and_unregisters(drv):
    async def main():
        w = drv.hub.subscribe(b"k")
        waiter = asyncio.ensure_future(w.next_batch())
        await asyncio.sleep(0)
        w.close()
        assert await waiter is None
        assert drv.hub.statistics()["watchers"] == 0

    asyncio.run(main())


def test_single_key_watchers_only_see_their_key_and_progress_is_safe(drv):
    async def main():
        ws = {k: drv.hub.subscribe(b"key%03d" % k) for k in range(50)}
        rng = drv.hub.subscribe(b"key010", b"key012")
        drv.apply(kvt.Put(b"key010", b"a"), kvt.Put(b"key011", b"b"), kvt.Put(b"other", b"c"))
        rev = drv.store.revision
        assert [k for _, k, _ in await drain(ws[10])] == [b"key010"]
        assert [k for _, k, _ in await drain(ws[11])] == [b"key011"]
        assert await drain(ws[12]) == []
        assert [k for _, k, _ in await drain(rng)] == [b"key010", b"key011"]
        # Nothing pending anywhere: progress may claim the last published revision.
        assert ws[12].progress_revision() == rev and ws[10].progress_revision() == rev
        drv.apply(kvt.Put(b"key012", b"d"))
        assert ws[12].progress_revision() < drv.store.revision  # its event is still queued
        assert [k for _, k, _ in await drain(ws[12])] == [b"key012"]
        assert ws[12].progress_revision() == drv.store.revision
        for w in ws.values():
            w.close()
        rng.close()
        assert drv.hub.statistics()["watchers"] == 0 and not drv.hub._by_key and not drv.hub._ranged

    asyncio.run(main())


def test_history_applied_without_publish_is_caught_up_from_the_store(drv):
    """As after a snapshot restore: the store moved on while the hub saw nothing."""
    async def main():
        w = drv.hub.subscribe(b"r/", b"r0")
        drv.apply(kvt.Put(b"r/1", b"a"))
        silent = [(next(drv.index), kvt.Put(b"r/%d" % i, b"b")) for i in range(2, 5)]
        drv.store.apply_batch(silent)  # no publish
        drv.apply(kvt.Put(b"r/5", b"c"))  # the next publish reveals the gap
        got = await drain(w)
        assert [k for _, k, _ in got] == [b"r/1", b"r/2", b"r/3", b"r/4", b"r/5"]
        assert drv.hub.statistics()["resyncs_total"] == 1 and w.synced

    asyncio.run(main())
