"""Heartbeat and election timeouts derived from RTTs, and per-voter election ranges.

The derivation rule (what each margin is for):

* Heartbeat interval ``h`` = ``HEARTBEAT_MS`` (50 ms), whatever the RTT. Peer links are
  TCP: a heartbeat is delayed, never lost, and heartbeats are pipelined, so a follower
  sees one every ``h`` plus the variation of the delay; the RTT only shifts the stream.
  A shorter ``h`` detects a dead leader sooner at a small cost (N-1 tiny messages per
  ``h``).
* Election timeout ``E`` = ``h`` + ``J`` + ``q``, rounded up to ``ROUND_TO_MS``:
  - ``J``, the jitter allowance: how much later than ``h`` after its predecessor a
    heartbeat may arrive. ``max(JITTER_FLOOR_MS, JITTER_FACTOR x max(RTT p99 - p50,
    pause p99))``. The floor covers short pauses of a server process; the measured terms
    cover the network (the transport's smoothed RTT, sampled once per placement interval,
    at least ``RTT_MIN_SAMPLES`` of them: connection set-up must not count) and the
    leader's own pauses, during which it sends no heartbeat: its event loop's lag (CPU
    starvation, GC; sampled every ``LAG_SAMPLE_INTERVAL_S``) and its WAL fsyncs (the driver
    waits for them), p99 over the last ``PAUSE_WINDOW_S`` (the first ``PAUSE_WARMUP_S`` of
    the process do not count). A follower that waits
    ``h + J`` without a heartbeat does not yet suspect the leader.
  - ``q``, the largest typical (p50) RTT from a voter to its nearest quorum: a leader anywhere
    gets a quorum's answer to a heartbeat before the lease from its previous one runs out
    (``E`` - drift), so lease reads (the default for linearizable reads) are continuously
    valid, and CheckQuorum always sees the quorum within one ``E``.
  Never above ``ELECTION_MAX_MS`` (the start value: a restarted member refuses votes for
  that long, which must cover any lease a leader may have been granted).
* Failover then takes about: the silence that triggers the first follower
  (``E`` + its slot margin, below) + a pre-vote round + a vote round (two RTTs to a quorum
  of survivors) + the first put's own path. For us-east / eu-west / ap-south (75 / 190 /
  120 ms) with the leader in us-east killed: E = 50 + 100 + 120 = 270 ms; eu-west fires at
  ~310 ms after its last heartbeat, wins after 2 x 120 ms, and a put from ap-south (forward,
  replicate, acknowledge, learn the commit: 4 x 60 ms) completes about 0.9 s after the
  kill; one from eu-west about 0.7 s.
* CheckQuorum window = ``CHECK_QUORUM_ELECTIONS`` (2) election timeouts: a leader steps
  down when no quorum answered it for that long. It needs no hurry (failure detection is
  the followers' timeout; lease reads are judged separately, by the acknowledged heartbeat
  stamps), and its answers wait for each follower's fsync (a heartbeat acknowledgement
  leaves only once the follower's Ready is durable) and for its own driver after a
  stall: with one election timeout, a loaded host deposed healthy leaders.
* No election storms: PreVote and CheckQuorum are on. A follower whose heartbeats are
  late beyond ``E`` only sends pre-votes, which members that still hear the leader refuse
  (and the leader itself refuses), so neither the term nor the leader changes.
* Adapting: growth applies at once (a too-short timeout causes spurious campaigns);
  shrinking needs the lower value to hold for ``SHRINK_HOLD_S`` and to be at least
  ``SHRINK_HYSTERESIS`` lower (no see-saw).
* Runtime changes are lease-safe in the Raft core (geokv.raft.raft: the leader announces
  its lease hold in heartbeats), so the leader decides the plan and the followers adopt
  it from its heartbeats, in any order.

Election ranges (``election_slot_ticks``): Raft draws each follower's election timeout
from [E, 2E). Here each voter gets a slot by its rank: its RTT to a quorum of the
survivors if the leader fails. Rank 0 fires first, as early as the other followers'
refusal windows allow, and, as it also gathers votes fastest, becomes the leader; the next
rank starts only after rank 0 could have finished its election. Slots do not overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HEARTBEAT_MS = 50.0                # derived heartbeat interval (TCP: delayed, not lost)
HEARTBEAT_MIN_MS = 10.0            # below this the driver would spend its time ticking
HEARTBEAT_MAX_MS = 5_000.0
JITTER_FLOOR_MS = 100.0            # pauses of a busy server process (GC, CPU, fsync stalls)
JITTER_FACTOR = 1.5                # x the measured spread / pause p99
LAG_SAMPLE_INTERVAL_S = 0.05       # event-loop lag probe period
PAUSE_WINDOW_S = 60.0              # pauses older than this are forgotten
PAUSE_MIN_SAMPLES = 200            # before loop-lag / fsync pauses may change the plan
PAUSE_WARMUP_S = 10.0              # start-up (imports, connections, catch-up) is not a pause
ELECTION_MAX_MS = 1_000.0          # = the start value of auto timeouts (restart vote embargo)
ROUND_TO_MS = 10.0                 # plans are multiples of this (stable numbers, fewer changes)
SHRINK_HYSTERESIS = 0.2            # shrink only if the new plan is >= 20% lower ...
SHRINK_HOLD_S = 60.0               # ... and stayed so for this long
RTT_WINDOW_MAX_SAMPLES = 512       # per-peer samples kept for the percentiles
RTT_MIN_SAMPLES = 30               # per peer, before measurements may change the plan
SLOT_JITTER_MS = 30.0              # rank 0 fires this long after the others' refusal ends
CHECK_QUORUM_ELECTIONS = 2         # a leader steps down after this many silent election timeouts


@dataclass(slots=True, frozen=True)
class TimeoutPlan:
    heartbeat_interval_ms: float
    election_timeout_ms: float

    @property
    def check_quorum_ms(self) -> float:
        return CHECK_QUORUM_ELECTIONS * self.election_timeout_ms

    def ticks(self, tick_ms: float) -> tuple[int, int]:
        """(heartbeat ticks, election ticks) for a tick of ``tick_ms``."""
        hb = max(1, round(self.heartbeat_interval_ms / tick_ms))
        return hb, max(hb + 1, math.ceil(self.election_timeout_ms / tick_ms - 1e-9))


def _round_up(ms: float) -> float:
    return math.ceil(ms / ROUND_TO_MS - 1e-9) * ROUND_TO_MS


def derive_timeouts(
    max_quorum_rtt_ms: float,
    rtt_spread_ms: float = 0.0,
    pause_ms: float = 0.0,
    *,
    heartbeat_ms: float = HEARTBEAT_MS,
    election_max_ms: float = ELECTION_MAX_MS,
) -> TimeoutPlan:
    """The plan for a cluster whose slowest voter reaches a quorum in ``max_quorum_rtt_ms``
    (p50) and whose RTTs vary by ``rtt_spread_ms`` (p99 - p50). See the module docstring."""
    assert max_quorum_rtt_ms >= 0 and rtt_spread_ms >= 0
    h = min(HEARTBEAT_MAX_MS, max(HEARTBEAT_MIN_MS, heartbeat_ms))
    assert pause_ms >= 0
    jitter = max(JITTER_FLOOR_MS, JITTER_FACTOR * max(rtt_spread_ms, pause_ms))
    election = _round_up(h + jitter + max_quorum_rtt_ms)
    election = min(election, max(election_max_ms, 2 * h))
    return TimeoutPlan(heartbeat_interval_ms=h, election_timeout_ms=election)


def derive_for_topology(topology, rtt_spread_ms: float = 0.0, pause_ms: float = 0.0, **kw) -> TimeoutPlan:
    """One plan for the whole cluster: any voter may lead, so the slowest quorum counts."""
    quorum = max((topology.quorum_rtt_ms(m.id) for m in topology.voters), default=0.0)
    if not math.isfinite(quorum):
        quorum = 0.0
    return derive_timeouts(quorum, rtt_spread_ms, pause_ms, **kw)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    assert samples
    s = sorted(samples)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


class RttStats:
    """Per-peer RTT samples in a bounded window: p50, p99 and the spread. Peers with
    fewer than ``min_samples`` samples are not reported."""

    def __init__(self, window: int = RTT_WINDOW_MAX_SAMPLES, min_samples: int = RTT_MIN_SAMPLES) -> None:
        self._window = window
        self._min = min_samples
        self._rtt: dict[int, list[float]] = {}

    def observe(self, peer_id: int, rtt_ms: float) -> None:
        buf = self._rtt.setdefault(peer_id, [])
        buf.append(rtt_ms)
        if len(buf) > self._window:
            del buf[: len(buf) - self._window]

    def _ready(self):
        return [(p, v) for p, v in self._rtt.items() if v and len(v) >= self._min]

    def p50_ms(self) -> dict[int, float]:
        return {p: percentile(v, 50) for p, v in self._ready()}

    def p99_ms(self) -> dict[int, float]:
        return {p: percentile(v, 99) for p, v in self._ready()}

    def spread_ms(self) -> float:
        """The largest p99 - p50 over the peers (0 without enough samples)."""
        return max((percentile(v, 99) - percentile(v, 50) for _p, v in self._ready()), default=0.0)


class PauseStats:
    """Pauses of this process in a sliding time window: weighted samples (ms, count),
    e.g. event-loop lag probes (count 1) and fsync histogram deltas (bucket bound, n)."""

    def __init__(self, window_s: float = PAUSE_WINDOW_S, min_samples: int = PAUSE_MIN_SAMPLES,
                 max_entries: int = 4096) -> None:
        self._window_s = window_s
        self._min = min_samples
        self._entries: list[tuple[float, float, int]] = []   # (time s, ms, count)
        self._max = max_entries

    def observe(self, now_s: float, ms: float, count: int = 1) -> None:
        if count <= 0:
            return
        self._entries.append((now_s, ms, count))
        if len(self._entries) > self._max:
            del self._entries[: len(self._entries) - self._max]

    def p99_ms(self, now_s: float) -> float:
        """The p99 pause of the window; 0 with fewer than ``min_samples`` samples."""
        cut = now_s - self._window_s
        self._entries = [e for e in self._entries if e[0] >= cut]
        total = sum(c for _t, _ms, c in self._entries)
        if total < self._min:
            return 0.0
        rank = total - total // 100    # the sample at the 99th percentile (nearest rank)
        seen = 0
        for _t, ms, c in sorted(self._entries, key=lambda e: e[1]):
            seen += c
            if seen >= rank:
                return ms
        return 0.0


class TimeoutTuner:
    """Hysteresis over candidate plans: ``offer(now_s, candidate)`` returns the plan in
    force; ``changed`` tells whether that call changed it."""

    def __init__(self, initial: TimeoutPlan) -> None:
        self.plan = initial
        self._lower_since_s: float | None = None
        self.changed = False

    def offer(self, now_s: float, cand: TimeoutPlan) -> TimeoutPlan:
        self.changed = False
        cur = self.plan
        if cand.election_timeout_ms > cur.election_timeout_ms:
            self.plan = cand     # safety first: never run below what the RTTs call for
            self._lower_since_s = None
            self.changed = True
            return self.plan
        much_lower = cand.election_timeout_ms <= cur.election_timeout_ms * (1.0 - SHRINK_HYSTERESIS)
        if not much_lower:
            self._lower_since_s = None
            if cand.heartbeat_interval_ms != cur.heartbeat_interval_ms:
                self.plan = TimeoutPlan(cand.heartbeat_interval_ms, cur.election_timeout_ms)
                self.changed = True
            return self.plan
        if self._lower_since_s is None:
            self._lower_since_s = now_s
            return self.plan
        if now_s - self._lower_since_s >= SHRINK_HOLD_S:
            self.plan = cand
            self._lower_since_s = None
            self.changed = True
        return self.plan


# --- election ranges -------------------------------------------------------------------
def election_slot_ticks(
    rank: int, n_followers: int, election_tick: int, tick_ms: float,
    *, skew_ms: float = 0.0, quorum_rtt_ms: float = 0.0, max_peer_rtt_ms: float = 0.0,
) -> tuple[int, int]:
    """The [lo, hi) election timeout (ticks) for the voter of ``rank`` (0 = closest to a
    quorum of the survivors); every bound is >= ``election_tick``.

    * Rank 0 fires first, but not before the other followers stop refusing its pre-vote:
      each refuses for ``election_tick`` of its ticks after its last heartbeat. The leader's
      last heartbeat reaches a follower f d(L, f) after it was sent, and rank 0's pre-vote
      reaches f d(L, r) + T + d(r, f) after it; by the triangle inequality that is never
      earlier, so only ``skew_ms`` = max over f of d(L, f) - d(L, r) - d(r, f) (> 0 only for
      RTT tables that are not metric) is added, plus one tick of tick phase and
      ``SLOT_JITTER_MS`` of arrival jitter. Its slot is two ticks wide.
    * Rank 1 starts a gap later that lets rank 0 finish its pre-vote and vote rounds (two
      quorum RTTs) and its first heartbeats reach everyone (one one-way delay), plus a tick.
    * Ranks >= 1 get slots of ``max(2, ceil(election_tick / n_followers))`` ticks in order.
    """
    assert n_followers > 0 and 0 <= rank < n_followers and election_tick > 0 and tick_ms > 0
    if n_followers == 1:
        return (election_tick, 2 * election_tick)   # nobody to be ordered against: plain Raft
    margin = 1 + math.ceil((max(0.0, skew_ms) + SLOT_JITTER_MS) / tick_ms)
    lo0 = election_tick + margin
    hi0 = lo0 + 2
    if rank == 0:
        return (lo0, hi0)
    gap = math.ceil((2.0 * quorum_rtt_ms + max_peer_rtt_ms / 2.0) / tick_ms) + 1
    width = max(2, math.ceil(election_tick / n_followers))
    lo = hi0 + gap + (rank - 1) * width
    return (lo, lo + width)
