"""PreVote, CheckQuorum, leader stickiness and term inflation (known Raft pitfalls)."""

from __future__ import annotations

from geokv.raft import MessageType, StateRole

from .harness import Network


def _partition_and_tick(net: Network, i: int, ticks: int) -> None:
    net.isolate(i)
    net.tick(ticks)


def test_term_inflation_from_partitioned_node_without_prevote():
    """Without PreVote, an isolated node keeps bumping its term and, on rejoin, deposes
    a healthy leader: the pitfall PreVote exists to fix."""
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False, seed=3)
    net.campaign(1)
    term = net[1].rn.term
    _partition_and_tick(net, 3, 100)
    assert net[3].rn.term > term + 3  # inflated
    net.heal()
    net.tick(25)
    # The inflated term reached the leader and forced it to step down.
    assert net[1].rn.term > term


def test_prevote_stops_term_inflation():
    net = Network([1, 2, 3], pre_vote=True, check_quorum=False, seed=3)
    net.campaign(1)
    term = net[1].rn.term
    _partition_and_tick(net, 3, 100)
    assert net[3].rn.term == term  # pre-candidate never adopts a new term
    assert net[3].rn.role == StateRole.PRE_CANDIDATE
    net.heal()
    net.tick(3)
    assert net[1].rn.role == StateRole.LEADER
    assert net[1].rn.term == term
    assert net[3].rn.role == StateRole.FOLLOWER


def test_prevote_with_checkquorum_rejoining_node_does_not_disrupt_leader():
    net = Network([1, 2, 3], pre_vote=True, check_quorum=True, seed=5)
    net.campaign(1)
    net.propose(1, b"a")
    term = net[1].rn.term
    _partition_and_tick(net, 3, 60)
    net.propose(1, b"b")  # the majority keeps working
    net.heal()
    net.tick(30)
    assert net.leader() == 1
    assert net[1].rn.term == term
    assert net[3].applied == [b"a", b"b"]


def test_checkquorum_leader_stickiness_ignores_vote_from_higher_term():
    """A follower that heard from its leader within an election timeout ignores a VOTE
    (even at a higher term) and does not adopt the term."""
    net = Network([1, 2, 3], pre_vote=False, check_quorum=True, seed=2)
    net.campaign(1)
    term = net[1].rn.term
    # Node 3 is forced to campaign (as if its timer fired after a short partition).
    net.isolate(3)
    net[3].rn.campaign()
    net.flush_ready([3])
    net.heal()
    net.stabilize()
    assert net[2].rn.term == term
    assert net[1].rn.role == StateRole.LEADER
    # Node 3's inflated term comes back through APP_RESP rejections; the leader
    # then steps down, but the cluster recovers to one leader quickly.
    net.tick(40)
    assert len(net.leaders()) == 1


def test_checkquorum_without_prevote_partitioned_node_eventually_rejoins():
    net = Network([1, 2, 3], pre_vote=False, check_quorum=True, seed=9)
    net.campaign(1)
    _partition_and_tick(net, 3, 50)
    net.heal()
    net.tick(60)
    assert len(net.leaders()) == 1
    lead = net.leader()
    net.propose(lead, b"z")
    assert all(n.applied[-1:] == [b"z"] for n in net.nodes.values())


def test_leader_steps_down_after_election_timeout_without_quorum():
    net = Network([1, 2, 3], election_tick=10)
    net.campaign(1)
    net.isolate(1)
    # A leader checks quorum once per election timeout; it needs at most two windows.
    net.tick(20, ids=[1])
    assert net[1].rn.role == StateRole.FOLLOWER
    assert net[1].rn.leader_id == 0


def test_learner_never_campaigns():
    net = Network([1, 2, 3], voters=[1, 2], learners=[3])
    net.tick(100, ids=[3])
    assert net[3].rn.role == StateRole.FOLLOWER
    assert not any(m.frm == 3 and m.type in (MessageType.VOTE, MessageType.PRE_VOTE)
                   for m in net.delivered)


def test_learner_is_not_counted_for_commit_or_election():
    net = Network([1, 2, 3], voters=[1, 2], learners=[3])
    net.campaign(1)
    net.propose(1, b"a")
    assert net[3].applied == [b"a"]
    # Without voter 2, the learner's ack must not commit anything.
    net.isolate(2)
    commit = net[1].rn.status().commit
    net[1].rn.propose(b"b")
    net.stabilize()
    assert net[1].rn.status().commit == commit
    assert net[3].raft.raft_log.last_index() > commit  # learner has it, uncommitted


def test_votes_and_acks_wait_for_persistence_leader_append_does_not():
    net = Network([1, 2, 3])
    net[1].rn.campaign()
    rd = net[1].rn.ready()
    assert rd.hard_state is None and not rd.must_sync  # a pre-candidate changes nothing
    types_now = {m.type for m in rd.messages}
    types_after = {m.type for m in rd.persisted_messages}
    # With PreVote the first round is PRE_VOTE, which changes no durable state.
    assert MessageType.PRE_VOTE in types_now | types_after
    net.send(rd.messages + rd.persisted_messages)
    net[1].rn.advance(rd)
    net.stabilize()
    assert net.leader() == 1
    net[1].rn.propose(b"x")
    rd = net[1].rn.ready()
    assert {m.type for m in rd.messages} == {MessageType.APP}
    assert not rd.persisted_messages
    net[1].storage.append(rd.entries)
    net.send(rd.messages)
    net[1].rn.advance(rd)
    net.deliver()
    rd2 = net[2].rn.ready()
    assert not rd2.messages
    assert {m.type for m in rd2.persisted_messages} == {MessageType.APP_RESP}
    net[2].rn.advance(rd2)


def test_candidate_vote_request_is_sent_only_after_persisting():
    net = Network([1, 2, 3], pre_vote=False)
    net[1].rn.campaign()
    rd = net[1].rn.ready()
    assert rd.hard_state.vote == 1
    assert {m.type for m in rd.persisted_messages} == {MessageType.VOTE}
    assert not rd.messages
    net[1].rn.advance(rd)


def test_leader_commit_counts_own_log_only_after_persist():
    """Two of three voters are the leader plus one follower: until the leader has
    persisted, a single follower ack must not commit."""
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(3)
    r1 = net[1].rn
    r1.propose(b"x")
    rd = r1.ready()
    commit0 = r1.status().commit
    net.send(rd.messages)
    net.flush_ready([2])
    net.deliver()  # node 2 acked, APP_RESP delivered to 1
    net.flush_ready([2])
    net.deliver()
    assert r1.status().commit == commit0  # own entry not durable yet
    net[1].storage.append(rd.entries)
    r1.advance(rd)
    assert r1.status().commit == commit0 + 1
