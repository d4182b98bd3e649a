"""RawNode.set_timing: heartbeat / election ticks of a running node, and lease safety
while members change them at different moments."""

from __future__ import annotations

import pytest

from geokv.raft import StateRole
from geokv.raft.config import ConfigError
from geokv.raft.types import MessageType, ReadOnlyOption

from .harness import Network

LEASE = ReadOnlyOption.LEASE_BASED


def _lease_cluster(seed: int = 0, **kw) -> Network:
    net = Network([1, 2, 3], read_only_option=LEASE, election_tick=10, lease_drift_ticks=1,
                  seed=seed, **kw)
    for _ in range(100):
        net.tick(1)
        if net.leaders():
            break
    assert net.leaders(), "no leader after the vote embargo"
    net.tick(2)
    net.propose(net.leader(), b"a")
    return net


def test_invalid_timing_is_refused_and_changes_nothing():
    net = _lease_cluster()
    rn = net[net.leader()].rn
    for args in [(0, 10), (5, 5), (1, 1), (1, 10, (9, 12)), (1, 10, (12, 12)), (1.5, 10)]:
        with pytest.raises(ConfigError):
            rn.set_timing(*args)
    assert rn.status().timing == (1, 10)


def test_heartbeat_interval_change_applies_at_once():
    net = _lease_cluster()
    lead = net.leader()
    net[lead].rn.set_timing(3, 15)
    net.delivered.clear()
    net.tick(9)
    beats = [m for m in net.delivered if m.type == MessageType.HEARTBEAT and m.frm == lead]
    assert len(beats) == 2 * 3        # every 3rd tick, to both followers
    assert {(m.log_term, m.reject_hint) for m in beats} == {(15, 3)}   # announced timing
    for i in net.nodes:
        if i != lead:
            assert net[i].rn.status().leader_timing == (3, 15)


def test_follower_election_timeout_change_applies_at_once():
    net = _lease_cluster()
    lead = net.leader()
    f = next(i for i in net.nodes if i != lead)
    net.isolate(lead)
    net[f].rn.set_timing(1, 20, (30, 31))   # campaigns after exactly 30 ticks of silence
    for _ in range(29):
        net.tick(1, ids=[f])
    assert net[f].rn.role == StateRole.FOLLOWER
    net.tick(1, ids=[f])
    assert net[f].rn.role == StateRole.PRE_CANDIDATE


def test_follower_honours_the_leaders_longer_hold_over_its_own_shorter_timeout():
    """A follower that shortened its timeout still refuses votes and does not campaign
    until the hold the leader announced has passed."""
    net = _lease_cluster()
    lead = net.leader()
    f, g = [i for i in net.nodes if i != lead]
    net[lead].rn.set_timing(1, 20)
    net.tick(2)
    net[f].rn.set_timing(1, 5, (5, 6))
    net[g].rn.set_timing(1, 5, (9, 10))
    net.isolate(lead)
    for _ in range(19):
        net.tick(1, ids=[f, g])
        assert net[f].rn.role == StateRole.FOLLOWER and net[g].rn.role == StateRole.FOLLOWER
    # The leader's lease (20 - 1 drift ticks from the last acknowledged stamp) is over
    # before either follower may campaign.
    net.tick(18, ids=[lead], stabilize=False)
    assert net[lead].rn.status().lease_valid
    net.tick(1, ids=[lead], stabilize=False)
    assert not net[lead].rn.status().lease_valid
    for _ in range(10):
        net.tick(1, ids=[f, g])
    assert any(net[i].rn.role == StateRole.LEADER for i in (f, g))


def test_leader_that_lengthens_its_timeout_counts_old_stamps_with_the_old_hold():
    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    assert r.status().lease_valid
    net.isolate(lead)            # no stamp after the change is ever acknowledged
    r.set_timing(1, 30)
    net.tick(8, ids=[lead], stabilize=False)
    assert r.status().lease_valid          # 8 < 10 - 1
    net.tick(1, ids=[lead], stabilize=False)
    assert not r.status().lease_valid      # the acknowledged stamps announced 10, not 30


def test_leader_lease_uses_the_new_hold_once_new_stamps_are_acknowledged():
    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    r.set_timing(1, 30)
    net.tick(2)                  # stamps announcing 30 are acknowledged by both followers
    net.isolate(lead)
    net.tick(27, ids=[lead], stabilize=False)
    assert r.status().lease_valid          # 28 < 30 - 1 ticks since the quorum stamp
    net.tick(2, ids=[lead], stabilize=False)
    assert not r.status().lease_valid


def test_leader_that_shortens_its_timeout_shortens_its_lease_at_once():
    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    net.isolate(lead)
    r.set_timing(1, 5)
    net.tick(3, ids=[lead], stabilize=False)
    assert r.status().lease_valid
    net.tick(1, ids=[lead], stabilize=False)
    assert not r.status().lease_valid      # 5 - 1 ticks, even for stamps that announced 10


def test_remembered_changes_are_bounded_and_stay_conservative():
    from geokv.raft.raft import MAX_LEASE_CHANGES

    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    net.isolate(lead)
    for k in range(3 * MAX_LEASE_CHANGES):
        r.set_timing(1, 10 + (k % 2) * 20)
    assert len(r.raft.lease_changes) <= MAX_LEASE_CHANGES
    net.tick(9, ids=[lead], stabilize=False)
    assert not r.status().lease_valid      # never longer than the smallest hold announced


@pytest.mark.parametrize("seed", range(6))
def test_no_overlap_of_lease_and_new_leader_while_timeouts_change(seed):
    """The leader lengthens its timeout, the followers shorten theirs, then the leader is
    cut off: at no step may a new leader exist while the old one trusts its lease."""
    net = _lease_cluster(seed=seed)
    lead = net.leader()
    others = [i for i in net.nodes if i != lead]
    net[lead].rn.set_timing(1, 25)
    net.tick(1 + seed % 3)
    for i in others:
        net[i].rn.set_timing(1, 4, (4, 6))
    net.isolate(lead)
    new_leader_seen = False
    for _ in range(60):
        for i in net.nodes:
            net[i].rn.tick()
        net.stabilize()
        new_leader = any(net[i].rn.role == StateRole.LEADER for i in others)
        new_leader_seen |= new_leader
        assert not (new_leader and net[lead].rn.status().lease_valid)
    assert new_leader_seen


def test_without_the_announced_hold_the_same_change_breaks_the_lease():
    """The protection above is what makes it safe: with followers on their own (shorter)
    timeouts only, a new leader appears while the old one still trusts its lease."""
    overlaps = 0
    for seed in range(6):
        net = _lease_cluster(seed=seed, announce_lease_hold=False)
        lead = net.leader()
        others = [i for i in net.nodes if i != lead]
        net[lead].rn.set_timing(1, 25)
        net.tick(1 + seed % 3)
        for i in others:
            net[i].rn.set_timing(1, 4, (4, 6))
        net.isolate(lead)
        for _ in range(60):
            for i in net.nodes:
                net[i].rn.tick()
            net.stabilize()
            if any(net[i].rn.role == StateRole.LEADER for i in others) and net[lead].rn.status().lease_valid:
                overlaps += 1
                break
    assert overlaps > 0


def test_lease_valid_with_owed_ticks_is_the_lease_after_delivering_them():
    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    net.isolate(lead)
    for k in range(12):
        ahead = [r.lease_valid(ticks_ahead=a) for a in range(12 - k)]
        for a, valid in enumerate(ahead):
            # what lease_valid() will say once ``a`` more ticks are delivered
            assert valid == (k + a < 9), (k, a)
        net.tick(1, ids=[lead], stabilize=False)


def test_longer_check_quorum_window_keeps_a_leader_whose_acks_are_slow():
    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    r.set_timing(1, 10, None, check_quorum_ticks=20)
    net.tick(1)
    net.isolate(lead)
    for _ in range(19):
        net.tick(1, ids=[lead], stabilize=False)
    assert r.role == StateRole.LEADER            # etcd's rule would have deposed it at 10
    assert not r.status().lease_valid            # but its lease is long gone
    for _ in range(21):                          # the window that saw no answer ends
        net.tick(1, ids=[lead], stabilize=False)
    assert r.role == StateRole.FOLLOWER


def test_a_leader_refuses_pre_votes_whatever_its_check_quorum_window():
    net = _lease_cluster()
    lead = net.leader()
    r = net[lead].rn
    r.set_timing(1, 10, None, check_quorum_ticks=40)
    others = [i for i in net.nodes if i != lead]
    net.cut(others[0], others[1])
    for _ in range(60):
        net.tick(1, ids=[lead] + others[:1])   # node others[1] hears nothing; leader keeps quorum via others[0]
    assert net.leader() == lead and r.term == net[others[0]].rn.term
