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
    election_range_ms,
    election_range_ticks,
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


def test_election_ranges_tile_the_window_in_rank_order():
    ranges = [election_range_ms(1000, r, 3) for r in range(3)]
    assert ranges[0][0] == 1000 and ranges[-1][1] == pytest.approx(2000)
    for (lo1, hi1), (lo2, hi2) in zip(ranges, ranges[1:]):
        assert hi1 <= lo2
    for r in range(5):
        lo, hi = election_range_ticks(10, r, 5)
        assert 10 <= lo < hi <= 20


def test_biased_rng_closest_member_times_out_first():
    # Simulate many elections: each voter draws its timeout from its biased rng; the
    # rank-0 voter must always fire first when ranges do not overlap.
    et = 10
    rngs = [BiasedElectionRng(et, rank, 3, seed=rank) for rank in range(3)]
    winners = Counter()
    for _ in range(500):
        timeouts = [et + r.randrange(et) for r in rngs]
        assert all(et <= t < 2 * et for t in timeouts)
        winners[min(range(3), key=lambda i: (timeouts[i], i))] += 1
    assert winners[0] == 500


def test_biased_rng_other_draws_are_uniform():
    rng = BiasedElectionRng(10, 2, 3, seed=1)
    assert {rng.randrange(7) for _ in range(500)} == set(range(7))
