"""The simulated durable disk of one node: what survives a crash.

The node writes each Ready's snapshot, entries and hard state here when its (virtual)
fsync completes. A crash while an fsync is in flight tears the write: the snapshot (if
any) and a random prefix of the entries may have reached the platter, the hard state
only if every entry did (a WAL writes entries before the hard state record). Nothing
that was torn had been acknowledged, because acknowledgements are sent only after the
fsync completes.
"""

from __future__ import annotations

import copy
import random

from geokv.raft.storage import MemoryStorage
from geokv.raft.types import ConfState, Entry, HardState, Snapshot


class SimDisk:
    """Persisted hard state, log entries and latest snapshot of one node."""

    __slots__ = ("_store", "writes", "torn_writes")

    def __init__(self, conf_state: ConfState | None = None) -> None:
        # The persisted log has exactly MemoryStorage's shape (a snapshot followed by
        # consecutive entries), so the disk keeps one privately.
        self._store = MemoryStorage(conf_state)
        self.writes = 0
        self.torn_writes = 0

    def hard_state(self) -> HardState:
        hs = self._store.hard_state()
        return HardState(hs.term, hs.vote, hs.commit)

    def snapshot(self) -> Snapshot:
        return self._store.snapshot()

    def last_index(self) -> int:
        return self._store.last_index()

    def write(self, hard_state: HardState | None, entries: list[Entry],
              snapshot: Snapshot | None) -> None:
        """A complete, fsynced write of one Ready."""
        self.writes += 1
        st = self._store
        if snapshot is not None and snapshot.metadata.index > st.snapshot().metadata.index:
            st.apply_snapshot(snapshot)
        if entries:
            st.append(list(entries))
        if hard_state is not None:
            st.set_hard_state(hard_state)

    def write_torn(self, hard_state: HardState | None, entries: list[Entry],
                   snapshot: Snapshot | None, rng: random.Random) -> str:
        """The write of one Ready interrupted by a crash; returns what survived."""
        self.torn_writes += 1
        st = self._store
        kept_snap = snapshot is not None and rng.random() < 0.5
        if kept_snap and snapshot.metadata.index > st.snapshot().metadata.index:
            st.apply_snapshot(snapshot)
        else:
            kept_snap = False
        n = rng.randint(0, len(entries)) if entries else 0
        if n and (snapshot is None or kept_snap):
            st.append(list(entries[:n]))
        else:
            n = 0  # entries after an unwritten snapshot would leave a hole
        kept_hs = hard_state is not None and n == len(entries) and (snapshot is None or kept_snap)
        if kept_hs:
            st.set_hard_state(hard_state)
        return f"snapshot={'kept' if kept_snap else 'lost'} entries={n}/{len(entries)} " \
               f"hard_state={'kept' if kept_hs else 'lost'}"

    def save_snapshot(self, snap: Snapshot, compact_to: int) -> None:
        """Record a snapshot the node created (durable), then drop entries before it."""
        st = self._store
        meta = snap.metadata
        if meta.index <= st.snapshot().metadata.index or meta.index > st.last_index():
            return
        st.create_snapshot(meta.index, meta.conf_state, snap.data)
        if compact_to > st.first_index():
            st.compact(min(compact_to, st.last_index()))

    def load(self) -> MemoryStorage:
        """A fresh MemoryStorage holding exactly what survived (used on restart): the
        same snapshot, the same retained entries (also those before the snapshot index
        that compaction kept), the same hard state; nothing shared with the disk."""
        return copy.deepcopy(self._store)
