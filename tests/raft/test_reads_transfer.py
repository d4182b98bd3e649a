"""ReadIndex (SAFE), lease reads under drift and pauses, and leadership transfer."""

from __future__ import annotations

import pytest

from geokv.raft import MessageType, ProposalDropped, ReadOnlyOption, StateRole

from .harness import Network

LEASE = ReadOnlyOption.LEASE_BASED


# --- ReadIndex ------------------------------------------------------------------------
def test_safe_read_index_needs_a_heartbeat_quorum():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.propose(1, b"a")
    commit = net[1].rn.status().commit
    net[1].rn.read_index(b"r1")
    rd = net[1].rn.ready()
    assert not rd.read_states
    assert any(m.type == MessageType.HEARTBEAT and m.context == b"r1" for m in rd.messages)
    net.send(rd.messages + rd.persisted_messages)
    net[1].rn.advance(rd)
    net.stabilize()
    assert [(rs.index, rs.request_ctx) for rs in net[1].read_states] == [(commit, b"r1")]


def test_safe_read_index_not_answered_without_quorum():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(1)
    net[1].rn.read_index(b"r")
    net.stabilize()
    assert net[1].read_states == []


def test_read_index_waits_for_commit_in_current_term():
    net = Network([1, 2, 3])
    net[1].rn.campaign()
    # Run the election but hold back every APP: the new leader has not committed yet.
    net.drop_types.add(MessageType.APP)
    net.stabilize()
    assert net[1].rn.role == StateRole.LEADER
    net[1].rn.read_index(b"early")
    net.stabilize()
    assert net[1].read_states == []
    net.heal()
    net.tick(2)
    assert len(net[1].read_states) == 1
    rs = net[1].read_states[0]
    assert rs.request_ctx == b"early"
    assert net[1].raft.raft_log.term(rs.index) == net[1].rn.term


def test_follower_read_index_is_forwarded_to_leader():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.propose(1, b"a")
    net[3].rn.read_index(b"f")
    net.stabilize()
    assert [(rs.index, rs.request_ctx) for rs in net[3].read_states] == [
        (net[1].rn.status().commit, b"f")]


def test_follower_read_index_without_leader_is_dropped():
    net = Network([1, 2, 3])
    with pytest.raises(ProposalDropped):
        net[2].rn.read_index(b"x")


# --- Lease reads ----------------------------------------------------------------------
def _lease_cluster(drift: int, **kw) -> Network:
    net = Network([1, 2, 3], read_only_option=LEASE, election_tick=10,
                  lease_drift_ticks=drift, **kw)
    # With lease reads a fresh node refuses votes for one election timeout.
    for _ in range(100):
        net.tick(1)
        if net.leaders():
            break
    assert net.leaders(), "no leader after the vote embargo"
    net.tick(2)  # a heartbeat round establishes the lease
    lead = net.leader()
    net.propose(lead, b"a")
    return net


def test_lease_read_answers_without_heartbeat_round():
    net = _lease_cluster(drift=1)
    lead = net.leader()
    r = net[lead].rn
    assert r.status().lease_valid
    r.read_index(b"lease")
    rd = r.ready()
    assert [rs.request_ctx for rs in rd.read_states] == [b"lease"]
    assert not any(m.context == b"lease" for m in rd.messages)
    r.advance(rd)


def test_lease_read_falls_back_to_heartbeat_when_lease_expired():
    net = _lease_cluster(drift=1)
    lead = net.leader()
    net.isolate(lead)
    net.tick(9, ids=[lead])
    assert not net[lead].rn.status().lease_valid
    net[lead].rn.read_index(b"late")
    net.stabilize()
    assert net[lead].read_states == []  # no quorum to confirm it


def _run_drift(net: Network, lead: int, extra_every: int, steps: int) -> list[int]:
    """Leader ticks once per step; followers tick once plus one extra every
    ``extra_every`` steps. Returns the steps at which lease and a new leader overlapped."""
    others = [i for i in net.nodes if i != lead]
    net.isolate(lead)
    overlaps = []
    for step in range(1, steps + 1):
        net[lead].rn.tick()
        for i in others:
            net[i].rn.tick()
            if extra_every and step % extra_every == 0:
                net[i].rn.tick()
        net.stabilize()
        new_leader = any(net[i].rn.role == StateRole.LEADER for i in others)
        if new_leader and net[lead].rn.status().lease_valid:
            overlaps.append(step)
    assert any(net[i].rn.role == StateRole.LEADER for i in others), "no new leader"
    return overlaps


def test_lease_holds_under_bounded_clock_drift():
    """Followers run one tick fast per election timeout (== lease_drift_ticks): the old
    leader's lease always expires before any other node becomes leader."""
    for seed in range(5):
        net = _lease_cluster(drift=1, seed=seed)
        assert _run_drift(net, net.leader(), extra_every=10, steps=40) == []


def test_lease_breaks_when_drift_exceeds_the_bound():
    """Negative control: the same scenario with followers far faster than the assumed
    bound lets a new leader appear while the old lease is still believed valid."""
    overlapped = 0
    for seed in range(5):
        net = _lease_cluster(drift=0, seed=seed)
        overlapped += bool(_run_drift(net, net.leader(), extra_every=1, steps=40))
    assert overlapped


def test_paused_leader_lease_expired_before_new_leader_elected():
    """A leader whose process is paused stops ticking. The others need at least
    election_tick ticks to elect a new leader; the lease lasts election_tick -
    lease_drift_ticks leader ticks, so once the resumed leader has caught up the ticks
    real time owes it, its lease has expired."""
    net = _lease_cluster(drift=1)
    old = net.leader()
    others = [i for i in net.nodes if i != old]
    net.isolate(old)  # paused: no ticks, no messages
    elapsed = 0
    while not any(net[i].rn.role == StateRole.LEADER for i in others):
        net.tick(1, ids=others)
        elapsed += 1
        assert elapsed < 100
    assert elapsed >= net[old].cfg.election_tick
    assert elapsed > net[old].cfg.election_tick - net[old].cfg.lease_drift_ticks
    assert net[old].rn.status().lease_valid  # frozen clock: it still believes
    for _ in range(elapsed):  # catch-up ticks on resume
        net[old].rn.tick()
    assert not net[old].rn.status().lease_valid
    net[old].rn.read_index(b"stale?")
    net.flush_ready([old])
    assert net[old].read_states == []


def test_restarted_node_refuses_votes_for_an_election_timeout_with_leases():
    net = _lease_cluster(drift=1)
    lead = net.leader()
    f = next(i for i in net.nodes if i != lead)
    net.restart(f)
    assert net[f].raft.vote_embargo_ticks == 10


# --- Leadership transfer ----------------------------------------------------------------
def test_transfer_to_up_to_date_follower():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.propose(1, b"a")
    net[1].rn.transfer_leader(2)
    net.stabilize()
    assert net.leader() == 2
    net.propose(2, b"b")
    assert net[1].applied == [b"a", b"b"]


def test_transfer_to_lagging_follower_catches_it_up_first():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.heal()
    net[1].rn.transfer_leader(3)
    net.stabilize()
    assert net.leader() == 3
    assert net[3].applied == [b"%d" % i for i in range(5)]


def test_transfer_request_on_follower_is_forwarded():
    net = Network([1, 2, 3])
    net.campaign(1)
    net[3].rn.transfer_leader(3)
    net.stabilize()
    assert net.leader() == 3


def test_transfer_request_for_another_node_keeps_the_transferee_when_forwarded():
    net = Network([1, 2, 3])
    net.campaign(1)
    net[2].rn.transfer_leader(3)  # asked on follower 2, target 3
    net.stabilize()
    assert net.leader() == 3


def test_proposal_during_transfer_is_dropped_with_reason():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"a")
    net[1].rn.transfer_leader(3)  # 3 is behind and unreachable: transfer stays pending
    net.stabilize()
    assert net[1].rn.status().lead_transferee == 3
    with pytest.raises(ProposalDropped) as ei:
        net[1].rn.propose(b"b")
    assert "transfer" in ei.value.reason
    assert ei.value.leader_id == 1


def test_transfer_aborts_after_election_timeout():
    net = Network([1, 2, 3], election_tick=10)
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"a")
    net[1].rn.transfer_leader(3)
    net.tick(10)
    assert net[1].rn.role == StateRole.LEADER
    assert net[1].rn.status().lead_transferee == 0
    net.propose(1, b"after")  # accepted again
    assert net[2].applied[-1] == b"after"


def test_leader_loses_quorum_while_transfer_pending():
    net = Network([1, 2, 3], election_tick=10)
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"a")
    net[1].rn.transfer_leader(3)
    net.isolate(1)  # now the leader cannot reach anyone
    net.tick(20, ids=[1])
    assert net[1].rn.role == StateRole.FOLLOWER
    assert net[1].rn.status().lead_transferee == 0
    net.heal()
    net.tick(40)
    assert len(net.leaders()) == 1
    lead = net.leader()
    net.propose(lead, b"b")
    assert all(n.applied[-1] == b"b" for n in net.nodes.values())


def test_transfer_to_learner_is_ignored():
    net = Network([1, 2, 3], voters=[1, 2], learners=[3])
    net.campaign(1)
    net[1].rn.transfer_leader(3)
    net.stabilize()
    assert net.leader() == 1
    assert net[1].rn.status().lead_transferee == 0


def test_lease_is_revoked_for_the_term_once_timeout_now_was_sent():
    """A delayed TIMEOUT_NOW can start a forced election after the transfer was
    aborted; the old leader must not serve lease reads for the rest of its term."""
    net = _lease_cluster(drift=1)
    lead = net.leader()
    other = next(i for i in net.nodes if i != lead)
    net.drop_types.add(MessageType.TIMEOUT_NOW)  # the message is "delayed" forever
    net[lead].rn.transfer_leader(other)
    net.stabilize()
    net.tick(net[lead].cfg.election_tick)  # the transfer aborts
    assert net[lead].rn.role == StateRole.LEADER
    assert net[lead].rn.status().lead_transferee == 0
    assert not net[lead].rn.status().lease_valid
