"""Reads take (revision, compact_revision) from a cache keyed by LMDB's txn id instead of
the state row; these tests pin the cases where a cache like that could go stale."""

from __future__ import annotations

import io
import sys
import threading

import pytest

from geokv import errors
from geokv.kv.store import MVCCStore
from geokv.kv.types import Compact, DeleteRange, Noop, Put, Range

from .conftest import Applier


def test_a_read_txn_opened_before_a_commit_reports_the_revision_it_reads(kv):
    kv.ok(Put(b"a", b"1"))
    s = kv.store
    with s.env.begin() as old:
        kv.ok(Put(b"a", b"2"))
        kv.ok(Compact(s.revision))
        assert s._read_state(old) == (2, 0)  # the state row of its own snapshot
        with s.env.begin() as new:
            assert new.id() == s._snap[0]  # the cache serves the newest snapshot
            assert s._read_state(new) == (3, 3)


def test_every_commit_gets_its_own_txn_id(kv):
    """The cache is sound only if no two commits share a txn id: apply_batch writes the
    state row even when nothing else changes."""
    ids = []
    for cmd in (Noop(), Range(b"x"), DeleteRange(b"nothing"), Put(b"a", b"1"), Noop()):
        kv.run(cmd)
        ids.append(kv.store._snap[0])
    assert ids == sorted(set(ids))


def test_a_failed_batch_leaves_reads_at_the_last_commit(kv):
    kv.ok(Put(b"a", b"1"))
    with pytest.raises(KeyError):
        kv.store.apply_batch([(kv.index + 1, Put(b"a", b"2")), (kv.index + 2, object())])
    assert kv.store.revision == 2
    assert kv.store.range(Range(b"a")).revision == 2
    assert kv.store.range(Range(b"a", b"b")).revision == 2
    assert kv.ok(Put(b"a", b"3")).revision == 3
    assert kv.store.range(Range(b"a")).kvs[0].value == b"3"


def test_reads_after_restore_and_defragment_report_the_new_environment(tmp_dir):
    """A restored or defragmented store is a new LMDB environment whose txn ids start
    again; no read may pair one of them with the old environment's cached state."""
    small = Applier(MVCCStore(tmp_dir + "/small"))
    big = Applier(MVCCStore(tmp_dir + "/big"))
    try:
        small.ok(Put(b"k", b"small"))
        buf = io.BytesIO()
        small.store.snapshot(buf)
        for i in range(50):
            big.ok(Put(b"k", b"%d" % i))
        assert big.store.range(Range(b"k")).revision == 51
        buf.seek(0)
        big.store.restore(buf)
        assert big.store.revision == 2
        assert big.store.range(Range(b"k")).revision == 2
        assert big.store.range(Range(b"k")).kvs[0].value == b"small"
        assert big.store.range(Range(b"a", b"z")).revision == 2
        big.index = big.store.applied_index
        for i in range(3):
            big.ok(Put(b"k", b"after-%d" % i))
        big.store.defragment()
        assert big.store.range(Range(b"k")).revision == 5
        assert big.store.range(Range(b"k")).kvs[0].value == b"after-2"
    finally:
        small.store.close()
        big.store.close()


def test_point_reads_survive_the_environment_being_closed_and_reopened(kv):
    """swap_in (restore, defragment) closes the environment and calls _open_env: the
    cached point-read txn of the old environment must not be used again."""
    kv.ok(Put(b"a", b"1"))
    s = kv.store
    assert s.range(Range(b"a")).kvs[0].value == b"1"  # caches a point-read txn
    assert s._point is not None
    s.env.close()
    s._open_env()
    assert s.range(Range(b"a")).kvs[0].value == b"1"
    assert s.get(b"a").value == b"1"
    kv.ok(Put(b"a", b"2"))
    assert s.range(Range(b"a")).kvs[0].value == b"2" and s.get(b"a").value == b"2"


def test_a_cached_point_read_txn_never_outlives_the_next_batch(kv):
    kv.ok(Put(b"a", b"1"))
    s = kv.store
    s.get(b"a")
    cached = s._point
    assert cached is not None and cached[2] == s._snap[0]
    kv.ok(Put(b"a", b"2"))
    assert s._point is None  # dropped before the batch wrote
    assert s.get(b"a").value == b"2" and s._point[2] == s._snap[0]


def test_reads_in_other_threads_pair_data_and_header_from_one_snapshot(tmp_dir):
    """Every revision writes the one key ``k`` with its own number as value, so a
    read's header revision must equal the key's mod_revision, and a read of an older
    revision either finds exactly that put or is refused as compacted."""
    s = MVCCStore(tmp_dir + "/threads")
    stop = threading.Event()
    problems: list = []
    reads = [0]

    def reader() -> None:
        last = 0  # a thread's reads never go back in time, point reads or scans
        while not stop.is_set():
            # The store's revision and applied index are those of a commit: a read
            # that follows sees at least that revision.
            seen_rev, seen_index = s.revision, s.applied_index
            scan = s.range(Range(b"k", b"l"))
            if scan.revision < seen_rev or s.applied_index < seen_index:
                problems.append(("revision ahead of the data", seen_rev, scan.revision))
            res = s.range(Range(b"k"))
            reads[0] += 1
            if not last <= scan.revision <= res.revision:
                problems.append(("back in time", last, scan.revision, res.revision))
            last = res.revision
            if res.kvs and res.kvs[0].mod_revision != res.revision:
                problems.append(("now", res))
            if s.get(b"k") is not None and s.get(b"k").mod_revision < res.revision:
                problems.append(("get back in time", res.revision))
            if res.revision > 2:
                want = res.revision - 1
                try:
                    old = s.range(Range(b"k", revision=want))
                except errors.Compacted:
                    continue
                if [(kv.mod_revision, kv.value) for kv in old.kvs] != [(want, b"%d" % want)]:
                    problems.append(("past", want, old))

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside the read path too
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        index = 0
        for i in range(400):
            rev = s.revision + 1
            index += 1
            s.apply_batch([(index, Put(b"k", b"%d" % rev))])
            if i % 7 == 0:
                index += 1
                s.apply_batch([(index, Noop()), (index + 1, Compact(s.revision - 1, physical=True))])
                index += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        sys.setswitchinterval(old_interval)
        s.close()
    assert problems == []
    assert reads[0] > 0


def test_a_large_delete_range_is_one_revision_with_an_event_per_key(kv):
    """The batched tombstone writer: sub-revisions in key order, prev_kv of each key's
    live version, lease attachments dropped, and the same state as deleting one by one."""
    from geokv.kv.types import LeaseGrant

    kv.ok(LeaseGrant(9, 100))
    keys = [b"d/%04d" % i for i in range(300)]
    for i, k in enumerate(keys):
        kv.ok(Put(k, b"v1-%d" % i, lease=9 if i % 3 == 0 else 0))
        if i % 2:
            kv.ok(Put(k, b"v2-%d" % i, lease=9 if i % 3 == 0 else 0))
    kv.ok(DeleteRange(b"d/0007"))
    before = {k: kv.store.get(k) for k in keys}
    res, events = kv.run_events(DeleteRange(b"d/", b"d0", prev_kv=True))
    live = [k for k in keys if before[k] is not None]
    assert res.deleted == len(live) == 299
    assert res.prev_kvs == [before[k] for k in live]
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [(1, k, res.revision) for k in live]
    assert [e.prev_kv for e in events] == [before[k] for k in live]
    assert kv.store.revision == res.revision
    assert kv.store.range(Range(b"d/", b"d0")).count == 0
    assert kv.store.lease_keys(9) == []
    assert kv.store.events(res.revision) == events
    # Later reads of the past still see every key.
    assert kv.store.range(Range(b"d/", b"d0", revision=res.revision - 1)).count == 299
