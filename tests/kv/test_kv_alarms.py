"""The alarm table: a replicated command, carried by snapshots, left out of hash_kv."""

from __future__ import annotations

import io

import pytest

from geokv import errors
from geokv.kv.store import MVCCStore
from geokv.kv.tables import ALARMS_MAX
from geokv.kv.types import (
    ALARM_ACTION_ACTIVATE as ACTIVATE,
    ALARM_ACTION_DEACTIVATE as DEACTIVATE,
    ALARM_CORRUPT as CORRUPT,
    ALARM_NOSPACE as NOSPACE,
    Alarm,
    AlarmResult,
    Put,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    validate_command,
)

from .conftest import Applier

U64_MAX = (1 << 64) - 1


def test_activate_and_deactivate_change_the_table_once(kv):
    kv.ok(Put(b"k", b"v"))
    rev = kv.store.revision
    assert kv.run(Alarm(ACTIVATE, 7, NOSPACE)) == AlarmResult(rev, True)
    assert kv.run(Alarm(ACTIVATE, 7, NOSPACE)) == AlarmResult(rev, False)
    assert kv.run(Alarm(ACTIVATE, U64_MAX, CORRUPT)) == AlarmResult(rev, True)
    assert kv.store.alarms() == ((7, NOSPACE), (U64_MAX, CORRUPT))
    assert kv.run(Alarm(DEACTIVATE, 7, NOSPACE)) == AlarmResult(rev, True)
    assert kv.run(Alarm(DEACTIVATE, 7, NOSPACE)) == AlarmResult(rev, False)
    assert kv.store.alarms() == ((U64_MAX, CORRUPT),)
    assert kv.store.revision == rev, "alarms do not bump the MVCC revision"
    assert kv.store.applied_index == kv.index


@pytest.mark.parametrize("cmd", [
    Alarm(0, 1, NOSPACE),        # GET is a read, never a command
    Alarm(3, 1, NOSPACE),
    Alarm(ACTIVATE, 1, 0),       # NONE
    Alarm(ACTIVATE, 1, 3),
    Alarm(ACTIVATE, -1, NOSPACE),
    Alarm(DEACTIVATE, 1 << 64, NOSPACE),
])
def test_malformed_alarm_is_refused_before_and_at_apply(kv, cmd):
    with pytest.raises(errors.InvalidArgument):
        validate_command(cmd)
    assert isinstance(kv.run(cmd), errors.InvalidArgument)
    assert kv.store.alarms() == ()
    assert kv.store.applied_index == kv.index


def test_alarm_command_and_result_round_trip_msgpack():
    cmd = Alarm(DEACTIVATE, U64_MAX, CORRUPT)
    assert decode_command(encode_command(cmd)) == cmd
    assert decode_result(encode_result(AlarmResult(9, True))) == AlarmResult(9, True)
    with pytest.raises(ValueError):
        decode_command(encode_command(cmd)[:-1])


def test_table_is_bounded(kv):
    for mid in range(ALARMS_MAX):
        assert kv.run(Alarm(ACTIVATE, mid, NOSPACE)).changed
    assert isinstance(kv.run(Alarm(ACTIVATE, ALARMS_MAX, NOSPACE)), errors.InvalidArgument)
    assert kv.run(Alarm(ACTIVATE, 0, NOSPACE)) == AlarmResult(kv.store.revision, False)  # present: no error
    assert len(kv.store.alarms()) == ALARMS_MAX
    assert kv.run(Alarm(DEACTIVATE, 0, NOSPACE)).changed
    assert kv.run(Alarm(ACTIVATE, ALARMS_MAX, NOSPACE)).changed


def test_snapshot_carries_alarms_hash_kv_does_not(tmp_dir):
    """etcd's HashKV covers the key bucket only: two replicas that differ only in
    alarms hash alike; their snapshots differ and each restores its own list."""
    a = Applier(MVCCStore(tmp_dir + "/a"))
    b = Applier(MVCCStore(tmp_dir + "/b"))
    try:
        for s in (a, b):
            s.ok(Put(b"x", b"1"))
            s.ok(Put(b"y", b"2"))
        a.ok(Alarm(ACTIVATE, 3, NOSPACE))
        b.ok(Alarm(ACTIVATE, 4, CORRUPT))
        assert a.store.hash_kv() == b.store.hash_kv()
        bufs = [io.BytesIO(), io.BytesIO()]
        a.store.snapshot(bufs[0])
        b.store.snapshot(bufs[1])
        assert bufs[0].getvalue() != bufs[1].getvalue()
        # b takes a's snapshot: a's list replaces b's, at once and after a reopen.
        b.store.restore(io.BytesIO(bufs[0].getvalue()))
        assert b.store.alarms() == ((3, NOSPACE),)
        b.store.close()
        b.store = MVCCStore(tmp_dir + "/b")
        assert b.store.alarms() == ((3, NOSPACE),)
        assert b.store.hash_kv() == a.store.hash_kv()
    finally:
        a.store.close()
        b.store.close()


def test_alarms_survive_reopen(tmp_dir):
    s = Applier(MVCCStore(tmp_dir + "/db"))
    s.ok(Alarm(ACTIVATE, 5, NOSPACE))
    s.store.close()
    reopened = MVCCStore(tmp_dir + "/db")
    try:
        assert reopened.alarms() == ((5, NOSPACE),)
    finally:
        reopened.close()


def test_a_batch_rolled_back_leaves_the_alarm_list_unchanged(kv):
    kv.ok(Alarm(ACTIVATE, 1, NOSPACE))

    class NotACommand:
        pass

    with pytest.raises(KeyError):  # a bug: the whole batch is rolled back
        kv.store.apply_batch([(kv.index + 1, Alarm(ACTIVATE, 2, CORRUPT)), (kv.index + 2, NotACommand())])
    assert kv.store.alarms() == ((1, NOSPACE),)
    assert kv.store.applied_index == kv.index
    kv.ok(Alarm(DEACTIVATE, 1, NOSPACE))
    assert kv.store.alarms() == ()


def test_replayed_alarm_entry_is_skipped(kv):
    kv.ok(Alarm(ACTIVATE, 1, NOSPACE))
    kv.ok(Alarm(DEACTIVATE, 1, NOSPACE))
    # The WAL replays from an older index after a crash: already-applied entries are no-ops.
    assert kv.store.apply_batch([(kv.index - 1, Alarm(ACTIVATE, 1, NOSPACE))]) == [(None, [])]
    assert kv.store.alarms() == ()
