"""Segmented, checksummed write-ahead log with group commit.

Files: ``<dir>/<seq:016x>-<index:016x>.wal``; ``seq`` counts segments from 0 without
gaps, ``index`` is the Raft index expected next when the segment was started (a hint
for humans and the repair tool). Every segment begins with a SEGMENT_HEADER frame,
then, when one is known, a copy of the latest HARD_STATE, so that dropping old
segments never drops the current hard state. Frames are described in ``framing``.

Durability: each append gets a log sequence number (``lsn``, counting records from 1
since the log was opened). Nothing is durable until ``sync`` has returned; ``sync``
returns ``durable_lsn``, and every record with ``lsn <= durable_lsn`` survives a crash.
Many threads may append and call ``sync`` at once: one of them writes and fsyncs
everything appended so far while the others wait for it (group commit), so one fsync
covers many records.

Invariants:
* Every segment but the last is complete and was fsynced before the next one was
  created, so a torn write can only ever be at the tail of the last segment.
* A segment is created whole (header included) with ``write_atomic``.
* After an I/O error on write or fsync, the WAL refuses all further work
  (``WALFailed``): after a failed fsync the kernel may have dropped the dirty pages,
  so the only safe continuation is a restart that replays what is really on disk.

Recovery (``WAL.open``): all segments are replayed in order. A damaged frame in the
last segment with nothing valid after it is a torn write from a crash and is cut off.
Any other damage raises ``WALCorrupt`` naming the file and offset; nothing is
truncated silently. See ``geokv.storage.repair`` for the way out.

Known limits of telling a torn tail from damage: bit rot in the very last record of
the last segment looks exactly like a torn write and is cut (no record follows it to
prove otherwise); and a torn record whose payload happens to contain a complete,
valid frame is reported as damage (the repair tool then cuts it).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import crc32c

from geokv.ports.disk import Disk, DiskFile, read_whole

from . import records
from .framing import HEADER, HEADER_BYTES, MAGIC, BadFrame, RecordType, encode_frame, find_valid_frame, iter_frames

#: A segment is closed and a new one started once it would grow past this.
SEGMENT_BYTES_DEFAULT = 64 << 20
#: Appended frames kept in memory before they are handed to the OS (still not durable).
WRITE_BUFFER_BYTES_MAX = 4 << 20
#: Open read handles kept for reading old records back (least recently used closed first).
READ_HANDLES_MAX = 4
#: Longest time a caller waits for another thread's fsync before declaring the WAL failed.
SYNC_WAIT_S_MAX = 120.0
#: Granularity of that wait.
SYNC_WAIT_POLL_S = 1.0

_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")

REPAIR_HINT = (
    "The node refuses to start rather than silently drop records. To inspect the damage run "
    "`python -m geokv.storage.repair --data-dir <data dir>` (also `geokv wal repair`); "
    "add --truncate-at-corruption to move the damaged segments aside and cut the log there."
)


class StorageCorrupt(Exception):
    """Durable data failed its checksum or structure check at ``path``:``offset``."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: corrupt at offset {offset}: {reason}. {REPAIR_HINT}")


class WALCorrupt(StorageCorrupt):
    """A WAL segment is damaged somewhere other than a torn tail."""


class WALFailed(Exception):
    """A write or fsync failed; the WAL accepts nothing more (restart the node)."""


@dataclass(slots=True)
class SegmentInfo:
    seq: int
    first_index: int
    path: str


@dataclass(slots=True)
class TornTail:
    """What recovery cut off the end of the last segment."""

    path: str
    offset: int
    dropped_bytes: int
    reason: str


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}.wal"


def list_segments(disk: Disk, dir: str) -> list[SegmentInfo]:
    """The segment files in ``dir``, by seq (other files are ignored)."""
    out = []
    for name in disk.listdir(dir):
        m = _SEGMENT_RE.match(name)
        if m:
            out.append(SegmentInfo(int(m.group(1), 16), int(m.group(2), 16), f"{dir}/{name}"))
    out.sort(key=lambda s: s.seq)
    return out


#: Called once per valid record during replay: (type, payload, segment seq, offset).
Visitor = Callable[[int, bytes, int, int], None]


class WAL:
    """The write-ahead log of one node (see the module docstring)."""

    def __init__(self, disk: Disk, dir: str, segments: list[SegmentInfo], file: DiskFile,
                 seg_bytes: int, segment_bytes_max: int, last_hard_state: bytes | None) -> None:
        self._disk = disk
        self.dir = dir
        self._segments = segments
        self._file = file
        self._seg_bytes = seg_bytes  # bytes of the current segment, written or buffered
        self._start_bytes = seg_bytes  # its size when this process started using it
        self._segment_bytes_max = segment_bytes_max
        self._last_hard_state = last_hard_state
        self._buf = bytearray()
        self._mu = threading.Lock()
        self._cond = threading.Condition(self._mu)
        self._appended_lsn = 0
        self._durable_lsn = 0
        self._syncing = False
        self._waiters = 0  # threads waiting in sync() for another thread's fsync
        self._waiters_last_round = 0
        self._failed: BaseException | None = None
        self._closed = False
        self._readers: OrderedDict[int, DiskFile] = OrderedDict()
        #: The Raft index expected next; the storage layer keeps it current (segment names).
        self.index_hint = 1
        self.torn_tail: TornTail | None = None
        self.stats_syncs = 0
        self.stats_segments_created = 0

    # --- opening and replay ----------------------------------------------------------
    @classmethod
    def open(cls, disk: Disk, dir: str, visit: Visitor, *,
             segment_bytes_max: int = SEGMENT_BYTES_DEFAULT, first_index: int = 1) -> WAL:
        """Replay every record through ``visit`` and return the WAL ready to append.

        Raises WALCorrupt on damage that is not a torn tail of the last segment.
        """
        disk.makedirs(dir)
        for name in disk.listdir(dir):
            if name.endswith(".tmp"):  # an interrupted write_atomic; never referenced
                disk.remove(f"{dir}/{name}")
        segments = list_segments(disk, dir)
        if not segments:
            seg = SegmentInfo(0, first_index, f"{dir}/{segment_name(0, first_index)}")
            disk.write_atomic(seg.path, encode_frame(RecordType.SEGMENT_HEADER,
                                                     records.encode_segment_header(0, first_index)))
            wal = cls(disk, dir, [seg], disk.open_append(seg.path), disk.size(seg.path),
                      segment_bytes_max, None)
            wal.index_hint = first_index
            return wal

        for prev, seg in zip(segments, segments[1:]):
            if seg.seq != prev.seq + 1:
                raise WALCorrupt(seg.path, 0, f"segment seq {prev.seq + 1} is missing before this one")

        last_hard_state: bytes | None = None
        torn: TornTail | None = None
        valid_end = 0
        for i, seg in enumerate(segments):
            is_last = i == len(segments) - 1
            data = read_whole(disk, seg.path)
            valid_end = len(data)
            for item in iter_frames(data):
                if isinstance(item, BadFrame):
                    if not is_last:
                        raise WALCorrupt(seg.path, item.offset, item.reason + " (not the last segment)")
                    nxt = find_valid_frame(data, item.offset + 1)
                    if nxt is not None:
                        raise WALCorrupt(seg.path, item.offset, f"{item.reason}; a valid record follows at "
                                         f"offset {nxt}, so this is damage, not a torn write")
                    valid_end = item.offset
                    torn = TornTail(seg.path, item.offset, len(data) - item.offset, item.reason)
                    break
                off, rtype, payload = item
                try:
                    if off == 0:
                        if rtype != RecordType.SEGMENT_HEADER:
                            raise ValueError("segment does not start with a header")
                        seq, _ = records.decode_segment_header(payload)
                        if seq != seg.seq:
                            raise ValueError(f"header says segment {seq}, file name says {seg.seq}")
                        continue
                    if rtype == RecordType.SEGMENT_HEADER:
                        raise ValueError("segment header in the middle of a segment")
                    if rtype == RecordType.HARD_STATE:
                        last_hard_state = payload
                    visit(rtype, payload, seg.seq, off)
                except ValueError as exc:
                    raise WALCorrupt(seg.path, off, str(exc)) from None

        seg = segments[-1]
        if valid_end == 0:
            # Not even the header survived: the segment never held a record; start it afresh.
            disk.remove(seg.path)
            disk.write_atomic(seg.path, encode_frame(RecordType.SEGMENT_HEADER,
                                                     records.encode_segment_header(seg.seq, seg.first_index)))
            valid_end = disk.size(seg.path)
        f = disk.open_append(seg.path)
        if torn is not None:
            f.truncate(valid_end)
            f.sync()
        wal = cls(disk, dir, segments, f, valid_end, segment_bytes_max, last_hard_state)
        wal.torn_tail = torn
        return wal

    # --- appending -------------------------------------------------------------------
    def append(self, rtype: int, payload: bytes) -> tuple[int, int, int]:
        """Buffer one record; returns (lsn, segment seq, offset). Not durable yet."""
        frame = encode_frame(rtype, payload)
        with self._mu:
            return self._append_locked(rtype, frame, payload)

    def append_batch(self, recs: list[tuple[int, bytes]]) -> list[tuple[int, int, int]]:
        """``append`` for several records under one lock acquisition, in order."""
        frames = [(rtype, encode_frame(rtype, payload), payload) for rtype, payload in recs]
        with self._mu:
            return [self._append_locked(rtype, frame, payload) for rtype, frame, payload in frames]

    def _append_locked(self, rtype: int, frame: bytes, payload: bytes) -> tuple[int, int, int]:
        self._check_usable()
        if self._seg_bytes + len(frame) > self._segment_bytes_max and self._seg_has_records():
            self._roll_locked()
        off = self._seg_bytes
        self._buf += frame
        self._seg_bytes += len(frame)
        self._appended_lsn += 1
        if rtype == RecordType.HARD_STATE:
            self._last_hard_state = payload
        if len(self._buf) >= WRITE_BUFFER_BYTES_MAX:
            self._flush_locked()
        return self._appended_lsn, self._segments[-1].seq, off

    def _seg_has_records(self) -> bool:
        return self._seg_bytes > self._start_bytes

    def _check_usable(self) -> None:
        if self._closed:
            raise WALFailed("the WAL is closed")
        if self._failed is not None:
            raise WALFailed(f"the WAL failed earlier and accepts nothing more: {self._failed!r}")

    def _fail(self, exc: BaseException) -> WALFailed:
        self._failed = exc
        self._cond.notify_all()
        return WALFailed(f"WAL I/O error, restart the node: {exc!r}")

    def _flush_locked(self) -> None:
        if not self._buf:
            return
        buf, self._buf = self._buf, bytearray()
        try:
            self._file.write(buf)
        except OSError as exc:
            raise self._fail(exc) from exc

    def _wait_no_sync_locked(self) -> None:
        deadline = time.monotonic() + SYNC_WAIT_S_MAX
        while self._syncing:
            if time.monotonic() > deadline:
                raise self._fail(TimeoutError(f"fsync did not finish within {SYNC_WAIT_S_MAX} s"))
            self._cond.wait(SYNC_WAIT_POLL_S)

    def _roll_locked(self) -> None:
        """Finish the current segment durably and start the next one."""
        self._wait_no_sync_locked()
        self._check_usable()
        self._flush_locked()
        try:
            self._file.sync()
        except OSError as exc:
            raise self._fail(exc) from exc
        self.stats_syncs += 1
        self._durable_lsn = self._appended_lsn
        self._cond.notify_all()
        self._file.close()
        seq = self._segments[-1].seq + 1
        seg = SegmentInfo(seq, self.index_hint, f"{self.dir}/{segment_name(seq, self.index_hint)}")
        head = encode_frame(RecordType.SEGMENT_HEADER, records.encode_segment_header(seq, self.index_hint))
        if self._last_hard_state is not None:
            head += encode_frame(RecordType.HARD_STATE, self._last_hard_state)
        try:
            self._disk.write_atomic(seg.path, head)
            self._file = self._disk.open_append(seg.path)
        except OSError as exc:
            raise self._fail(exc) from exc
        self._segments.append(seg)
        self._seg_bytes = len(head)
        self._start_bytes = len(head)
        self.stats_segments_created += 1

    # --- durability ------------------------------------------------------------------
    @property
    def appended_lsn(self) -> int:
        return self._appended_lsn

    @property
    def durable_lsn(self) -> int:
        return self._durable_lsn

    def flush(self) -> None:
        """Hand buffered records to the OS (readable by ``read_frame``; not durable)."""
        with self._mu:
            self._check_usable()
            self._flush_locked()

    def sync(self, lsn: int | None = None) -> int:
        """Make every record up to ``lsn`` (default: all appended) durable; return durable_lsn.

        Safe to call from many threads: one fsync serves every record written before it.
        """
        with self._mu:
            target = self._appended_lsn if lsn is None else min(lsn, self._appended_lsn)
            deadline = time.monotonic() + SYNC_WAIT_S_MAX
            yielded = False
            while self._durable_lsn < target:
                self._check_usable()
                if self._syncing:
                    if time.monotonic() > deadline:
                        raise self._fail(TimeoutError(f"fsync did not finish within {SYNC_WAIT_S_MAX} s"))
                    self._waiters += 1
                    try:
                        self._cond.wait(SYNC_WAIT_POLL_S)
                    finally:
                        self._waiters -= 1
                    continue
                if self._waiters_last_round > 1 and not yielded:
                    # Other threads waited on the last fsync and are waking now: let them
                    # append before this fsync starts, so that it covers their records too.
                    yielded = True
                    self._mu.release()
                    time.sleep(0)
                    self._mu.acquire()
                    continue  # someone else may have synced meanwhile
                self._waiters_last_round = self._waiters
                self._flush_locked()
                upto = self._appended_lsn
                f = self._file
                self._syncing = True
                self._mu.release()
                err: OSError | None = None
                try:
                    f.sync()
                except OSError as exc:
                    err = exc
                finally:
                    self._mu.acquire()
                    self._syncing = False
                if err is not None:
                    raise self._fail(err) from err
                self.stats_syncs += 1
                if upto > self._durable_lsn:
                    self._durable_lsn = upto
                self._cond.notify_all()
            return self._durable_lsn

    # --- reading back ----------------------------------------------------------------
    def read_frame(self, seq: int, offset: int) -> tuple[int, bytes]:
        """(type, payload) of the record at (segment seq, offset), checksum verified."""
        with self._mu:
            self._check_usable()
            if seq == self._segments[-1].seq and offset + HEADER_BYTES > self._seg_bytes - len(self._buf):
                self._flush_locked()
            f = self._readers.get(seq)
            if f is None:
                seg = next((s for s in self._segments if s.seq == seq), None)
                assert seg is not None, f"segment {seq} was released but is still referenced"
                f = self._disk.open_read(seg.path)
                self._readers[seq] = f
                if len(self._readers) > READ_HANDLES_MAX:
                    self._readers.popitem(last=False)[1].close()
            else:
                self._readers.move_to_end(seq)
            f.seek(offset)
            head = f.read(HEADER_BYTES)
            path = getattr(f, "path", f"segment {seq}")
            if len(head) < HEADER_BYTES:
                raise WALCorrupt(path, offset, "record header is cut short")
            magic, rtype, flags, n, crc = HEADER.unpack(head)
            payload = f.read(n) if magic == MAGIC else b""
            if magic != MAGIC or len(payload) != n or crc32c.crc32c(payload, crc32c.crc32c(head[:8])) != crc:
                raise WALCorrupt(path, offset, "record failed its checksum when read back")
            return rtype, payload

    # --- releasing old segments ------------------------------------------------------
    def segments(self) -> list[SegmentInfo]:
        with self._mu:
            return list(self._segments)

    def release_before(self, seq: int) -> list[str]:
        """Remove the segments with seq < ``seq`` (never the current one); their paths."""
        removed = []
        with self._mu:
            while len(self._segments) > 1 and self._segments[0].seq < seq:
                seg = self._segments.pop(0)
                reader = self._readers.pop(seg.seq, None)
                if reader is not None:
                    reader.close()
                self._disk.remove(seg.path)
                removed.append(seg.path)
            if removed:
                self._disk.fsync_dir(self.dir)
        return removed

    def close(self) -> None:
        """Hand buffered records to the OS and close the files (no fsync: call sync first)."""
        with self._mu:
            if self._closed:
                return
            try:
                self._wait_no_sync_locked()
                if self._failed is None:
                    self._flush_locked()
            finally:
                self._closed = True
                self._file.close()
                for f in self._readers.values():
                    f.close()
                self._readers.clear()
