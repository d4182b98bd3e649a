"""Per-follower replication progress, the in-flight window, and the tracked config.

Progress states (as in etcd-io/raft):
  PROBE     - we do not know the follower's last index; send one APP per heartbeat
              round and wait for the answer (``probe_sent`` pauses the flow).
  REPLICATE - the follower is in sync; stream APPs optimistically, at most
              ``max_inflight_msgs`` unacknowledged messages at a time.
  SNAPSHOT  - a snapshot is in flight; send nothing until report_snapshot().
"""

from __future__ import annotations

from collections import deque

from .quorum import (
    INDEX_INFINITY,
    VoteResult,
    joint_committed_index,
    joint_vote_result,
)
from .types import ConfState, ProgressState

#: Lease-ack tick of a follower never heard from (older than any real tick).
NEVER_TICK = -(1 << 62)


class Inflights:
    """The bounded window of APP messages sent but not yet acknowledged.

    Holds the last index of each in-flight message, in increasing order.
    """

    __slots__ = ("_buf", "size_max")

    def __init__(self, size_max: int) -> None:
        assert size_max > 0
        self._buf: deque[int] = deque()
        self.size_max = size_max

    def add(self, last_index: int) -> None:
        buf = self._buf
        assert len(buf) < self.size_max, "cannot add into a full inflights window"
        assert not buf or buf[-1] <= last_index, (buf[-1], last_index)
        buf.append(last_index)

    def free_le(self, to: int) -> None:
        buf = self._buf
        while buf and buf[0] <= to:
            buf.popleft()

    def free_first_one(self) -> None:
        if self._buf:
            self._buf.popleft()

    def full(self) -> bool:
        return len(self._buf) >= self.size_max

    def count(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()


class Progress:
    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active",
                 "probe_sent", "inflights", "is_learner", "lease_ack_tick")

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        # New members count as active so CheckQuorum does not trip right after a change.
        self.recent_active = True
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        self.lease_ack_tick = NEVER_TICK

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record an acknowledgement up to ``n``; True if ``match`` grew."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Back off after the follower rejected an APP at ``rejected``; False if stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale rejection
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale rejection: we already probed elsewhere
        # Never probe at or below ``match``: those entries are known to be replicated
        # (a fast back-off hint computed from a stale term can point below it).
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        assert self.next > self.match, (self.next, self.match)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        st = self.state
        if st == ProgressState.REPLICATE:
            return self.inflights.full()
        if st == ProgressState.PROBE:
            return self.probe_sent
        return True

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
                f"learner={self.is_learner}, active={self.recent_active})")


class TrackerConfig:
    """The membership: incoming voters, outgoing voters (joint), learners.

    Invariants: learners and learners_next are disjoint from the incoming voters;
    learners_next only holds outgoing voters that become learners when the joint
    config is left; learners and voters_outgoing are disjoint.
    """

    __slots__ = ("voters_in", "voters_out", "learners", "learners_next", "auto_leave")

    def __init__(self, voters_in=(), voters_out=(), learners=(), learners_next=(),
                 auto_leave: bool = False) -> None:
        self.voters_in: frozenset[int] = frozenset(voters_in)
        self.voters_out: frozenset[int] = frozenset(voters_out)
        self.learners: frozenset[int] = frozenset(learners)
        self.learners_next: frozenset[int] = frozenset(learners_next)
        self.auto_leave = auto_leave

    def copy(self) -> TrackerConfig:
        return TrackerConfig(self.voters_in, self.voters_out, self.learners,
                             self.learners_next, self.auto_leave)

    def joint(self) -> bool:
        return bool(self.voters_out)

    def voter_ids(self) -> frozenset[int]:
        return self.voters_in | self.voters_out

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.voters_in)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.voters_out)),
            learners_next=tuple(sorted(self.learners_next)),
            auto_leave=self.auto_leave,
        )

    def __repr__(self) -> str:
        return (f"voters={sorted(self.voters_in)}&&{sorted(self.voters_out)} "
                f"learners={sorted(self.learners)} next={sorted(self.learners_next)} "
                f"auto_leave={self.auto_leave}")


class ProgressTracker:
    __slots__ = ("config", "progress", "votes", "max_inflight", "_voter_list")

    def __init__(self, max_inflight: int) -> None:
        self.config = TrackerConfig()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight
        self._voter_list: tuple[int, ...] = ()

    def set_config(self, config: TrackerConfig, progress: dict[int, Progress]) -> None:
        self.config = config
        self.progress = progress
        self._voter_list = tuple(sorted(config.voter_ids()))
        check_invariants(config, progress)

    def voter_list(self) -> tuple[int, ...]:
        return self._voter_list

    def is_singleton(self) -> bool:
        c = self.config
        return len(c.voters_in) == 1 and not c.voters_out

    def committed(self) -> int:
        c = self.config
        prs = self.progress
        if len(c.voters_in) == 3 and not c.voters_out:
            # Fast path for the common three-voter cluster: the median match.
            a, b, d = (prs[v].match for v in c.voters_in)
            if a > b:
                a, b = b, a
            if b > d:
                b = d
            return a if a > b else b
        match = {v: prs[v].match for v in self._voter_list}
        idx = joint_committed_index(c.voters_in, c.voters_out, match)
        assert idx != INDEX_INFINITY or not c.voters_in
        return idx

    def quorum_tick(self, self_id: int, now_tick: int) -> int:
        """Largest tick t such that a quorum has acknowledged a heartbeat sent at >= t."""
        c = self.config
        ticks = {}
        for v in self._voter_list:
            ticks[v] = now_tick if v == self_id else self.progress[v].lease_ack_tick
        return joint_committed_index(c.voters_in, c.voters_out, ticks)

    def quorum_active(self) -> bool:
        c = self.config
        active = {v: self.progress[v].recent_active for v in self._voter_list}
        return joint_vote_result(c.voters_in, c.voters_out, active) == VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        if node_id not in self.votes:
            self.votes[node_id] = granted

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for nid, pr in self.progress.items():
            if pr.is_learner:
                continue
            v = self.votes.get(nid)
            if v is None:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        c = self.config
        return granted, rejected, joint_vote_result(c.voters_in, c.voters_out, self.votes)

    def vote_result(self, votes: dict[int, bool]) -> VoteResult:
        c = self.config
        return joint_vote_result(c.voters_in, c.voters_out, votes)


def check_invariants(cfg: TrackerConfig, prs: dict[int, Progress]) -> None:
    """Assert the membership invariants; a violation is a bug in the core."""
    ids = cfg.voter_ids() | cfg.learners | cfg.learners_next
    assert set(prs) == set(ids), f"progress {sorted(prs)} != config members {sorted(ids)}"
    for nid in cfg.learners_next:
        assert nid in cfg.voters_out, f"{nid} is in learners_next but not an outgoing voter"
        assert not prs[nid].is_learner, f"{nid} is in learners_next but already a learner"
    for nid in cfg.learners:
        assert nid not in cfg.voters_out and nid not in cfg.voters_in, (
            f"{nid} is both learner and voter")
        assert prs[nid].is_learner, f"{nid} is a learner but its progress is not"
    for nid in cfg.voter_ids():
        assert not prs[nid].is_learner, f"voter {nid} has learner progress"
    if not cfg.joint():
        assert not cfg.learners_next and not cfg.auto_leave, "non-joint config with joint state"
