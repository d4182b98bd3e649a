"""The Raft log: stable entries (in Storage) followed by not-yet-persisted ones.

Invariants (checked by asserts):
  * ``applied <= committed <= last_index()``;
  * the unstable entries start at ``unstable.offset`` and are consecutive;
  * if ``unstable.snapshot`` is set, ``unstable.offset == snapshot.index + 1``.
"""

from __future__ import annotations

from .storage import Compacted, Storage, Unavailable, limit_size
from .types import Entry, Snapshot


class Unstable:
    """Entries and at most one snapshot that the application has not yet persisted."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        off = self.offset
        if i < off:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == i:
                return snap.metadata.term
            return None
        k = i - off
        if k < len(self.entries):
            return self.entries[k].term
        return None

    def stable_to(self, i: int, t: int) -> None:
        gt = self.maybe_term(i)
        if gt is None or gt != t:
            return  # the entry was replaced or is not unstable any more
        if i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        n = self.offset + len(self.entries)
        if after == n:
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace everything unstable; the stable tail after ``after`` is overridden too.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset:]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        assert self.offset <= lo <= hi <= self.offset + len(self.entries), (
            lo, hi, self.offset, len(self.entries))
        return self.entries[lo - self.offset:hi - self.offset]


class RaftLog:
    __slots__ = ("storage", "unstable", "committed", "applied", "max_next_ents_size")

    def __init__(self, storage: Storage, max_next_ents_size: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the first index is in the snapshot: committed and applied.
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    # --- indexes and terms ----------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        if i is not None:
            return i
        return self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """Term of entry ``i``; raises Compacted or Unavailable if it is not known."""
        u = self.unstable
        off = u.offset
        if i >= off:
            k = i - off
            if k < len(u.entries):
                return u.entries[k].term
            raise Unavailable(f"index {i} is past the last index {self.last_index()}")
        snap = u.snapshot
        if snap is not None:
            if i == snap.metadata.index:
                return snap.metadata.term
            raise Compacted(f"index {i} is older than the pending snapshot")
        # Stable region: storage knows it (the dummy entry answers the snapshot index).
        return self.storage.term(i)

    def zero_term_on_err(self, i: int) -> int:
        try:
            return self.term(i)
        except (Compacted, Unavailable):
            return 0

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Raft §5.4.1: is a log ending at (term, lasti) at least as up to date as ours?"""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # --- appending ------------------------------------------------------------------
    def maybe_append(self, index: int, log_term: int, committed: int,
                     ents: list[Entry]) -> int | None:
        """Follower side of AppendEntries. Returns the last new index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            assert ci > self.committed, f"entry {ci} conflicts with committed entry {self.committed}"
            self.append(ents[ci - index - 1:])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        assert after >= self.committed, f"after {after} is out of range [committed {self.committed}]"
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if none."""
        if not ents:
            return 0
        first = ents[0]
        if first.index > self.last_index():
            return first.index  # all new: the common case on a healthy follower
        last = ents[-1]
        if self.match_term(last.index, last.term):
            return 0  # Log Matching: the last one agrees, so all before it agree
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term: the fast back-off hint."""
        while index > 0:
            try:
                t = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # --- reading --------------------------------------------------------------------
    def unstable_entries(self) -> list[Entry]:
        return self.unstable.entries

    def has_next_committed_ents(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed_ents(self) -> list[Entry]:
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, i: int, max_size: int | None) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def all_entries(self) -> list[Entry]:
        """Every entry still held (tests only)."""
        return self.entries(self.first_index(), None)

    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries [lo, hi) within max_size bytes (never empty if lo < hi)."""
        if lo == hi:
            return []
        fi = self.first_index()
        if lo < fi:
            raise Compacted(f"index {lo} is compacted (first is {fi})")
        assert hi <= self.last_index() + 1, f"slice [{lo},{hi}) past last {self.last_index()}"
        u = self.unstable
        if lo >= u.offset:
            ents = u.slice(lo, hi)
        elif hi <= u.offset:
            ents = self.storage.entries(lo, hi, max_size)
            return ents if max_size is None else limit_size(ents, max_size)
        else:
            stored = self.storage.entries(lo, u.offset, max_size)
            if len(stored) < u.offset - lo:
                return stored  # storage hit the size limit
            ents = stored + u.slice(u.offset, hi)
        return limit_size(ents, max_size)

    # --- progress -------------------------------------------------------------------
    def commit_to(self, tocommit: int) -> None:
        if self.committed < tocommit:
            assert tocommit <= self.last_index(), (
                f"commit {tocommit} is past the last index {self.last_index()}")
            self.committed = tocommit

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        assert self.applied <= i <= self.committed, (
            f"applied {i} outside [{self.applied}, {self.committed}]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Advance commit to max_index if that entry is of ``term`` (Raft §5.4.2)."""
        if max_index > self.committed and self.zero_term_on_err(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
