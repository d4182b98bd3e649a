"""What the Raft core reads from stable storage, and an in-memory implementation.

The core only ever *reads* a Storage; the application writes it (entries and hard
state from each Ready, snapshots) before calling ``RawNode.advance``.
"""

from __future__ import annotations

from typing import Protocol

from .types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)


class StorageError(Exception):
    """Base of the storage errors the core understands."""


class Compacted(StorageError):
    """The requested index is older than the first retained entry (use the snapshot)."""


class Unavailable(StorageError):
    """The requested index is past the last entry in storage."""


class SnapshotOutOfDate(StorageError):
    """A snapshot older than the current one was offered."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The snapshot is being built; the core retries later."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]: ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Longest prefix of ``entries`` within ``max_size`` bytes, but never empty."""
    if max_size is None or not entries:
        return entries
    # Fast path: the whole list fits (one C-level pass instead of a Python loop).
    if sum([len(e.data) for e in entries]) + 16 * len(entries) <= max_size:
        return entries
    size = 0
    for i, e in enumerate(entries):
        size += len(e.data) + 16
        if size > max_size and i > 0:
            return entries[:i]
    return entries


def bootstrap_entries(voters: tuple[int, ...], learners: tuple[int, ...] = ()
                      ) -> tuple[list[Entry], HardState]:
    """The etcd-style bootstrap of a new cluster: one committed term-1 CONF_CHANGE entry
    per initial member (indexes 1..n), and the HardState that goes with it.

    Every initial member writes these to its empty storage (and starts with an empty
    ConfState); the application applies them like any committed conf change. Because
    the base configuration is *in the log*, a member added later learns it by plain
    replication. (Bootstrapping with a ConfState instead only suits fixed clusters:
    a joining node then needs a snapshot to learn the base configuration.)
    """
    if not voters:
        raise ValueError("a cluster needs at least one voter")
    if set(voters) & set(learners) or len(set(voters)) != len(voters):
        raise ValueError("voters must be distinct and disjoint from learners")
    ents = []
    changes = [(ConfChangeType.ADD_NODE, v) for v in voters]
    changes += [(ConfChangeType.ADD_LEARNER, v) for v in learners]
    for i, (t, nid) in enumerate(changes, 1):
        cc = ConfChange((ConfChangeSingle(t, nid),))
        ents.append(Entry(1, i, EntryType.CONF_CHANGE, cc.encode()))
    return ents, HardState(term=1, vote=0, commit=len(ents))


class MemoryStorage:
    """Storage held in a Python list.

    Invariant: ``_ents[0]`` is a dummy entry at (snapshot index, snapshot term); real
    entries follow with consecutive indexes.
    """

    __slots__ = ("_hard_state", "_snapshot", "_ents")

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMetadata(0, 0, conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(0, 0)]

    # --- reads (used by the core) ---------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = self._hard_state
        return HardState(hs.term, hs.vote, hs.commit), self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        ents = self._ents
        offset = ents[0].index
        if lo <= offset:
            raise Compacted(f"index {lo} is compacted (first is {offset + 1})")
        if hi > offset + len(ents):
            raise Unavailable(f"index {hi - 1} is past the last index {offset + len(ents) - 1}")
        assert lo <= hi, (lo, hi)
        return limit_size(ents[lo - offset:hi - offset], max_size)

    def term(self, index: int) -> int:
        ents = self._ents
        offset = ents[0].index
        if index < offset:
            raise Compacted(f"index {index} is compacted")
        if index - offset >= len(ents):
            raise Unavailable(f"index {index} is unavailable")
        return ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- writes (used by the application) -------------------------------------------
    def bootstrap(self, voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> None:
        """Write the bootstrap entries of ``bootstrap_entries`` into an empty storage."""
        assert self.last_index() == 0, "bootstrap needs an empty storage"
        ents, hs = bootstrap_entries(tuple(voters), tuple(learners))
        self.append(ents)
        self.set_hard_state(hs)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = HardState(hs.term, hs.vote, hs.commit)

    def hard_state(self) -> HardState:
        return self._hard_state

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace everything with ``snap`` (a follower installing the leader's snapshot)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot {snap.metadata.index} is not newer than {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` (does not compact)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {index} is out of date")
        offset = self._ents[0].index
        if index > self.last_index():
            raise Unavailable(f"snapshot index {index} is past the last index {self.last_index()}")
        cs = conf_state if conf_state is not None else self._snapshot.metadata.conf_state
        self._snapshot = Snapshot(SnapshotMetadata(index, self._ents[index - offset].term, cs), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries before ``index``; ``index`` itself becomes the dummy entry."""
        offset = self._ents[0].index
        if index <= offset:
            raise Compacted(f"index {index} is already compacted")
        if index > self.last_index():
            raise Unavailable(f"compact {index} is past the last index {self.last_index()}")
        e = self._ents[index - offset]
        self._ents = [Entry(e.term, e.index)] + self._ents[index - offset + 1:]

    def append(self, entries: list[Entry]) -> None:
        """Append entries, truncating any conflicting suffix first."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return  # everything is already compacted
        if first > entries[0].index:
            entries = entries[first - entries[0].index:]
        offset = entries[0].index - self._ents[0].index
        n = len(self._ents)
        if offset < n:
            del self._ents[offset:]
            self._ents.extend(entries)
        elif offset == n:
            self._ents.extend(entries)
        else:
            raise AssertionError(
                f"missing log entry: last {self.last_index()}, append at {entries[0].index}"
            )
