"""The self-checking stream format of an MVCCStore snapshot.

    MAGIC
    frame*            be32 length + msgpack [db name, [[key, value], ...]]  (length > 0)
    be32 0            end of frames
    be64 rows         number of key/value rows in all frames
    be32 crc32c       of every byte before it

Rows of one database come in key order, so restoring appends to each B-tree.  A reader
verifies the trailing checksum before the restored copy replaces anything, so a
truncated or damaged stream is refused, never half-applied.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import crc32c
import msgpack

MAGIC = b"GEOKV-MVCC-SNAPSHOT\x01"
FRAME_BYTES_MAX = 1 << 20
"""A frame is closed once its rows reach this many bytes (a single larger row is allowed)."""
FRAMES_PER_WRITE_TXN = 64
"""Restore commits one LMDB write transaction per this many frames."""
_LEN = struct.Struct(">I")
_TRAILER = struct.Struct(">QI")


class _CrcWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.crc = 0
        self.size = 0

    def write(self, b: bytes) -> None:
        self.out.write(b)
        self.crc = crc32c.crc32c(b, self.crc)
        self.size += len(b)


def write_snapshot(txn, dbs: dict[bytes, object], out: BinaryIO) -> int:
    w = _CrcWriter(out)
    w.write(MAGIC)
    rows = 0
    for name, db in dbs.items():
        batch: list[list[bytes]] = []
        size = 0
        for k, v in txn.cursor(db):
            batch.append([k, v])
            size += len(k) + len(v)
            rows += 1
            if size >= FRAME_BYTES_MAX:
                _write_frame(w, name, batch)
                batch, size = [], 0
        if batch:
            _write_frame(w, name, batch)
    w.write(_LEN.pack(0))
    w.write(struct.pack(">Q", rows))
    out.write(struct.pack(">I", w.crc))
    return w.size + 4


def _write_frame(w: _CrcWriter, name: bytes, batch: list[list[bytes]]) -> None:
    payload = msgpack.packb([name, batch], use_bin_type=True)
    w.write(_LEN.pack(len(payload)))
    w.write(payload)


def _read_exact(inp: BinaryIO, n: int) -> bytes:
    chunks = []
    need = n
    while need:
        b = inp.read(need)
        if not b:
            raise ValueError("snapshot stream is truncated")
        chunks.append(b)
        need -= len(b)
    return b"".join(chunks)


def read_snapshot(env, dbs: dict[bytes, object], inp: BinaryIO) -> int:
    """Load a stream into the empty ``env``; returns the row count; ValueError if bad."""
    crc = 0
    magic = _read_exact(inp, len(MAGIC))
    if magic != MAGIC:
        raise ValueError("not a geokv MVCC snapshot")
    crc = crc32c.crc32c(magic, crc)
    rows = 0
    txn = env.begin(write=True)
    frames_in_txn = 0
    try:
        while True:
            head = _read_exact(inp, 4)
            crc = crc32c.crc32c(head, crc)
            (n,) = _LEN.unpack(head)
            if n == 0:
                break
            if n > 64 * FRAME_BYTES_MAX:
                raise ValueError("snapshot frame length is implausible")
            payload = _read_exact(inp, n)
            crc = crc32c.crc32c(payload, crc)
            try:
                name, batch = msgpack.unpackb(payload, raw=False)
                db = dbs[name]
                pairs = [(k, v) for k, v in batch]
            except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
                raise ValueError(f"snapshot frame is malformed: {e}") from None
            cur = txn.cursor(db)
            added = cur.putmulti(pairs, append=True)[1]
            if added != len(pairs):
                raise ValueError("snapshot rows are out of order")
            rows += len(pairs)
            frames_in_txn += 1
            if frames_in_txn == FRAMES_PER_WRITE_TXN:
                txn.commit()
                txn = env.begin(write=True)
                frames_in_txn = 0
        tail = _read_exact(inp, _TRAILER.size)
        count, want = _TRAILER.unpack(tail)
        crc = crc32c.crc32c(tail[:8], crc)
        if crc != want:
            raise ValueError("snapshot checksum mismatch")
        if count != rows:
            raise ValueError("snapshot row count mismatch")
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    return rows
