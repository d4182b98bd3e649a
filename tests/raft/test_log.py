"""RaftLog and MemoryStorage unit behaviour (conflicts, truncation, hints, compaction)."""

from __future__ import annotations

import pytest

from geokv.raft import Compacted, ConfState, Entry, MemoryStorage, Unavailable
from geokv.raft.log import RaftLog
from geokv.raft.storage import SnapshotOutOfDate, limit_size


def _log(terms, stable=True):
    st = MemoryStorage(ConfState(voters=(1,)))
    ents = [Entry(t, i) for i, t in enumerate(terms, 1)]
    if stable:
        st.append(ents)
        return RaftLog(st, 1 << 20)
    log = RaftLog(st, 1 << 20)
    log.append(ents)
    return log


@pytest.mark.parametrize("stable", [True, False])
def test_find_conflict(stable):
    log = _log([1, 2, 3], stable)
    assert log.find_conflict([]) == 0
    assert log.find_conflict([Entry(1, 1), Entry(2, 2)]) == 0
    assert log.find_conflict([Entry(2, 2), Entry(3, 3), Entry(4, 4)]) == 4
    assert log.find_conflict([Entry(4, 4), Entry(4, 5)]) == 4
    assert log.find_conflict([Entry(1, 1), Entry(4, 2), Entry(4, 3)]) == 2
    assert log.find_conflict([Entry(1, 1), Entry(2, 2), Entry(9, 3)]) == 3


def test_maybe_append_truncates_conflicting_suffix_and_commits_up_to_new_last():
    log = _log([1, 1, 1, 1], stable=True)
    last = log.maybe_append(2, 1, 10, [Entry(2, 3)])
    assert last == 3
    assert [(e.index, e.term) for e in log.all_entries()] == [(1, 1), (2, 1), (3, 2)]
    assert log.committed == 3  # min(leader commit, last new index)
    assert log.maybe_append(3, 9, 10, [Entry(9, 4)]) is None  # prev term mismatch


def test_maybe_append_never_truncates_committed_entries():
    log = _log([1, 1, 1])
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, [Entry(2, 2)])


def test_find_conflict_by_term_hint():
    log = _log([1, 1, 2, 2, 5, 5])
    assert log.find_conflict_by_term(6, 4) == (4, 2)
    assert log.find_conflict_by_term(6, 5) == (6, 5)
    assert log.find_conflict_by_term(6, 0) == (0, 0)
    assert log.find_conflict_by_term(2, 1) == (2, 1)


def test_term_and_slice_across_compaction_and_unstable():
    st = MemoryStorage(ConfState(voters=(1,)))
    st.append([Entry(1, i) for i in range(1, 6)])
    st.create_snapshot(3, None, b"s")
    st.compact(3)
    log = RaftLog(st, 1 << 20)
    log.append([Entry(2, 6), Entry(2, 7)])
    assert log.first_index() == 4 and log.last_index() == 7
    assert log.term(3) == 1  # the snapshot's (dummy) entry
    with pytest.raises(Compacted):
        log.term(2)
    with pytest.raises(Unavailable):
        log.term(8)
    assert [e.index for e in log.slice(4, 8, None)] == [4, 5, 6, 7]
    with pytest.raises(Compacted):
        log.slice(3, 5, None)
    assert [e.index for e in log.slice(4, 8, 40)] == [4, 5]  # 16 bytes/entry overhead


def test_stable_to_ignores_replaced_entries():
    log = _log([1, 1], stable=False)
    log.append([Entry(2, 2)])  # replaces unstable entry 2 (term 1 -> 2)
    log.stable_to(2, 1)  # the old write of (2, term 1) completes: not the current entry
    assert [e.index for e in log.unstable_entries()] == [1, 2]
    log.stable_to(2, 2)
    assert log.unstable_entries() == []


def test_memory_storage_rejects_old_snapshots_and_gaps():
    st = MemoryStorage()
    st.append([Entry(1, 1), Entry(1, 2)])
    st.create_snapshot(2, ConfState(voters=(1,)), b"x")
    with pytest.raises(SnapshotOutOfDate):
        st.create_snapshot(1, None, b"y")
    with pytest.raises(AssertionError):
        st.append([Entry(1, 5)])


def test_limit_size_never_returns_empty():
    ents = [Entry(1, i, data=b"x" * 100) for i in range(1, 5)]
    assert len(limit_size(ents, 1)) == 1
    assert len(limit_size(ents, 250)) == 2
    assert limit_size(ents, None) is ents
