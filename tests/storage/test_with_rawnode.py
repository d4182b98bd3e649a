"""DiskRaftStorage under a real RawNode: persist each Ready, apply, snapshot, crash,
recover, and carry on with nothing committed lost."""

from __future__ import annotations

import random

from geokv.ports.faulty_disk import FaultyDisk
from geokv.raft.config import Config
from geokv.raft.rawnode import RawNode
from geokv.raft.types import ConfState, EntryType, StateRole
from geokv.storage import DiskRaftStorage

#: Ready rounds a test drives before it gives up waiting for a condition.
ROUNDS_MAX = 2000


def _drive(rn: RawNode, st: DiskRaftStorage, applied: list[bytes], until) -> None:
    for _ in range(ROUNDS_MAX):
        if until():
            return
        if not rn.has_ready():
            rn.tick()
            continue
        rd = rn.ready()
        st.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.must_sync or rd.hard_state is not None:  # commit made durable too: see below
            st.sync()
        for e in rd.committed_entries:
            if e.type == EntryType.NORMAL and e.data:
                applied.append(e.data)
        rn.advance(rd)
    raise AssertionError("condition not reached")


def _node(st: DiskRaftStorage, applied_index: int) -> RawNode:
    return RawNode(Config(id=1, applied=applied_index, rng=random.Random(7)), st)


def test_single_node_log_survives_crash_and_snapshot():
    disk = FaultyDisk()
    st = DiskRaftStorage.open(disk, "/n", segment_bytes_max=2048, cache_bytes_max=1024,
                              initial_conf_state=ConfState((1,)))
    rn = _node(st, 0)
    applied: list[bytes] = []
    rn.campaign()
    _drive(rn, st, applied, lambda: rn.role == StateRole.LEADER)
    for i in range(60):
        rn.propose(b"v%03d" % i)
    _drive(rn, st, applied, lambda: len(applied) == 60)
    snap_at = st.last_index() - 10
    st.create_snapshot(snap_at, ConfState((1,)), b"state")
    st.compact(snap_at)
    for i in range(60, 80):
        rn.propose(b"v%03d" % i)
    _drive(rn, st, applied, lambda: len(applied) == 80)
    last = st.last_index()
    assert st.initial_state()[0].commit == last

    # Every Ready was synced before it was advanced, and this test's state machine
    # (`applied`) counts as durable, so after the crash it must all line up again.
    disk.crash()
    st = DiskRaftStorage.open(disk, "/n", segment_bytes_max=2048, cache_bytes_max=1024)
    committed = st.initial_state()[0].commit
    assert committed == last == st.last_index()
    assert st.first_index() == snap_at + 1
    replayed = [e.data for e in st.entries(st.first_index(), st.last_index() + 1) if e.data]
    assert replayed == applied[-len(replayed):] and len(replayed) >= 20
    rn = _node(st, committed)
    rn.campaign()
    _drive(rn, st, applied, lambda: rn.role == StateRole.LEADER)
    rn.propose(b"after-crash")
    _drive(rn, st, applied, lambda: applied[-1] == b"after-crash")
    assert applied == [b"v%03d" % i for i in range(80)] + [b"after-crash"]
