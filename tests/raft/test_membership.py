"""Membership: simple changes, joint consensus, learners, the one-pending rule."""

from __future__ import annotations

import pytest

from geokv.raft import (
    ConfChange,
    ConfChangeSingle as S,
    ConfChangeTransition as T,
    ConfChangeType as CT,
    ConfState,
    MessageType,
    ProposalDropped,
    StateRole,
)
from geokv.raft.confchange import Changer, ConfChangeError, restore

from .harness import Network


def add(i):
    return ConfChange((S(CT.ADD_NODE, i),))


def remove(i):
    return ConfChange((S(CT.REMOVE_NODE, i),))


def learner(i):
    return ConfChange((S(CT.ADD_LEARNER, i),))


def conf(net, i) -> ConfState:
    return net[i].rn.status().config


def test_single_change_refused_until_leader_commits_in_its_term():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.stabilize()
    net[1].rn.campaign()
    net.drop_types.add(MessageType.APP)  # the new leader's empty entry cannot commit
    net.stabilize()
    assert net[1].rn.role == StateRole.LEADER
    with pytest.raises(ProposalDropped) as ei:
        net[1].rn.propose_conf_change(remove(3))
    assert "committed an entry in its term" in ei.value.reason
    net.heal()
    net.tick(2)
    net[1].rn.propose_conf_change(remove(3))
    net.stabilize()
    assert conf(net, 1).voters == (1, 2)


def test_only_one_pending_conf_change():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.isolate(2)
    net.isolate(3)  # keep the first change uncommitted
    net[1].rn.propose_conf_change(learner(4))
    net.stabilize()
    with pytest.raises(ProposalDropped) as ei:
        net[1].rn.propose_conf_change(learner(5))
    assert "pending" in ei.value.reason
    net.heal()
    net.tick(2)
    net[1].rn.propose_conf_change(learner(5))
    net.stabilize()
    assert conf(net, 1).learners == (4, 5)


def test_add_node_joins_and_counts_for_commit():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.propose(1, b"a")
    net.add_node(4)  # empty storage, empty config: learns everything from the leader
    net[1].rn.propose_conf_change(add(4))
    net.stabilize()
    assert conf(net, 1).voters == (1, 2, 3, 4)
    assert conf(net, 4).voters == (1, 2, 3, 4)
    net.propose(1, b"b")
    assert net[4].applied == [b"a", b"b"]
    # With 4 voters, a quorum is 3: losing 2 of them stops commits.
    net.isolate(3)
    net.isolate(4)
    c = net[1].rn.status().commit
    net[1].rn.propose(b"c")
    net.stabilize()
    assert net[1].rn.status().commit == c


def test_remove_follower_then_cluster_of_two_works():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net[1].rn.propose_conf_change(remove(3))
    net.stabilize()
    assert conf(net, 1).voters == (1, 2)
    net.isolate(3)
    net.propose(1, b"x")
    assert net[2].applied == [b"x"]


def test_removed_leader_steps_down_and_others_elect():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net[1].rn.propose_conf_change(remove(1))
    net.stabilize()
    assert net[1].rn.role == StateRole.FOLLOWER
    net.tick(40, ids=[2, 3])
    assert net[2].rn.role == StateRole.LEADER or net[3].rn.role == StateRole.LEADER


def test_learner_promotion():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.add_node(4)
    net[1].rn.propose_conf_change(learner(4))
    net.stabilize()
    assert conf(net, 1).learners == (4,)
    net[1].rn.propose_conf_change(add(4))
    net.stabilize()
    assert conf(net, 1).voters == (1, 2, 3, 4) and conf(net, 1).learners == ()


def test_joint_auto_leave():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.add_node(4)
    net.add_node(5)
    cc = ConfChange((S(CT.ADD_NODE, 4), S(CT.ADD_NODE, 5), S(CT.REMOVE_NODE, 3)))
    net[1].rn.propose_conf_change(cc)
    net.stabilize()
    states = net[1].conf_states[3:]  # after the three bootstrap entries
    assert states[0].voters == (1, 2, 4, 5) and states[0].voters_outgoing == (1, 2, 3)
    assert states[0].auto_leave
    assert states[-1] == ConfState(voters=(1, 2, 4, 5))
    assert net[4].conf_states[-1] == ConfState(voters=(1, 2, 4, 5))


def test_joint_explicit_leave_and_no_other_change_while_joint():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.add_node(4)
    cc = ConfChange((S(CT.ADD_NODE, 4),), T.EXPLICIT)
    net[1].rn.propose_conf_change(cc)
    net.stabilize()
    assert conf(net, 1).voters_outgoing == (1, 2, 3)
    net.tick(5)
    assert conf(net, 1).voters_outgoing == (1, 2, 3)  # stays joint
    with pytest.raises(ProposalDropped) as ei:
        net[1].rn.propose_conf_change(remove(2))
    assert "joint" in ei.value.reason
    net[1].rn.propose_conf_change(ConfChange())
    net.stabilize()
    assert conf(net, 1) == ConfState(voters=(1, 2, 3, 4))


def test_leave_joint_when_not_joint_is_refused():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    with pytest.raises(ProposalDropped):
        net[1].rn.propose_conf_change(ConfChange())


def test_joint_commit_needs_both_majorities():
    """C_old={1,2,3}, C_new={1,4,5}: with 2 and 3 cut off, 1+4+5 is a majority of
    C_new only, so nothing commits while joint."""
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.add_node(4)
    net.add_node(5)
    cc = ConfChange((S(CT.ADD_NODE, 4), S(CT.ADD_NODE, 5), S(CT.REMOVE_NODE, 2),
                     S(CT.REMOVE_NODE, 3)), T.EXPLICIT)
    net[1].rn.propose_conf_change(cc)
    net.stabilize()
    assert conf(net, 1).voters == (1, 4, 5) and conf(net, 1).voters_outgoing == (1, 2, 3)
    net.isolate(2)
    net.isolate(3)
    c = net[1].rn.status().commit
    net[1].rn.propose(b"joint")
    net.stabilize()
    assert net[1].rn.status().commit == c
    assert net[4].raft.raft_log.last_index() > c  # replicated, just not committed
    net.heal()
    net.stabilize()
    net.tick(1)
    assert net[1].rn.status().commit > c


def test_joint_election_needs_both_majorities():
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False, bootstrap_log=True)
    net.campaign(1)
    net.add_node(4)
    net.add_node(5)
    cc = ConfChange((S(CT.ADD_NODE, 4), S(CT.ADD_NODE, 5), S(CT.REMOVE_NODE, 2),
                     S(CT.REMOVE_NODE, 3)), T.EXPLICIT)
    net[1].rn.propose_conf_change(cc)
    net.stabilize()
    # Node 4 campaigns with only C_new reachable (1 is out too): it must not win.
    net.isolate(1)
    net.isolate(2)
    net.isolate(3)
    net.cut_links.discard((4, 5))
    net.cut_links.discard((5, 4))
    net.campaign(4)
    assert net[4].rn.role != StateRole.LEADER
    # With node 2 reachable too, it has 4,5 (of C_new... needs 1 or 2 of 3 in C_old: 2)
    # plus it needs a C_new majority: 4,5. Wins.
    net.heal()
    net.isolate(1)
    net.isolate(3)
    for a, b in ((2, 4), (2, 5), (4, 5)):
        net.cut_links.discard((a, b))
        net.cut_links.discard((b, a))
    net.campaign(4)
    assert net[4].rn.role != StateRole.LEADER  # C_old {1,2,3}: only 2 => no majority
    net.cut_links.discard((3, 4))
    net.cut_links.discard((4, 3))
    net.campaign(4)
    assert net[4].rn.role == StateRole.LEADER


def test_joint_leader_removed_keeps_leading_until_leave_then_steps_down():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    net.add_node(4)
    cc = ConfChange((S(CT.REMOVE_NODE, 1), S(CT.ADD_NODE, 4)), T.EXPLICIT)
    net[1].rn.propose_conf_change(cc)
    net.stabilize()
    assert net[1].rn.role == StateRole.LEADER  # still a voter of C_old
    net[1].rn.propose_conf_change(ConfChange())
    net.stabilize()
    assert net[1].rn.role == StateRole.FOLLOWER
    net.tick(40, ids=[2, 3, 4])
    assert len([i for i in (2, 3, 4) if net[i].rn.role == StateRole.LEADER]) == 1


def test_demote_voter_to_learner_through_joint():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    cc = ConfChange((S(CT.ADD_LEARNER, 3),), T.EXPLICIT)
    net[1].rn.propose_conf_change(cc)
    net.stabilize()
    cs = conf(net, 1)
    assert cs.voters == (1, 2) and cs.voters_outgoing == (1, 2, 3) and cs.learners_next == (3,)
    net[1].rn.propose_conf_change(ConfChange())
    net.stabilize()
    assert conf(net, 1) == ConfState(voters=(1, 2), learners=(3,))
    net.tick(50, ids=[3])
    assert net[3].rn.role == StateRole.FOLLOWER  # learners never campaign


def test_invalid_change_refused_at_proposal():
    net = Network([1])
    net.campaign(1)
    with pytest.raises(ProposalDropped) as ei:
        net[1].rn.propose_conf_change(remove(1))
    assert "removed all voters" in ei.value.reason
    with pytest.raises(ProposalDropped):
        net[1].rn.propose_conf_change(ConfChange((S(CT.ADD_NODE, 2), S(CT.ADD_NODE, 3)),
                                                 T.AUTO).__class__((S(CT.ADD_NODE, 0),)))


def test_invalid_change_applied_is_ignored_deterministically():
    net = Network([1, 2, 3])
    cs = net[1].rn.apply_conf_change(ConfChange())  # leave while not joint
    assert cs == ConfState(voters=(1, 2, 3))


def test_changer_simple_refuses_two_voter_changes():
    cfg, prs = restore(ConfState(voters=(1, 2, 3)), 10, 8)
    ch = Changer(cfg, prs, 10, 8)
    with pytest.raises(ConfChangeError):
        ch.simple((S(CT.ADD_NODE, 4), S(CT.ADD_NODE, 5)))
    # Adding a learner and a voter at once touches one voter only: allowed.
    cfg2, _ = ch.simple((S(CT.ADD_NODE, 4), S(CT.ADD_LEARNER, 5)))
    assert cfg2.voters_in == {1, 2, 3, 4} and cfg2.learners == {5}
    # The original config is untouched.
    assert cfg.voters_in == {1, 2, 3}


def test_new_leader_with_unapplied_conf_change_does_not_campaign():
    net = Network([1, 2, 3], bootstrap_log=True)
    net.campaign(1)
    n2 = net[2]
    # Pretend node 2 has a committed but unapplied conf change in its log.
    n2.raft.raft_log.applied = n2.raft.raft_log.applied  # (unchanged)
    net[1].rn.propose_conf_change(learner(4))
    net.flush_ready([1])
    net.deliver()
    # Node 2 now holds the entry; once committed but not applied, hup is refused.
    log = n2.raft.raft_log
    log.commit_to(log.last_index())
    assert n2.raft.has_unapplied_conf_changes()
    n2.rn.campaign()
    assert n2.rn.role == StateRole.FOLLOWER
