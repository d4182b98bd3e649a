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
  [E, 2E). Here the window is split into one slot per voter, ordered by each voter's RTT
  to a quorum: the voter closest to a quorum draws from the first slot, so when the
  leader dies it times out first and, as it can also gather votes fastest, it becomes the
  leader. Slots do not overlap, which also makes split votes rarer. ``BiasedElectionRng``
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
def election_range_ms(election_timeout_ms: float, rank: int, n_voters: int) -> tuple[float, float]:
    """The [lo, hi) election timeout range for the voter of ``rank`` (0 = closest to a quorum).

    The ranges tile Raft's [E, 2E) window in rank order without overlapping.
    """
    assert n_voters > 0 and 0 <= rank < n_voters
    width = election_timeout_ms / n_voters
    lo = election_timeout_ms + rank * width
    return (lo, lo + width)


def election_range_ticks(election_tick: int, rank: int, n_voters: int) -> tuple[int, int]:
    """``election_range_ms`` in ticks: [lo, hi) with hi > lo (at least one tick wide)."""
    assert n_voters > 0 and 0 <= rank < n_voters and election_tick > 0
    lo = election_tick + (rank * election_tick) // n_voters
    hi = election_tick + ((rank + 1) * election_tick) // n_voters
    return (lo, max(hi, lo + 1))


class BiasedElectionRng(random.Random):
    """A seeded ``random.Random`` whose election-timeout draws come from this voter's slot.

    Raft cores draw the random part of the election timeout as ``randrange(election_tick)``
    and add ``election_tick``. This generator returns values from the voter's slot of that
    range instead; every other draw (any other ``randrange`` call, ``getrandbits``,
    ``random``...) is the ordinary seeded generator, so it can replace the runtime's rng.
    ``set_rank`` re-ranks the voter when measured RTTs or membership change; with
    ``n_voters == 1`` (the default, "not ranked yet") draws are uniform as in plain Raft.
    """

    def __init__(self, election_tick: int, rank: int = 0, n_voters: int = 1, seed: int | None = None) -> None:
        super().__init__(seed)
        assert election_tick > 0 and n_voters > 0 and 0 <= rank < n_voters
        self.election_tick = election_tick
        self.rank = rank
        self.n_voters = n_voters

    def set_rank(self, rank: int, n_voters: int) -> None:
        assert n_voters > 0 and 0 <= rank < n_voters
        self.rank, self.n_voters = rank, n_voters

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        if stop is not None or step != 1 or start != self.election_tick or self.n_voters <= 1:
            return super().randrange(start, stop, step)
        n = start
        lo, hi = election_range_ticks(n, min(self.rank, self.n_voters - 1), self.n_voters)
        return super().randrange(lo - n, hi - n)
