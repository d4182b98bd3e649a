"""Election, replication and the commit rule: the core claims of the Raft paper."""

from __future__ import annotations

import random

import pytest

from geokv.raft import (
    Config,
    ConfigError,
    ConfState,
    MemoryStorage,
    MessageType,
    ProposalDropped,
    RawNode,
    StateRole,
)

from .harness import Network


def test_single_node_elects_itself_and_commits():
    net = Network([1])
    net.campaign(1)
    assert net[1].rn.role == StateRole.LEADER
    net.propose(1, b"x")
    assert net[1].applied == [b"x"]
    assert net[1].rn.status().commit == 2  # empty leader entry + b"x"


def test_three_nodes_elect_exactly_one_leader_by_ticking():
    net = Network([1, 2, 3], seed=7)
    net.tick(30)
    assert len(net.leaders()) == 1
    lead = net.leader()
    for n in net.nodes.values():
        assert n.rn.leader_id == lead
        assert n.rn.term == net[lead].rn.term


def test_election_timeout_is_randomized_in_range():
    net = Network([1], election_tick=10)
    seen = set()
    for _ in range(300):
        net[1].raft.reset_randomized_election_timeout()
        seen.add(net[1].raft.randomized_election_timeout)
    assert min(seen) == 10 and max(seen) == 19


def test_randomized_election_ticks_override():
    net = Network([1], election_tick=10, randomized_election_ticks=(12, 15))
    seen = set()
    for _ in range(300):
        net[1].raft.reset_randomized_election_timeout()
        seen.add(net[1].raft.randomized_election_timeout)
    assert seen == {12, 13, 14}


def test_override_below_election_tick_is_refused():
    with pytest.raises(ConfigError):
        Network([1], election_tick=10, randomized_election_ticks=(5, 15))


def test_log_replication_reaches_all_and_applies_in_order():
    net = Network([1, 2, 3])
    net.campaign(1)
    for i in range(20):
        net.propose(1, b"v%d" % i)
    for n in net.nodes.values():
        assert n.applied == [b"v%d" % i for i in range(20)]
    assert net.logs(1) == net.logs(2) == net.logs(3)


def test_leader_appends_empty_entry_on_election():
    net = Network([1, 2, 3])
    net.campaign(1)
    log = net.logs(1)
    assert log[-1] == (net[1].rn.term, 1, b"")


def test_follower_forwards_proposal_to_leader():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.propose(2, b"from-follower")
    for n in net.nodes.values():
        assert n.applied == [b"from-follower"]


def test_proposal_without_leader_is_dropped_with_reason():
    net = Network([1, 2, 3])
    with pytest.raises(ProposalDropped) as ei:
        net[2].rn.propose(b"x")
    assert ei.value.leader_id == 0
    assert "no leader" in ei.value.reason


def test_proposal_forwarding_disabled():
    net = Network([1, 2, 3], disable_proposal_forwarding=True)
    net.campaign(1)
    with pytest.raises(ProposalDropped) as ei:
        net[2].rn.propose(b"x")
    assert ei.value.leader_id == 1
    assert "forwarding" in ei.value.reason


def test_vote_only_once_per_term():
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net[1].rn.campaign()
    net[2].rn.campaign()
    net.stabilize()
    assert len(net.leaders()) <= 1


def test_candidate_with_stale_log_loses():
    """Election restriction (§5.4.1): a node missing committed entries cannot win."""
    net = Network([1, 2, 3], pre_vote=False)
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.heal()
    # Node 3 campaigns with a shorter log; 1 and 2 refuse, it stays non-leader.
    net[3].raft.check_quorum = False
    for n in net.nodes.values():
        n.raft.check_quorum = False
    net.campaign(3)
    assert net[3].rn.role != StateRole.LEADER


def test_only_current_term_entries_commit_by_counting():
    """Figure 8: an old-term entry replicated to a majority is not committed by counting."""
    net = Network([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False)
    net.campaign(1)
    # Leader 1 appends an entry seen only by 2, then is cut off.
    net.isolate(1)
    net.cut_links.discard((1, 2))
    net.cut_links.discard((2, 1))
    net.cut_links.add((2, 1))  # 1's append reaches 2, acks do not come back
    net.propose(1, b"old")
    assert net[2].raft.raft_log.last_index() == 2
    commit_1 = net[1].rn.status().commit
    # Node 5 becomes leader of a new term without the entry; 1 returns as follower.
    net.heal()
    net.isolate(1)
    net.isolate(2)
    for j in (3, 4, 5):
        for k in (3, 4, 5):
            net.cut_links.discard((j, k))
    net.campaign(5)
    assert net[5].rn.role == StateRole.LEADER
    assert net[1].rn.status().commit == commit_1
    # Make sure entry 2 ("old", term 1) never counted as committed at node 1 or 2.
    assert all(e.data != b"old" for e in net[2].applied_entries)


def test_stale_leader_steps_down_on_higher_term_response():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(1)
    net.tick(40, ids=[2, 3])
    new_lead = net.leader() if net[1].rn.role != StateRole.LEADER else None
    assert net[2].rn.role == StateRole.LEADER or net[3].rn.role == StateRole.LEADER
    net.heal()
    net.tick(3)
    assert net[1].rn.role == StateRole.FOLLOWER
    assert len(net.leaders()) == 1
    del new_lead


def test_leader_steps_down_without_quorum_check_quorum():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.isolate(1)
    net.tick(2 * 10 + 1, ids=[1])
    assert net[1].rn.role == StateRole.FOLLOWER


def test_restart_recovers_hard_state_and_log():
    net = Network([1, 2, 3])
    net.campaign(1)
    net.propose(1, b"a")
    term = net[2].rn.term
    n2 = net.restart(2)
    assert n2.rn.term == term
    assert net.logs(2) == net.logs(1)
    net.propose(1, b"b")
    assert n2.applied[-1] == b"b"


def test_config_validation_is_clear():
    with pytest.raises(ConfigError):
        RawNode(Config(id=0, rng=random.Random(1)), MemoryStorage(ConfState(voters=(1,))))
    with pytest.raises(ConfigError):
        RawNode(Config(id=1), MemoryStorage(ConfState(voters=(1,))))
    with pytest.raises(ConfigError):
        RawNode(Config(id=1, rng=random.Random(1), check_quorum=False,
                       read_only_option=1), MemoryStorage(ConfState(voters=(1,))))


def test_local_message_types_cannot_be_stepped_from_peers():
    net = Network([1])
    from geokv.raft import Message
    with pytest.raises(ValueError):
        net[1].rn.step(Message(MessageType.HUP, 1, 2))
