from __future__ import annotations

from collections import Counter

import pytest

from geokv.geo.timeouts import (
    ELECTION_HEARTBEAT_RATIO,
    HEARTBEAT_MIN_MS,
    SHRINK_HOLD_S,
    BiasedElectionRng,
    TimeoutPlan,
    TimeoutTuner,
    derive_for_topology,
    derive_timeouts,
    election_slot_ticks,
)
from geokv.geo.topology import MemberPlacement, Topology


def test_loopback_gets_the_minimum_heartbeat():
    plan = derive_timeouts(0.2, 0.2, fsync_p99_ms=2.0)
    assert plan.heartbeat_interval_ms == HEARTBEAT_MIN_MS
    assert plan.election_timeout_ms == ELECTION_HEARTBEAT_RATIO * HEARTBEAT_MIN_MS


@pytest.mark.parametrize("max_rtt, quorum_rtt, fsync", [(190, 120, 10), (300, 300, 50), (75, 75, 1), (1000, 40, 5)])
def test_margins_hold(max_rtt, quorum_rtt, fsync):
    plan = derive_timeouts(max_rtt, quorum_rtt, fsync)
    assert plan.heartbeat_interval_ms >= max_rtt / 2
    assert plan.election_timeout_ms >= ELECTION_HEARTBEAT_RATIO * plan.heartbeat_interval_ms
    assert plan.election_timeout_ms >= 4 * (quorum_rtt + fsync)
    assert plan.election_tick * plan.tick_ms >= plan.election_timeout_ms


def test_three_continents():
    t = Topology(
        [MemberPlacement(1, "us-east"), MemberPlacement(2, "eu-west"), MemberPlacement(3, "ap-south")]
    )
    plan = derive_for_topology(t, fsync_p99_ms=10)
    assert plan == TimeoutPlan(heartbeat_interval_ms=100.0, election_timeout_ms=1000.0)
    assert plan.election_tick == 10


def feed(tuner: TimeoutTuner, rtt_ms: float, n: int = 50) -> None:
    for i in range(n):
        tuner.observe_rtt(2, rtt_ms)
        tuner.observe_rtt(3, rtt_ms)


def test_tuner_grows_at_once_and_shrinks_only_after_hold():
    tuner = TimeoutTuner(derive_timeouts(10, 10))
    feed(tuner, 400)
    grown = tuner.update(0.0, n_voters=3)
    assert tuner.changed and grown.heartbeat_interval_ms >= 200
    feed(tuner, 10, n=1000)  # the window forgets the slow samples
    assert tuner.update(1.0, 3) == grown          # lower, but not held yet
    assert tuner.update(1.0 + SHRINK_HOLD_S - 1, 3) == grown
    shrunk = tuner.update(1.0 + SHRINK_HOLD_S, 3)
    assert tuner.changed and shrunk.election_timeout_ms < grown.election_timeout_ms


def test_tuner_never_shrinks_below_p99():
    tuner = TimeoutTuner(derive_timeouts(400, 400))
    # 98% fast samples, 2% slow: the p99 is slow, so the plan must stay large.
    for i in range(500):
        tuner.observe_rtt(2, 400 if i % 50 == 0 else 10)
        tuner.observe_rtt(3, 400 if i % 50 == 0 else 10)
    for t in range(0, 1000, 10):
        plan = tuner.update(float(t), 3)
    assert plan.heartbeat_interval_ms >= 200


def test_tuner_small_wobble_does_not_change_plan():
    tuner = TimeoutTuner(derive_timeouts(190, 120))
    feed(tuner, 170)
    for t in range(0, 600, 5):
        tuner.update(float(t), 3)
        assert not tuner.changed


def test_rank0_fires_just_after_the_other_followers_leases_expire():
    # Demo geometry: tick 100 ms, E = 10 ticks, max RTT 190 ms (one way 95 ms -> 1 tick).
    assert election_slot_ticks(0, 2, 10, 100.0, 190.0, 120.0) == (12, 14)
    # Rank 1 waits for two vote rounds (2 x 120 ms) and a heartbeat (95 ms): 4 ticks + 1.
    assert election_slot_ticks(1, 2, 10, 100.0, 190.0, 120.0) == (19, 24)
    # Alone among the followers: plain Raft.
    assert election_slot_ticks(0, 1, 10, 100.0, 190.0, 120.0) == (10, 20)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
@pytest.mark.parametrize("tick_ms, max_rtt, quorum_rtt", [(50, 40, 20), (100, 190, 120), (100, 300, 300)])
def test_slots_are_ordered_disjoint_and_never_below_election_tick(n, tick_ms, max_rtt, quorum_rtt):
    et = 10
    slots = [election_slot_ticks(r, n, et, tick_ms, max_rtt, quorum_rtt) for r in range(n)]
    for lo, hi in slots:
        assert et < lo < hi
    for (lo1, hi1), (lo2, hi2) in zip(slots, slots[1:]):
        assert hi1 <= lo2
    # the margin covers the worst heartbeat skew (one one-way delay) plus a tick
    assert (slots[0][0] - et) * tick_ms >= max_rtt / 2 + tick_ms
    # the gap lets rank 0 finish two vote rounds before rank 1 can start
    assert (slots[1][0] - slots[0][1]) * tick_ms >= 2 * quorum_rtt


def test_biased_rng_closest_member_times_out_first():
    # Many elections: each follower draws from its biased rng; rank 0 always fires first.
    et = 10
    rngs = []
    for rank in range(3):
        r = BiasedElectionRng(et, seed=rank)
        r.set_slot(*election_slot_ticks(rank, 3, et, 100.0, 190.0, 120.0))
        rngs.append(r)
    winners = Counter()
    for _ in range(500):
        timeouts = [et + r.randrange(et) for r in rngs]
        assert all(t > et for t in timeouts)
        winners[min(range(3), key=lambda i: (timeouts[i], i))] += 1
    assert winners[0] == 500


def test_biased_rng_is_plain_raft_until_a_slot_is_set():
    r = BiasedElectionRng(10, seed=3)
    assert {r.randrange(10) for _ in range(500)} == set(range(10))


def test_biased_rng_other_draws_are_uniform():
    rng = BiasedElectionRng(10, seed=1)
    rng.set_slot(16, 20)
    assert {rng.randrange(7) for _ in range(500)} == set(range(7))
