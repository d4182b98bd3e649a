"""Payload encodings of the WAL record types (msgpack), and of nothing else.

ENTRIES      [first_index, term_1, type_1, data_1, term_2, type_2, data_2, ...]
HARD_STATE   [term, vote, commit]
SNAPSHOT     [index, term]                (the log was reset to this snapshot)
SEGMENT_HEADER [b"geokv-wal", version, segment_seq, first_index]

Decoders raise ValueError on any shape error; the WAL turns that into WALCorrupt.
"""

from __future__ import annotations

import msgpack

from geokv.raft.types import Entry, EntryType, HardState

SEGMENT_MAGIC = b"geokv-wal"
FORMAT_VERSION = 1

_ENTRY_TYPES = tuple(EntryType)
_packb = msgpack.packb


def encode_entries(entries: list[Entry]) -> bytes:
    first = entries[0].index
    flat: list[object] = [first]
    expect = first
    for e in entries:
        assert e.index == expect, f"entries not contiguous: {e.index} after {expect - 1}"
        expect += 1
        flat += (e.term, e.type, e.data)
    return _packb(flat, use_bin_type=True)


def decode_entries(payload: bytes) -> list[Entry]:
    try:
        flat = msgpack.unpackb(payload, raw=False, use_list=True)
        first = flat[0]
        n, rem = divmod(len(flat) - 1, 3)
        if rem or type(first) is not int or first < 1 or n == 0:
            raise ValueError("bad entries record shape")
        types = _ENTRY_TYPES
        out = []
        idx = first
        for i in range(1, len(flat), 3):
            out.append(Entry(flat[i], idx, types[flat[i + 1]], flat[i + 2]))
            idx += 1
        return out
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed entries record: {exc}") from None


def decode_entries_terms(payload: bytes) -> tuple[int, list[int]]:
    """(first index, terms of each entry): what an index of the log needs."""
    try:
        flat = msgpack.unpackb(payload, raw=False, use_list=True)
        first = flat[0]
        if (len(flat) - 1) % 3 or type(first) is not int or first < 1 or len(flat) < 4:
            raise ValueError("bad entries record shape")
        return first, flat[1::3]
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed entries record: {exc}") from None


def encode_hard_state(hs: HardState) -> bytes:
    return _packb([hs.term, hs.vote, hs.commit])


def decode_hard_state(payload: bytes) -> HardState:
    try:
        term, vote, commit = msgpack.unpackb(payload)
        if not all(type(x) is int and x >= 0 for x in (term, vote, commit)):
            raise ValueError("negative or non-integer field")
        return HardState(term, vote, commit)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed hard state record: {exc}") from None


def encode_snapshot_marker(index: int, term: int) -> bytes:
    return _packb([index, term])


def decode_snapshot_marker(payload: bytes) -> tuple[int, int]:
    try:
        index, term = msgpack.unpackb(payload)
        if type(index) is not int or type(term) is not int or index < 0 or term < 0:
            raise ValueError("negative or non-integer field")
        return index, term
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed snapshot record: {exc}") from None


def encode_segment_header(seq: int, first_index: int) -> bytes:
    return _packb([SEGMENT_MAGIC, FORMAT_VERSION, seq, first_index], use_bin_type=True)


def decode_segment_header(payload: bytes) -> tuple[int, int]:
    """(segment seq, first index) of a segment header."""
    try:
        magic, version, seq, first_index = msgpack.unpackb(payload, raw=False)
        if magic != SEGMENT_MAGIC:
            raise ValueError(f"not a geokv WAL segment (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported WAL format version {version}")
        return seq, first_index
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed segment header: {exc}") from None
