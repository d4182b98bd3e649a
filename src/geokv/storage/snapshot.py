"""Snapshot files: Raft snapshot metadata plus the state machine's data, checksummed.

File ``<dir>/<term:016x>-<index:016x>.snap``, written with ``Disk.write_atomic`` (so
a reader sees the whole file or none of it)::

    magic "GKVSNAP1" | meta_len u32 | data_len u64 | crc32c(meta + data) u32 | meta | data

``meta`` is msgpack ``[index, term, voters, learners, voters_outgoing,
learners_next, auto_leave]``. Only the newest ``SNAPSHOT_FILES_RETAINED`` files are
kept; older ones are removed after a newer one is durable.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import crc32c
import msgpack

from geokv.ports.disk import Disk, read_whole
from geokv.raft.types import ConfState, Snapshot, SnapshotMetadata

from .wal import StorageCorrupt

MAGIC = b"GKVSNAP1"
_HEAD = struct.Struct("<8sIQI")
#: How many snapshot files survive a newer snapshot (the newest included).
SNAPSHOT_FILES_RETAINED = 2

_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotCorrupt(StorageCorrupt):
    """A snapshot file failed its checksum or structure check."""


@dataclass(slots=True, frozen=True)
class SnapshotFile:
    index: int
    term: int
    path: str


def snapshot_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


def encode_snapshot(snap: Snapshot) -> bytes:
    md = snap.metadata
    cs = md.conf_state
    meta = msgpack.packb([md.index, md.term, list(cs.voters), list(cs.learners),
                          list(cs.voters_outgoing), list(cs.learners_next), bool(cs.auto_leave)])
    data = bytes(snap.data)
    crc = crc32c.crc32c(data, crc32c.crc32c(meta))
    return b"".join((_HEAD.pack(MAGIC, len(meta), len(data), crc), meta, data))


def decode_snapshot(blob: bytes, path: str) -> Snapshot:
    """Parse a snapshot file's bytes; raises SnapshotCorrupt naming ``path``."""
    if len(blob) < _HEAD.size:
        raise SnapshotCorrupt(path, 0, f"file is {len(blob)} bytes, shorter than the header")
    magic, meta_len, data_len, crc = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise SnapshotCorrupt(path, 0, f"bad magic {magic!r}")
    if _HEAD.size + meta_len + data_len != len(blob):
        raise SnapshotCorrupt(path, _HEAD.size, f"lengths in the header ({meta_len}+{data_len}) "
                              f"do not match the file size {len(blob)}")
    view = memoryview(blob)
    meta = view[_HEAD.size:_HEAD.size + meta_len]
    data = view[_HEAD.size + meta_len:]
    if crc32c.crc32c(data, crc32c.crc32c(meta)) != crc:
        raise SnapshotCorrupt(path, _HEAD.size, "checksum mismatch")
    try:
        index, term, voters, learners, outgoing, learners_next, auto_leave = msgpack.unpackb(meta)
        cs = ConfState(tuple(voters), tuple(learners), tuple(outgoing), tuple(learners_next), bool(auto_leave))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SnapshotCorrupt(path, _HEAD.size, f"malformed metadata: {exc}") from None
    return Snapshot(SnapshotMetadata(index, term, cs), bytes(data))


class SnapshotStore:
    """The snapshot files of one node."""

    def __init__(self, disk: Disk, dir: str) -> None:
        self._disk = disk
        self.dir = dir
        disk.makedirs(dir)
        for name in disk.listdir(dir):
            if name.endswith(".tmp"):  # an interrupted write_atomic
                disk.remove(f"{dir}/{name}")

    def files(self) -> list[SnapshotFile]:
        """Snapshot files, oldest first."""
        out = []
        for name in self._disk.listdir(self.dir):
            m = _NAME_RE.match(name)
            if m:
                out.append(SnapshotFile(int(m.group(2), 16), int(m.group(1), 16), f"{self.dir}/{name}"))
        out.sort(key=lambda f: f.index)
        return out

    def save(self, snap: Snapshot) -> SnapshotFile:
        """Write ``snap`` durably; returns its file."""
        md = snap.metadata
        f = SnapshotFile(md.index, md.term, f"{self.dir}/{snapshot_name(md.term, md.index)}")
        self._disk.write_atomic(f.path, encode_snapshot(snap))
        return f

    def load(self, f: SnapshotFile) -> Snapshot:
        snap = decode_snapshot(read_whole(self._disk, f.path), f.path)
        if (snap.metadata.index, snap.metadata.term) != (f.index, f.term):
            raise SnapshotCorrupt(f.path, 0, f"content is snapshot {snap.metadata.index}/"
                                  f"{snap.metadata.term}, the name says {f.index}/{f.term}")
        return snap

    def newest(self) -> SnapshotFile | None:
        files = self.files()
        return files[-1] if files else None

    def release_old(self, keep: int = SNAPSHOT_FILES_RETAINED) -> list[str]:
        """Remove all but the newest ``keep`` snapshot files; returns the removed paths."""
        assert keep >= 1
        files = self.files()
        removed = [f.path for f in files[:-keep]]
        for p in removed:
            self._disk.remove(p)
        if removed:
            self._disk.fsync_dir(self.dir)
        return removed
