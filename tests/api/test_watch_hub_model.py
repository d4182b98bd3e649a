"""Model test of the watch hub: random writes, watchers starting anywhere in history,
slow consumers and tiny bounds; every watcher must receive exactly the store's matching
history from its start revision, once each, in order, whole revisions per batch."""

from __future__ import annotations

import asyncio
import itertools
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from geokv.kv import types as kvt
from geokv.kv.store import MVCCStore
from geokv.runtime import watch
from geokv.runtime.watch import WatchHub

KEYS = [b"a", b"b", b"c", b"d"]
RANGES = [(b"a", b""), (b"b", b""), (b"a", b"c"), (b"b", b"\x00"), (b"\x00", b"\x00")]

writes = st.lists(st.one_of(
    st.builds(lambda k, v: kvt.Put(k, v), st.sampled_from(KEYS), st.binary(max_size=2)),
    st.builds(lambda k: kvt.DeleteRange(k), st.sampled_from(KEYS)),
    st.builds(lambda k: kvt.DeleteRange(k, b"\x00"), st.sampled_from(KEYS)),
), min_size=1, max_size=4)

steps = st.lists(st.one_of(
    st.tuples(st.just("write"), writes),
    st.tuples(st.just("watch"), st.sampled_from(RANGES), st.integers(0, 12), st.booleans()),
    st.tuples(st.just("consume"), st.integers(0, 7), st.integers(1, 3)),
    st.tuples(st.just("close"), st.integers(0, 7)),
), min_size=8, max_size=40)


def matches(key: bytes, lo: bytes, hi: bytes) -> bool:
    if not hi:
        return key == lo
    if hi == b"\x00":
        return key >= lo
    return lo <= key < hi


@settings(max_examples=100, deadline=None)
@given(prefix=st.lists(st.tuples(st.just("write"), writes), min_size=1, max_size=4), plan=steps,
       queue_max=st.integers(1, 4), page=st.integers(1, 5), page_bytes=st.integers(0, 6))
def test_every_watcher_gets_exactly_its_history(prefix, plan, queue_max, page, page_bytes):
    plan = prefix + plan
    old = (watch.WATCHER_QUEUE_BATCHES_MAX, watch.CATCHUP_EVENTS_MAX, watch.CATCHUP_PAGE_BYTES_MAX)
    watch.WATCHER_QUEUE_BATCHES_MAX, watch.CATCHUP_EVENTS_MAX, watch.CATCHUP_PAGE_BYTES_MAX = queue_max, page, page_bytes
    try:
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(_run(plan, d))
    finally:
        watch.WATCHER_QUEUE_BATCHES_MAX, watch.CATCHUP_EVENTS_MAX, watch.CATCHUP_PAGE_BYTES_MAX = old


async def _run(plan, path: str) -> None:
    store = MVCCStore(path)
    try:
        hub = WatchHub(store)
        index = itertools.count(1)
        history: list[tuple[int, bytes, int]] = []  # (type, key, revision) as applied
        watchers: list[dict] = []

        async def consume(w: dict, batches: int | None, timeout_s: float) -> None:
            n = 0
            while batches is None or n < batches:
                b = await w["w"].next_batch(timeout_s)
                if b is None:
                    return
                events, rev = b
                revs = [e.kv.mod_revision for e in events]
                assert all(r <= rev for r in revs)
                w["batches"].append(sorted(set(revs)))
                w["got"].extend((e.type, e.kv.key, e.kv.mod_revision) for e in events)
                n += 1

        for step in plan:
            if step[0] == "write":
                for cmd in step[1]:
                    [(_res, evs)] = store.apply_batch([(next(index), cmd)])
                    history.extend((e.type, e.kv.key, e.kv.mod_revision) for e in evs)
                    hub.publish(evs, store.revision)
            elif step[0] == "watch":
                (lo, hi), start, _ = step[1], step[2], step[3]
                w = hub.subscribe(lo, hi, start)
                first = start if start > 0 else store.revision + 1
                watchers.append({"w": w, "lo": lo, "hi": hi, "start": first, "got": [], "batches": [],
                                 "closed": False})
            elif step[0] == "consume" and watchers:
                w = watchers[step[1] % len(watchers)]
                if not w["closed"]:
                    await consume(w, step[2], 0)
            elif step[0] == "close" and watchers:
                w = watchers[step[1] % len(watchers)]
                w["closed"] = True
                w["w"].close()
        for w in watchers:
            if w["closed"]:
                continue
            await consume(w, None, 0)
            want = [h for h in history if h[2] >= w["start"] and matches(h[1], w["lo"], w["hi"])]
            assert w["got"] == want
            seen = [r for b in w["batches"] for r in b]
            assert seen == sorted(set(seen))  # no revision split over two batches or repeated
            assert w["w"].progress_revision() >= (history[-1][2] if history else 0) or not want
    finally:
        store.close()
