"""The shape of one simulated run, drawn from the seed (swarm testing).

Each seed picks its own cluster size, placement, clock drift, network fault rates,
read mode, snapshot cadence and which kinds of faults the nemesis may inject, so a
swarm of seeds explores many combinations instead of one average mix.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

from .network import REGIONS

#: Bump whenever a change to the generators makes old seeds mean different runs; the
#: regression list records the version its seeds were found with.
GENERATOR_VERSION = 6

#: Share of seeds (with faults) that run the "figure8" profile, see SimConfig.generate.
FIGURE8_SHARE = 0.15
#: Placements of the figure8 profile: RTTs of 64-138 ms, long against its churn delays
#: (a new leader's appends are still in flight when it is cut off) and well below its
#: 250 ms election timeout.
FIGURE8_REGIONS: tuple[tuple[str, ...], ...] = (
    ("us-east", "us-west"), ("us-east", "eu-west"), ("us-east", "us-west", "eu-west"),
)

FAULT_KINDS: tuple[str, ...] = (
    "partition", "crash", "crash_leader", "power_loss", "pause", "clog", "member", "transfer",
)


@dataclass(slots=True)
class SimConfig:
    seed: int
    faults: bool = True
    n_voters: int = 3
    #: Most servers that may ever exist in the run (initial voters + added nodes).
    nodes_max: int = 7
    regions: tuple[str, ...] = ("us-east", "eu-west", "ap-south")
    tick_ms: float = 100.0
    election_tick: int = 10
    heartbeat_tick: int = 1
    #: Each node's tick interval is tick_ms * (1 + u), u uniform in [-drift, +drift].
    drift_max: float = 0.0
    check_quorum: bool = True
    pre_vote: bool = True
    read_mode: str = "safe"            # "safe" (ReadIndex) or "lease"
    lease_drift_ticks: int = 1
    max_size_per_msg: int = 4096
    max_inflight_msgs: int = 64
    snapshot_interval: int = 1_000_000
    snapshot_keep_entries: int = 5
    fsync_ms_max: float = 2.0
    loss_rate: float = 0.0
    dup_rate: float = 0.0
    reorder_rate: float = 0.0
    clients: int = 3
    keys: int = 2
    client_timeout_ms: float = 3000.0
    think_ms_max: float = 60.0
    write_fraction: float = 0.5
    safety_ms: float = 10_000.0
    #: After healing, a leader must exist and a new write must commit within this.
    liveness_ms_max: float = 20_000.0
    #: After the liveness write, how long replicas get to converge before final checks.
    settle_ms: float = 3_000.0
    fault_mean_interval_ms: float = 700.0
    fault_kinds: tuple[str, ...] = ()
    #: Coalesce each driver turn's client writes into one propose_batch.
    batch_proposals: bool = False
    #: Fault profile: "mixed" (the drawn fault kinds only) or "figure8" (also leader churn).
    profile: str = "mixed"
    #: Leader churn (0 = none): new leaders are cut off with a minority, crashed, or
    #: crashed inside their next fsync, mostly within this many ms of their election;
    #: every this many ms crashed members restart until a majority is up.
    leader_churn_ms: float = 0.0

    @classmethod
    def generate(cls, seed: int, *, faults: bool = True) -> SimConfig:
        rng = random.Random(f"geokv-sim-config-{seed}")
        c = cls(seed=seed, faults=faults)
        c.n_voters = rng.choice((3, 3, 5, 5, 5))
        c.regions = tuple(rng.sample(REGIONS, rng.randint(1, len(REGIONS))))
        c.clients = rng.randint(2, 4)
        c.keys = rng.randint(1, 3)
        c.write_fraction = rng.choice((0.3, 0.5, 0.7))
        c.snapshot_interval = rng.choice((8, 20, 50, 1_000_000))
        c.snapshot_keep_entries = rng.choice((0, 2, 10))
        c.max_inflight_msgs = rng.choice((1, 4, 64))
        c.max_size_per_msg = rng.choice((64, 4096))
        c.fsync_ms_max = rng.choice((0.5, 2.0, 8.0, 30.0))
        c.pre_vote = rng.random() < 0.7
        c.check_quorum = rng.random() < 0.8
        c.read_mode = "lease" if c.check_quorum and rng.random() < 0.4 else "safe"
        if faults:
            c.drift_max = rng.choice((0.0, 0.02, 0.05, 0.1))
            c.loss_rate = rng.choice((0.0, 0.0, 0.01, 0.05, 0.15))
            c.dup_rate = rng.choice((0.0, 0.01, 0.05))
            c.reorder_rate = rng.choice((0.0, 0.02, 0.1))
            c.fault_mean_interval_ms = rng.choice((300.0, 700.0, 1500.0))
            kinds = [k for k in FAULT_KINDS if rng.random() < 0.6]
            c.fault_kinds = tuple(kinds or [rng.choice(FAULT_KINDS)])
        c.lease_drift_ticks = lease_drift_ticks_for(c.election_tick, c.drift_max)
        # New draws go last so older fields keep their values for a given seed.
        c.batch_proposals = rng.random() < 0.5
        if faults and rng.random() < FIGURE8_SHARE:
            c.use_figure8_profile(rng)
        return c

    def use_figure8_profile(self, rng: random.Random) -> None:
        """Make the Raft paper's Figure 8 schedule likely (§5.4.2): a leader that was
        deposed with entries only a minority holds is elected again, replicates those
        old-term entries to a majority, and is cut off before an entry of its own term
        reaches a majority; the next leader then overwrites them. A leader that commits
        by counting replicas of an old-term entry loses a committed entry there.

        It is rare in the mixed profile because a new leader's empty entry normally
        travels in the same append as the old entries, so one acknowledgement covers
        both. Here every append carries one entry and one append is in flight per
        follower (the old entries are acknowledged one round trip at a time), five
        voters give more minorities to be deposed in, the clients write often (the
        leaders' logs grow suffixes the others lack), and the nemesis churns leaders
        (``leader_churn_ms``, run.Simulation._on_new_leader): half of the new leaders
        are cut off before their first appends leave, the others within a few round
        trips, or crashed, or crashed inside their next fsync, and most leaders are cut
        off the moment their commit index first moves in their term. Other fault kinds
        are off: they mostly keep the cluster leaderless and add no Figure 8 steps.
        """
        self.profile = "figure8"
        self.n_voters = 5
        self.max_size_per_msg = 1
        self.max_inflight_msgs = 1
        self.write_fraction = 0.7
        self.think_ms_max = 20.0
        # Short ticks between near regions: many more elections fit in the safety
        # phase (the timeouts keep their ratios to each other and to the RTTs).
        self.regions = rng.choice(FIGURE8_REGIONS)
        self.tick_ms = 25.0
        self.safety_ms = 20_000.0
        self.heartbeat_tick = 2
        self.leader_churn_ms = rng.choice((40.0, 80.0, 160.0))
        self.fault_kinds = ()

    def summary(self) -> dict:
        return asdict(self)


def lease_drift_ticks_for(election_tick: int, drift_max: float) -> int:
    """Ticks a follower's clock can gain on the leader's over one election timeout.

    With tick intervals in [t(1-d), t(1+d)], while the leader ticks E times a follower
    ticks at most E(1+d)/(1-d) times, i.e. E*2d/(1-d) more; one more tick covers the
    phase offset between the two tickers.
    """
    gain = election_tick * 2 * drift_max / (1 - drift_max) if drift_max else 0.0
    return min(election_tick - 1, math.ceil(gain - 1e-9) + 1)


@dataclass(slots=True)
class RunResult:
    seed: int
    ok: bool
    failure: str | None = None
    failure_kind: str | None = None
    virtual_ms: float = 0.0
    events: int = 0
    wall_s: float = 0.0
    liveness_ms: float | None = None
    ops_acked: int = 0
    ops_unknown: int = 0
    reads_done: int = 0
    leaders: int = 0
    snapshots_installed: int = 0
    crashes: int = 0
    fault_log: list[str] = field(default_factory=list)
    trace_tail: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    net: dict = field(default_factory=dict)
