"""How one WAL record sits in a segment file.

Layout of a frame (little-endian), 12 header bytes then the payload::

    magic u16 = 0x5EA7 | type u8 | flags u8 = 0 | length u32 | crc u32 | payload (length bytes)

``crc`` is CRC-32C over the first 8 header bytes and the payload, so a frame whose
length or type was damaged fails its check as surely as one whose payload was. The
magic lets a scanner find the next frame after a damaged one with ``bytes.find``
(used to tell a torn tail from damage in the middle of a log, and by the repair tool).
An all-zero region never parses: its magic is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

import crc32c

MAGIC = b"\xa7\x5e"
HEADER = struct.Struct("<2sBBII")
HEADER_BYTES = HEADER.size
_PREFIX = struct.Struct("<2sBBI")

#: The largest payload a frame may carry; a header claiming more is damaged.
RECORD_BYTES_MAX = 256 << 20


class RecordType(IntEnum):
    SEGMENT_HEADER = 1
    ENTRIES = 2
    HARD_STATE = 3
    SNAPSHOT = 4  # the log was reset to a snapshot (index, term)


_VALID_TYPES = frozenset(int(t) for t in RecordType)


def encode_frame(rtype: int, payload: bytes) -> bytes:
    n = len(payload)
    assert n <= RECORD_BYTES_MAX, n
    prefix = _PREFIX.pack(MAGIC, rtype, 0, n)
    crc = crc32c.crc32c(payload, crc32c.crc32c(prefix))
    return b"".join((prefix, crc.to_bytes(4, "little"), payload))


@dataclass(slots=True)
class BadFrame:
    """Why parsing stopped at ``offset``."""

    offset: int
    reason: str
    #: True when the frame runs past the end of the data (an incomplete write).
    incomplete: bool


def check_frame(data: bytes | memoryview, off: int) -> tuple[int, int] | BadFrame:
    """(type, payload length) of a valid frame at ``off``, or why it is not one."""
    end = len(data)
    if end - off < HEADER_BYTES:
        return BadFrame(off, f"{end - off} bytes left, a frame header needs {HEADER_BYTES}", True)
    magic, rtype, flags, n, crc = HEADER.unpack_from(data, off)
    if magic != MAGIC:
        return BadFrame(off, f"bad frame magic {bytes(magic).hex()}", False)
    if rtype not in _VALID_TYPES or flags != 0 or n > RECORD_BYTES_MAX:
        return BadFrame(off, f"bad frame header (type {rtype}, flags {flags}, length {n})", False)
    body = off + HEADER_BYTES
    if body + n > end:
        return BadFrame(off, f"frame of {n} bytes runs past the end of the file ({end - body} left)", True)
    want = crc32c.crc32c(data[body:body + n], crc32c.crc32c(data[off:off + 8]))
    if want != crc:
        return BadFrame(off, f"checksum mismatch (stored {crc:08x}, computed {want:08x})", False)
    return rtype, n


def iter_frames(data: bytes, start: int = 0) -> Iterator[tuple[int, int, bytes] | BadFrame]:
    """Yield (offset, type, payload) per frame; a BadFrame ends the iteration."""
    off = start
    end = len(data)
    view = memoryview(data)
    while off < end:
        r = check_frame(view, off)
        if isinstance(r, BadFrame):
            yield r
            return
        rtype, n = r
        body = off + HEADER_BYTES
        yield off, rtype, data[body:body + n]
        off = body + n


def find_valid_frame(data: bytes, start: int) -> int | None:
    """Offset of the first valid frame at or after ``start``, or None."""
    view = memoryview(data)
    pos = data.find(MAGIC, start)
    while pos != -1:
        if not isinstance(check_frame(view, pos), BadFrame):
            return pos
        pos = data.find(MAGIC, pos + 1)
    return None
