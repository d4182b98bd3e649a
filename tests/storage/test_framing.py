"""Frames and record payloads: every damage is detected, nothing damaged parses."""

from __future__ import annotations

import pytest

from geokv.raft.types import Entry, EntryType, HardState
from geokv.storage import records
from geokv.storage.framing import (
    HEADER_BYTES, BadFrame, RecordType, check_frame, encode_frame, find_valid_frame, iter_frames,
)


def test_frame_round_trips():
    data = encode_frame(RecordType.ENTRIES, b"hello") + encode_frame(RecordType.HARD_STATE, b"")
    got = list(iter_frames(data))
    assert got == [(0, RecordType.ENTRIES, b"hello"), (HEADER_BYTES + 5, RecordType.HARD_STATE, b"")]


@pytest.mark.parametrize("offset", range(HEADER_BYTES + 8))
def test_any_flipped_byte_fails_the_check(offset):
    frame = bytearray(encode_frame(RecordType.ENTRIES, b"payload!"))
    frame[offset] ^= 0x01
    r = check_frame(bytes(frame), 0)
    assert isinstance(r, BadFrame) and r.offset == 0


@pytest.mark.parametrize("cut", [1, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 3])
def test_cut_frame_is_incomplete(cut):
    frame = encode_frame(RecordType.ENTRIES, b"payload!")
    r = check_frame(frame[:cut], 0)
    assert isinstance(r, BadFrame) and r.incomplete


def test_zeros_never_parse():
    r = check_frame(bytes(64), 0)
    assert isinstance(r, BadFrame) and not r.incomplete
    assert find_valid_frame(bytes(4096), 0) is None


def test_find_valid_frame_skips_garbage_and_fake_magic():
    good = encode_frame(RecordType.HARD_STATE, b"abc")
    garbage = b"\xa7\x5e" + b"\x01" * 30  # magic followed by nonsense
    data = garbage + good
    assert find_valid_frame(data, 0) == len(garbage)


def test_entries_payload_round_trips():
    ents = [Entry(3, 10, EntryType.NORMAL, b"a"), Entry(3, 11, EntryType.CONF_CHANGE, b""),
            Entry(4, 12, EntryType.NORMAL, b"\x00" * 100)]
    p = records.encode_entries(ents)
    assert records.decode_entries(p) == ents
    assert records.decode_entries_terms(p) == (10, [3, 3, 4])
    assert isinstance(records.decode_entries(p)[1].type, EntryType)


def test_entries_must_be_contiguous():
    with pytest.raises(AssertionError):
        records.encode_entries([Entry(1, 1), Entry(1, 3)])


@pytest.mark.parametrize("decode,payload", [
    (records.decode_entries, b"\x93\x01\x02"),
    (records.decode_entries_terms, b"\xc0"),
    (records.decode_hard_state, b"\x92\x01\x02"),
    (records.decode_snapshot_marker, b"garbage"),
    (records.decode_segment_header, records.encode_hard_state(HardState(1, 2, 3))),
])
def test_malformed_payloads_raise_value_error(decode, payload):
    with pytest.raises(ValueError):
        decode(payload)
