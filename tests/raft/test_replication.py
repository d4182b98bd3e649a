"""Replication flow control, fast back-off, bounds, and snapshots to lagging followers."""

from __future__ import annotations

import pytest

from geokv.raft import (
    ConfState,
    MessageType,
    ProgressState,
    ProposalDropped,
    StateRole,
)

from .harness import Network


def _apps_to(net: Network, i: int):
    return [m for m in net.delivered if m.type == MessageType.APP and m.to == i]


# --- batching and windows ----------------------------------------------------------------
def test_max_size_per_msg_bounds_each_append():
    net = Network([1, 2, 3], max_size_per_msg=1000)
    net.campaign(1)
    net.isolate(2)
    for i in range(40):
        net[1].rn.propose(b"x" * 100)
        net.flush_ready([1])
        net.queue.clear()
    net.heal()
    net.delivered.clear()
    net.tick(1)
    apps = [m for m in _apps_to(net, 2) if m.entries]
    assert len(apps) > 1
    for m in apps:
        size = sum(len(e.data) + 16 for e in m.entries)
        assert size <= 1000 or len(m.entries) == 1
    assert net[2].applied == [b"x" * 100] * 40


def test_inflight_window_bounds_unacknowledged_appends():
    net = Network([1, 2, 3], max_inflight_msgs=4)
    net.campaign(1)
    net.propose(1, b"warm")  # followers in REPLICATE
    net.drop_types.add(MessageType.APP_RESP)
    net.delivered.clear()
    for i in range(20):
        net[1].rn.propose(b"p%d" % i)
        net.stabilize()
    assert len([m for m in _apps_to(net, 2) if m.entries]) == 4
    pr = net[1].rn.status().progress[2]
    assert pr[2] == ProgressState.REPLICATE
    net.heal()
    net.tick(2)
    assert net[2].applied[-1] == b"p19"


def test_probe_state_sends_one_append_per_round():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net[1].raft.trk.progress[3].become_probe()
    net.delivered.clear()
    for i in range(5):
        net[1].rn.propose(b"more%d" % i)
        net.flush_ready([1])
    sent = [m for m in net.delivered if m.to == 3]
    assert sent == []  # cut: nothing delivered
    assert net[1].raft.trk.progress[3].probe_sent


def test_fast_backoff_uses_conflict_term_hint():
    """A follower with a long divergent tail is repaired in a few round trips."""
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net.campaign(1)
    net.isolate(1)
    for i in range(50):  # 50 entries only node 1 has (term 2), never committed
        net[1].rn.propose(b"lost%d" % i)
        net.flush_ready([1])
    net.queue.clear()
    net.heal()
    net.isolate(1)
    for a, b in ((2, 3), (3, 2)):
        net.cut_links.discard((a, b))
    net.campaign(2)
    for i in range(60):
        net.propose(2, b"new%d" % i)
    # As if node 2 had been replicating to 1 optimistically: it probes from its tip.
    pr = net[2].raft.trk.progress[1]
    pr.become_probe()
    pr.next = net[2].raft.raft_log.last_index() + 1
    net.heal()
    net.delivered.clear()
    net.tick(3)
    rejects = [m for m in net.delivered
               if m.type == MessageType.APP_RESP and m.frm == 1 and m.reject]
    # One entry at a time would take ~60 rejections; the term hint needs one or two.
    assert 1 <= len(rejects) <= 2
    assert net.logs(1) == net.logs(2)
    assert net[1].applied == [b"new%d" % i for i in range(60)]


def test_max_uncommitted_entries_size_drops_proposals():
    net = Network([1, 2, 3], max_uncommitted_entries_size=1000)
    net.campaign(1)
    net.isolate(1)
    accepted = 0
    with pytest.raises(ProposalDropped) as ei:
        for _ in range(100):
            net[1].rn.propose(b"y" * 100)
            accepted += 1
    assert "uncommitted" in ei.value.reason
    assert 9 <= accepted <= 10
    net.heal()
    net.tick(2)
    net[1].rn.propose(b"y" * 100)  # the budget is released once entries commit


def test_committed_entries_are_chunked_by_max_committed_size_per_ready():
    net = Network([1], max_committed_size_per_ready=500)
    net.campaign(1)
    r = net[1].rn
    for _ in range(20):
        r.propose(b"w" * 100)
    batches = []
    for _ in range(100):
        if not r.has_ready():
            break
        rd = r.ready()
        net[1].storage.append(rd.entries)
        if rd.hard_state:
            net[1].storage.set_hard_state(rd.hard_state)
        if rd.committed_entries:
            batches.append(len(rd.committed_entries))
            assert sum(len(e.data) + 16 for e in rd.committed_entries) <= 500 or \
                len(rd.committed_entries) == 1
        r.advance(rd)
    assert sum(batches) == 20 and len(batches) > 3


# --- snapshots -----------------------------------------------------------------------------
def _compact(node, data: bytes = b"state"):
    st = node.storage
    applied = node.rn.status().applied
    st.create_snapshot(applied, node.rn.status().config, data)
    st.compact(applied)


def test_snapshot_install_to_lagging_follower():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    for i in range(10):
        net.propose(1, b"%d" % i)
    _compact(net[1])
    assert net[1].storage.first_index() > 2
    net.heal()
    net.tick(2)
    assert net[3].snapshots_installed == 1
    assert net[3].storage.snapshot().metadata.index == net[1].storage.snapshot().metadata.index
    assert net[3].applied == [b"<snapshot:state>"]
    net.propose(1, b"after")
    assert net[3].applied[-1] == b"after"
    assert net[1].rn.status().progress[3][2] == ProgressState.REPLICATE


def test_failed_snapshot_is_retried():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    _compact(net[1])
    net.heal()
    net.drop_types.add(MessageType.SNAP)  # the stream fails: reported as not ok
    net.tick(1)
    assert net[3].snapshots_installed == 0
    assert net[1].rn.status().progress[3][2] == ProgressState.PROBE
    net.heal()
    net.tick(3)
    assert net[3].snapshots_installed == 1
    assert net[3].applied == [b"<snapshot:state>"]


def test_snapshot_state_pauses_appends_until_reported():
    net = Network([1, 2, 3])
    net.auto_report_snapshot = False
    net.campaign(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    _compact(net[1])
    net.heal()
    net.drop_types.add(MessageType.SNAP)  # in flight "forever"
    net.tick(1)
    assert net[1].rn.status().progress[3][2] == ProgressState.SNAPSHOT
    net.delivered.clear()
    net.propose(1, b"x")
    net.tick(3)
    assert not [m for m in net.delivered if m.to == 3 and m.type == MessageType.APP]
    net[1].rn.report_snapshot(3, False)
    assert net[1].rn.status().progress[3][2] == ProgressState.PROBE
    net.heal()
    net.tick(3)
    assert net[3].snapshots_installed == 1
    assert net[3].applied[-1] == b"x"


def test_stale_snapshot_is_ignored():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.propose(1, b"a")
    from geokv.raft import Message, Snapshot, SnapshotMetadata
    snap = Snapshot(SnapshotMetadata(1, 1, ConfState(voters=(1, 2, 3))), b"old")
    net[2].rn.step(Message(MessageType.SNAP, 2, 1, term=net[1].rn.term, snapshot=snap))
    net.stabilize()
    assert net[2].snapshots_installed == 0
    assert net[2].applied == [b"a"]


def test_snapshot_for_other_config_is_ignored():
    net = Network([1, 2, 3])
    net.campaign(1)
    from geokv.raft import Message, Snapshot, SnapshotMetadata
    snap = Snapshot(SnapshotMetadata(50, 1, ConfState(voters=(1, 3))), b"x")
    net[2].rn.step(Message(MessageType.SNAP, 2, 1, term=net[1].rn.term, snapshot=snap))
    net.stabilize()
    assert net[2].snapshots_installed == 0


def test_restart_after_snapshot_restores_config_and_indexes():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    _compact(net[1])
    net.heal()
    net.tick(2)
    n3 = net.restart(3)
    st = n3.rn.status()
    assert st.config.voters == (1, 2, 3)
    assert st.commit >= net[3].storage.snapshot().metadata.index
    net.tick(2)
    net.propose(1, b"z")
    assert n3.applied[-1] == b"z"
    assert n3.rn.role == StateRole.FOLLOWER
