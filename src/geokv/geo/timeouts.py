"""Heartbeat and election timeouts derived from measured RTTs, and biased election ranges.

Safe margins (why the numbers are what they are):

* Heartbeat interval >= max RTT to a peer / 2 (and >= ``HEARTBEAT_MIN_MS``). A heartbeat
  then takes at most one interval to land anywhere, so the pipeline of heartbeats is
  never more than one deep; shorter intervals only burn CPU and WAN bandwidth without
  making failure detection any faster than the RTT allows.
* Election timeout = max(``ELECTION_HEARTBEAT_RATIO`` x heartbeat,
  ``ELECTION_QUORUM_FACTOR`` x (max RTT to a quorum + fsync p99)). Ten heartbeats
  (etcd's ratio) means several consecutive heartbeats must be lost before a follower
  campaigns; the quorum term makes sure a candidate can finish a vote round (RTT to its
  quorum plus the voters' fsync of the vote) several times over before anybody else
  times out, so elections converge instead of splitting.
* Never shrink below what the measured p99 supports: the plan is computed from p99 RTTs
  and p99 fsync, not means. Growth applies at once (a too-short timeout causes spurious
  elections, which is the failure to avoid); shrinking needs the lower value to hold
  for ``SHRINK_HOLD_S`` and to be at least ``SHRINK_HYSTERESIS`` lower (no see-saw).
* Biased randomization: Raft draws each follower's election timeout from
  [E, 2E). Here each follower gets a slot by its rank: its RTT to a quorum of the
  survivors (the leader is left out: it is the one that fails). The follower closest to a
  quorum fires first -- just after the other followers' leader leases have expired, or
  its pre-vote would be refused -- and, as it also gathers votes fastest, it becomes the
  leader; the next rank starts only after the first could have finished its election.
  Slots do not overlap, which also makes split votes rarer. See ``election_slot_ticks``. ``BiasedElectionRng``
  plugs this into ``raft.Config.rng`` (the core draws ``randrange(election_tick)`` for the
  random part of its timeout).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

HEARTBEAT_MIN_MS = 50.0            # floor for loopback clusters (no WAN)
HEARTBEAT_MAX_MS = 5_000.0
ELECTION_HEARTBEAT_RATIO = 10      # election timeout >= this many heartbeats (etcd's ratio)
ELECTION_QUORUM_FACTOR = 4.0       # election timeout >= this many vote rounds
FSYNC_P99_DEFAULT_MS = 10.0        # assumed fsync p99 before any measurement
ROUND_TO_MS = 10.0                 # plans are multiples of this (stable numbers, fewer changes)
SHRINK_HYSTERESIS = 0.2            # shrink only if the new plan is >= 20% lower ...
SHRINK_HOLD_S = 60.0               # ... and stayed so for this long
RTT_WINDOW_MAX_SAMPLES = 512       # per-peer samples kept for the p99


@dataclass(slots=True, frozen=True)
class TimeoutPlan:
    heartbeat_interval_ms: float
    election_timeout_ms: float

    @property
    def heartbeat_tick(self) -> int:
        return 1

    @property
    def tick_ms(self) -> float:
        """The driver's tick: one heartbeat interval."""
        return self.heartbeat_interval_ms

    @property
    def election_tick(self) -> int:
        return max(2, math.ceil(self.election_timeout_ms / self.heartbeat_interval_ms))


def _round_up(ms: float) -> float:
    return math.ceil(ms / ROUND_TO_MS) * ROUND_TO_MS


def derive_timeouts(
    max_peer_rtt_ms: float,
    max_quorum_rtt_ms: float,
    fsync_p99_ms: float = FSYNC_P99_DEFAULT_MS,
) -> TimeoutPlan:
    """The plan for the given p99 RTTs (see the module docstring for the margins)."""
    assert max_peer_rtt_ms >= 0 and max_quorum_rtt_ms >= 0 and fsync_p99_ms >= 0
    heartbeat = min(HEARTBEAT_MAX_MS, max(HEARTBEAT_MIN_MS, _round_up(max_peer_rtt_ms / 2.0)))
    election = max(
        ELECTION_HEARTBEAT_RATIO * heartbeat,
        _round_up(ELECTION_QUORUM_FACTOR * (max_quorum_rtt_ms + fsync_p99_ms)),
    )
    return TimeoutPlan(heartbeat_interval_ms=heartbeat, election_timeout_ms=election)


def derive_for_topology(topology, fsync_p99_ms: float = FSYNC_P99_DEFAULT_MS) -> TimeoutPlan:
    """One plan for the whole cluster (all members must agree on the heartbeat)."""
    ids = [m.id for m in topology.members]
    max_peer = max((topology.max_peer_rtt_ms(i) for i in ids), default=0.0)
    max_quorum = max((topology.quorum_rtt_ms(m.id) for m in topology.voters), default=0.0)
    return derive_timeouts(max_peer, max_quorum, fsync_p99_ms)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    assert samples
    s = sorted(samples)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


class TimeoutTuner:
    """Adapts a ``TimeoutPlan`` to RTT and fsync samples, with hysteresis.

    Feed samples with ``observe_rtt(peer, ms)`` / ``observe_fsync(ms)``; call
    ``update(now_s, quorum_rtt_ms_p99)`` to get the plan in force. ``changed`` tells
    whether the last update changed it.
    """

    def __init__(self, initial: TimeoutPlan, *, window: int = RTT_WINDOW_MAX_SAMPLES) -> None:
        self.plan = initial
        self._window = window
        self._rtt: dict[int, list[float]] = {}
        self._fsync: list[float] = []
        self._lower_since_s: float | None = None
        self.changed = False

    def observe_rtt(self, peer_id: int, rtt_ms: float) -> None:
        buf = self._rtt.setdefault(peer_id, [])
        buf.append(rtt_ms)
        if len(buf) > self._window:
            del buf[: len(buf) - self._window]

    def observe_fsync(self, ms: float) -> None:
        self._fsync.append(ms)
        if len(self._fsync) > self._window:
            del self._fsync[: len(self._fsync) - self._window]

    def rtt_p99_ms(self) -> dict[int, float]:
        return {p: percentile(v, 99) for p, v in self._rtt.items() if v}

    def candidate(self, n_voters: int) -> TimeoutPlan | None:
        """The plan the current samples support; None without RTT samples."""
        p99 = self.rtt_p99_ms()
        if not p99:
            return None
        ordered = sorted(p99.values())
        # quorum of n voters: this member + (q - 1) nearest peers.
        need = max(0, n_voters // 2)  # q - 1
        quorum = ordered[min(need, len(ordered)) - 1] if need else 0.0
        fsync = percentile(self._fsync, 99) if self._fsync else FSYNC_P99_DEFAULT_MS
        return derive_timeouts(ordered[-1], quorum, fsync)

    def update(self, now_s: float, n_voters: int) -> TimeoutPlan:
        self.changed = False
        cand = self.candidate(n_voters)
        if cand is None:
            return self.plan
        cur = self.plan
        grows = cand.heartbeat_interval_ms > cur.heartbeat_interval_ms or cand.election_timeout_ms > cur.election_timeout_ms
        if grows:
            # Safety first: never run with timeouts below what the p99 supports. Take the
            # larger of each number, so growth of one never shrinks the other.
            self.plan = TimeoutPlan(
                max(cand.heartbeat_interval_ms, cur.heartbeat_interval_ms),
                max(cand.election_timeout_ms, cur.election_timeout_ms),
            )
            self._lower_since_s = None
            self.changed = self.plan != cur
            return self.plan
        much_lower = cand.election_timeout_ms <= cur.election_timeout_ms * (1.0 - SHRINK_HYSTERESIS)
        if not much_lower:
            self._lower_since_s = None
            return self.plan
        if self._lower_since_s is None:
            self._lower_since_s = now_s
            return self.plan
        if now_s - self._lower_since_s >= SHRINK_HOLD_S:
            self.plan = cand
            self._lower_since_s = None
            self.changed = True
        return self.plan


# --- biased election ranges -----------------------------------------------------------
def election_slot_ticks(
    rank: int, n_followers: int, election_tick: int, tick_ms: float,
    max_peer_rtt_ms: float = 0.0, quorum_rtt_ms: float = 0.0,
) -> tuple[int, int]:
    """The [lo, hi) election timeout (in ticks) for the follower of ``rank`` (0 = closest
    to a quorum of the survivors), all bounds >= ``election_tick``.

    * Rank 0 fires first, but not before the others' leader leases have run out: a
      follower refuses (pre-)votes while ``election_elapsed < election_tick`` since its
      last heartbeat, and heartbeats reach followers up to one one-way delay apart, and
      elapsed ticks lag real time by up to one tick. So rank 0 waits
      ``1 + ceil(max one-way delay / tick)`` ticks beyond ``election_tick``; its slot is two
      ticks wide (two members that both believe they rank 0 still separate).
    * Rank 1 starts a gap later that lets rank 0 finish its pre-vote and vote rounds (two
      quorum RTTs) and its first heartbeats reach everyone (one one-way delay), plus a tick.
    * Ranks >= 1 get slots of ``max(2, ceil(election_tick / n_followers))`` ticks in order.
    """
    assert n_followers > 0 and 0 <= rank < n_followers and election_tick > 0 and tick_ms > 0
    one_way_ticks = math.ceil(max_peer_rtt_ms / 2.0 / tick_ms)
    lo0 = election_tick + 1 + one_way_ticks
    hi0 = lo0 + 2
    if n_followers == 1:
        return (election_tick, 2 * election_tick)   # nobody to be ordered against: plain Raft
    if rank == 0:
        return (lo0, hi0)
    gap = math.ceil((2.0 * quorum_rtt_ms + max_peer_rtt_ms / 2.0) / tick_ms) + 1
    width = max(2, math.ceil(election_tick / n_followers))
    lo = hi0 + gap + (rank - 1) * width
    return (lo, lo + width)


class BiasedElectionRng(random.Random):
    """A seeded ``random.Random`` whose election-timeout draws come from this voter's slot.

    Raft cores draw the random part of the election timeout as ``randrange(election_tick)``
    and add ``election_tick``. This generator returns values that put the timeout in the
    slot set by ``set_slot`` (see ``election_slot_ticks``); every other draw (any other
    ``randrange`` call, ``getrandbits``, ``random``...) is the ordinary seeded generator, so
    it can replace the runtime's rng. Until a slot is set, draws are uniform (plain Raft).
    """

    def __init__(self, election_tick: int, seed: int | None = None) -> None:
        super().__init__(seed)
        assert election_tick > 0
        self.election_tick = election_tick
        self.slot: tuple[int, int] | None = None

    def set_slot(self, lo: int, hi: int) -> None:
        assert self.election_tick <= lo < hi
        self.slot = (lo, hi)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        if stop is not None or step != 1 or start != self.election_tick or self.slot is None:
            return super().randrange(start, stop, step)
        lo, hi = self.slot
        return lo - start + super().randrange(hi - lo)
