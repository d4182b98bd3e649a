"""Configuration of one Raft node, and the error a dropped proposal raises."""

from __future__ import annotations

from dataclasses import dataclass

from .types import ReadOnlyOption


class ProposalDropped(Exception):
    """A proposal (or read/transfer request) could not be accepted.

    ``reason`` says why in words; ``leader_id`` is the leader known to this node
    (0 = none), so a caller can redirect or retry.
    """

    def __init__(self, reason: str, leader_id: int = 0) -> None:
        super().__init__(f"proposal dropped: {reason} (leader {leader_id or 'unknown'})")
        self.reason = reason
        self.leader_id = leader_id


class ConfigError(ValueError):
    """An invalid Config (a caller's mistake)."""


@dataclass
class Config:
    """Everything a RawNode needs to know about itself.

    ``rng`` must have ``randrange(n)``; the caller seeds it, so a run is reproducible.
    ``lease_drift_ticks``: with LEASE_BASED reads the leader trusts its lease for
    ``election_tick - lease_drift_ticks`` of its ticks after a quorum acknowledged a
    heartbeat. Assumption: no follower's clock gains more than ``lease_drift_ticks``
    ticks on the leader's within that window (>= 1 also covers tick phase), and the
    runtime delivers every tick real time owes, including catch-up after a pause,
    before serving a lease read. See geokv.raft.raft for the argument.
    ``randomized_election_ticks`` = (lo, hi) overrides the default election-timeout
    range [election_tick, 2*election_tick); lo must be >= election_tick so a node
    never campaigns while it would still refuse votes to others (lease safety).
    ``announce_lease_hold``: with LEASE_BASED reads the leader writes its election timeout
    into every heartbeat and a follower refuses votes (and does not campaign) for at least
    that many of its own ticks after it, whatever its own election timeout is; this is
    what keeps leases safe while the timeouts change at runtime (``RawNode.set_timing``).
    Turning it off exists only so a test can show the unsafety it prevents.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_uncommitted_entries_size: int = 1 << 30
    max_committed_size_per_ready: int = 1 << 26
    check_quorum: bool = True
    pre_vote: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    lease_drift_ticks: int = 1
    disable_proposal_forwarding: bool = False
    rng: object = None
    randomized_election_ticks: tuple[int, int] | None = None
    announce_lease_hold: bool = True

    def validate(self) -> None:
        if not isinstance(self.id, int) or self.id <= 0:
            raise ConfigError(f"node id must be a positive int, got {self.id!r}")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs must be greater than 0")
        if self.max_size_per_msg <= 0 or self.max_committed_size_per_ready <= 0:
            raise ConfigError("message and ready size limits must be greater than 0")
        if self.max_uncommitted_entries_size <= 0:
            raise ConfigError("max_uncommitted_entries_size must be greater than 0")
        if self.read_only_option == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ConfigError("read_only_option LEASE_BASED requires check_quorum")
        if not 0 <= self.lease_drift_ticks < self.election_tick:
            raise ConfigError("lease_drift_ticks must be in [0, election_tick)")
        if self.rng is None or not callable(getattr(self.rng, "randrange", None)):
            raise ConfigError("rng must be an object with randrange(n), seeded by the caller")
        if self.randomized_election_ticks is not None:
            lo, hi = self.randomized_election_ticks
            if lo < self.election_tick or hi <= lo:
                raise ConfigError(
                    f"randomized_election_ticks {self.randomized_election_ticks} must satisfy "
                    f"election_tick ({self.election_tick}) <= lo < hi")
