"""The watch hub: fans applied MVCC events out to watchers.

The driver loop calls ``hub.publish(events, revision)`` after each applied batch. That
call must be cheap and never block, so every watcher owns a bounded queue of batches
(``WATCHER_QUEUE_BATCHES_MAX``). A watcher whose queue is full is marked *unsynced*:
publish stops feeding it, and when its consumer has drained what was queued it
catches up by reading ``store.events()`` in bounded pages (``CATCHUP_EVENTS_MAX``)
until it reaches the store's revision, then rejoins the live feed. Watchers that start
in the past begin unsynced the same way.

Invariant: a watcher delivers every matching event with revision >= its start
revision exactly once and in revision order; all events of one revision are delivered
in the same batch. ``next_rev`` is the smallest revision not yet delivered; live
batches drop events below it, which makes a catch-up racing a publish harmless.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import deque
from typing import Any, Iterable

from geokv import errors

WATCHER_QUEUE_BATCHES_MAX = 256  # live batches buffered per watcher before catch-up mode
CATCHUP_EVENTS_MAX = 1000  # events read from the store per catch-up page
CATCHUP_PAGE_BYTES_MAX = 1 << 20  # a catch-up page ends at the first revision boundary past this
WATCHERS_MAX = 100_000  # watchers per hub

FILTER_NOPUT = 0
FILTER_NODELETE = 1
EVENT_PUT = 0
EVENT_DELETE = 1


class Watcher:
    """One subscription. Consume with ``await watcher.next_batch()``."""

    __slots__ = (
        "hub", "key", "range_end", "prev_kv", "no_put", "no_delete", "next_rev",
        "_queue", "_synced", "_closed", "_wakeup", "_all_keys",
    )

    def __init__(self, hub: WatchHub, key: bytes, range_end: bytes, start_rev: int,
                 prev_kv: bool, filters: Iterable[int]) -> None:
        self.hub = hub
        self.key = key
        self.range_end = range_end
        self._all_keys = range_end == b"\x00"
        self.prev_kv = prev_kv
        filters = set(filters)
        self.no_put = FILTER_NOPUT in filters
        self.no_delete = FILTER_NODELETE in filters
        self.next_rev = start_rev
        self._queue: deque[tuple[list[Any], int]] = deque()
        self._synced = False
        self._closed = False
        self._wakeup = asyncio.Event()

    # --- matching -------------------------------------------------------------------
    def matches_key(self, k: bytes) -> bool:
        if not self.range_end:
            return k == self.key
        if self._all_keys:
            return k >= self.key
        return self.key <= k < self.range_end

    def _filter(self, events: Iterable[Any]) -> list[Any]:
        out = []
        next_rev = self.next_rev
        for ev in events:
            kv = ev.kv
            if kv.mod_revision < next_rev:
                continue
            if ev.type == EVENT_PUT:
                if self.no_put:
                    continue
            elif self.no_delete:
                continue
            if self.matches_key(kv.key):
                out.append(ev)
        return out

    # --- producer side (called by the hub, never blocks) ------------------------------
    def _offer(self, events: list[Any], revision: int) -> None:
        if not self._synced:
            return
        if len(self._queue) >= WATCHER_QUEUE_BATCHES_MAX:
            # Too slow: stop buffering; the consumer catches up from the store.
            self._synced = False
            self.hub._slow_watchers_total += 1
            self._wakeup.set()
            return
        matched = self._filter(events)
        if matched:
            self._queue.append((matched, revision))
            self._wakeup.set()

    # --- consumer side ----------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self._synced

    def progress_revision(self) -> int:
        """A revision R such that every matching event <= R has been handed out."""
        if self._synced and not self._queue:
            return max(self.next_rev - 1, self.hub.revision)
        return self.next_rev - 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.hub._remove(self)
            self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _catch_up_page(self) -> tuple[list[Any], int] | None:
        """Read one page of past events; mark synced when the store is reached.

        Runs without an await so no publish can interleave between reading the
        store's revision and joining the live feed. Raises errors.Compacted.
        """
        store = self.hub.store
        current = store.revision
        if self.next_rev > current:
            self._synced = True
            return None
        events = store.events(self.next_rev, current, key=self.key, range_end=self.range_end,
                              limit=CATCHUP_EVENTS_MAX)
        # The store cuts pages only between revisions, so the last revision is whole.
        upto = events[-1].kv.mod_revision if len(events) >= CATCHUP_EVENTS_MAX else current
        size = 0
        for i, ev in enumerate(events):
            kv = ev.kv
            size += len(kv.key) + len(kv.value) + (len(ev.prev_kv.value) if ev.prev_kv is not None else 0)
            if size > CATCHUP_PAGE_BYTES_MAX:
                # Keep whole revisions: cut after the last event of this one.
                rev = kv.mod_revision
                j = i + 1
                while j < len(events) and events[j].kv.mod_revision == rev:
                    j += 1
                if j < len(events):
                    events = events[:j]
                    upto = rev
                break
        out = self._filter(events)
        self.next_rev = upto + 1
        if upto >= current:
            self._synced = True
        return out, upto

    async def next_batch(self, timeout_s: float | None = None) -> tuple[list[Any], int] | None:
        """Return ``(events, revision)``: the matching events (maybe empty) up to and
        including ``revision``. Returns None on timeout or when closed.
        Raises errors.Compacted when the start revision has been compacted."""
        while True:
            if self._closed:
                return None
            if self._queue:
                events, revision = self._queue.popleft()
                if revision < self.next_rev:
                    continue  # already delivered by a catch-up read
                self.next_rev = revision + 1
                return events, revision
            if not self._synced:
                page = self._catch_up_page()
                if page is not None:
                    return page
                continue
            self._wakeup.clear()
            if timeout_s is None:
                await self._wakeup.wait()
            else:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout_s)
                except TimeoutError:
                    return None

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> tuple[list[Any], int]:
        batch = await self.next_batch()
        if batch is None:
            raise StopAsyncIteration
        return batch


class WatchHub:
    """Registry of watchers over one MVCC store.

    Single-key watchers are indexed by key and a batch is sorted by key once, so a
    published batch costs one dict lookup per event plus two bisections per range
    watcher, not a scan of every (watcher, event) pair.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.revision = store.revision  # the last published revision
        self._watchers: set[Watcher] = set()
        self._by_key: dict[bytes, set[Watcher]] = {}
        self._ranged: set[Watcher] = set()
        self._published_batches_total = 0
        self._slow_watchers_total = 0
        self._resyncs_total = 0

    def subscribe(self, key: bytes, range_end: bytes = b"", start_rev: int = 0,
                  prev_kv: bool = False, filters: Iterable[int] = ()) -> Watcher:
        """Start watching ``[key, range_end)`` from ``start_rev`` (0 = from now)."""
        if len(self._watchers) >= WATCHERS_MAX:
            raise errors.TooManyRequests()
        current = self.store.revision
        w = Watcher(self, key, range_end, start_rev if start_rev > 0 else current + 1, prev_kv, filters)
        # In the past: catch up from the store first. Otherwise join the live feed.
        w._synced = w.next_rev > current
        self._watchers.add(w)
        if range_end:
            self._ranged.add(w)
        else:
            self._by_key.setdefault(key, set()).add(w)
        return w

    @property
    def has_watchers(self) -> bool:
        """Is anybody watching? If not, an applier may publish an empty batch (just the
        revision): a watcher created later catches up from the store's change log."""
        return bool(self._watchers)

    def publish(self, events: list[Any], revision: int) -> None:
        """Hand an applied batch to the watchers it concerns. Never blocks."""
        self._published_batches_total += 1
        if events and events[0].kv.mod_revision > self.revision + 1 and self._watchers:
            # Revisions only move with events, so a gap means the store changed without
            # a publish (a snapshot was restored): the live feed missed history.
            self.on_store_restored()
            return
        if revision > self.revision:
            self.revision = revision
        if not events or not self._watchers:
            return
        hits: dict[Watcher, list[Any]] = {}
        by_key = self._by_key
        if by_key:
            for ev in events:
                ws = by_key.get(ev.kv.key)
                if ws:
                    for w in ws:
                        lst = hits.get(w)
                        if lst is None:
                            hits[w] = [ev]
                        else:
                            lst.append(ev)
        if self._ranged:
            # Sort the batch by key once; each range watcher then takes its slice with
            # two bisections and restores revision order by event position.
            order = sorted(range(len(events)), key=lambda i: events[i].kv.key)
            skeys = [events[i].kv.key for i in order]
            n = len(skeys)
            for w in self._ranged:
                if not w._synced:
                    continue
                lo = bisect_left(skeys, w.key)
                hi = n if w._all_keys else bisect_left(skeys, w.range_end)
                if lo < hi:
                    w._offer([events[i] for i in sorted(order[lo:hi])], revision)
        for w, evs in hits.items():
            w._offer(evs, revision)

    def on_store_restored(self) -> None:
        """The store's contents were replaced (snapshot restore): every watcher leaves
        the live feed and catches up from the store, or is told its history was
        compacted away. Never blocks."""
        self.revision = self.store.revision
        self._resyncs_total += 1
        for w in self._watchers:
            if w._synced:
                w._synced = False
                w._wakeup.set()

    def _remove(self, w: Watcher) -> None:
        if w in self._watchers:
            self._watchers.discard(w)
            if w.range_end:
                self._ranged.discard(w)
            else:
                ws = self._by_key.get(w.key)
                if ws is not None:
                    ws.discard(w)
                    if not ws:
                        del self._by_key[w.key]

    def statistics(self) -> dict[str, int]:
        return {
            "watchers": len(self._watchers),
            "unsynced_watchers": sum(1 for w in self._watchers if not w._synced),
            "published_batches_total": self._published_batches_total,
            "slow_watchers_total": self._slow_watchers_total,
            "resyncs_total": self._resyncs_total,
        }
