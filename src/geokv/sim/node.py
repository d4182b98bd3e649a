"""One simulated server: the real RawNode, its storage, a disk, and a state machine.

The node follows the driver-loop contract of ARCHITECTURE.md exactly, in virtual time:
one turn feeds the RawNode everything queued in its inbox (ticks, messages, client
requests), takes a Ready, sends ``messages`` at once, writes the snapshot, entries and
hard state to the disk (an fsync that takes virtual time, during which the node does
nothing else), then sends ``persisted_messages``, applies committed entries, answers
reads, and calls ``advance``.

A crash throws away everything in memory; the node restarts from what its SimDisk
holds. A pause freezes the driver loop (ticks and messages queue up and are processed
in arrival order on resume, so the node catches up on the ticks real time owes it).
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack

from geokv.raft import codec
from geokv.raft.config import Config, ProposalDropped
from geokv.raft.rawnode import RawNode
from geokv.raft.storage import MemoryStorage, StorageError
from geokv.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadOnlyOption,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)

from .disk import SimDisk
from .statemachine import KVStateMachine

if TYPE_CHECKING:
    from .run import ClientOp, Simulation

#: Bound on queued inbound messages; beyond it new ones are dropped (Raft retries).
INBOX_MESSAGES_MAX = 4096
#: Bound on inbox items one turn feeds the RawNode before taking a Ready.
TURN_BATCH_MAX = 256
#: How long after a failed SNAP send the transport reports the failure (ms).
SNAP_FAILURE_REPORT_MS = 500.0

RUNNING, PAUSED, CRASHED, STOPPED = "running", "paused", "crashed", "stopped"

_TICK = 0
_MSG = 1
_WRITE = 2
_READ = 3
_CONF = 4
_TRANSFER = 5
_UNREACHABLE = 6
_SNAP_STATUS = 7


def encode_wire(m: Message) -> bytes:
    """Raft message -> bytes, exactly as a peer transport would frame it."""
    return msgpack.packb(codec.encode_message(m), use_bin_type=True)


def decode_wire(b: bytes) -> Message:
    return codec.decode_message(msgpack.unpackb(b, raw=False))


class SimNode:
    """A server in the simulation; ``sim`` gives it the network, clients and checkers."""

    def __init__(self, sim: Simulation, node_id: int, region: str, initial_voters: tuple[int, ...],
                 *, tick_ms: float, fsync_ms: float, rng_seed: int) -> None:
        self.sim = sim
        self.id = node_id
        self.region = region
        self.tick_ms = tick_ms
        self.fsync_ms = fsync_ms
        self.rng = random.Random(rng_seed)
        self.disk = SimDisk()
        if initial_voters:
            # Bootstrap like etcd: the initial members are conf-change entries 1..n of
            # term 1, already committed, so a member that joins later and replays the
            # log from index 1 learns the whole configuration.
            boot = [Entry(1, i + 1, EntryType.CONF_CHANGE,
                          ConfChange((ConfChangeSingle(ConfChangeType.ADD_NODE, v),)).encode())
                    for i, v in enumerate(initial_voters)]
            self.disk.write(HardState(1, 0, len(boot)), boot, None)
        self.status = STOPPED
        self.epoch = 0          # bumped on every crash: stale scheduled events ignore it
        self.restarts = 0
        self.removed = False
        self.inbox: deque[tuple[int, Any]] = deque()
        self.inbox_messages = 0
        self.turn_scheduled = False
        self.busy = False       # an fsync is in flight
        self.inflight_rd: Ready | None = None
        #: Set by the nemesis: crash at a random instant inside the next fsync.
        self.crash_on_fsync: float | None = None
        self.leader_term_checked = 0
        # Filled by _boot():
        self.storage: MemoryStorage
        self.rawnode: RawNode
        self.sm: KVStateMachine
        self.conf_state: ConfState
        self.commit_seen = 0
        self.pending_writes: dict[int, ClientOp] = {}
        self.pending_reads: dict[bytes, ClientOp] = {}
        self.reads_waiting: list[tuple[int, ClientOp]] = []

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        assert self.status in (STOPPED, CRASHED)
        self._boot()
        self.status = RUNNING
        self.sched_tick(self.epoch)

    def _boot(self) -> None:
        sim = self.sim
        self.storage = self.disk.load()
        snap = self.storage.snapshot()
        self.sm = KVStateMachine.restore(snap.data)
        self.conf_state = snap.metadata.conf_state
        cfg = sim.cfg
        config = Config(
            id=self.id,
            election_tick=cfg.election_tick,
            heartbeat_tick=cfg.heartbeat_tick,
            applied=snap.metadata.index,
            check_quorum=cfg.check_quorum,
            pre_vote=cfg.pre_vote,
            read_only_option=(ReadOnlyOption.LEASE_BASED if cfg.read_mode == "lease"
                              else ReadOnlyOption.SAFE),
            lease_drift_ticks=cfg.lease_drift_ticks,
            max_size_per_msg=cfg.max_size_per_msg,
            max_inflight_msgs=cfg.max_inflight_msgs,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        self.rawnode = RawNode(config, self.storage)
        self.sim.checker.on_restore(self.id, snap.metadata.index, snap.metadata.term,
                                    self.sm.chain)
        # A persisted commit index is a fact about the cluster: record it.
        hs = self.storage.hard_state()
        self.commit_seen = snap.metadata.index
        if hs.commit > self.commit_seen:
            self.sim.checker.on_commit(self.id, self.commit_seen + 1, hs.commit, hs.term,
                                       self.storage)
            self.commit_seen = hs.commit

    def crash(self) -> str:
        """Lose everything in memory; a write in flight is torn. Returns what was lost."""
        assert self.status in (RUNNING, PAUSED)
        what = "idle"
        rd = self.inflight_rd
        if rd is not None:
            what = "torn write: " + self.disk.write_torn(
                rd.hard_state, rd.entries, rd.snapshot, self.rng)
        self._go_down(CRASHED)
        return what

    def stop_forever(self) -> None:
        """A removed member shuts down (etcd's members exit when they learn removal)."""
        if self.status in (RUNNING, PAUSED):
            self._go_down(STOPPED)
        self.status = STOPPED
        self.removed = True

    def _go_down(self, status: str) -> None:
        self.status = status
        self.epoch += 1
        self.inflight_rd = None
        self.crash_on_fsync = None
        self.busy = False
        self.turn_scheduled = False
        self.inbox.clear()
        self.inbox_messages = 0
        self.sim.checker.on_not_leader(self.id)
        for op in list(self.pending_writes.values()):
            self.sim.client_write_unknown(op)
        for op in list(self.pending_reads.values()):
            self.sim.client_read_failed(op)
        for _, op in self.reads_waiting:
            self.sim.client_read_failed(op)
        self.pending_writes.clear()
        self.pending_reads.clear()
        self.reads_waiting.clear()

    def restart(self) -> None:
        assert self.status == CRASHED
        self.restarts += 1
        self.start()

    def pause(self) -> None:
        assert self.status == RUNNING
        self.status = PAUSED

    def resume(self) -> None:
        assert self.status == PAUSED
        self.status = RUNNING
        self._kick()

    @property
    def up(self) -> bool:
        return self.status in (RUNNING, PAUSED)

    # --- inputs -----------------------------------------------------------------------
    def sched_tick(self, epoch: int) -> None:
        self.sim.sched.after(self.tick_ms, self._on_tick, epoch)

    def _on_tick(self, epoch: int) -> None:
        if epoch != self.epoch or not self.up:
            return
        # While paused the tick still queues: on resume the node processes every tick
        # that real time owes it, in order with the messages that arrived meanwhile.
        self.inbox.append((_TICK, None))
        self._kick()
        self.sched_tick(epoch)

    def on_payload(self, frm: int, payload: bytes) -> None:
        if not self.up:
            self.sim.net.stats.dropped_dead += 1
            return
        if self.inbox_messages >= INBOX_MESSAGES_MAX:
            self.sim.net.stats.dropped_overflow += 1
            return
        self.inbox_messages += 1
        self.inbox.append((_MSG, payload))
        self._kick()

    def submit(self, op: ClientOp) -> bool:
        """A client request; False if the node cannot take it (down or overloaded)."""
        if not self.up or len(self.inbox) >= INBOX_MESSAGES_MAX:
            return False
        if op.op.kind == "w":
            self.pending_writes[op.write_id] = op
            self.inbox.append((_WRITE, op))
        else:
            self.pending_reads[op.read_ctx] = op
            self.inbox.append((_READ, op))
        self._kick()
        return True

    def forget_client_op(self, op: ClientOp) -> None:
        """The client gave up on ``op`` (timeout); a late answer is not delivered."""
        if op.op.kind == "w":
            self.pending_writes.pop(op.write_id, None)
        else:
            self.pending_reads.pop(op.read_ctx, None)
            self.reads_waiting = [(i, o) for i, o in self.reads_waiting if o is not op]

    def admin(self, kind: str, arg: Any) -> None:
        """Operator actions: a conf change proposal or a leadership transfer."""
        if not self.up:
            return
        self.inbox.append((_CONF if kind == "conf" else _TRANSFER, arg))
        self._kick()

    # --- the driver loop --------------------------------------------------------------
    def _kick(self) -> None:
        if self.status != RUNNING or self.busy or self.turn_scheduled:
            return
        self.turn_scheduled = True
        self.sim.sched.after(0.0, self._turn, self.epoch)

    def _turn(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.turn_scheduled = False
        if self.status != RUNNING or self.busy:
            return
        rn = self.rawnode
        inbox = self.inbox
        # With batching on, the turn's writes become one propose_batch (all or nothing),
        # as a runtime that coalesces proposals would do.
        batch: list[ClientOp] | None = [] if self.sim.cfg.batch_proposals else None
        n = 0
        while inbox and n < TURN_BATCH_MAX:
            n += 1
            kind, arg = inbox.popleft()
            if kind == _TICK:
                rn.tick()
            elif kind == _MSG:
                self.inbox_messages -= 1
                try:
                    m = decode_wire(arg)
                except ValueError as exc:
                    raise AssertionError(f"node {self.id}: undecodable message: {exc}") from None
                self._step(m)
            elif kind == _WRITE:
                if batch is None:
                    self._propose([arg])
                else:
                    batch.append(arg)
            elif kind == _READ:
                self._read_index(arg)
            elif kind == _CONF:
                try:
                    rn.propose_conf_change(arg)
                    self.sim.trace(f"n{self.id} proposed conf change {describe_conf_change(arg)}")
                except ProposalDropped as exc:
                    self.sim.trace(f"n{self.id} conf change {describe_conf_change(arg)} dropped: {exc.reason}")
            elif kind == _TRANSFER:
                rn.transfer_leader(arg)
            elif kind == _UNREACHABLE:
                rn.report_unreachable(arg)
            elif kind == _SNAP_STATUS:
                rn.report_snapshot(arg[0], arg[1])
        if batch:
            self._propose(batch)
        self._observe_role()
        if rn.has_ready():
            self._handle_ready(rn.ready())
        elif inbox:
            self._kick()

    def _step(self, m: Message) -> None:
        try:
            self.rawnode.step(m)
        except ProposalDropped:
            pass  # a forwarded proposal/read we cannot take; its client times out

    def _propose(self, ops: list[ClientOp]) -> None:
        ops = [op for op in ops if op.write_id in self.pending_writes]  # not given up
        if not ops:
            return
        try:
            if len(ops) == 1:
                self.rawnode.propose(ops[0].data)
            else:
                self.rawnode.propose_batch([op.data for op in ops])
        except ProposalDropped:
            for op in ops:
                del self.pending_writes[op.write_id]
                self.sim.client_write_failed(op)

    def _read_index(self, op: ClientOp) -> None:
        if op.read_ctx not in self.pending_reads:
            return
        try:
            self.rawnode.read_index(op.read_ctx)
        except ProposalDropped:
            del self.pending_reads[op.read_ctx]
            self.sim.client_read_failed(op)

    def _observe_role(self) -> None:
        rn = self.rawnode
        if rn.role == StateRole.LEADER:
            self.sim.checker.on_leader(self.id, rn.term)
            self.sim.note_leader(self.id, rn.term, rn.raft.raft_log.committed)
        else:
            self.sim.checker.on_not_leader(self.id)

    def _handle_ready(self, rd: Ready) -> None:
        for m in rd.messages:
            self._send(m)
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            self.busy = True
            self.inflight_rd = rd
            was_leader_term = self.rawnode.term if self.rawnode.role == StateRole.LEADER else 0
            delay = self.fsync_ms if rd.must_sync else self.fsync_ms * 0.1
            self.sim.sched.after(delay, self._persisted, self.epoch, rd, was_leader_term)
            if self.crash_on_fsync is not None:
                down_ms, self.crash_on_fsync = self.crash_on_fsync, None
                self.sim.sched.after(delay * self.rng.random(), self.sim.crash_armed, self,
                                     self.epoch, down_ms)
        else:
            self._finish(rd)

    def _persisted(self, epoch: int, rd: Ready, leader_term: int) -> None:
        if epoch != self.epoch:
            return  # crashed during the fsync; crash() tore the write
        self.inflight_rd = None
        self.busy = False
        checker = self.sim.checker
        st = self.storage
        self.disk.write(rd.hard_state, rd.entries, rd.snapshot)
        if rd.snapshot is not None and rd.snapshot.metadata.index > st.snapshot().metadata.index:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(list(rd.entries))
            checker.on_persist_entries(self.id, rd.entries, st)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
            commit = rd.hard_state.commit
            if commit > self.commit_seen:
                checker.on_commit(self.id, self.commit_seen + 1, commit, rd.hard_state.term, st)
                self.commit_seen = commit
        if leader_term and self.rawnode.role == StateRole.LEADER and self.rawnode.term == leader_term:
            checker.check_leader_complete(self.id, leader_term, st)
        if rd.snapshot is not None:
            self._restore_snapshot(rd)
        self._finish(rd)

    def _restore_snapshot(self, rd: Ready) -> None:
        snap = rd.snapshot
        meta = snap.metadata
        if meta.index <= self.sm.applied_index:
            return
        self.sm = KVStateMachine.restore(snap.data)
        if self.sm.applied_index != meta.index:
            raise AssertionError(
                f"node {self.id}: snapshot metadata index {meta.index} but state machine "
                f"data is at {self.sm.applied_index}")
        self.conf_state = meta.conf_state
        self.sim.checker.on_restore(self.id, meta.index, meta.term, self.sm.chain)
        self.sim.trace(f"n{self.id} installed snapshot at {meta.index} (term {meta.term})")
        for wid in list(self.pending_writes):
            if wid in self.sm.applied_ids:
                self.sim.client_write_acked(self.pending_writes.pop(wid), self.id, meta.index)
        self._serve_reads()

    def _finish(self, rd: Ready) -> None:
        for m in rd.persisted_messages:
            self._send(m)
        self._apply(rd)
        for rs in rd.read_states:
            op = self.pending_reads.pop(rs.request_ctx, None)
            if op is not None:
                self.reads_waiting.append((rs.index, op))
        self._serve_reads()
        self.rawnode.advance(rd)
        self._maybe_snapshot()
        self._observe_role()
        if self.inbox or self.rawnode.has_ready():
            self._kick()

    def _apply(self, rd: Ready) -> None:
        checker = self.sim.checker
        sm = self.sm
        for e in rd.committed_entries:
            if e.index <= sm.applied_index:
                # Already covered by a snapshot installed in this very Ready.
                continue
            before = sm.applied_index
            is_cc = e.type == EntryType.CONF_CHANGE
            wid = sm.apply(e.index, e.term, e.data, not is_cc)
            checker.on_apply(self.id, e, before, sm.chain)
            if is_cc:
                cc = ConfChange.decode(e.data)
                self.conf_state = self.rawnode.apply_conf_change(cc)
                self.sim.on_conf_applied(self, e.index, cc, self.conf_state)
            elif wid is not None:
                op = self.pending_writes.pop(wid, None)
                if op is not None:
                    self.sim.client_write_acked(op, self.id, e.index)

    def _serve_reads(self) -> None:
        if not self.reads_waiting:
            return
        applied = self.sm.applied_index
        still = []
        for index, op in self.reads_waiting:
            if index <= applied:
                self.sim.client_read_done(op, self.sm.kv.get(op.op.key), self.id, index)
            else:
                still.append((index, op))
        self.reads_waiting = still

    def _maybe_snapshot(self) -> None:
        cfg = self.sim.cfg
        st = self.storage
        applied = self.sm.applied_index
        snap_index = st.snapshot().metadata.index
        if applied - snap_index < cfg.snapshot_interval or applied > st.last_index():
            return
        snap = st.create_snapshot(applied, self.conf_state, self.sm.snapshot())
        compact_to = applied - cfg.snapshot_keep_entries
        if compact_to > st.first_index():
            st.compact(compact_to)
        self.disk.save_snapshot(snap, compact_to)

    def _send(self, m: Message) -> None:
        sim = self.sim
        if m.to == self.id:
            raise AssertionError(f"node {self.id} sent {m.type.name} to itself")
        if m.to not in sim.nodes:
            return  # a member id with no server behind it (never started)
        if m.type == MessageType.SNAP and m.snapshot is not None:
            m.snapshot = self._merged_snapshot(m.snapshot)
        if m.type == MessageType.VOTE_RESP and not m.reject:
            hs = self.disk.hard_state()
            sim.checker.on_vote_granted(self.id, m.term, m.to, hs.term, hs.vote)
        elif m.type == MessageType.APP_RESP and not m.reject:
            sim.checker.on_append_acked(self.id, m.term, m.index, self.disk.hard_state().term,
                                        self.disk.last_index())
        ok = sim.net.send(self.id, m.to, encode_wire(m))
        if not ok and self.rng.random() < 0.5:
            # The transport sees the connection fail and tells Raft (not always: a
            # blackholed link looks like silence).
            self.inbox.append((_UNREACHABLE, m.to))
        if m.type == MessageType.SNAP:
            delay = (sim.net.one_way_ms(self.id, m.to) * 2 if ok else SNAP_FAILURE_REPORT_MS)
            sim.sched.after(delay, self._snap_reported, self.epoch, m.to, ok)

    def _merged_snapshot(self, snap: Snapshot) -> Snapshot:
        """Like etcd (and geokv's runtime), ship the *current* applied state and
        configuration instead of the last stored snapshot: a member added after that
        snapshot was taken is not in its configuration and would refuse it forever."""
        index = self.sm.applied_index
        if index <= snap.metadata.index:
            return snap
        try:
            term = self.storage.term(index)
        except StorageError:
            return snap
        return Snapshot(SnapshotMetadata(index, term, self.conf_state), self.sm.snapshot())

    def _snap_reported(self, epoch: int, to: int, ok: bool) -> None:
        if epoch != self.epoch or not self.up:
            return
        self.inbox.append((_SNAP_STATUS, (to, ok)))
        self._kick()

    # --- introspection ----------------------------------------------------------------
    def role_name(self) -> str:
        if not self.up:
            return self.status
        return self.rawnode.role.name.lower()


def describe_conf_change(cc: ConfChange) -> str:
    if not cc.changes:
        return "leave-joint"
    parts = [f"{c.type.name.lower()}({c.node_id})" for c in cc.changes]
    return "+".join(parts) + f"/{cc.transition.name.lower()}"


__all__ = ["SimNode", "describe_conf_change", "encode_wire", "decode_wire"]
