"""DiskRaftStorage reads exactly like MemoryStorage, before and after recovery."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from geokv.ports.faulty_disk import FaultyDisk
from geokv.raft.storage import Compacted, MemoryStorage, SnapshotOutOfDate, Unavailable
from geokv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata
from geokv.storage import DiskRaftStorage
from geokv.storage.snapshot import SNAPSHOT_FILES_RETAINED


def _ents(lo: int, hi: int, term: int, size: int = 20) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, (f"{term}/{i}/".encode() * size)[:size]) for i in range(lo, hi)]


def _same_reads(disk_st: DiskRaftStorage, mem: MemoryStorage) -> None:
    assert disk_st.first_index() == mem.first_index()
    assert disk_st.last_index() == mem.last_index()
    assert disk_st.initial_state() == mem.initial_state()
    assert disk_st.snapshot().metadata == mem.snapshot().metadata
    lo, hi = mem.first_index(), mem.last_index() + 1
    assert disk_st.entries(lo, hi) == mem.entries(lo, hi)
    for max_size in (1, 100, 1000):
        for a in range(lo, hi, 7):
            assert disk_st.entries(a, hi, max_size) == mem.entries(a, hi, max_size)
    for i in range(lo - 1, hi):
        assert disk_st.term(i) == mem.term(i)
    for bad in (lo - 2, hi):
        for s in (disk_st, mem):
            with pytest.raises((Compacted, Unavailable)):
                s.term(bad)
    with pytest.raises(Compacted):
        disk_st.entries(lo - 1, hi)
    with pytest.raises(Unavailable):
        disk_st.entries(lo, hi + 1)


class StorageModel(RuleBasedStateMachine):
    """Random appends (with suffix overwrites), hard states, snapshots, compaction,
    installs, clean reopens and crashes after a sync, against MemoryStorage."""

    def __init__(self) -> None:
        super().__init__()
        self.disk = FaultyDisk()
        self.mem = MemoryStorage()
        self.term = 1
        self.st = self._open()

    def _open(self) -> DiskRaftStorage:
        return DiskRaftStorage.open(self.disk, "/node", segment_bytes_max=700, cache_bytes_max=300)

    @rule(back=st.integers(0, 6), n=st.integers(1, 9), bump=st.booleans(), size=st.sampled_from([5, 60, 400]))
    def append(self, back, n, bump, size):
        if bump:
            self.term += 1
        # Entries covered by a snapshot are committed: Raft never overwrites them.
        floor = max(self.mem.first_index(), self.mem.snapshot().metadata.index + 1)
        start = max(floor, self.mem.last_index() + 1 - back)
        ents = _ents(start, start + n, self.term, size)
        self.mem.append(ents)
        self.st.save(None, ents)

    @rule(vote=st.integers(0, 3), commit_back=st.integers(0, 3))
    def hard_state(self, vote, commit_back):
        hs = HardState(self.term, vote, max(self.mem.first_index() - 1, self.mem.last_index() - commit_back))
        self.mem.set_hard_state(hs)
        self.st.save(hs, [])

    @precondition(lambda self: self.mem.last_index() > self.mem.snapshot().metadata.index)
    @rule(back=st.integers(0, 5), compact=st.booleans())
    def snapshot_and_compact(self, back, compact):
        index = max(self.mem.snapshot().metadata.index + 1, self.mem.last_index() - back)
        if index < self.mem.first_index():
            return
        cs = ConfState((1, 2, index % 5 + 3))
        a = self.mem.create_snapshot(index, cs, b"data@%d" % index)
        b = self.st.create_snapshot(index, cs, b"data@%d" % index)
        assert a == b
        if compact:
            self.mem.compact(index)
            self.st.compact(index)

    @rule(ahead=st.integers(1, 30))
    def install_snapshot(self, ahead):
        index = max(self.mem.last_index(), self.mem.snapshot().metadata.index) + ahead
        self.term += 1
        snap = Snapshot(SnapshotMetadata(index, self.term, ConfState((7, 8, 9))), b"leader state")
        self.mem.apply_snapshot(snap)
        hs = HardState(self.term, 0, index)
        self.mem.set_hard_state(hs)
        self.st.save(hs, [], snap)

    @rule()
    def reopen(self):
        self.st.close()
        self.st = self._open()
        self._restart_model()

    @rule()
    def crash_after_sync(self):
        self.st.sync()
        self.disk.crash()
        self.st = self._open()
        self._restart_model()

    def _restart_model(self) -> None:
        # After a restart the log starts right after the newest snapshot.
        # Entries up to a snapshot are committed, so recovery raises commit to it.
        snap = self.mem.snapshot()
        if self.mem.first_index() <= snap.metadata.index:
            self.mem.compact(snap.metadata.index)
        hs = self.mem.hard_state()
        self.mem.set_hard_state(HardState(hs.term, hs.vote, max(hs.commit, snap.metadata.index)))

    @invariant()
    def reads_match(self):
        _same_reads(self.st, self.mem)

    def teardown(self) -> None:
        self.st.close()


TestStorageModel = StorageModel.TestCase
TestStorageModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


# --- single claims ----------------------------------------------------------------------

def test_replay_takes_the_later_record_for_overwritten_entries():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=500)
    s.save(HardState(1, 1, 0), _ents(1, 30, 1))
    s.save(HardState(2, 2, 0), _ents(10, 15, 2))  # a new leader truncated 10..29
    s.save(HardState(3, 3, 0), _ents(12, 20, 3))  # and another one 12..14
    s.sync()
    s.close()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=500)
    assert s.entries(1, 20) == _ents(1, 10, 1) + _ents(10, 12, 2) + _ents(12, 20, 3)
    assert s.last_index() == 19
    assert s.initial_state()[0] == HardState(3, 3, 0)


def test_cache_is_bounded_and_evicted_entries_come_back_from_disk():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=4096, cache_bytes_max=2000)
    for lo in range(1, 500, 50):
        s.save(None, _ents(lo, lo + 50, 1, size=100))
        assert s.statistics()["cache_bytes"] <= 2000
    s.sync()
    reads = s.stats_disk_reads
    assert s.entries(1, 500) == _ents(1, 500, 1, size=100)
    assert s.stats_disk_reads > reads
    assert s.entries(490, 500) == _ents(490, 500, 1, size=100)  # the newest are cached
    # max_size stops reading early, but always returns at least one entry
    assert len(s.entries(1, 500, max_size=1)) == 1
    assert len(s.entries(1, 500, max_size=(100 + 16) * 7)) == 7


def test_snapshot_releases_old_segments_and_snapshot_files():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=1000)
    for lo in range(1, 400, 20):
        s.save(HardState(1, 1, lo + 19), _ents(lo, lo + 20, 1))
        s.sync()
    segs_before = len(d.listdir("/n/wal"))
    assert segs_before > 10
    for i, index in enumerate((100, 200, 300, 380)):
        s.create_snapshot(index, ConfState((1,)), b"s%d" % index)
        s.compact(index)
        assert len([n for n in d.listdir("/n/snap") if n.endswith(".snap")]) == min(i + 1, SNAPSHOT_FILES_RETAINED)
    segs_after = len(d.listdir("/n/wal"))
    assert segs_after < segs_before / 4
    s.close()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=1000)
    assert (s.first_index(), s.last_index()) == (381, 400)
    assert s.snapshot().data == b"s380"
    assert s.entries(381, 401) == _ents(381, 401, 1)
    assert s.initial_state()[0] == HardState(1, 1, 400)


def test_hard_state_survives_release_of_the_segment_that_first_held_it():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=600)
    s.save(HardState(5, 3, 0), [])
    for lo in range(1, 200, 10):
        s.save(None, _ents(lo, lo + 10, 5))
    s.sync()
    s.create_snapshot(150, None, b"x")
    s.compact(150)
    s.close()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=600)
    assert s.initial_state()[0] == HardState(5, 3, 150)  # commit never below the snapshot


def test_installed_snapshot_discards_the_old_log_on_replay():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n")
    s.save(HardState(1, 1, 5), _ents(1, 50, 1))
    snap = Snapshot(SnapshotMetadata(30, 4, ConfState((1, 2, 3))), b"from leader")
    s.save(HardState(4, 0, 30), _ents(31, 35, 4), snap)
    s.sync()
    d.crash()
    s = DiskRaftStorage.open(d, "/n")
    assert (s.first_index(), s.last_index()) == (31, 34)
    assert s.entries(31, 35) == _ents(31, 35, 4)
    assert s.snapshot() == snap
    with pytest.raises(SnapshotOutOfDate):
        s.save(None, [], snap)


def test_interrupted_snapshot_install_keeps_the_old_log():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n")
    s.save(HardState(1, 1, 5), _ents(1, 50, 1))
    s.sync()
    d.fail_syncs(lambda p: p.endswith(".snap.tmp") or p.endswith(".snap"))
    snap = Snapshot(SnapshotMetadata(80, 4, ConfState((1, 2, 3))), b"from leader")
    with pytest.raises(OSError):
        s.save(HardState(4, 0, 80), [], snap)
    d.crash()
    s = DiskRaftStorage.open(d, "/n")
    assert (s.first_index(), s.last_index()) == (1, 49)
    assert s.entries(1, 50) == _ents(1, 50, 1)


def test_bootstrap_conf_state_is_persisted_once():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", initial_conf_state=ConfState((1, 2, 3)))
    assert s.initial_state()[1] == ConfState((1, 2, 3))
    s.close()
    s = DiskRaftStorage.open(d, "/n", initial_conf_state=ConfState((9,)))
    assert s.initial_state()[1] == ConfState((1, 2, 3))


def test_read_errors_surface_instead_of_wrong_data():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", cache_bytes_max=100)
    s.save(None, _ents(1, 100, 1))
    s.sync()
    d.fail_reads(lambda p: p.endswith(".wal"))
    with pytest.raises(OSError):
        s.entries(1, 10)
    d.fail_reads(None)
    assert s.entries(1, 10) == _ents(1, 10, 1)


def test_gap_in_appends_is_a_bug():
    s = DiskRaftStorage.open(FaultyDisk(), "/n")
    s.save(None, _ents(1, 5, 1))
    with pytest.raises(AssertionError, match="missing log entry"):
        s.save(None, _ents(7, 9, 1))



#: Longest the fsync thread and the test wait for each other (generous: CI is loaded).
THREAD_WAIT_S = 120.0


def test_reads_proceed_while_another_thread_is_inside_fsync():
    import threading

    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", cache_bytes_max=500)
    s.save(HardState(1, 1, 0), _ents(1, 100, 1))
    s.sync()
    s.save(None, _ents(100, 110, 1))
    in_fsync, release = threading.Event(), threading.Event()

    def slow_sync(path: str) -> bool:
        in_fsync.set()
        assert release.wait(THREAD_WAIT_S), "test did not release the fsync"
        return False

    d.fail_syncs(slow_sync)
    t = threading.Thread(target=s.sync)
    t.start()
    try:
        assert in_fsync.wait(THREAD_WAIT_S)
        # The fsync is in progress on the other thread; the Raft core can still read.
        assert s.term(105) == 1 and s.last_index() == 109
        assert s.entries(1, 110) == _ents(1, 110, 1)  # old ones come from disk
    finally:
        release.set()
        t.join(THREAD_WAIT_S)
    assert not t.is_alive()
    assert s.durable_lsn == s._wal.appended_lsn
