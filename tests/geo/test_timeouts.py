from __future__ import annotations

import pytest

from geokv.geo.timeouts import (
    ELECTION_MAX_MS,
    HEARTBEAT_MS,
    JITTER_FLOOR_MS,
    SHRINK_HOLD_S,
    SLOT_JITTER_MS,
    RttStats,
    TimeoutPlan,
    TimeoutTuner,
    derive_for_topology,
    derive_timeouts,
    election_slot_ticks,
)
from geokv.geo.topology import MemberPlacement, Topology

THREE = [MemberPlacement(1, "us-east"), MemberPlacement(2, "eu-west"), MemberPlacement(3, "ap-south")]


def test_loopback_gets_heartbeat_plus_jitter_floor():
    plan = derive_timeouts(0.2)
    assert plan.heartbeat_interval_ms == HEARTBEAT_MS
    assert plan.election_timeout_ms == HEARTBEAT_MS + JITTER_FLOOR_MS + 10   # rounded up


@pytest.mark.parametrize("quorum_rtt, spread", [(120, 0), (300, 50), (75, 1), (40, 200)])
def test_margins_hold(quorum_rtt, spread):
    plan = derive_timeouts(quorum_rtt, spread)
    h, e = plan.heartbeat_interval_ms, plan.election_timeout_ms
    # A follower tolerates a heartbeat late by the jitter allowance ...
    assert e - h >= max(JITTER_FLOOR_MS, 1.5 * spread)
    # ... and a leader anywhere renews its lease before the previous one runs out.
    assert e >= h + quorum_rtt + JITTER_FLOOR_MS
    assert e <= ELECTION_MAX_MS


def test_never_above_the_restart_embargo():
    assert derive_timeouts(5_000, 1_000).election_timeout_ms == ELECTION_MAX_MS


def test_three_continents_fail_over_in_under_a_second_on_paper():
    t = Topology(THREE)
    plan = derive_for_topology(t)
    assert plan == TimeoutPlan(heartbeat_interval_ms=50.0, election_timeout_ms=270.0)
    # Budget from the kill of the us-east leader to a put from ap-south: eu-west's last
    # heartbeat (<= 37.5 ms in flight) + its slot + pre-vote and vote rounds to ap-south
    # (2 x 120) + forward/replicate/ack/commit of the put (4 x 60).
    tick_ms = 10.0
    _hb, et = plan.ticks(tick_ms)
    lo, hi = election_slot_ticks(0, 2, et, tick_ms, quorum_rtt_ms=120.0, max_peer_rtt_ms=190.0)
    budget = 37.5 + hi * tick_ms + 2 * 120 + 4 * 60
    assert budget < 1000.0


def test_plan_ticks():
    assert TimeoutPlan(50.0, 270.0).ticks(10.0) == (5, 27)
    assert TimeoutPlan(100.0, 1000.0).ticks(100.0) == (1, 10)
    assert TimeoutPlan(100.0, 150.0).ticks(100.0) == (1, 2)


def test_tuner_grows_at_once_and_shrinks_only_after_hold():
    small, big = derive_timeouts(10), derive_timeouts(400)
    tuner = TimeoutTuner(small)
    assert tuner.offer(0.0, big) == big and tuner.changed
    assert tuner.offer(1.0, small) == big and not tuner.changed         # lower, not held yet
    assert tuner.offer(SHRINK_HOLD_S, small) == big
    assert tuner.offer(1.0 + SHRINK_HOLD_S, small) == small and tuner.changed


def test_tuner_small_wobble_does_not_change_plan():
    tuner = TimeoutTuner(derive_timeouts(120))
    for t in range(0, 600, 5):
        tuner.offer(float(t), derive_timeouts(110 if t % 2 else 100))
        assert not tuner.changed


def test_rtt_stats_spread_is_p99_minus_p50():
    st = RttStats(window=100, min_samples=50)
    for i in range(49):
        st.observe(2, 100.0)
    assert st.p50_ms() == {} and st.spread_ms() == 0.0     # too few samples to trust
    for i in range(100):
        st.observe(2, 100.0 + (50.0 if i % 50 == 0 else 0.0))
        st.observe(3, 60.0)
    assert st.p99_ms() == {2: 150.0, 3: 60.0}
    assert st.p50_ms() == {2: 100.0, 3: 60.0}
    assert st.spread_ms() == 50.0


def test_rank0_fires_just_after_the_others_refusal_ends():
    # tick 10 ms, E = 27 ticks: one tick of phase + the jitter margin, nothing for the
    # heartbeat skew (the triangle inequality covers it).
    lo, hi = election_slot_ticks(0, 2, 27, 10.0, quorum_rtt_ms=120.0, max_peer_rtt_ms=190.0)
    assert (lo, hi) == (27 + 1 + round(SLOT_JITTER_MS / 10), 27 + 1 + round(SLOT_JITTER_MS / 10) + 2)
    # A non-metric table (skew) pushes it later by the skew.
    lo2, _ = election_slot_ticks(0, 2, 27, 10.0, skew_ms=40.0, quorum_rtt_ms=120.0)
    assert lo2 == lo + 4
    # Alone among the followers: plain Raft.
    assert election_slot_ticks(0, 1, 27, 10.0) == (27, 54)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
@pytest.mark.parametrize("tick_ms, max_rtt, quorum_rtt", [(10, 40, 20), (10, 190, 120), (100, 300, 300)])
def test_slots_are_ordered_disjoint_and_never_below_election_tick(n, tick_ms, max_rtt, quorum_rtt):
    et = 27
    slots = [election_slot_ticks(r, n, et, tick_ms, quorum_rtt_ms=quorum_rtt, max_peer_rtt_ms=max_rtt)
             for r in range(n)]
    for lo, hi in slots:
        assert et < lo < hi
    for (lo1, hi1), (lo2, hi2) in zip(slots, slots[1:]):
        assert hi1 <= lo2
    # the gap lets rank 0 finish two vote rounds before rank 1 can start
    assert (slots[1][0] - slots[0][1]) * tick_ms >= 2 * quorum_rtt


def test_pause_stats_p99_over_a_sliding_window():
    from geokv.geo.timeouts import PauseStats

    st = PauseStats(window_s=10.0, min_samples=100)
    for i in range(99):
        st.observe(0.0, 1.0)
    assert st.p99_ms(0.0) == 0.0                  # too few samples
    st.observe(0.0, 300.0, count=2)               # e.g. two slow fsyncs from a histogram
    assert st.p99_ms(1.0) == 300.0
    assert st.p99_ms(11.0) == 0.0                 # forgotten after the window


def test_measured_pauses_lengthen_the_election_timeout():
    assert derive_timeouts(120, 0, pause_ms=200).election_timeout_ms == 50 + 300 + 120
