"""Each safety checker catches the violation it exists for, and accepts legal runs."""

from __future__ import annotations

import pytest

from geokv.raft.storage import MemoryStorage
from geokv.raft.types import ConfState, Entry, EntryType, Snapshot, SnapshotMetadata
from geokv.sim.checkers import SafetyChecker, SafetyViolation
from geokv.sim.statemachine import KVStateMachine, encode_write


def log_of(*terms: int, data: bytes = b"") -> MemoryStorage:
    """A persisted log whose entry i+1 has term terms[i]."""
    st = MemoryStorage(ConfState(voters=(1, 2, 3)))
    st.append([Entry(t, i + 1, EntryType.NORMAL, data or b"d%d" % (i + 1))
               for i, t in enumerate(terms)])
    return st


def persist(chk: SafetyChecker, node: int, st: MemoryStorage) -> None:
    chk.on_persist_entries(node, st.entries(st.first_index(), st.last_index() + 1), st)


def test_two_leaders_in_one_term():
    chk = SafetyChecker()
    chk.on_leader(1, 5)
    chk.on_leader(1, 5)  # the same leader seen again is fine
    chk.on_leader(2, 6)
    with pytest.raises(SafetyViolation, match="election safety"):
        chk.on_leader(3, 5)


def test_log_matching_same_index_and_term_different_data():
    chk = SafetyChecker()
    persist(chk, 1, log_of(1, 1, 2))
    persist(chk, 2, log_of(1, 1))
    bad = MemoryStorage(ConfState(voters=(1, 2, 3)))
    bad.append([Entry(1, 1, data=b"d1"), Entry(1, 2, data=b"d2"), Entry(2, 3, data=b"other")])
    with pytest.raises(SafetyViolation, match="log matching"):
        persist(chk, 3, bad)


def test_log_matching_same_entry_different_predecessor():
    chk = SafetyChecker()
    persist(chk, 1, log_of(1, 1, 3, data=b"x"))
    with pytest.raises(SafetyViolation, match="follows term"):
        persist(chk, 2, log_of(1, 2, 3, data=b"x"))


def test_committed_entry_may_not_change():
    chk = SafetyChecker()
    a, b = log_of(1, 1, 2), log_of(1, 1, 3)
    chk.on_commit(1, 1, 3, 2, a)
    chk.on_commit(2, 1, 2, 3, b)  # agrees up to 2
    with pytest.raises(SafetyViolation, match="committed entry changed"):
        chk.on_commit(2, 3, 3, 3, b)


def test_commit_past_persisted_log():
    chk = SafetyChecker()
    with pytest.raises(SafetyViolation, match="past its last persisted"):
        chk.on_commit(1, 1, 4, 1, log_of(1, 1))


def test_leader_completeness_new_leader_missing_committed_entry():
    for leader_log in (log_of(1, 1), log_of(1, 1, 3)):  # shorter, or different entry
        chk = SafetyChecker()
        chk.on_commit(1, 1, 3, 2, log_of(1, 1, 2))  # index 3 (term 2) committed in term 2
        with pytest.raises(SafetyViolation, match="leader completeness"):
            chk.check_leader_complete(2, 3, leader_log)
    chk = SafetyChecker()
    chk.on_commit(1, 1, 3, 2, log_of(1, 1, 2))
    chk.check_leader_complete(2, 3, log_of(1, 1, 2, 3))  # has it: fine


def test_leader_completeness_allows_stale_leader_of_older_term():
    # An entry committed in term 5 need not be in the log of a leader of term 4 that
    # only learns of its victory late: completeness is about *later* terms.
    chk = SafetyChecker()
    chk.on_commit(1, 1, 2, 5, log_of(1, 5))
    chk.check_leader_complete(2, 4, log_of(1, 4))


def test_leader_completeness_checked_when_commit_arrives_after_election():
    chk = SafetyChecker()
    chk.check_leader_complete(3, 7, log_of(1, 1, 7))
    with pytest.raises(SafetyViolation, match="leader completeness"):
        chk.on_commit(1, 1, 3, 2, log_of(1, 1, 2))  # committed in term 2, leader 3 of 7 lacks it


def test_apply_of_uncommitted_entry():
    chk = SafetyChecker()
    with pytest.raises(SafetyViolation, match="not known committed"):
        chk.on_apply(1, Entry(1, 1, data=b"x"), 0, 123)


def test_apply_out_of_order():
    chk = SafetyChecker()
    chk.on_commit(1, 1, 2, 1, log_of(1, 1))
    with pytest.raises(SafetyViolation, match="apply order"):
        chk.on_apply(1, Entry(1, 2, data=b"d2"), 0, 0)


def test_two_nodes_apply_different_entries_at_one_index():
    chk = SafetyChecker()
    chk.on_commit(1, 1, 1, 1, log_of(1))
    chk.on_apply(1, Entry(1, 1, data=b"d1"), 0, 111)
    chk.on_apply(2, Entry(1, 1, data=b"d1"), 0, 111)
    with pytest.raises(SafetyViolation, match="state-machine safety"):
        chk.on_apply(3, Entry(1, 1, data=b"zz"), 0, 111)


def test_apply_with_diverged_state_is_caught_through_the_chain():
    chk = SafetyChecker()
    chk.on_commit(1, 1, 1, 1, log_of(1))
    chk.on_apply(1, Entry(1, 1, data=b"d1"), 0, 111)
    with pytest.raises(SafetyViolation, match="state-machine safety"):
        chk.on_apply(2, Entry(1, 1, data=b"d1"), 0, 222)


def test_snapshot_of_uncommitted_index_or_wrong_state():
    chk = SafetyChecker()
    with pytest.raises(SafetyViolation, match="not a committed entry"):
        chk.on_restore(1, 5, 2, 0)
    chk.on_commit(1, 1, 1, 1, log_of(1))
    chk.on_apply(1, Entry(1, 1, data=b"d1"), 0, 111)
    chk.on_restore(2, 1, 1, 111)
    with pytest.raises(SafetyViolation, match="differs from the applied prefix"):
        chk.on_restore(3, 1, 1, 999)


def test_compacted_prefix_is_not_held_against_a_leader():
    chk = SafetyChecker()
    chk.on_commit(1, 1, 3, 1, log_of(1, 1, 1))
    st = log_of(1, 1, 1, 2)
    st.create_snapshot(3, None, b"")
    st.compact(3)
    chk.check_leader_complete(2, 2, st)


def test_state_machine_applies_each_write_once_and_snapshots_roundtrip():
    sm = KVStateMachine()
    assert sm.apply(1, 1, encode_write(7, "k", 7), True) == 7
    assert sm.apply(2, 1, encode_write(7, "k", 7), True) is None  # duplicate proposal
    assert sm.apply(3, 1, encode_write(8, "k", 8), True) == 8
    copy = KVStateMachine.restore(sm.snapshot())
    assert (copy.kv, copy.applied_ids, copy.applied_index, copy.chain) == \
        (sm.kv, sm.applied_ids, sm.applied_index, sm.chain)
    with pytest.raises(AssertionError):
        sm.apply(5, 1, b"", False)  # skipping index 4


def test_snapshot_metadata_type_is_what_checkers_read():
    snap = Snapshot(SnapshotMetadata(3, 2, ConfState(voters=(1,))), b"")
    assert snap.metadata.index == 3 and snap.metadata.term == 2


def test_one_vote_per_term():
    chk = SafetyChecker()
    chk.on_vote_granted(1, 4, 2, 4, 2)
    chk.on_vote_granted(1, 4, 2, 4, 2)  # the same grant again (a retry) is fine
    chk.on_vote_granted(1, 5, 3, 5, 3)
    with pytest.raises(SafetyViolation, match="vote safety"):
        chk.on_vote_granted(1, 4, 3, 4, 3)


def test_vote_must_be_durable_before_it_is_sent():
    chk = SafetyChecker()
    chk.on_vote_granted(1, 4, 2, 5, 0)  # the disk already moved past term 4: safe
    with pytest.raises(SafetyViolation, match="durability"):
        chk.on_vote_granted(2, 4, 3, 3, 0)


def test_append_ack_must_be_durable_before_it_is_sent():
    chk = SafetyChecker()
    chk.on_append_acked(1, 2, 10, 2, 10)
    chk.on_append_acked(1, 2, 12, 3, 5)  # the term moved on: the old ack is harmless
    with pytest.raises(SafetyViolation, match="durability"):
        chk.on_append_acked(1, 2, 12, 2, 11)
