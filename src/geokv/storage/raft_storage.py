"""DiskRaftStorage: the Raft log, hard state and snapshots of one node, on disk.

Layout under ``dir``: ``wal/`` (segments, see ``wal``) and ``snap/`` (see ``snapshot``).

The in-memory view mirrors ``geokv.raft.storage.MemoryStorage`` exactly (same reads,
same errors): a dummy entry at (``_dummy_index``, ``_dummy_term``), then the terms of
every entry up to ``last_index``. Entry *data* is kept only for the newest entries
(at most ``ENTRY_CACHE_BYTES_MAX`` bytes); older entries are read back from the WAL
through an index from Raft index to (segment, offset) of the record holding it.

Write path: ``save`` buffers entries and hard state in the WAL (entries first, so a
torn tail can never leave a commit index pointing past the log), ``sync`` makes them
durable with one fsync. Installing a snapshot writes a SNAPSHOT record durably
*before* the snapshot file: on replay, a SNAPSHOT record newer than every snapshot
file is an install that never finished and is ignored, while one that matches
a snapshot file (or is older than it) discards the log entries written before it.

Recovery (``open``): newest snapshot file, then every WAL record in order; a later
ENTRIES record at a lower index replaces the suffix from that index (Raft truncating
a conflicting suffix), exactly as ``save`` did before the crash.

Threading: every public method holds one re-entrant lock, except ``sync``, which
only waits for the (thread-safe) WAL: the driver may fsync on a worker thread while
the event loop keeps reading terms and entries.
"""

from __future__ import annotations

import bisect
import functools
import threading
from array import array
from typing import Any

from geokv.ports.disk import Disk
from geokv.raft.storage import Compacted, SnapshotOutOfDate, Unavailable, limit_size
from geokv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

from . import records
from .framing import RecordType
from .snapshot import SnapshotCorrupt, SnapshotStore
from .wal import SEGMENT_BYTES_DEFAULT, WAL, StorageCorrupt, WALCorrupt, WALFailed

__all__ = ["DiskRaftStorage", "WALCorrupt", "WALFailed", "SnapshotCorrupt", "StorageCorrupt",
           "ENTRY_CACHE_BYTES_MAX", "ENTRIES_RECORD_BYTES_MAX"]

#: Bytes of entry data (plus 16 per entry) kept in memory for the newest entries.
ENTRY_CACHE_BYTES_MAX = 32 << 20
#: A save() splits its entries into WAL records of at most this many bytes (one entry
#: larger than this gets a record of its own).
ENTRIES_RECORD_BYTES_MAX = 4 << 20


def _locked(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with self._mu:
            return fn(self, *args, **kwargs)
    return wrapper


class DiskRaftStorage:
    """Raft Storage on a WAL and snapshot files (see the module docstring)."""

    def __init__(self, disk: Disk, dir: str, snaps: SnapshotStore, cache_bytes_max: int) -> None:
        self._mu = threading.RLock()
        self._disk = disk
        self.dir = dir
        self._snaps = snaps
        self._wal: WAL | None = None
        self._hard_state = HardState()
        self._snap = Snapshot(SnapshotMetadata(0, 0, ConfState()))
        self._dummy_index = 0
        self._dummy_term = 0
        self._terms = array("Q")  # term of entry dummy+1+i
        # Where entries live on disk: record i holds entries from _loc_first[i] up to
        # _loc_first[i+1]-1 (or last_index); it is at (_loc_seq[i], _loc_off[i]).
        self._loc_first: list[int] = []
        self._loc_seq: list[int] = []
        self._loc_off: list[int] = []
        self._seg_max_index: dict[int, int] = {}
        self._cache: list[Entry] = []  # entries cache_first..last_index
        self._cache_first = 1
        self._cache_bytes = 0
        self._cache_bytes_max = cache_bytes_max
        self.torn_tail = None
        self.stats_disk_reads = 0

    # --- opening and recovery --------------------------------------------------------
    @classmethod
    def open(cls, disk: Disk, dir: str, *, segment_bytes_max: int = SEGMENT_BYTES_DEFAULT,
             cache_bytes_max: int = ENTRY_CACHE_BYTES_MAX,
             initial_conf_state: ConfState | None = None) -> DiskRaftStorage:
        """Recover the storage in ``dir`` (created if missing).

        ``initial_conf_state``: for a brand-new store, the bootstrap configuration,
        persisted as an index-0 snapshot (ignored when the store has any state).
        Raises WALCorrupt / SnapshotCorrupt on damage that is not a torn tail.
        """
        disk.makedirs(dir)
        snaps = SnapshotStore(disk, f"{dir}/snap")
        self = cls(disk, dir, snaps, cache_bytes_max)
        newest = snaps.newest()
        if newest is not None:
            self._snap = snaps.load(newest)
        self._dummy_index = self._snap.metadata.index
        self._dummy_term = self._snap.metadata.term
        self._wal = WAL.open(disk, f"{dir}/wal", self._replay, segment_bytes_max=segment_bytes_max,
                             first_index=self._dummy_index + 1)
        self.torn_tail = self._wal.torn_tail
        hs = self._hard_state
        self._hard_state = HardState(hs.term, hs.vote, max(hs.commit, self._dummy_index))
        self._cache_first = self.last_index() + 1
        self._wal.index_hint = self.last_index() + 1
        if (initial_conf_state is not None and newest is None and self.last_index() == 0
                and self._hard_state == HardState()):
            self._snap = Snapshot(SnapshotMetadata(0, 0, initial_conf_state))
            snaps.save(self._snap)
        return self

    def _replay(self, rtype: int, payload: bytes, seq: int, off: int) -> None:
        if rtype == RecordType.ENTRIES:
            first, terms = records.decode_entries_terms(payload)
            last = first + len(terms) - 1
            if last > self._seg_max_index.get(seq, 0):
                self._seg_max_index[seq] = last
            start = max(first, self._dummy_index + 1)
            if last < start:  # wholly compacted, but it still ended the log there
                if last < self.last_index():
                    self._truncate_from(self._dummy_index + 1)
                return
            if start > self.last_index() + 1:
                raise ValueError(f"entries start at index {start} but the log ends at {self.last_index()}")
            self._truncate_from(start)
            self._terms.extend(terms[start - first:])
            self._add_loc(start, seq, off)
        elif rtype == RecordType.HARD_STATE:
            self._hard_state = records.decode_hard_state(payload)
        elif rtype == RecordType.SNAPSHOT:
            index, term = records.decode_snapshot_marker(payload)
            snap_md = self._snap.metadata
            if index > snap_md.index:
                return  # the install crashed before its snapshot file was durable
            if index == snap_md.index and term != snap_md.term:
                raise ValueError(f"snapshot record {index}/{term} contradicts the snapshot file "
                                 f"{snap_md.index}/{snap_md.term}")
            # Everything written before the install is superseded by the snapshot.
            self._truncate_from(self._dummy_index + 1)
        else:
            raise ValueError(f"unknown record type {rtype}")

    # --- the Raft Storage interface --------------------------------------------------
    @_locked
    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = self._hard_state
        return HardState(hs.term, hs.vote, hs.commit), self._snap.metadata.conf_state

    @_locked
    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo <= self._dummy_index:
            raise Compacted(f"index {lo} is compacted (first is {self._dummy_index + 1})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"index {hi - 1} is past the last index {self.last_index()}")
        assert lo <= hi, (lo, hi)
        if lo >= self._cache_first:
            cf = self._cache_first
            return limit_size(self._cache[lo - cf:hi - cf], max_size)
        out = self._read_from_disk(lo, min(hi, self._cache_first), max_size)
        if hi > self._cache_first and (max_size is None or len(out) == self._cache_first - lo):
            out += self._cache[:hi - self._cache_first]
            out = limit_size(out, max_size)
        return out

    @_locked
    def term(self, index: int) -> int:
        if index < self._dummy_index:
            raise Compacted(f"index {index} is compacted")
        if index > self.last_index():
            raise Unavailable(f"index {index} is unavailable")
        if index == self._dummy_index:
            return self._dummy_term
        return self._terms[index - self._dummy_index - 1]

    @_locked
    def first_index(self) -> int:
        return self._dummy_index + 1

    @_locked
    def last_index(self) -> int:
        return self._dummy_index + len(self._terms)

    @_locked
    def snapshot(self) -> Snapshot:
        return self._snap

    # --- writes ----------------------------------------------------------------------
    @_locked
    def hard_state(self) -> HardState:
        hs = self._hard_state
        return HardState(hs.term, hs.vote, hs.commit)

    @_locked
    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None) -> int:
        """Buffer a Ready's snapshot, entries and hard state; returns the WAL lsn to sync.

        Not durable until ``sync``. A snapshot is made durable here already.
        """
        wal = self._wal
        assert wal is not None, "storage is closed"
        if snapshot is not None and not snapshot.is_empty():
            self._install_snapshot(snapshot)
        recs: list[tuple[int, bytes]] = []
        chunks: list[list[Entry]] = []
        if entries:
            entries = self._trim_compacted(entries)
        if entries:
            start = entries[0].index
            if start > self.last_index() + 1:
                raise AssertionError(f"missing log entry: last {self.last_index()}, append at {start}")
            chunk: list[Entry] = []
            size = 0
            for e in entries:
                n = len(e.data) + 16
                if chunk and size + n > ENTRIES_RECORD_BYTES_MAX:
                    chunks.append(chunk)
                    chunk, size = [], 0
                chunk.append(e)
                size += n
            chunks.append(chunk)
            recs.extend((RecordType.ENTRIES, records.encode_entries(c)) for c in chunks)
        if hard_state is not None:
            recs.append((RecordType.HARD_STATE, records.encode_hard_state(hard_state)))
        if not recs:
            return wal.appended_lsn
        placed = wal.append_batch(recs)
        if chunks:
            self._truncate_from(chunks[0][0].index)
            for c, (_, seq, off) in zip(chunks, placed):
                self._add_loc(c[0].index, seq, off)
                last = c[-1].index
                if last > self._seg_max_index.get(seq, 0):
                    self._seg_max_index[seq] = last
                self._terms.extend(e.term for e in c)
                self._cache.extend(c)
                self._cache_bytes += sum(len(e.data) + 16 for e in c)
            self._evict_cache()
            wal.index_hint = self.last_index() + 1
        if hard_state is not None:
            self._hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
        return placed[-1][0]

    def sync(self, lsn: int | None = None) -> int:
        """Make everything saved so far (or up to ``lsn``) durable with one fsync."""
        assert self._wal is not None, "storage is closed"
        return self._wal.sync(lsn)

    @property
    def durable_lsn(self) -> int:
        assert self._wal is not None, "storage is closed"
        return self._wal.durable_lsn

    @_locked
    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Durably record a snapshot of the applied state at ``index``; release old files.

        Like MemoryStorage, this does not compact the in-memory log (call ``compact``).
        """
        assert self._wal is not None, "storage is closed"
        if index <= self._snap.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {index} is out of date")
        if index > self.last_index():
            raise Unavailable(f"snapshot index {index} is past the last index {self.last_index()}")
        term = self.term(index)  # raises Compacted below the dummy
        cs = conf_state if conf_state is not None else self._snap.metadata.conf_state
        snap = Snapshot(SnapshotMetadata(index, term, cs), bytes(data))
        self._wal.sync()  # the entries the snapshot covers are durable before it is
        self._snaps.save(snap)
        self._snap = snap
        self._snaps.release_old()
        self._release_segments()
        return snap

    @_locked
    def compact(self, index: int) -> None:
        """Discard entries before ``index``; ``index`` itself becomes the dummy entry."""
        if index <= self._dummy_index:
            raise Compacted(f"index {index} is already compacted")
        if index > self.last_index():
            raise Unavailable(f"compact {index} is past the last index {self.last_index()}")
        term = self.term(index)
        del self._terms[:index - self._dummy_index]
        self._dummy_index, self._dummy_term = index, term
        # Drop index records wholly before the new first index.
        cut = bisect.bisect_right(self._loc_first, index + 1) - 1
        if cut > 0:
            del self._loc_first[:cut], self._loc_seq[:cut], self._loc_off[:cut]
        if self._cache_first <= index:
            drop = min(index + 1 - self._cache_first, len(self._cache))
            self._cache_bytes -= sum(len(e.data) + 16 for e in self._cache[:drop])
            del self._cache[:drop]
            self._cache_first = index + 1
        self._release_segments()

    @_locked
    def close(self) -> None:
        """Make everything saved durable and close the files. Idempotent."""
        wal, self._wal = self._wal, None
        if wal is not None:
            try:
                if wal.appended_lsn > wal.durable_lsn:
                    wal.sync()
            finally:
                wal.close()

    @_locked
    def statistics(self) -> dict[str, Any]:
        wal = self._wal
        return {
            "first_index": self.first_index(), "last_index": self.last_index(),
            "snapshot_index": self._snap.metadata.index,
            "cache_entries": len(self._cache), "cache_bytes": self._cache_bytes,
            "cache_bytes_max": self._cache_bytes_max, "disk_reads": self.stats_disk_reads,
            "wal_segments": len(wal.segments()) if wal else 0,
            "wal_appended_lsn": wal.appended_lsn if wal else 0,
            "wal_durable_lsn": wal.durable_lsn if wal else 0,
            "wal_syncs": wal.stats_syncs if wal else 0,
        }

    # --- internals -------------------------------------------------------------------
    def _trim_compacted(self, entries: list[Entry]) -> list[Entry]:
        first = self.first_index()
        if entries[-1].index < first:
            return []
        if entries[0].index < first:
            return entries[first - entries[0].index:]
        return entries

    def _truncate_from(self, start: int) -> None:
        """Forget entries with index >= ``start`` (a conflicting suffix)."""
        keep = start - self._dummy_index - 1
        assert keep >= 0, (start, self._dummy_index)
        if keep < len(self._terms):
            del self._terms[keep:]
        cut = bisect.bisect_left(self._loc_first, start)
        if cut < len(self._loc_first):
            del self._loc_first[cut:], self._loc_seq[cut:], self._loc_off[cut:]
        if start < self._cache_first + len(self._cache):
            if start <= self._cache_first:
                self._cache.clear()
                self._cache_bytes = 0
                self._cache_first = start
            else:
                gone = self._cache[start - self._cache_first:]
                self._cache_bytes -= sum(len(e.data) + 16 for e in gone)
                del self._cache[start - self._cache_first:]

    def _add_loc(self, first: int, seq: int, off: int) -> None:
        assert not self._loc_first or self._loc_first[-1] < first, (self._loc_first[-1:], first)
        self._loc_first.append(first)
        self._loc_seq.append(seq)
        self._loc_off.append(off)

    def _evict_cache(self) -> None:
        if self._cache_bytes <= self._cache_bytes_max:
            return
        # Evict down to 3/4 of the bound so eviction work is amortised over many saves.
        target = self._cache_bytes_max * 3 // 4
        drop = 0
        freed = 0
        cache = self._cache
        while drop < len(cache) and self._cache_bytes - freed > target:
            freed += len(cache[drop].data) + 16
            drop += 1
        del cache[:drop]
        self._cache_bytes -= freed
        self._cache_first += drop

    def _read_from_disk(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries [lo, hi) from the WAL, stopping early once past ``max_size`` bytes."""
        assert self._wal is not None, "storage is closed"
        out: list[Entry] = []
        size = 0
        i = bisect.bisect_right(self._loc_first, lo) - 1
        assert i >= 0, (lo, self._loc_first[:1])
        idx = lo
        while idx < hi:
            rec_end = self._loc_first[i + 1] if i + 1 < len(self._loc_first) else self.last_index() + 1
            rtype, payload = self._wal.read_frame(self._loc_seq[i], self._loc_off[i])
            self.stats_disk_reads += 1
            if rtype != RecordType.ENTRIES:
                raise WALCorrupt(f"segment {self._loc_seq[i]}", self._loc_off[i], "expected an entries record")
            ents = records.decode_entries(payload)
            base = ents[0].index
            for e in ents[idx - base:min(hi, rec_end) - base]:
                size += len(e.data) + 16
                if max_size is not None and size > max_size and out:
                    return out
                out.append(e)
            idx = min(hi, rec_end)
            i += 1
        return out

    def _install_snapshot(self, snap: Snapshot) -> None:
        assert self._wal is not None
        md = snap.metadata
        if md.index <= self._snap.metadata.index:
            raise SnapshotOutOfDate(f"snapshot {md.index} is not newer than {self._snap.metadata.index}")
        self._wal.append(RecordType.SNAPSHOT, records.encode_snapshot_marker(md.index, md.term))
        self._wal.sync()
        self._snaps.save(snap)
        self._snap = Snapshot(SnapshotMetadata(md.index, md.term, md.conf_state), bytes(snap.data))
        self._truncate_from(self._dummy_index + 1)
        self._dummy_index, self._dummy_term = md.index, md.term
        self._cache_first = md.index + 1
        self._loc_first.clear(), self._loc_seq.clear(), self._loc_off.clear()
        self._wal.index_hint = md.index + 1
        self._snaps.release_old()
        self._release_segments()

    def _release_segments(self) -> list[str]:
        """Remove WAL segments holding only entries below both the snapshot and the log."""
        assert self._wal is not None
        threshold = min(self._snap.metadata.index, self._dummy_index)
        segs = self._wal.segments()
        keep_from = None
        for seg in segs[:-1]:
            if self._seg_max_index.get(seg.seq, 0) > threshold:
                keep_from = seg.seq
                break
        if keep_from is None:
            keep_from = segs[-1].seq
        removed = self._wal.release_before(keep_from)
        for seq in [s for s in self._seg_max_index if s < keep_from]:
            del self._seg_max_index[seq]
        return removed

