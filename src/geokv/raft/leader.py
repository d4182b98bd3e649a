"""The leader's side of the Raft state machine: proposals, replication acks, reads,
leadership transfer and membership changes.

``LeaderMixin`` is part of ``geokv.raft.raft.Raft`` (split out only to keep each file
readable); it uses the state and helpers defined there.
"""

from __future__ import annotations

from .config import ProposalDropped
from .confchange import Changer, ConfChangeError
from .quorum import VoteResult
from .readonly import MAX_PENDING_READS
from .tracker import Progress
from .types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType as MT,
    ProgressState,
    ReadOnlyOption,
    ReadState,
    StateRole,
)

#: Most READ_INDEX requests parked until the leader commits an entry of its term.
MAX_PENDING_READ_INDEX_MESSAGES = 4096

_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT


class LeaderMixin:
    # --- leader -----------------------------------------------------------------------
    def step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self.bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            if not self.trk.quorum_active():
                self.become_follower(self.term, 0)
            for nid, pr in self.trk.progress.items():
                pr.recent_active = nid == self.id
            return
        if t == MT.PROP:
            self.on_prop(m)
            return
        if t == MT.READ_INDEX:
            self.on_read_index(m)
            return
        if t == MT.TRANSFER_LEADER:
            # ``index`` names the transferee (a forwarding follower is ``frm``).
            transferee = m.index or m.frm
            pr = self.trk.progress.get(transferee)
            if pr is not None:
                self.on_transfer_leader(transferee, pr)
            return

        pr = self.trk.progress.get(m.frm)
        if pr is None:
            return  # a node no longer (or not yet) in the config
        if t == MT.APP_RESP:
            self.on_app_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            self.on_heartbeat_resp(m, pr)
        elif t == MT.SNAP_STATUS:
            if pr.state != _SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for the follower's answer to an APP before sending more.
            pr.probe_sent = True
        elif t == MT.UNREACHABLE:
            if pr.state == _REPLICATE:
                pr.become_probe()

    def on_prop(self, m: Message) -> None:
        assert m.entries, "proposal without entries"
        if self.id not in self.trk.progress:
            self._drop(m, "this leader was removed from the configuration")
            return
        if self.lead_transferee:
            self._drop(m, f"leadership transfer to {self.lead_transferee} is in progress")
            return
        if m.frm not in (0, self.id):
            # A peer's message may be delivered twice (or shared by a simulator):
            # never adopt its Entry objects, append_entry assigns their index/term.
            m = Message(m.type, m.to, m.frm, entries=[Entry(0, 0, e.type, e.data)
                                                      for e in m.entries])
        log = self.raft_log
        for i, e in enumerate(m.entries):
            if e.type != EntryType.CONF_CHANGE:
                continue
            try:
                cc = ConfChange.decode(e.data)
            except ValueError:
                reason = "malformed conf change"
            else:
                reason = self.conf_change_refusal(cc)
            if reason:
                if m.frm in (0, self.id):
                    raise ProposalDropped(reason, self.lead)
                # A peer's invalid change becomes a no-op (it learns when it applies).
                m.entries[i] = Entry(0, 0)
            else:
                self.pending_conf_index = log.last_index() + i + 1
        if not self.append_entry(m.entries):
            self._drop(m, "too many uncommitted entries (max_uncommitted_entries_size)")
            return
        self.request_bcast_append()

    def propose_normal(self, entries: list[Entry]) -> None:
        """Local proposal of NORMAL entries: the leader's fast path of on_prop
        (same checks, no Message), anything else goes through ``step``."""
        if self.state != StateRole.LEADER:
            self.step(Message(MT.PROP, self.id, self.id, entries=entries))
            return
        if self.lead_transferee or self.id not in self.trk.progress:
            self.on_prop(Message(MT.PROP, self.id, self.id, entries=entries))
            return
        if not self.append_entry(entries):
            raise ProposalDropped(
                "too many uncommitted entries (max_uncommitted_entries_size)", self.lead)
        self.bcast_pending = True

    def conf_change_refusal(self, cc: ConfChange) -> str:
        """Why ``cc`` may not be proposed now ('' if it may)."""
        log = self.raft_log
        if not self.committed_entry_in_current_term():
            return "the leader has not yet committed an entry in its term"
        if self.pending_conf_index > log.applied:
            return (f"a conf change is still pending (index {self.pending_conf_index}, "
                    f"applied {log.applied})")
        joint = self.trk.config.joint()
        if cc.leave_joint():
            if not joint:
                return "not in a joint config, nothing to leave"
            return ""
        if joint:
            return "must leave the joint config before another change"
        use_joint, auto_leave = cc.enter_joint()
        changer = Changer(self.trk.config, self.trk.progress, log.last_index(),
                          self.trk.max_inflight)
        try:
            if use_joint:
                changer.enter_joint(auto_leave, cc.changes)
            else:
                changer.simple(cc.changes)
        except ConfChangeError as exc:
            return str(exc)
        return ""

    def on_read_index(self, m: Message) -> None:
        if not self.committed_entry_in_current_term():
            # The commit index is not known to be current until an entry of this term
            # commits (Raft thesis §6.4 step 1); park the read until then.
            if len(self.pending_read_index_messages) >= MAX_PENDING_READ_INDEX_MESSAGES:
                self._drop(m, "too many reads waiting for the new leader's first commit")
                return
            self.pending_read_index_messages.append(m)
            return
        self.send_read_index_response(m)

    def send_read_index_response(self, m: Message) -> None:
        committed = self.raft_log.committed
        if self.trk.is_singleton():
            self.respond_read_index(m, committed)
            return
        if self.config.read_only_option == ReadOnlyOption.LEASE_BASED and self.lease_valid():
            self.respond_read_index(m, committed)
            return
        if len(self.read_only) >= MAX_PENDING_READS:
            self._drop(m, "too many reads waiting for a heartbeat quorum")
            return
        ctx = m.entries[0].data
        if not self.read_only.add_request(committed, m):
            return  # same context already pending; it will be answered with it
        self.read_only.recv_ack(self.id, ctx)
        self.bcast_heartbeat_with_ctx(ctx)

    def respond_read_index(self, req: Message, index: int) -> None:
        if req.frm in (0, self.id):
            self.read_states.append(ReadState(index, req.entries[0].data))
        else:
            self.send(Message(MT.READ_INDEX_RESP, req.frm, 0, index=index,
                              entries=req.entries))

    def release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        msgs = self.pending_read_index_messages
        self.pending_read_index_messages = []
        for m in msgs:
            self.send_read_index_response(m)

    def on_app_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Fast back-off (Raft §5.3 optimisation): skip every entry of ours whose
                # term is above the follower's term at the hint.
                next_probe = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == _REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        st = pr.state
        if st == _PROBE:
            pr.become_replicate()
        elif st == _SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif st == _REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.release_pending_read_index_messages()
            self.request_bcast_append()
        elif old_paused:
            self.send_append(m.frm)
        # Fill the in-flight window (bounded by max_inflight_msgs).
        while self.maybe_send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.raft_log.last_index():
            self.send_timeout_now(m.frm)

    def on_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == _REPLICATE and pr.inflights.full():
            # The APPs in the window may all have been lost (e.g. the follower
            # restarted); free one slot so the next append can probe the follower.
            pr.inflights.free_first_one()
        if pr.lease_ack_tick < m.index <= self.ticks:
            pr.lease_ack_tick = m.index
        if pr.match < self.raft_log.last_index() or pr.state == _PROBE:
            self.send_append(m.frm)
        if not m.context:
            return
        acks = self.read_only.recv_ack(m.frm, m.context)
        if acks is None or self.trk.vote_result(acks) != VoteResult.WON:
            return
        for rs in self.read_only.advance(m.context):
            self.respond_read_index(rs.req, rs.index)

    def on_transfer_leader(self, transferee: int, pr: Progress) -> None:
        if pr.is_learner:
            return  # a learner can never lead
        if self.lead_transferee:
            if self.lead_transferee == transferee:
                return
            self.abort_leader_transfer()
        if transferee == self.id:
            return
        # The transfer must finish within one election timeout.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.raft_log.last_index():
            self.send_timeout_now(transferee)
        else:
            self.send_append(transferee)

    def send_timeout_now(self, to: int) -> None:
        # The transferee will campaign past every follower's stickiness, possibly
        # long after the transfer is aborted (a delayed message): this leader may never
        # trust its lease again in this term.
        self.lease_revoked = True
        self.send(Message(MT.TIMEOUT_NOW, to, 0))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = 0

    # --- membership -------------------------------------------------------------------
    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE entry; an invalid one is ignored deterministically."""
        changer = Changer(self.trk.config, self.trk.progress, self.raft_log.last_index(),
                          self.trk.max_inflight)
        try:
            if cc.leave_joint():
                cfg, prs = changer.leave_joint()
            else:
                use_joint, auto_leave = cc.enter_joint()
                if use_joint:
                    cfg, prs = changer.enter_joint(auto_leave, cc.changes)
                else:
                    cfg, prs = changer.simple(cc.changes)
        except ConfChangeError:
            # Every replica applies the same entries in the same order, so every replica
            # ignores the same invalid change; the configuration stays consistent.
            return self.trk.config.conf_state()
        return self.switch_to_config(cfg, prs)

    def switch_to_config(self, cfg, prs) -> ConfState:
        self.trk.set_config(cfg, prs)
        cs = cfg.conf_state()
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if (pr is None or self.is_learner) and self.state == StateRole.LEADER:
            # Removed or demoted: step down so the remaining voters elect a leader.
            self.become_follower(self.term, 0)
            return cs
        if self.state != StateRole.LEADER or not cs.voters:
            return cs
        if self.maybe_commit():
            self.request_bcast_append()
        else:
            for nid, pr in prs.items():
                if nid != self.id:
                    # Probe new members at once instead of waiting for a heartbeat.
                    self.maybe_send_append(nid, pr.state == _PROBE)
        if self.lead_transferee and self.lead_transferee not in cfg.voters_in:
            self.abort_leader_transfer()
        return cs

    def maybe_auto_leave(self) -> None:
        """Leader of an auto-leave joint config: propose leaving once it is applied."""
        if (self.state == StateRole.LEADER and self.trk.config.auto_leave
                and self.raft_log.applied >= self.pending_conf_index):
            e = Entry(0, 0, EntryType.CONF_CHANGE, ConfChange().encode())
            if self.append_entry([e]):
                self.pending_conf_index = self.raft_log.last_index()
                self.request_bcast_append()
