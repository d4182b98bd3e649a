"""The Raft state machine proper (one node), driven by RawNode.

Term handling lives in one place at the top of ``step``; then one step function per
role (``step_leader``, ``step_candidate``, ``step_follower``). Outgoing messages are
collected in ``msgs``; RawNode hands them out in a Ready.

Persistence rule: the leader counts its *own* log only up to what the application has
made durable (``on_persisted`` after ``advance``), so an entry is never committed on the
strength of a leader's unsynced write.

Lease reads (``ReadOnlyOption.LEASE_BASED``): the leader stamps each heartbeat with its
local tick count and a follower echoes the stamp. A follower that heard from the leader
refuses to vote (or pre-vote) for ``election_tick`` of *its own* ticks (leader stickiness,
CheckQuorum), and never campaigns earlier than that. If a quorum echoed stamps >= s, no
other leader can be elected before every one of those followers has ticked
``election_tick`` times after receiving them. The lease therefore lasts while
``now - s < election_tick - lease_drift_ticks`` (leader ticks).
Drift assumption: over any interval, no follower's clock advances more than
``lease_drift_ticks`` ticks beyond the leader's (this also absorbs tick phase offsets,
so lease_drift_ticks >= 1 is needed for real clocks), and the runtime delivers every
tick that real time owes (catch-up ticks after a pause) before it asks for a lease read.
A restarted node with lease reads on refuses all votes for one election timeout,
because it has forgotten which leader it promised not to undermine.

Changing timeouts at runtime (``set_timing``) without breaking leases. The lease is
only as long as the refusal windows of the followers that acknowledged it; members
change their timeouts at different moments, so the leader announces its lease hold
(its election timeout, in ticks) in every heartbeat (``log_term`` of a HEARTBEAT; its
heartbeat interval rides in ``reject_hint``), and a follower refuses votes and does not
campaign until ``max(own election timeout, announced hold)`` of its ticks have passed
since it last heard from the leader. The leader, for a quorum stamp s, uses the
smallest hold it announced in any heartbeat stamped >= s (``lease_ticks_for``): after
it lengthens its timeout, stamps sent before the change still count with the old,
shorter hold. So a follower's promise is always at least the lease the leader derives
from it, whichever member changes first (see tests/sim/test_timing_change.py). All
members must use the same tick length (the runtime fixes it at start).
"""

from __future__ import annotations

from .config import Config, ProposalDropped
from .confchange import restore as restore_config
from .leader import LeaderMixin
from .log import RaftLog
from .quorum import VoteResult
from .readonly import ReadOnly
from .storage import Compacted, SnapshotTemporarilyUnavailable, Storage, Unavailable
from .tracker import Progress, ProgressTracker
from .types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType as MT,
    ProgressState,
    ReadOnlyOption,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
)

CAMPAIGN_PRE_ELECTION = "pre_election"
CAMPAIGN_ELECTION = "election"
CAMPAIGN_TRANSFER = "transfer"
#: Context of a VOTE caused by leadership transfer: bypasses leader stickiness.
TRANSFER_CONTEXT = b"transfer"

#: Most remembered changes of a leader's election timeout (older ones merge, safely).
MAX_LEASE_CHANGES = 8

_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT


def _vote_resp_type(t: MT) -> MT:
    if t == MT.VOTE:
        return MT.VOTE_RESP
    assert t == MT.PRE_VOTE, t
    return MT.PRE_VOTE_RESP


class Raft(LeaderMixin):
    def __init__(self, c: Config, storage: Storage) -> None:
        c.validate()
        self.id = c.id
        self.config = c
        self.raft_log = RaftLog(storage, c.max_committed_size_per_ready)
        hs, cs = storage.initial_state()
        self.max_msg_size = c.max_size_per_msg
        self.max_uncommitted_size = c.max_uncommitted_entries_size
        self.trk = ProgressTracker(c.max_inflight_msgs)
        self.term = 0
        self.vote = 0
        self.lead = 0
        self.state = StateRole.FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.lead_transferee = 0
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        #: Leader: ticks since the last CheckQuorum; the window is ``check_quorum_ticks``
        #: (0 = one election timeout, as in etcd; see set_timing).
        self.quorum_check_elapsed = 0
        self.check_quorum_ticks = 0
        self.ticks = 0  # local clock in ticks, for leases
        self.check_quorum = c.check_quorum
        self.pre_vote = c.pre_vote
        self.heartbeat_timeout = c.heartbeat_tick
        self.election_timeout = c.election_tick
        self.randomized_election_timeout = 0
        self.rng = c.rng
        self.bcast_pending = False
        self.lease_revoked = False
        #: Follower: the hold (ticks) the current leader announced in its last heartbeat.
        self.lease_hold_ticks = 0
        #: Follower: the heartbeat interval (ticks) the current leader announced.
        self.leader_heartbeat_ticks = 0
        self.announce_lease_hold = (c.announce_lease_hold
                                    and c.read_only_option == ReadOnlyOption.LEASE_BASED)
        #: Leader: (first stamp announcing the new hold, hold announced before it), one per
        #: change of the election timeout while leading; at most MAX_LEASE_CHANGES.
        self.lease_changes: list[tuple[int, int]] = []
        self.dropped_forwarded = 0  # proposals from peers dropped here (they time out there)
        # With lease reads, a (re)started node refuses votes for one election timeout.
        self.vote_embargo_ticks = (
            c.election_tick if c.read_only_option == ReadOnlyOption.LEASE_BASED else 0)

        cfg, prs = restore_config(cs, self.raft_log.last_index(), c.max_inflight_msgs)
        self.trk.set_config(cfg, prs)
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if hs.term or hs.vote or hs.commit:
            self.load_state(hs)
        if c.applied > 0:
            self.raft_log.applied_to(c.applied)
        self.become_follower(self.term, 0)

    # --- small helpers --------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.raft_log.committed)

    def load_state(self, hs: HardState) -> None:
        log = self.raft_log
        if not log.committed <= hs.commit <= log.last_index():
            raise AssertionError(
                f"hard state commit {hs.commit} is out of range "
                f"[{log.committed}, {log.last_index()}]")
        log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        pr = self.trk.progress.get(self.id)
        return (pr is not None and not pr.is_learner
                and self.raft_log.unstable.snapshot is None)

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.zero_term_on_err(self.raft_log.committed) == self.term

    def lease_valid(self, ticks_ahead: int = 0) -> bool:
        """May the leader answer a read from local state without a heartbeat round?
        ``ticks_ahead``: as if that many more ticks had passed (ticks real time owes the
        node and the runtime has not delivered yet); more ticks only shorten the lease."""
        if (self.state != StateRole.LEADER or self.lead_transferee or self.lease_revoked
                or self.config.read_only_option != ReadOnlyOption.LEASE_BASED):
            return False  # LEASE_BASED implies check_quorum (Config.validate)
        assert ticks_ahead >= 0
        now = self.ticks + ticks_ahead
        start = self.trk.quorum_tick(self.id, now)
        return now - start < self.lease_ticks_for(start) - self.config.lease_drift_ticks

    def lease_ticks_for(self, stamp: int) -> int:
        """The smallest hold announced in any heartbeat stamped >= ``stamp``."""
        hold = self.election_timeout
        for first_stamp, before in self.lease_changes:
            if stamp < first_stamp and before < hold:
                hold = before
        return hold

    def set_timing(self, heartbeat_tick: int, election_tick: int,
                   randomized_election_ticks: tuple[int, int] | None,
                   check_quorum_ticks: int = 0) -> None:
        """Change the timeouts now (validated by RawNode.set_timing); see the module
        docstring for why leases stay safe."""
        old = self.election_timeout
        if self.state == StateRole.LEADER and election_tick != old:
            # Heartbeats stamped up to now announced ``old``; from the next tick on they
            # announce the new value (one sent later in this tick is counted with min()).
            self.lease_changes.append((self.ticks + 1, old))
            if len(self.lease_changes) > MAX_LEASE_CHANGES:
                # Merge the two oldest: conservative (a smaller hold for more stamps).
                (_, b0), (c1, b1) = self.lease_changes[0], self.lease_changes[1]
                self.lease_changes[:2] = [(c1, min(b0, b1))]
        self.prune_lease_changes()
        c = self.config
        c.heartbeat_tick = heartbeat_tick
        c.election_tick = election_tick
        c.randomized_election_ticks = randomized_election_ticks
        self.heartbeat_timeout = heartbeat_tick
        self.election_timeout = election_tick
        self.check_quorum_ticks = check_quorum_ticks
        self.reset_randomized_election_timeout()

    def prune_lease_changes(self) -> None:
        """Forget changes no stamp can need: a stamp older than the change is already
        older than any hold, so its lease is invalid whatever the hold."""
        if self.lease_changes:
            now = self.ticks
            e = self.election_timeout
            self.lease_changes = [(c, b) for c, b in self.lease_changes if now - c < max(b, e)]

    def send(self, m: Message) -> None:
        m.frm = self.id
        t = m.type
        if t in (MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP):
            # Vote messages carry the term they are about, which may not be ours.
            assert m.term != 0, f"term must be set when sending {t.name}"
        else:
            assert m.term == 0, f"term must not be set when sending {t.name} (was {m.term})"
            # Proposals and read requests are forwarded as local messages (term 0).
            if t != MT.PROP and t != MT.READ_INDEX:
                m.term = self.term
        self.msgs.append(m)

    def _drop(self, m: Message, reason: str) -> None:
        """Refuse a proposal/read: loudly for the local caller, counted for a peer's."""
        if m.frm in (0, self.id):
            raise ProposalDropped(reason, self.lead)
        self.dropped_forwarded += 1

    # --- sending APP/SNAP/HEARTBEAT ------------------------------------------------
    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        log = self.raft_log
        prev = pr.next - 1
        try:
            term = log.term(prev)
            ents = log.entries(pr.next, self.max_msg_size)
        except (Compacted, Unavailable):
            return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        if ents:
            st = pr.state
            if st == _REPLICATE:
                last = ents[-1].index
                pr.next = last + 1  # optimistic
                pr.inflights.add(last)
            elif st == _PROBE:
                pr.probe_sent = True
            else:
                raise AssertionError(f"sending APP to {to} in state {st.name}")
        else:
            if pr.state == _PROBE:
                pr.probe_sent = True
        self.send(Message(MT.APP, to, 0, 0, term, prev, ents, log.committed))
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that is probably down
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        assert not snap.is_empty(), "need a non-empty snapshot to catch up a follower"
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(MT.SNAP, to, 0, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        pr = self.trk.progress[to]
        commit = min(pr.match, self.raft_log.committed)
        # ``index`` carries our tick stamp; the follower echoes it for the lease.
        # ``log_term`` / ``reject_hint`` announce our lease hold and heartbeat interval.
        if self.announce_lease_hold:
            self.send(Message(MT.HEARTBEAT, to, 0, log_term=self.election_timeout,
                              index=self.ticks, commit=commit,
                              reject_hint=self.heartbeat_timeout, context=ctx))
        else:
            self.send(Message(MT.HEARTBEAT, to, 0, index=self.ticks, commit=commit, context=ctx))

    def request_bcast_append(self) -> None:
        """Broadcast APPs at the next Ready: every proposal and ack in between then
        rides in one message per follower instead of one message each."""
        self.bcast_pending = True

    def flush_bcast_append(self) -> None:
        if self.bcast_pending:
            self.bcast_pending = False
            if self.state == StateRole.LEADER:
                self.bcast_append()

    def bcast_append(self) -> None:
        for nid in self.trk.progress:
            if nid != self.id:
                self.maybe_send_append(nid, True)

    def bcast_heartbeat(self) -> None:
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for nid in self.trk.progress:
            if nid != self.id:
                self.send_heartbeat(nid, ctx)

    def maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.trk.committed(), self.term)

    # --- role changes ---------------------------------------------------------------
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.quorum_check_elapsed = 0
        self.reset_randomized_election_timeout()
        self.lead_transferee = 0
        self.lease_revoked = False
        self.lease_hold_ticks = 0
        self.leader_heartbeat_ticks = 0
        self.lease_changes = []
        self.trk.reset_votes()
        last = self.raft_log.last_index()
        persisted = self.persisted_last_index()
        for nid, pr in self.trk.progress.items():
            pr.match = persisted if nid == self.id else 0
            pr.next = last + 1
            pr.state = _PROBE
            pr.pending_snapshot = 0
            pr.probe_sent = False
            pr.inflights.reset()
            pr.recent_active = False
            pr.lease_ack_tick = -(1 << 62)
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only.clear()
        self.pending_read_index_messages = []

    def persisted_last_index(self) -> int:
        """Last index of our log known durable (unstable entries are not)."""
        log = self.raft_log
        u = log.unstable
        if u.snapshot is not None:
            return 0
        stored = log.storage.last_index()
        return min(stored, u.offset - 1)

    def reset_randomized_election_timeout(self) -> None:
        override = self.config.randomized_election_ticks
        if override is not None:
            lo, hi = override
            self.randomized_election_timeout = lo + self.rng.randrange(hi - lo)
        else:
            et = self.election_timeout
            self.randomized_election_timeout = et + self.rng.randrange(et)

    def become_follower(self, term: int, lead: int) -> None:
        self.reset(term)
        self.lead = lead
        self.state = StateRole.FOLLOWER

    def become_candidate(self) -> None:
        assert self.state != StateRole.LEADER, "invalid transition [leader -> candidate]"
        self.reset(self.term + 1)
        self.vote = self.id
        self.state = StateRole.CANDIDATE

    def become_pre_candidate(self) -> None:
        assert self.state != StateRole.LEADER, "invalid transition [leader -> pre-candidate]"
        # A pre-candidate changes neither term nor vote (that is the point of PreVote).
        self.trk.reset_votes()
        self.lead = 0
        self.state = StateRole.PRE_CANDIDATE

    def become_leader(self) -> None:
        assert self.state == StateRole.CANDIDATE, (
            f"invalid transition [{self.state.name} -> leader]")
        self.reset(self.term)
        self.lead = self.id
        self.state = StateRole.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.match = self.persisted_last_index()
        pr.next = self.raft_log.last_index() + 1
        pr.recent_active = True
        # Conservatively, every entry we hold could be an unapplied conf change.
        self.pending_conf_index = self.raft_log.last_index()
        appended = self.append_entry([Entry(0, 0)])
        assert appended, "the empty entry of a new leader can never be refused"

    # --- proposals --------------------------------------------------------------------
    def append_entry(self, es: list[Entry]) -> bool:
        log = self.raft_log
        u = log.unstable
        li = log.last_index()
        first = li + 1
        term = self.term
        size = 0
        for e in es:
            li += 1
            e.term = term
            e.index = li
            size += len(e.data)
        if self.uncommitted_size > 0 and size > 0 and (
                self.uncommitted_size + size > self.max_uncommitted_size):
            return False
        self.uncommitted_size += size
        if u.offset + len(u.entries) == first:
            # The leader's log only grows at its end: extend the unstable tail directly.
            assert first > log.committed
            u.entries.extend(es)
        else:
            log.append(es)
        return True

    def reduce_uncommitted_size(self, ents: list[Entry]) -> None:
        if self.uncommitted_size == 0:
            return  # not a leader, or a leader whose budget was reset by an election
        s = 0
        for e in ents:
            s += len(e.data)
        self.uncommitted_size = max(0, self.uncommitted_size - s)

    # --- ticking --------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        if self.vote_embargo_ticks:
            self.vote_embargo_ticks -= 1
        if self.state == StateRole.LEADER:
            self.tick_heartbeat()
        else:
            self.tick_election()

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if (self.promotable() and self.election_elapsed >= self.randomized_election_timeout
                and (self.lead == 0 or self.election_elapsed >= self.lease_hold_ticks)):
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        self.quorum_check_elapsed += 1
        if self.quorum_check_elapsed >= (self.check_quorum_ticks or self.election_timeout):
            self.quorum_check_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, self.id, self.id))
                if self.state != StateRole.LEADER:
                    return
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            self.prune_lease_changes()
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state == StateRole.LEADER and self.lead_transferee:
                self.abort_leader_transfer()
        if self.state != StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, self.id, self.id))

    # --- elections ------------------------------------------------------------------
    def hup(self, kind: str) -> None:
        if self.state == StateRole.LEADER:
            return
        if not self.promotable():
            return
        if self.has_unapplied_conf_changes():
            return  # campaigning now could act on a stale configuration
        self.campaign(kind)

    def has_unapplied_conf_changes(self) -> bool:
        log = self.raft_log
        lo = max(log.applied + 1, log.first_index())
        hi = log.committed + 1
        if lo >= hi:
            return False
        for e in log.slice(lo, hi, None):
            if e.type == EntryType.CONF_CHANGE:
                return True
        return False

    def campaign(self, kind: str) -> None:
        if not self.promotable():
            return
        if kind == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MT.PRE_VOTE
            term = self.term + 1  # the term we would campaign for; not adopted yet
        else:
            self.become_candidate()
            vote_msg = MT.VOTE
            term = self.term
        if self.poll(self.id, _vote_resp_type(vote_msg), True) == VoteResult.WON:
            # A single-voter cluster wins at once.
            if kind == CAMPAIGN_PRE_ELECTION:
                self.campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = TRANSFER_CONTEXT if kind == CAMPAIGN_TRANSFER else b""
        log = self.raft_log
        li, lt = log.last_index(), log.last_term()
        for nid in self.trk.voter_list():
            if nid == self.id:
                continue
            self.send(Message(vote_msg, nid, 0, term, lt, li, context=ctx))

    def poll(self, nid: int, t: MT, granted: bool) -> VoteResult:
        self.trk.record_vote(nid, granted)
        return self.trk.tally_votes()[2]

    # --- the one entry point ----------------------------------------------------------
    def step(self, m: Message) -> None:
        t = m.type
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if t == MT.VOTE or t == MT.PRE_VOTE:
                force = m.context == TRANSFER_CONTEXT
                # A leader itself always refuses (CheckQuorum deposes it if it lost
                # its quorum); a follower refuses while it hears from the leader.
                in_lease = (self.check_quorum and self.lead != 0
                            and (self.state == StateRole.LEADER
                                 or self.election_elapsed < max(self.election_timeout,
                                                                self.lease_hold_ticks)))
                if not force and (in_lease or self.vote_embargo_ticks > 0):
                    # Leader stickiness: we heard from a leader recently, so this
                    # candidate is disruptive (or we just restarted); do not even
                    # adopt its term.
                    return
            if t == MT.PRE_VOTE:
                pass  # never change term for a pre-vote
            elif t == MT.PRE_VOTE_RESP and not m.reject:
                pass  # the term is adopted when the pre-election is won
            elif t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            elif t == MT.VOTE:
                # Raft §5.2 (Figure 2, Followers): only hearing from the leader or
                # *granting* a vote restarts the election timer (the grant below resets
                # it). A candidate we refuse, e.g. one whose log is behind ours, must not
                # hold back our own campaign: stale candidates retrying every timeout
                # would otherwise keep the nodes that can win from ever campaigning.
                elapsed = self.election_elapsed
                self.become_follower(m.term, 0)
                self.election_elapsed = elapsed
            else:
                self.become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and t in (MT.HEARTBEAT, MT.APP):
                # A stale leader (e.g. after a partition) learns our term and steps down;
                # without this it could be stuck forever when we ignore its messages.
                self.send(Message(MT.APP_RESP, m.frm, 0))
            elif t == MT.PRE_VOTE:
                self.send(Message(MT.PRE_VOTE_RESP, m.frm, 0, self.term, reject=True))
            return

        if t == MT.HUP:
            self.hup(CAMPAIGN_PRE_ELECTION if self.pre_vote else CAMPAIGN_ELECTION)
        elif t == MT.VOTE or t == MT.PRE_VOTE:
            can_vote = (self.vote == m.frm
                        or (self.vote == 0 and self.lead == 0)
                        or (t == MT.PRE_VOTE and m.term > self.term))
            if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
                # Answer with the candidate's term so it counts the grant.
                self.send(Message(_vote_resp_type(t), m.frm, 0, m.term))
                if t == MT.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.frm
            else:
                self.send(Message(_vote_resp_type(t), m.frm, 0, self.term, reject=True))
        elif self.state == StateRole.LEADER:
            self.step_leader(m)
        elif self.state == StateRole.FOLLOWER:
            self.step_follower(m)
        else:
            self.step_candidate(m)

    # --- candidate --------------------------------------------------------------------
    def step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.state == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        if t == MT.PROP:
            self._drop(m, "no leader (election in progress)")
        elif t == MT.READ_INDEX:
            self._drop(m, "no leader (election in progress)")
        elif t == MT.APP:
            self.become_follower(m.term, m.frm)
            self.handle_append_entries(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self.handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self.handle_snapshot(m)
        elif t == my_resp:
            res = self.poll(m.frm, t, not m.reject)
            if res == VoteResult.WON:
                if self.state == StateRole.PRE_CANDIDATE:
                    self.campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
                    self.request_bcast_append()
            elif res == VoteResult.LOST:
                # A PRE_VOTE_RESP rejection with a higher term already made us follow.
                self.become_follower(self.term, 0)
        elif t == MT.TRANSFER_LEADER:
            pass  # no leader to forward to; the request is abandoned
        # TIMEOUT_NOW to a candidate is ignored: it is already campaigning.

    # --- follower ---------------------------------------------------------------------
    def step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            if self.lead == 0:
                self._drop(m, "no leader")
            elif self.config.disable_proposal_forwarding:
                self._drop(m, "proposal forwarding is disabled on this follower")
            else:
                m.to = self.lead
                self.send(m)
        elif t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_append_entries(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_snapshot(m)
        elif t == MT.TRANSFER_LEADER:
            if self.lead == 0:
                return  # no leader to forward to
            self.send(Message(MT.TRANSFER_LEADER, self.lead, 0, index=m.index or m.frm))
        elif t == MT.TIMEOUT_NOW:
            # Leadership transfer: skip PreVote and campaign at once.
            self.hup(CAMPAIGN_TRANSFER)
        elif t == MT.READ_INDEX:
            if self.lead == 0:
                self._drop(m, "no leader")
                return
            m.to = self.lead
            self.send(m)
        elif t == MT.READ_INDEX_RESP:
            if len(m.entries) != 1:
                return  # malformed answer from a peer
            self.read_states.append(ReadState(m.index, m.entries[0].data))

    def handle_append_entries(self, m: Message) -> None:
        log = self.raft_log
        if m.index < log.committed:
            self.send(Message(MT.APP_RESP, m.frm, 0, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(MT.APP_RESP, m.frm, 0, index=last_new))
            return
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self.send(Message(MT.APP_RESP, m.frm, 0, index=m.index, reject=True,
                          reject_hint=hint_index, log_term=hint_term))

    def handle_heartbeat(self, m: Message) -> None:
        if m.log_term:
            # The leader's announced lease hold: refuse votes at least this long.
            self.lease_hold_ticks = m.log_term
            self.leader_heartbeat_ticks = m.reject_hint
        log = self.raft_log
        log.commit_to(min(m.commit, log.last_index()))
        self.send(Message(MT.HEARTBEAT_RESP, m.frm, 0, index=m.index, context=m.context))

    def handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return  # malformed
        if self.restore(snap):
            self.send(Message(MT.APP_RESP, m.frm, 0, index=self.raft_log.last_index()))
        else:
            self.send(Message(MT.APP_RESP, m.frm, 0, index=self.raft_log.committed))

    def restore(self, s: Snapshot) -> bool:
        """Install a snapshot from the leader; False if it is stale or not for us."""
        meta = s.metadata
        log = self.raft_log
        if meta.index <= log.committed:
            return False
        assert self.state == StateRole.FOLLOWER, "only a follower installs snapshots"
        cs = meta.conf_state
        members = set(cs.voters) | set(cs.learners) | set(cs.voters_outgoing)
        if self.id not in members:
            return False  # we are not in the snapshot's config; ignore it
        if log.match_term(meta.index, meta.term):
            # We already have the snapshot's last entry: just fast-forward commit.
            log.commit_to(meta.index)
            return False
        log.restore(s)
        cfg, prs = restore_config(cs, log.last_index(), self.trk.max_inflight)
        self.trk.set_config(cfg, prs)
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        return True

    def assert_invariants(self) -> None:
        """Cheap whole-node invariants, checked once per Ready (the simulator turns a
        failure into a bug report with its seed)."""
        log = self.raft_log
        assert log.applied <= log.committed <= log.last_index(), (
            f"applied {log.applied} <= committed {log.committed} <= last {log.last_index()}")
        assert log.first_index() - 1 <= log.committed, "snapshot beyond commit"
        st = self.state
        if st == StateRole.LEADER:
            assert self.lead == self.id and self.vote == self.id, (self.lead, self.vote)
            assert log.zero_term_on_err(log.last_index()) == self.term, (
                "a leader's last entry is always of its term")
        else:
            assert self.lead != self.id, f"{st.name} believes it is the leader"
            assert not self.lead_transferee, "only a leader transfers leadership"
        if st in (StateRole.CANDIDATE, StateRole.PRE_CANDIDATE):
            assert self.lead == 0, "a candidate knows no leader"
        if st == StateRole.CANDIDATE:
            assert self.vote == self.id, "a candidate votes for itself"
        assert self.uncommitted_size >= 0

    # --- persistence feedback -----------------------------------------------------------
    def on_persisted(self) -> None:
        """The application made the last Ready durable: count our own log now."""
        if self.state != StateRole.LEADER:
            return
        pr = self.trk.progress.get(self.id)
        if pr is None:
            return
        if pr.maybe_update(self.persisted_last_index()) and self.maybe_commit():
            self.release_pending_read_index_messages()
            self.request_bcast_append()
