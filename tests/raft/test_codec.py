"""The wire codec round-trips every message and rejects garbage with ValueError only."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from geokv.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from geokv.raft.codec import decode_message, encode_message

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
ids = st.tuples(*[st.integers(1, 1000)] * 0) | st.lists(st.integers(1, 1000), max_size=5).map(tuple)
entries = st.lists(st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)),
                             st.binary(max_size=40)), max_size=5)
confs = st.builds(ConfState, ids, ids, ids, ids, st.booleans())
snaps = st.none() | st.builds(Snapshot, st.builds(SnapshotMetadata, u64, u64, confs),
                              st.binary(max_size=40))
messages = st.builds(Message, st.sampled_from(list(MessageType)), u64, u64, u64, u64, u64,
                     entries, u64, snaps, st.booleans(), u64, st.binary(max_size=20))


@settings(max_examples=150, deadline=None)
@given(messages)
def test_roundtrip_through_msgpack(m):
    wire = msgpack.packb(encode_message(m), use_bin_type=True)
    assert decode_message(msgpack.unpackb(wire, raw=False)) == m


def test_heartbeat_is_compact():
    m = Message(MessageType.HEARTBEAT, 2, 1, term=5, commit=9)
    assert len(msgpack.packb(encode_message(m))) <= 12


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-5, 1 << 65) | st.binary(max_size=8)
                    | st.text(max_size=4) | st.floats(allow_nan=False),
                    lambda c: st.lists(c, max_size=13) | st.dictionaries(st.text(max_size=2), c, max_size=2),
                    max_leaves=40))
def test_garbage_raises_value_error_only(obj):
    try:
        decode_message(obj)
    except ValueError:
        pass


@settings(max_examples=150, deadline=None)
@given(messages, st.data())
def test_mutated_valid_message_raises_value_error_only(m, data):
    enc = encode_message(m)
    i = data.draw(st.integers(0, len(enc) - 1))
    enc[i] = data.draw(st.none() | st.integers(-3, 3) | st.binary(max_size=3) | st.text(max_size=2)
                       | st.lists(st.integers(-1, 3), max_size=5))
    try:
        decode_message(enc)
    except ValueError:
        pass


def test_bad_message_type_and_negative_ints():
    with pytest.raises(ValueError):
        decode_message([99, 1, 2, 0, 0, 0])
    with pytest.raises(ValueError):
        decode_message([3, -1, 2, 0, 0, 0])
    with pytest.raises(ValueError):
        decode_message([3, True, 2, 0, 0, 0])
    with pytest.raises(ValueError):
        decode_message(b"\x00")


def test_conf_change_roundtrip_and_garbage():
    cc = ConfChange((ConfChangeSingle(ConfChangeType.ADD_NODE, 4),
                     ConfChangeSingle(ConfChangeType.REMOVE_NODE, 1)),
                    ConfChangeTransition.EXPLICIT, b"ctx")
    assert ConfChange.decode(cc.encode()) == cc
    for junk in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb([[[7, 1]], 0, b""]),
                 msgpack.packb([[[0, -1]], 0, b""]), msgpack.packb([[], 9, b""])):
        with pytest.raises(ValueError):
            ConfChange.decode(junk)
