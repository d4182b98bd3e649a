"""RawNode: the application's handle on one Raft node (etcd-io/raft's RawNode shape).

The driver loop, one turn at a time:
  1. ``tick()`` / ``step(m)`` / ``propose(data)`` ...;
  2. ``rd = ready()`` (only if ``has_ready()``);
  3. send ``rd.messages`` at once (they do not depend on this Ready being durable);
  4. persist ``rd.snapshot``, ``rd.entries`` and ``rd.hard_state`` (fsync if ``must_sync``);
  5. only then send ``rd.persisted_messages`` (votes, acknowledgements);
  6. apply ``rd.committed_entries`` in order (calling ``apply_conf_change`` for
     CONF_CHANGE entries), answer ``rd.read_states`` once applied up to their index;
  7. ``advance(rd)``.
Exactly one Ready may be outstanding: call ``advance`` before the next ``ready``.
"""

from __future__ import annotations

from .config import Config, ConfigError, ProposalDropped
from .raft import Raft
from .storage import Storage
from .types import (
    LOCAL_MESSAGE_TYPES,
    RESPONSE_MESSAGE_TYPES,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType as MT,
    Ready,
    SoftState,
    StateRole,
    Status,
)

__all__ = ["Config", "ConfigError", "ProposalDropped", "RawNode", "Ready", "PERSISTED_TYPES"]

#: Message types that acknowledge (or request on the basis of) local state, so they
#: may leave only after the Ready that produced them is durable.
PERSISTED_TYPES = frozenset({MT.APP_RESP, MT.VOTE, MT.VOTE_RESP, MT.HEARTBEAT_RESP})

#: Largest read-index context accepted (it travels in heartbeats).
MAX_READ_CTX_BYTES = 1024


class RawNode:
    __slots__ = ("raft", "_prev_soft", "_prev_hard", "_outstanding")

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        r = self.raft
        self._prev_soft = (r.lead, r.state)
        self._prev_hard = (r.term, r.vote, r.raft_log.committed)
        self._outstanding = False

    # --- inputs -----------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (with PreVote first if configured)."""
        r = self.raft
        r.step(Message(MT.HUP, r.id, r.id))

    def propose(self, data: bytes) -> None:
        """Propose a normal entry; raises ProposalDropped if it cannot be accepted here."""
        self.raft.propose_normal([Entry(0, 0, EntryType.NORMAL, data)])

    def propose_batch(self, datas: list[bytes]) -> None:
        """Propose several normal entries in one message (all or nothing)."""
        if not datas:
            return
        self.raft.propose_normal([Entry(0, 0, EntryType.NORMAL, d) for d in datas])

    def propose_conf_change(self, cc: ConfChange) -> None:
        r = self.raft
        r.step(Message(MT.PROP, r.id, r.id,
                       entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())]))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Feed a message from a peer. Local-only types are refused with ValueError."""
        if m.type in LOCAL_MESSAGE_TYPES:
            raise ValueError(f"{m.type.name} is a local message and cannot come from a peer")
        r = self.raft
        if m.term == 0 and m.type != MT.PROP and m.type != MT.READ_INDEX:
            return  # every peer message except a forwarded request carries a term
        if m.frm == r.id or m.frm == 0:
            return  # not from a peer
        if m.type in RESPONSE_MESSAGE_TYPES and m.frm not in r.trk.progress:
            return  # a response from a node outside the config
        r.step(m)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; the answer arrives in Ready.read_states.

        ``ctx`` identifies the request and must be unique among pending reads.
        """
        if not isinstance(ctx, bytes) or len(ctx) > MAX_READ_CTX_BYTES:
            raise ValueError(f"read ctx must be bytes of at most {MAX_READ_CTX_BYTES}")
        r = self.raft
        r.step(Message(MT.READ_INDEX, r.id, r.id, entries=[Entry(0, 0, EntryType.NORMAL, ctx)]))

    def transfer_leader(self, node_id: int) -> None:
        r = self.raft
        r.step(Message(MT.TRANSFER_LEADER, r.id, node_id, index=node_id))

    def set_timing(self, heartbeat_tick: int, election_tick: int,
                   randomized_election_ticks: tuple[int, int] | None = None,
                   check_quorum_ticks: int | None = None) -> None:
        """Change the heartbeat interval and election timeout (in ticks) of a running node,
        and optionally the [lo, hi) range its election timeouts are drawn from (lo >=
        election_tick; None = Raft's [election_tick, 2 * election_tick)).

        Safe with lease reads at any moment and in any order across members: the leader
        announces its lease hold in heartbeats and counts each stamp with the smallest
        hold it announced since (see geokv.raft.raft). The elapsed ticks are kept; the
        election timeout is redrawn. ``check_quorum_ticks``: how long a leader may go
        without hearing from a quorum before it steps down (None = one election timeout,
        etcd's rule; longer tolerates slow acknowledgements without changing failure
        detection, which is the followers' timeout; lease reads do not depend on it).
        Raises ConfigError (nothing changed) if invalid.
        """
        r = self.raft
        for name, v in (("heartbeat_tick", heartbeat_tick), ("election_tick", election_tick)):
            if type(v) is not int:
                raise ConfigError(f"{name} must be an int, got {v!r}")
        if heartbeat_tick <= 0:
            raise ConfigError("heartbeat_tick must be greater than 0")
        if election_tick <= heartbeat_tick:
            raise ConfigError("election_tick must be greater than heartbeat_tick")
        if not r.config.lease_drift_ticks < election_tick:
            raise ConfigError(f"election_tick must exceed lease_drift_ticks "
                              f"({r.config.lease_drift_ticks})")
        if randomized_election_ticks is not None:
            lo, hi = randomized_election_ticks
            if type(lo) is not int or type(hi) is not int or lo < election_tick or hi <= lo:
                raise ConfigError(f"randomized_election_ticks {randomized_election_ticks} must "
                                  f"satisfy election_tick ({election_tick}) <= lo < hi")
        if check_quorum_ticks is not None and (type(check_quorum_ticks) is not int
                                               or check_quorum_ticks < election_tick):
            raise ConfigError(f"check_quorum_ticks {check_quorum_ticks!r} must be an int >= "
                              f"election_tick ({election_tick})")
        r.set_timing(heartbeat_tick, election_tick, randomized_election_ticks,
                     check_quorum_ticks or 0)

    def report_unreachable(self, node_id: int) -> None:
        r = self.raft
        r.step(Message(MT.UNREACHABLE, r.id, node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        r = self.raft
        r.step(Message(MT.SNAP_STATUS, r.id, node_id, reject=not ok))

    # --- outputs ----------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        r.flush_bcast_append()
        log = r.raft_log
        if r.msgs or r.read_states:
            return True
        if log.unstable.entries or log.unstable.snapshot is not None:
            return True
        if (r.lead, r.state) != self._prev_soft:
            return True
        if (r.term, r.vote, log.committed) != self._prev_hard:
            return True
        return log.has_next_committed_ents()

    def ready(self) -> Ready:
        assert not self._outstanding, "advance() the previous Ready before asking for another"
        r = self.raft
        r.flush_bcast_append()
        log = r.raft_log
        soft = (r.lead, r.state)
        hard = (r.term, r.vote, log.committed)
        msgs: list[Message] = []
        persisted: list[Message] = []
        for m in r.msgs:
            (persisted if m.type in PERSISTED_TYPES else msgs).append(m)
        r.msgs = []
        hs = HardState(*hard) if hard != self._prev_hard else None
        must_sync = bool(log.unstable.entries) or log.unstable.snapshot is not None or (
            hs is not None and (hard[0] != self._prev_hard[0] or hard[1] != self._prev_hard[1]))
        rd = Ready(
            soft_state=SoftState(*soft) if soft != self._prev_soft else None,
            hard_state=hs,
            entries=list(log.unstable.entries),
            snapshot=log.unstable.snapshot,
            committed_entries=log.next_committed_ents(),
            messages=msgs,
            persisted_messages=persisted,
            read_states=r.read_states,
            must_sync=must_sync,
        )
        r.read_states = []
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The application persisted, sent and applied everything in ``rd``."""
        assert self._outstanding, "advance() without a Ready"
        self._outstanding = False
        r = self.raft
        log = r.raft_log
        if rd.soft_state is not None:
            self._prev_soft = (rd.soft_state.leader_id, rd.soft_state.role)
        if rd.hard_state is not None:
            hs = rd.hard_state
            self._prev_hard = (hs.term, hs.vote, hs.commit)
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.metadata.index)
            if log.applied < rd.snapshot.metadata.index:
                log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            e = rd.entries[-1]
            log.stable_to(e.index, e.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            r.reduce_uncommitted_size(rd.committed_entries)
        r.on_persisted()
        r.maybe_auto_leave()
        r.assert_invariants()

    # --- introspection ----------------------------------------------------------------
    @property
    def leader_id(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def role(self) -> StateRole:
        return self.raft.state

    @property
    def id(self) -> int:
        return self.raft.id

    def lease_valid(self, ticks_ahead: int = 0) -> bool:
        """Cheap form of ``status().lease_valid`` for a per-read check; ``ticks_ahead``
        counts ticks real time owes that were not delivered yet (see Raft.lease_valid)."""
        return self.raft.lease_valid(ticks_ahead)

    def status(self) -> Status:
        r = self.raft
        log = r.raft_log
        progress = {}
        if r.state == StateRole.LEADER:
            progress = {nid: (pr.match, pr.next, pr.state, pr.recent_active)
                        for nid, pr in r.trk.progress.items()}
        return Status(
            id=r.id, term=r.term, vote=r.vote, commit=log.committed, applied=log.applied,
            leader_id=r.lead, role=r.state, lead_transferee=r.lead_transferee,
            progress=progress, lease_valid=r.lease_valid(),
            config=r.trk.config.conf_state(),
            timing=(r.heartbeat_timeout, r.election_timeout),
            leader_timing=(r.leader_heartbeat_ticks, r.lease_hold_ticks),
        )
