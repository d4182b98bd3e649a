"""Every user error the keyspace can give, with etcd's class, and no state change."""

from __future__ import annotations

import pytest

from geokv import errors
from geokv.kv.store import MVCCStore
from geokv.kv.types import MAX_KEY_BYTES
from geokv.kv.types import (
    Compact,
    Compare,
    DeleteRange,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    MemberRemove,
    MemberSet,
    Put,
    Range,
    Txn,
    validate_command,
)

from .conftest import Applier

R = Range
CMP_V = Compare(0, 0, b"a", version=1)  # version(a) == 1


def seeded(kv):
    kv.ok(LeaseGrant(5, 60))
    kv.ok(Put(b"a", b"1"))
    kv.ok(Put(b"b", b"2", lease=5))
    kv.ok(Put(b"a", b"3"))  # revision 4
    kv.ok(Compact(3))


@pytest.mark.parametrize(
    "cmd, err",
    [
        (Put(b"", b"x"), errors.EmptyKey),
        (DeleteRange(b""), errors.EmptyKey),
        (Range(b""), errors.EmptyKey),
        (Txn([Compare(0, 0, b"")], [], []), errors.EmptyKey),
        (Txn([], [Put(b"", b"x")], []), errors.EmptyKey),
        (Txn([], [], [Range(b"")]), errors.EmptyKey),
        (Put(b"a", b"x", ignore_value=True), errors.ValueProvided),
        (Txn([], [Put(b"a", b"x", ignore_value=True)], []), errors.ValueProvided),
        (Put(b"a", lease=5, ignore_lease=True), errors.LeaseProvided),
        (Put(b"zz", ignore_value=True), errors.KeyNotFound),
        (Put(b"zz", ignore_lease=True), errors.KeyNotFound),
        (Txn([CMP_V], [], [Put(b"zz", ignore_value=True)]), errors.KeyNotFound),
        (Put(b"c", b"x", lease=99), errors.LeaseNotFound),
        (Txn([], [Put(b"c", b"x", lease=99)], []), errors.LeaseNotFound),
        (LeaseRevoke(99), errors.LeaseNotFound),
        (LeaseCheckpoint(99, 3), errors.LeaseNotFound),
        (LeaseGrant(5, 10), errors.LeaseExist),
        (LeaseGrant(6, 9_000_000_001), errors.LeaseTTLTooLarge),
        (Txn([], [Put(b"k%d" % i) for i in range(129)], []), errors.TooManyOps),
        (Txn([Compare(0, 0, b"a")] * 129, [], []), errors.TooManyOps),
        (Txn([], [Put(b"a"), Put(b"a")], []), errors.DuplicateKey),
        (Txn([], [Put(b"a"), DeleteRange(b"a")], []), errors.DuplicateKey),
        (Txn([], [Range(b"a", revision=2)], []), errors.Compacted),
        (Txn([], [Range(b"a", revision=5)], []), errors.FutureRev),
        (Range(b"a", revision=2), errors.Compacted),
        (Range(b"a", revision=5), errors.FutureRev),
        (Compact(3), errors.Compacted),
        (Compact(2), errors.Compacted),
        (Compact(5), errors.FutureRev),
        (MemberRemove(42), errors.MemberNotFound),
        (MemberSet({"name": "no-id"}), errors.InvalidArgument),
        (Put(b"k" * 481, b"x"), errors.InvalidArgument),
        (Put(b"\x00" * (MAX_KEY_BYTES + 1), b"x"), errors.InvalidArgument),
    ],
)
def test_user_error_gives_etcd_error_and_changes_nothing(kv, cmd, err):
    seeded(kv)
    before = (kv.store.revision, kv.store.hash_kv(), kv.store.leases(), kv.store.members())
    res, events = kv.run_events(cmd)
    assert type(res) is err, res
    assert res.message == err().message or err is errors.InvalidArgument
    assert events == []
    assert (kv.store.revision, kv.store.hash_kv(), kv.store.leases(), kv.store.members()) == before
    assert kv.store.applied_index == kv.index  # the entry still counts as applied


def test_reads_outside_history_raise(kv):
    seeded(kv)
    with pytest.raises(errors.Compacted):
        kv.store.range(Range(b"a", revision=2))
    with pytest.raises(errors.FutureRev):
        kv.store.range(Range(b"a", revision=5))
    with pytest.raises(errors.EmptyKey):
        kv.store.range(Range(b""))
    with pytest.raises(errors.Compacted):
        kv.store.events(2)
    with pytest.raises(errors.Compacted):
        kv.store.hash_kv(2)
    with pytest.raises(errors.FutureRev):
        kv.store.hash_kv(5)
    assert kv.store.range(Range(b"a", revision=3)).kvs[0].value == b"1"  # the compact revision itself stays


def test_quota_gives_nospace_for_puts_but_deletes_and_compaction_still_work(tmp_dir):
    store = MVCCStore(tmp_dir + "/q", quota_bytes=20_000)
    kv = Applier(store)
    try:
        n = 0
        while True:
            res = kv.run(Put(b"key%03d" % n, b"v" * 500))
            if isinstance(res, errors.NoSpace):
                break
            n += 1
            assert n < 100
        assert n > 5
        assert isinstance(kv.run(Txn([], [Put(b"x", b"v" * 500)], [])), errors.NoSpace)
        while not isinstance(kv.run(Put(b"small%03d" % n, b"")), errors.NoSpace):
            n += 1  # smaller puts fit until the quota is really reached
        assert isinstance(kv.run(LeaseGrant(1, 10)), errors.NoSpace)
        rev = store.revision
        assert kv.ok(DeleteRange(b"key", b"\x00")).deleted == n
        kv.ok(Compact(store.revision, physical=True))
        assert store.data_bytes < 20_000 // 4
        assert kv.ok(Put(b"again", b"v")).revision == rev + 2
    finally:
        store.close()


@pytest.mark.parametrize(
    "ops",
    [
        # puts of one level repeat a key
        [Put(b"a"), Put(b"a")],
        # a put inside a delete of the same level
        [DeleteRange(b"a", b"c"), Put(b"b")],
        [Put(b"b"), DeleteRange(b"a", b"b\x00")],
        # a nested put collides with a put or delete of the outer level
        [Put(b"a"), Txn([], [Put(b"a")], [])],
        [DeleteRange(b"a"), Txn([], [], [Put(b"a")])],
        # two nested txns put the same key
        [Txn([], [Put(b"a")], []), Txn([], [Put(b"a")], [])],
        # a nested delete covers a later sibling's or the outer level's put
        [Txn([], [DeleteRange(b"a", b"b")], []), Txn([], [Put(b"a")], [])],
        [Txn([], [DeleteRange(b"a")], []), Put(b"a")],
    ],
)
def test_duplicate_key_rules(ops):
    with pytest.raises(errors.DuplicateKey):
        validate_command(Txn([], ops, []))


@pytest.mark.parametrize(
    "ops",
    [
        # deletes may overlap each other
        [DeleteRange(b"a", b"c"), DeleteRange(b"b", b"d"), DeleteRange(b"b")],
        # then and else of one nested txn are exclusive
        [Txn([], [Put(b"a")], [Put(b"a")])],
        # distinct keys, a put just outside a delete range
        [DeleteRange(b"a", b"b"), Put(b"b"), Put(b"c")],
        # a put in an earlier nested txn is not checked against a later sibling's delete
        [Txn([], [Put(b"a")], []), Txn([], [DeleteRange(b"a")], [])],
        # etcd takes range_end literally here: "all keys >= a" (\0) is an empty interval
        [Put(b"b"), DeleteRange(b"a", b"\x00")],
    ],
)
def test_allowed_overlaps(ops):
    validate_command(Txn([], ops, []))


def test_nested_txn_ops_count_against_the_remaining_budget():
    inner = Txn([], [Put(b"i%d" % i) for i in range(60)], [])
    validate_command(Txn([], [inner] + [Put(b"o%d" % i) for i in range(60)], []))
    with pytest.raises(errors.TooManyOps):
        validate_command(Txn([], [inner] + [Put(b"o%d" % i) for i in range(70)], []))
