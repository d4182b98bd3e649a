"""One test per etcd v3 MVCC claim the store keeps."""

from __future__ import annotations

import pytest

from geokv import errors
from geokv.kv.types import (
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    Event,
    KeyValue,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    MemberRemove,
    MemberSet,
    Noop,
    NoopResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
)

EQ, GT, LT, NE = 0, 1, 2, 3
VERSION, CREATE, MOD, VALUE, LEASE = 0, 1, 2, 3, 4


def test_empty_store_is_at_revision_1_and_the_first_write_makes_2(kv):
    assert kv.store.revision == 1 and kv.store.compact_revision == 0 and kv.store.applied_index == 0
    assert kv.store.range(Range(b"\x00", b"\x00")) == RangeResult([], False, 0, 1)
    assert kv.ok(Put(b"a", b"1")) == PutResult(2)
    assert kv.store.get(b"a") == KeyValue(b"a", 2, 2, 1, b"1", 0)


def test_only_changes_bump_the_revision(kv):
    kv.ok(Put(b"a", b"1"))
    assert kv.ok(DeleteRange(b"zz")) == DeleteResult(2, 0)
    assert kv.ok(Txn([], [Range(b"a")], [])).revision == 2
    assert kv.ok(Noop()) == NoopResult(2)
    assert kv.ok(LeaseGrant(3, 10)) == LeaseGrantResult(3, 10, 2)
    assert kv.ok(LeaseRevoke(3)).revision == 2  # no keys attached
    assert kv.store.revision == 2
    assert kv.ok(DeleteRange(b"a")).revision == 3


def test_versions_count_puts_since_creation_and_restart_after_delete(kv):
    kv.ok(Put(b"a", b"1"))
    kv.ok(Put(b"a", b"2"))
    assert kv.store.get(b"a") == KeyValue(b"a", 2, 3, 2, b"2", 0)
    kv.ok(DeleteRange(b"a"))
    kv.ok(Put(b"a", b"3"))
    assert kv.store.get(b"a") == KeyValue(b"a", 5, 5, 1, b"3", 0)
    # the past stays readable
    assert kv.store.range(Range(b"a", revision=3)).kvs == [KeyValue(b"a", 2, 3, 2, b"2", 0)]
    assert kv.store.range(Range(b"a", revision=4)).kvs == []


def test_txn_is_one_revision_and_its_reads_see_its_earlier_writes(kv):
    res, events = kv.run_events(
        # etcd lets a later nested txn delete what an earlier one put
        Txn([], [Txn([], [Put(b"a", b"1"), Put(b"b", b"2")], []), Range(b"a", b"c"),
                 Txn([], [DeleteRange(b"a")], [])], [])
    )
    assert res.revision == 2 and kv.store.revision == 2
    assert [kv.key for kv in res.responses[1].kvs] == [b"a", b"b"]
    assert res.responses[2].responses[0].deleted == 1
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [(0, b"a", 2), (0, b"b", 2), (1, b"a", 2)]
    # prev_kv of a watch event is the key before the txn, not the txn's own earlier write
    assert events[2].prev_kv is None


def test_nested_compares_are_judged_before_the_txn_writes(kv):
    kv.ok(Put(b"a", b"1"))
    inner = Txn([Compare(EQ, VALUE, b"a", value=b"1")], [Put(b"inner", b"saw-old")], [Put(b"inner", b"saw-new")])
    kv.ok(Txn([], [Put(b"a", b"2"), inner], []))
    assert kv.store.get(b"inner").value == b"saw-old"


@pytest.mark.parametrize(
    "cmp, expect",
    [
        (Compare(EQ, VERSION, b"missing", version=0), True),
        (Compare(EQ, CREATE, b"missing", create_revision=0), True),
        (Compare(EQ, MOD, b"missing"), True),
        (Compare(EQ, LEASE, b"missing"), True),
        (Compare(EQ, VALUE, b"missing", value=b""), False),  # value compares fail on missing keys
        (Compare(NE, VALUE, b"missing", value=b"x"), False),
        (Compare(EQ, VALUE, b"a", value=b"1"), True),
        (Compare(GT, VALUE, b"a", value=b"0"), True),
        (Compare(LT, VERSION, b"a", version=2), True),
        (Compare(GT, MOD, b"a", mod_revision=1), True),
        (Compare(EQ, CREATE, b"a", create_revision=2), True),
        (Compare(EQ, LEASE, b"b", lease=9), True),
        (Compare(NE, LEASE, b"a", lease=0), False),
        # over a range every key must satisfy the compare
        (Compare(GT, VERSION, b"a", b"c", version=0), True),
        (Compare(EQ, VALUE, b"a", b"c", value=b"1"), False),
        (Compare(LT, MOD, b"a", b"\x00", mod_revision=100), True),
        (Compare(EQ, VERSION, b"x", b"z", version=0), True),  # an empty range compares as a missing key
    ],
)
def test_compare(kv, cmp, expect):
    kv.ok(LeaseGrant(9, 100))
    kv.ok(Put(b"a", b"1"))  # revision 2
    kv.ok(Put(b"b", b"2", lease=9))
    assert kv.ok(Txn([cmp], [], [])).succeeded is expect


def _fill(kv):
    for k, v in [(b"a", b"z"), (b"b", b"y"), (b"c", b"x"), (b"d", b"w"), (b"b", b"v")]:
        kv.ok(Put(k, v))
    # a: create 2 mod 2 v1; b: create 3 mod 6 v2; c: 4/4/1; d: 5/5/1


def _keys(res):
    return [kv.key for kv in res.kvs]


@pytest.mark.parametrize(
    "r, keys, more, count",
    [
        (Range(b"a", b"c"), [b"a", b"b"], False, 2),
        (Range(b"b", b"\x00"), [b"b", b"c", b"d"], False, 3),
        (Range(b"\x00", b"\x00"), [b"a", b"b", b"c", b"d"], False, 4),
        (Range(b"c", b"a"), [], False, 0),
        (Range(b"a", b"\x00", limit=2), [b"a", b"b"], True, 4),
        (Range(b"a", b"\x00", limit=4), [b"a", b"b", b"c", b"d"], False, 4),
        (Range(b"a", b"\x00", count_only=True), [], False, 4),
        (Range(b"a", b"\x00", sort_order=2), [b"d", b"c", b"b", b"a"], False, 4),
        (Range(b"a", b"\x00", sort_order=2, limit=1), [b"d"], True, 4),
        (Range(b"a", b"\x00", sort_target=4), [b"b", b"d", b"c", b"a"], False, 4),  # by value, ascending
        (Range(b"a", b"\x00", sort_target=1, sort_order=2), [b"b", b"a", b"c", b"d"], False, 4),
        # etcd quirk: a sort target without an order sorts only the first limit+1 keys
        (Range(b"a", b"\x00", sort_target=4, limit=2), [b"b", b"c"], True, 4),
        (Range(b"a", b"\x00", sort_target=4, sort_order=1, limit=2), [b"b", b"d"], True, 4),
        # filters prune after counting
        (Range(b"a", b"\x00", min_mod_revision=4), [b"b", b"c", b"d"], False, 4),
        (Range(b"a", b"\x00", max_mod_revision=4), [b"a", b"c"], False, 4),
        (Range(b"a", b"\x00", min_create_revision=3, max_create_revision=4), [b"b", b"c"], False, 4),
        (Range(b"a", b"\x00", min_create_revision=3, limit=1), [b"b"], True, 4),
        (Range(b"a", b"\x00", revision=4), [b"a", b"b", b"c"], False, 3),
        (Range(b"b", revision=5), [b"b"], False, 1),
        (Range(b"zz"), [], False, 0),
    ],
)
def test_range(kv, r, keys, more, count):
    _fill(kv)
    res = kv.store.range(r)
    assert (_keys(res), res.more, res.count, res.revision) == (keys, more, count, 6)
    assert kv.ok(r) == res  # the same through the log


def test_keys_only_drops_values(kv):
    _fill(kv)
    res = kv.store.range(Range(b"a", b"c", keys_only=True))
    assert [(x.key, x.value, x.version) for x in res.kvs] == [(b"a", b"", 1), (b"b", b"", 2)]
    assert kv.store.range(Range(b"b", keys_only=True)).kvs[0].value == b""


def test_keys_with_nul_and_high_bytes_keep_byte_order(kv):
    ks = [b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"a\x00", b"a\x00\x00", b"a\x01", b"ab", b"\xff", b"\xff\xff"]
    for k in reversed(ks):
        kv.ok(Put(k, k))
    assert _keys(kv.store.range(Range(b"\x00", b"\x00"))) == ks
    assert _keys(kv.store.range(Range(b"a", b"a\x01"))) == [b"a", b"a\x00", b"a\x00\x00"]
    assert kv.store.get(b"a\x00").value == b"a\x00"
    assert kv.ok(DeleteRange(b"a\x00", b"ab")).deleted == 3
    assert _keys(kv.store.range(Range(b"a", b"b"))) == [b"a", b"ab"]


def test_over_long_keys_are_refused_and_never_found(kv):
    from geokv.kv.types import MAX_KEY_BYTES as M

    assert isinstance(kv.run(Put(b"k" * (M + 1), b"x")), errors.InvalidArgument)
    assert isinstance(kv.run(Put(b"\x00" * (M + 1), b"x")), errors.InvalidArgument)
    kv.ok(Put(b"k" * M, b"x"))
    kv.ok(Put(b"\x00" * M, b"z"))  # NUL bytes cost no more than any other byte
    assert kv.store.get(b"k" * M).value == b"x"
    assert kv.store.get(b"\x00" * M).value == b"z"
    assert kv.store.range(Range(b"k" * 600)).kvs == []
    assert _keys(kv.store.range(Range(b"k" * (M - 1) + b"j" * 100, b"\x00"))) == [b"k" * M]


def test_put_prev_kv_ignore_value_and_ignore_lease(kv):
    kv.ok(LeaseGrant(7, 10))
    kv.ok(Put(b"a", b"1", lease=7))
    res = kv.ok(Put(b"a", b"2", ignore_lease=True, prev_kv=True))
    assert res.prev_kv == KeyValue(b"a", 2, 2, 1, b"1", 7)
    assert kv.store.get(b"a") == KeyValue(b"a", 2, 3, 2, b"2", 7)
    kv.ok(Put(b"a", ignore_value=True))
    assert kv.store.get(b"a") == KeyValue(b"a", 2, 4, 3, b"2", 0)
    assert kv.store.lease_keys(7) == []


def test_delete_prev_kvs_and_count(kv):
    _fill(kv)
    res = kv.ok(DeleteRange(b"b", b"d", prev_kv=True))
    assert res.deleted == 2 and [x.key for x in res.prev_kvs] == [b"b", b"c"]
    assert kv.ok(DeleteRange(b"a")).prev_kvs == []


def test_lease_attach_detach_and_revoke_in_one_revision(kv):
    kv.ok(LeaseGrant(1, 10))
    kv.ok(LeaseGrant(2, 20))
    kv.ok(Put(b"x", b"1", lease=1))
    kv.ok(Put(b"y", b"1", lease=1))
    kv.ok(Put(b"z", b"1", lease=1))
    kv.ok(Put(b"z", b"2", lease=2))  # moves to lease 2
    kv.ok(DeleteRange(b"y"))  # leaves lease 1
    assert kv.store.lease_keys(1) == [b"x"] and kv.store.lease_keys(2) == [b"z"]
    assert kv.store.leases() == [(1, 10), (2, 20)]
    kv.ok(LeaseCheckpoint(2, 13))
    assert kv.store.lease_info(2) == (20, 13)
    kv.ok(Put(b"w", b"1", lease=2))
    res, events = kv.run_events(LeaseRevoke(2))
    assert res.revision == kv.store.revision and res.deleted == 2
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [(1, b"w", res.revision), (1, b"z", res.revision)]
    assert kv.store.leases() == [(1, 10)] and kv.store.lease_info(2) is None
    assert kv.store.get(b"z") is None and kv.store.get(b"x") is not None


def test_lease_grant_without_id_picks_the_same_id_on_every_replica(kv, tmp_dir):
    from geokv.kv.store import MVCCStore

    from .conftest import Applier

    other = Applier(MVCCStore(tmp_dir + "/other"))
    try:
        a = kv.ok(LeaseGrant(0, 5))
        b = other.ok(LeaseGrant(0, 5))
        assert a.id == b.id and a.id > 0
    finally:
        other.store.close()


def test_events_resume_filter_and_cut_between_revisions(kv):
    kv.ok(Put(b"a", b"1"))  # 2
    kv.ok(Txn([], [Put(b"b", b"1"), Put(b"c", b"1")], []))  # 3
    kv.ok(Put(b"a", b"2"))  # 4
    kv.ok(DeleteRange(b"a", b"c"))  # 5
    allev = kv.store.events(1)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in allev] == [
        (0, b"a", 2), (0, b"b", 3), (0, b"c", 3), (0, b"a", 4), (1, b"a", 5), (1, b"b", 5)]
    assert allev[3].prev_kv == KeyValue(b"a", 2, 2, 1, b"1", 0)
    assert allev[4].prev_kv == KeyValue(b"a", 2, 4, 2, b"2", 0)
    # limit never splits a revision; resuming at the last revision + 1 loses nothing
    first = kv.store.events(1, limit=2)
    assert [e.kv.mod_revision for e in first] == [2, 3, 3]
    assert kv.store.events(4, limit=1) == allev[3:4]
    assert kv.store.events(3, end_rev=4) == allev[1:4]
    assert [e.kv.mod_revision for e in kv.store.events(1, key=b"a")] == [2, 4, 5]
    assert [e.kv.key for e in kv.store.events(1, key=b"b", range_end=b"\x00")] == [b"b", b"c", b"b"]
    assert kv.store.events(6) == []


def test_events_match_what_apply_returned(kv):
    live = []
    for cmd in [Put(b"a", b"1"), Txn([], [Put(b"b", b"1"), DeleteRange(b"a")], []), LeaseGrant(4, 9),
                Put(b"c", b"1", lease=4), LeaseRevoke(4), Put(b"b", b"2")]:
        live.extend(kv.run_events(cmd)[1])
    assert kv.store.events(1) == live


def test_compaction_keeps_the_latest_version_at_the_compact_revision(kv):
    kv.ok(Put(b"a", b"1"))  # 2
    kv.ok(Put(b"a", b"2"))  # 3
    kv.ok(Put(b"b", b"1"))  # 4
    kv.ok(DeleteRange(b"b"))  # 5
    kv.ok(Put(b"a", b"3"))  # 6
    assert kv.ok(Compact(5, physical=True)) == CompactResult(6)
    assert not kv.store.compaction_pending
    assert kv.store.range(Range(b"a", revision=5)).kvs[0].value == b"2"
    assert kv.store.range(Range(b"\x00", b"\x00", revision=5)).count == 1
    with pytest.raises(errors.Compacted):
        kv.store.range(Range(b"a", revision=4))
    # the deletion at the compact revision is gone, as in etcd
    assert [e.kv.mod_revision for e in kv.store.events(5)] == [6]
    # compaction keeps the revision counter and keeps accepting writes
    assert kv.ok(Put(b"b", b"2")).revision == 7


def test_compaction_runs_in_bounded_chunks_after_each_command(tmp_dir):
    from geokv.kv.store import MVCCStore

    from .conftest import Applier

    kv = Applier(MVCCStore(tmp_dir + "/chunks", compact_chunk_log_rows=10, compact_noop_chunk_log_rows=10))
    try:
        for i in range(100):
            kv.ok(Put(b"k%d" % (i % 5), b"v%d" % i))
        rows = lambda: kv.store.env.stat()["entries"] and kv.store.env.begin().stat(kv.store._kv)["entries"]  # noqa: E731
        assert rows() == 100
        kv.ok(Compact(kv.store.revision))
        seen = [rows()]
        while kv.store.compaction_pending:
            kv.ok(Noop())
            seen.append(rows())
        assert seen[-1] == 5
        assert len(seen) >= 9  # 100 log rows, 10 per command
        assert all(a >= b for a, b in zip(seen, seen[1:]))
    finally:
        kv.store.close()


def test_members_table(kv):
    kv.ok(MemberSet({"id": 2, "name": "b", "peer_urls": ["http://127.0.0.1:2"]}))
    res = kv.ok(MemberSet({"id": 1, "name": "a", "is_learner": True}))
    assert [m["id"] for m in res.members] == [1, 2]
    kv.ok(MemberSet({"id": 1, "name": "a", "is_learner": False}))
    kv.ok(MemberRemove(2))
    assert kv.store.members() == [{"id": 1, "name": "a", "is_learner": False}]
    assert kv.store.revision == 1  # membership is not part of the MVCC keyspace


def test_replayed_indexes_are_skipped(kv):
    out = kv.store.apply_batch([(1, Put(b"a", b"1")), (2, Put(b"a", b"2"))])
    assert [r.revision for r, _ in out] == [2, 3]
    again = kv.store.apply_batch([(1, Put(b"a", b"1")), (2, Put(b"a", b"2")), (3, Put(b"a", b"3"))])
    assert again[0] == (None, []) and again[1] == (None, []) and again[2][0].revision == 4
    assert kv.store.applied_index == 3 and kv.store.get(b"a").version == 3


def test_defragment_keeps_the_contents(kv):
    for i in range(300):
        kv.ok(Put(b"k%d" % (i % 10), b"v" * 2000))
    kv.ok(Compact(kv.store.revision, physical=True))
    h = kv.store.hash_kv()
    assert kv.store.db_size_in_use() < kv.store.db_size()
    before, after = kv.store.defragment()
    assert after < before
    assert kv.store.hash_kv() == h
    assert kv.ok(Put(b"k0", b"x")).revision == h[1] + 1


ALL = [
    Put(b"k", b"v", 3, True, False, True),
    DeleteRange(b"a", b"\x00", True),
    Range(b"a", b"b", 3, 4, 1, 2, True, True, False, 1, 2, 3, 4),
    Txn([Compare(1, 3, b"k", b"", b"v", 1, 2, 3, 4)], [Put(b"x"), Txn([], [Range(b"y")], [])], [DeleteRange(b"z")]),
    Compact(7, True),
    LeaseGrant(5, 60),
    LeaseRevoke(5),
    LeaseCheckpoint(5, 30),
    MemberSet({"id": 3, "name": "n", "peer_urls": ["http://127.0.0.1:1"], "is_learner": False}),
    MemberRemove(3),
    Noop(),
]


@pytest.mark.parametrize("cmd", ALL, ids=lambda c: type(c).__name__)
def test_commands_survive_the_raft_log_encoding(cmd):
    assert decode_command(encode_command(cmd)) == cmd


def test_results_events_and_errors_survive_encoding():
    kv = KeyValue(b"k", 1, 2, 3, b"v", 4)
    for x in [
        RangeResult([kv], True, 3, 9),
        PutResult(3, kv),
        DeleteResult(3, 1, [kv]),
        TxnResult(4, True, [PutResult(4), RangeResult([], False, 0, 4), TxnResult(4, False, [])]),
        Event(1, KeyValue(b"k", 0, 5), kv),
        NoopResult(2),
    ]:
        assert decode_result(encode_result(x)) == x
    err = decode_result(encode_result(errors.Compacted()))
    assert type(err) is errors.Compacted and err.message == errors.Compacted().message


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x92\xcc\xfa\x01", encode_result(NoopResult(1))])
def test_garbage_is_not_a_command(data):
    with pytest.raises(ValueError):
        decode_command(data)


def test_events_page_bounds_the_rows_scanned_and_says_where_to_resume(kv):
    for i in range(50):
        kv.ok(Put(b"noise", b"%d" % i))  # revisions 2..51
        if i % 10 == 9:
            kv.ok(Put(b"x", b"%d" % i))
    want = kv.store.events(1, key=b"x")
    assert len(want) == 5
    got, rev, pages = [], 1, 0
    while rev <= kv.store.revision:
        events, rev = kv.store.events_page(rev, key=b"x", scan_rows_max=7)
        got.extend(events)
        pages += 1
    assert got == want and pages >= 8
    events, nxt = kv.store.events_page(1, limit=3)
    assert [e.kv.mod_revision for e in events] == [2, 3, 4] and nxt == 5
    assert kv.store.events_page(nxt, end_rev=6)[1] == 7
