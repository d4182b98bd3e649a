"""Leader placement: which member should lead, decided from observed state (pure).

``LeaderPlacement.decide(view)`` returns a member id to transfer leadership to, or None.
The leader's runtime calls it periodically (``PLACEMENT_INTERVAL_S``) with a fresh
``ClusterView`` and runs ``move_leader(target)`` when it gets an id.

Policy:

* Preference (``--leader-preference us-east,eu-west``): the leader belongs in the most
  preferred region that has a healthy, caught-up voter. A region not listed ranks after
  every listed one. The leader is never moved to a region ranked no better than its own.
* Caught up: the voter's match index is within ``max_lag_entries`` of the commit index,
  and it answered within ``health_timeout_s``. It must have been so *continuously* for
  ``return_delay_s`` before it may receive leadership: after a failover the preferred
  region gets leadership back automatically, but only once it has been stable for that
  bounded delay (a member that just restarted and is still catching up does not).
* No flapping: after a transfer (or any leader change) no new transfer for
  ``cooldown_s``; a pending candidate that becomes unhealthy or lags restarts its clock.
* Follow the writes (opt-in): the region issuing most writes (exponentially decayed
  counts, half-life ``write_half_life_s``) wins if its rate is at least
  ``follow_writes_ratio`` times the leader region's and has been so for
  ``follow_writes_dwell_s``; it then overrides the static preference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RETURN_DELAY_S_DEFAULT = 5.0          # stable healthy + caught-up time before a move back
COOLDOWN_S_DEFAULT = 10.0             # no transfer within this long after a leader change
MAX_LAG_ENTRIES_DEFAULT = 64          # caught up = match index within this of commit
HEALTH_TIMEOUT_S_DEFAULT = 3.0        # healthy = heard from within this long
WRITE_HALF_LIFE_S_DEFAULT = 30.0      # decay of the per-region write counts
WRITE_RATE_WINDOW_MIN_S = 5.0        # shortest window a write-rate estimate averages over
FOLLOW_WRITES_RATIO_DEFAULT = 1.5     # hysteresis: challenger rate / leader-region rate
FOLLOW_WRITES_DWELL_S_DEFAULT = 20.0  # the challenger must lead this long
FOLLOW_WRITES_MIN_RATE_PER_S = 1.0    # below this total, write placement has no say
PLACEMENT_INTERVAL_S = 1.0            # how often the leader evaluates the policy
MAX_PREFERENCE_REGIONS = 16


class PlacementError(ValueError):
    """A user-supplied placement option is invalid."""


FOLLOW_WRITES_TOKEN = "follow-writes"


def parse_placement_spec(spec: str | None) -> tuple[list[str], bool]:
    """``--leader-preference`` with the opt-in token: ``"follow-writes,us-east"`` ->
    (["us-east"], True): follow the writes, fall back to us-east while writes are few."""
    parts = [p.strip() for p in (spec or "").split(",")]
    follow = FOLLOW_WRITES_TOKEN in parts
    rest = ",".join(p for p in parts if p and p != FOLLOW_WRITES_TOKEN)
    return parse_leader_preference(rest), follow


def parse_leader_preference(spec: str | None) -> list[str]:
    """``"us-east, eu-west"`` -> ["us-east", "eu-west"]; rejects duplicates and junk."""
    if not spec:
        return []
    out: list[str] = []
    for part in spec.split(","):
        r = part.strip()
        if not r:
            continue
        if not all(c.isalnum() or c in "-._" for c in r):
            raise PlacementError(f"invalid region {r!r} in --leader-preference")
        if r in out:
            raise PlacementError(f"region {r!r} listed twice in --leader-preference")
        out.append(r)
    if len(out) > MAX_PREFERENCE_REGIONS:
        raise PlacementError(f"--leader-preference lists more than {MAX_PREFERENCE_REGIONS} regions")
    return out


@dataclass(slots=True)
class MemberState:
    id: int
    region: str
    voter: bool = True
    match_index: int = 0
    last_heard_s: float = 0.0     # monotonic time the leader last heard from it
    alive: bool = True            # False when the transport reports it unreachable


@dataclass(slots=True)
class ClusterView:
    """What the leader knows when it evaluates placement."""

    now_s: float
    leader_id: int
    term: int
    commit_index: int
    members: list[MemberState]


@dataclass(slots=True)
class _Pending:
    member_id: int
    since_s: float


@dataclass(slots=True)
class Decision:
    """Why the policy chose what it chose (for logs and the demo)."""

    target_id: int | None
    reason: str


@dataclass
class LeaderPlacement:
    preference: list[str] = field(default_factory=list)
    return_delay_s: float = RETURN_DELAY_S_DEFAULT
    cooldown_s: float = COOLDOWN_S_DEFAULT
    max_lag_entries: int = MAX_LAG_ENTRIES_DEFAULT
    health_timeout_s: float = HEALTH_TIMEOUT_S_DEFAULT
    follow_writes: bool = False
    write_half_life_s: float = WRITE_HALF_LIFE_S_DEFAULT
    follow_writes_ratio: float = FOLLOW_WRITES_RATIO_DEFAULT
    follow_writes_dwell_s: float = FOLLOW_WRITES_DWELL_S_DEFAULT

    def __post_init__(self) -> None:
        if self.return_delay_s < 0 or self.cooldown_s < 0:
            raise PlacementError("placement delays must be >= 0")
        if self.follow_writes_ratio < 1.0:
            raise PlacementError("follow-writes ratio must be >= 1 (it is the hysteresis)")
        self._eligible_since: dict[int, float] = {}
        self._last_change_s: float | None = None
        self._last_leader: int = 0
        self._last_term: int = 0
        self._write_rate: dict[str, float] = {}     # decayed count per region
        self._write_rate_at_s: float | None = None
        self._write_rate_since_s: float | None = None  # first observation: warm-up correction
        self._writes_leader_region: str | None = None
        self._writes_leader_since_s: float = 0.0
        self.last_decision = Decision(None, "not evaluated yet")

    # --- inputs -----------------------------------------------------------------------
    def observe_writes(self, region: str, count: int, now_s: float) -> None:
        """Record ``count`` writes that originated in ``region`` at ``now_s``."""
        self._decay_to(now_s)
        self._write_rate[region] = self._write_rate.get(region, 0.0) + count

    def note_transfer(self, now_s: float) -> None:
        """The caller started a transfer: hold off further moves for the cool-down."""
        self._last_change_s = now_s

    def write_rates_per_s(self, now_s: float) -> dict[str, float]:
        """Decayed write rate per region (writes/s, averaged over the half-life)."""
        self._decay_to(now_s)
        # After observing a steady rate r for t seconds, a decayed counter with half-life
        # h holds r * h / ln 2 * (1 - 2^(-t/h)); dividing by the last factor removes the
        # cold-start bias, so the estimate does not need tens of seconds to reach a
        # steady rate (the window is floored at WRITE_RATE_WINDOW_MIN_S so that one
        # early burst does not read as a huge rate).
        h = self.write_half_life_s
        observed_s = max(now_s - (self._write_rate_since_s if self._write_rate_since_s is not None else now_s),
                         WRITE_RATE_WINDOW_MIN_S)
        scale = math.log(2) / h / (1.0 - 0.5 ** (observed_s / h))
        return {r: c * scale for r, c in self._write_rate.items()}

    def _decay_to(self, now_s: float) -> None:
        if self._write_rate_at_s is None:
            self._write_rate_at_s = self._write_rate_since_s = now_s
            return
        dt = now_s - self._write_rate_at_s
        if dt <= 0:
            return
        f = 0.5 ** (dt / self.write_half_life_s)
        for r in self._write_rate:
            self._write_rate[r] *= f
        self._write_rate_at_s = now_s

    # --- the policy -------------------------------------------------------------------
    def rank(self, region: str) -> int:
        try:
            return self.preference.index(region)
        except ValueError:
            return len(self.preference)

    def _caught_up(self, m: MemberState, view: ClusterView) -> bool:
        if not m.voter or not m.alive:
            return False
        if m.id == view.leader_id:
            return True
        if view.now_s - m.last_heard_s > self.health_timeout_s:
            return False
        return view.commit_index - m.match_index <= self.max_lag_entries

    def _desired_region_by_writes(self, view: ClusterView, leader_region: str) -> str | None:
        rates = self.write_rates_per_s(view.now_s)
        total = sum(rates.values())
        if total < FOLLOW_WRITES_MIN_RATE_PER_S or not rates:
            self._writes_leader_region = None
            return None
        top_region = max(sorted(rates), key=lambda r: rates[r])
        if top_region == leader_region:
            self._writes_leader_region = None
            return None
        if rates[top_region] < self.follow_writes_ratio * rates.get(leader_region, 0.0):
            self._writes_leader_region = None
            return None
        if self._writes_leader_region != top_region:
            self._writes_leader_region = top_region
            self._writes_leader_since_s = view.now_s
        if view.now_s - self._writes_leader_since_s < self.follow_writes_dwell_s:
            return None
        return top_region

    def _writes_have_say(self, now_s: float) -> bool:
        return sum(self.write_rates_per_s(now_s).values()) >= FOLLOW_WRITES_MIN_RATE_PER_S

    def decide(self, view: ClusterView) -> int | None:
        d = self.explain(view)
        self.last_decision = d
        return d.target_id

    def explain(self, view: ClusterView) -> Decision:
        now = view.now_s
        if view.leader_id != self._last_leader or view.term != self._last_term:
            if self._last_leader != 0 or self._last_term != 0:
                self._last_change_s = now
            self._last_leader, self._last_term = view.leader_id, view.term
        # Track continuous eligibility of every member.
        for m in view.members:
            if self._caught_up(m, view):
                self._eligible_since.setdefault(m.id, now)
            else:
                self._eligible_since.pop(m.id, None)
        live_ids = {m.id for m in view.members}
        for mid in list(self._eligible_since):
            if mid not in live_ids:
                del self._eligible_since[mid]

        if view.leader_id == 0:
            return Decision(None, "no leader")
        leader = next((m for m in view.members if m.id == view.leader_id), None)
        if leader is None:
            return Decision(None, "leader not in the member list")

        target_region: str | None = None
        if self.follow_writes:
            target_region = self._desired_region_by_writes(view, leader.region)
            if target_region is not None:
                reason = f"follow the writes: most writes come from {target_region}"
            elif self._writes_have_say(view.now_s):
                # Enough writes to judge and no challenger beats the leader's region by
                # the hysteresis ratio: the writes keep the leader where it is.
                return Decision(None, f"writes keep the leader in {leader.region}")
        if target_region is None:
            if not self.preference:
                return Decision(None, "no leader preference")
            leader_rank = self.rank(leader.region)
            candidates = [m for m in view.members if m.id in self._eligible_since and m.id != leader.id]
            better = [m for m in candidates if self.rank(m.region) < leader_rank]
            if not better:
                return Decision(None, f"leader in {leader.region} is the best eligible region")
            target_region = min((m.region for m in better), key=self.rank)
            reason = f"preferred region {target_region} is healthy and caught up"

        if self._last_change_s is not None and now - self._last_change_s < self.cooldown_s:
            return Decision(None, f"cool-down: last leader change {now - self._last_change_s:.1f}s ago")
        in_region = [m for m in view.members if m.region == target_region and m.id in self._eligible_since]
        if not in_region:
            return Decision(None, f"no caught-up voter in {target_region}")
        stable = [m for m in in_region if now - self._eligible_since[m.id] >= self.return_delay_s]
        if not stable:
            waited = max(now - self._eligible_since[m.id] for m in in_region)
            return Decision(None, f"waiting for {target_region} to stay caught up ({waited:.1f}/{self.return_delay_s:.1f}s)")
        target = max(stable, key=lambda m: (m.match_index, -m.id))
        self._last_change_s = now
        return Decision(target.id, reason)
