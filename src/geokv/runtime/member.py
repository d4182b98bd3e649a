"""One geokv server: the Raft driver loop and the request paths the API layer calls.

The driver is ONE asyncio task that owns the RawNode; nothing else touches it. Each turn:
  1. take ticks, inbound messages, proposals, read requests and actions from bounded
     queues (everything that arrived since the last turn: natural batching);
  2. ``ready()``;
  3. send ``messages``; persist hard state + entries + snapshot with ONE fsync: the
     entries are encoded and buffered here, the write + fsync run on the member's WAL
     sync thread (``runtime/persist.py``) so the loop keeps accepting requests (they
     become the next group commit); committed entries are applied meanwhile. A Ready
     that needs no fsync (only the commit index moved) is buffered with no thread hop;
  4. send ``persisted_messages``;
  5. apply committed entries in one ``MVCCStore.apply_batch`` (one LMDB txn), apply conf
     changes, resolve waiting requests, publish events to the watch hub. A batch whose
     apply may be long (a range delete, a lease revoke, a compaction, or
     ``BIG_APPLY_ENTRIES_MIN`` entries; see ``_is_big_apply``) runs ``apply_batch`` in the
     member's ONE apply thread while the driver keeps ticking, stepping and persisting;
     later committed batches queue behind it (log order), and everything after the
     store call (futures, leases, watch publish, applied_index) runs on the loop once the
     thread is done. Conf changes and snapshots wait for the queue to drain first;
  6. ``advance``.

Entry data of a NORMAL entry is msgpack ``[origin member id, request id, command]``; the
member that proposed resolves its waiting future when it applies the entry itself, so
a write acknowledged by a follower is also readable there. CONF_CHANGE entries carry a
ConfChange whose context is ``[origin, request id, member record]``.

Raft snapshots carry the whole MVCC snapshot stream as their data (one frame on the
wire). Snapshots are created every ``snapshot_count`` applied entries; the WAL keeps
``SNAPSHOT_CATCHUP_ENTRIES`` entries before it so slow followers can still catch up
from the log.

Bootstrap of a new cluster: every initial member writes the same Raft snapshot at index
n (n = number of members, term 1) holding the member table, so all logs agree.

Read modes (``read(r, mode=...)``):
  * ``linearizable``: with ``--linearizable-read lease`` (the default) the same barrier
    as ``lease`` below; with ``--linearizable-read quorum`` a ReadIndex round (the leader
    confirms its leadership with a heartbeat quorum), no clock assumption at all -- what
    etcd does by default.
  * ``lease``: linearizable under the clock assumption below. On the leader it is
    answered at once from the leader lease (no network round); on a follower the
    forwarded ReadIndex is answered by the leader from its lease (one round trip to the
    leader). When the lease is not valid (new leader, transfer, ticks owed after a
    stall) it falls back to a ReadIndex round; it never answers from an expired lease.
    ``--read-mode-default lease`` makes it the default (CockroachDB-like deployments).
  * ``serializable``: local at once; ``bounded``: local if fresh enough.
Lease reads use Raft's LEASE_BASED reads with ``lease_drift_ticks = LEASE_DRIFT_TICKS``
(and are off when the election timeout is under ``LEASE_MIN_ELECTION_TICKS`` ticks).
Clock assumption (nothing about wall clocks or clock synchronisation): every member
measures time with a clock that keeps counting while the machine is suspended
(CLOCK_BOOTTIME), and over any one election timeout no member's clock runs more than one
heartbeat interval faster than the leader's (relative rate error < 1/(election ticks - 1),
about 11 % with 100 ms / 1000 ms; real quartz drift is ~1e-4). The runtime keeps its side
of the core's contract: ticks are counted from that clock, and no lease answer is given
while real time owes the Raft node a tick (see ``_take_owed_ticks`` and ``_open_lease_gate``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import io
import itertools
import logging
import math
import os
import random
import struct
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import msgpack

from geokv import errors
from geokv.kv.types import (Compact, DeleteRange, LeaseGrant, LeaseGrantResult, LeaseRevoke, MemberRemove,
                            MemberSet, Noop, Put, Range, RangeResult, Txn, decode_command, decode_result,
                            encode_command, encode_result, validate_command)
from geokv.raft.types import ReadOnlyOption
from geokv.raft.types import (ConfChange, ConfState, EntryType, HardState, Message, MessageType, Snapshot,
                              SnapshotMetadata, StateRole)
from geokv.runtime import memory, metrics
from geokv.runtime.alarms import AlarmMixin
from geokv.runtime.config import ServerConfig
from geokv.runtime.deadlines import DeadlineTimer
from geokv.runtime.leases import LeaseMixin
from geokv.runtime.membership import MembershipMixin
from geokv.runtime.persist import SyncThread
from geokv.runtime.transport import PeerUnavailable, Transport, discover_cluster_id

log = logging.getLogger("geokv.member")

MAX_INBOX_MSGS = 20000            # inbound Raft messages waiting for the driver
MAX_QUEUED_PROPOSALS = 8192       # proposals waiting for the driver
MAX_INFLIGHT_PROPOSALS = 20000    # proposals proposed and not yet applied (this member)
MAX_QUEUED_READS = 20000          # linearizable reads waiting for a ReadIndex round
MAX_APPLY_WAITERS = 50000
MAX_ACTIONS = 1024                # report_unreachable / report_snapshot / transfer requests
MAX_CATCHUP_ELECTIONS = 2         # a catch-up delivers at most 2 election timeouts + 1 tick
LEASE_MIN_ELECTION_TICKS = 4      # below this there is no room for a drift margin: no lease reads
LEASE_DRIFT_TICKS = 2             # 1 tick of tick phase + 1 tick of clock-rate drift
TICK_WAKE_SLACK_S = 0.0005        # the ticker wakes just after a tick slot, not just before
_LEASE_CTX = b"L"                 # suffix of a ReadIndex context that may be served by the lease
MAX_PROPOSE_ATTEMPTS = 8          # retries of a proposal Raft dropped locally
MAX_COMMIT_SAMPLES = 1024         # (leader commit, time) samples for staleness
SNAPSHOT_CATCHUP_ENTRIES = 5000   # entries kept in the WAL behind a snapshot
REQUEST_TIMEOUT_BASE_S = 5.0      # etcd: 5 s + 2 * election timeout
CLUSTER_ID_DISCOVERY_TIMEOUT_S = 30.0
DRIVER_STOP_TIMEOUT_S = 10.0
BIG_APPLY_ENTRIES_MIN = 1024      # a committed batch this long is applied in the apply thread
MAX_APPLY_BACKLOG_BATCHES = 4096  # committed batches queued behind a thread apply; beyond it the driver waits
APPLY_TIMEOUT_GRACE_S = 30.0      # a write timing out while an apply is pending waits this much longer


_ATTRIBUTE_FIELDS = ("name", "client_urls", "region", "zone", "peer_urls")


def _conf_member_command(table: dict, rec: dict):
    """The member-table command of a conf change, merged with the table as it stands:
    add/promote keep attributes published meanwhile. Deterministic (same log, same table),
    and it updates ``table`` for the next item of the batch."""
    mid = rec["id"]
    if rec.get("remove"):
        table.pop(mid, None)
        return MemberRemove(mid)
    cur = table.get(mid)
    merged = dict(rec) if cur is None else dict(cur, is_learner=bool(rec.get("is_learner", False)))
    table[mid] = merged
    return MemberSet(merged)


def _attribute_command(table: dict, rec: dict):
    """A plain MemberSet (attribute publish, member update) changes only attributes, and
    never brings back a member removed after it was proposed."""
    cur = table.get(rec.get("id"))
    if cur is None:
        return Noop()
    merged = dict(cur, **{k: rec[k] for k in _ATTRIBUTE_FIELDS if k in rec})
    table[cur["id"]] = merged
    return MemberSet(merged)


if hasattr(time, "CLOCK_BOOTTIME"):
    def _tick_clock() -> float:
        """Seconds on a clock that never goes back and keeps counting while the machine
        is suspended (a suspended leader must see that its lease ran out)."""
        return time.clock_gettime(time.CLOCK_BOOTTIME)
else:  # pragma: no cover - not Linux
    _tick_clock = time.monotonic


def _is_big_command(cmd) -> bool:
    """May applying ``cmd`` touch many keys (a cheap estimate, no store access)?"""
    tc = type(cmd)
    if tc is Put:
        return False
    if tc is DeleteRange:
        return bool(cmd.range_end)
    if tc is LeaseRevoke or tc is Compact:
        return True
    if tc is Txn:
        return any(_is_big_command(op) for op in cmd.success) or any(_is_big_command(op) for op in cmd.failure)
    return False


def _is_big_apply(items: list) -> bool:
    """Should this batch of (index, command) items be applied in the apply thread?"""
    if len(items) >= BIG_APPLY_ENTRIES_MIN:
        return True
    for _index, cmd in items:
        if _is_big_command(cmd):
            return True
    return False


class _Dropped(Exception):
    """Raft refused a proposal or read locally (no leader, transfer in progress...)."""


def _new_event() -> asyncio.Event:
    return asyncio.Event()


class Member(LeaseMixin, MembershipMixin, AlarmMixin):
    """One server process's replica. See docs/CONTRACTS.md for the API-facing surface."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        storage: Any = None,
        store: Any = None,
        outbound_delay_s: Callable[[str], float] | None = None,
        request_timeout_s: float | None = None,
        rng_seed: int | None = None,
        snapshot_catchup_entries: int = SNAPSHOT_CATCHUP_ENTRIES,
        tune_gc: bool = True,
    ) -> None:
        self.config = config
        self.id = config.member_id
        self.name = config.name
        self.cluster_id = config.cluster_id
        self.region = config.region
        self.zone = config.zone
        self.storage = storage
        self.store = store
        self._own_storage = storage is None
        self._own_store = store is None
        self.outbound_delay_s = outbound_delay_s
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self.tune_gc = tune_gc  # see geokv.runtime.memory (once per process, default thresholds only)
        self.overlap_apply_with_fsync = True
        #: Callables given each batch of committed entries before they are applied (in the
        #: driver task: they must be cheap and must not raise). The geo layer counts writes
        #: by origin member with it (entry data is msgpack [origin, request id, command]).
        self.apply_observers: list[Callable[[list], None]] = []
        self.heartbeat_s = config.heartbeat_interval_ms / 1000.0
        self.election_s = config.election_timeout_ms / 1000.0
        #: One Raft tick (fixed for the life of the process; see set_raft_timing).
        self.tick_s = (getattr(config, "tick_ms", 0) or config.heartbeat_interval_ms) / 1000.0
        self.request_timeout_s = request_timeout_s or (REQUEST_TIMEOUT_BASE_S + 2 * self.election_s)
        self._rng = random.Random(rng_seed if rng_seed is not None else random.SystemRandom().getrandbits(64))
        # Ids (lease ids) come from their own generator: the geo service may replace
        # _rng (the Raft core's election randomness) with a biased one.
        self._id_rng = random.Random(self._rng.getrandbits(64))
        self.watch_hub: Any = None
        self.transport: Transport | None = None
        self._rn = None
        # driver state (owned by the driver task) -----------------------------------
        self._inbox: collections.deque[Message] = collections.deque()
        self._proposals: collections.deque = collections.deque()   # (kind, data, fut)
        # Futures of proposals the driver handed to Raft (appended, or forwarded to the
        # leader): such a write may still commit, so its failure is never "no leader".
        self._handed: weakref.WeakSet = weakref.WeakSet()
        self._read_queue: list[asyncio.Future] = []
        self._read_rounds: dict[bytes, tuple[float, list[asyncio.Future]]] = {}
        self._read_seq = itertools.count(1)
        self._actions: collections.deque[Callable[[Any], None]] = collections.deque()
        # tick clock (see _take_owed_ticks): slots of heartbeat_s since _tick_base
        self._tick_clock = _tick_clock
        self._tick_base = 0.0
        self._tick_slots = 0
        self._election_tick = 0
        self._lease_queue: list[asyncio.Future] = []   # lease reads waiting for the driver
        self._raft_cfg = None        # the Raft Config whose read_only_option is the lease gate
        self._raft_commit = 0        # the Raft commit index as of the last Ready
        self._lease_stats = {"lease_reads_local": 0, "lease_read_rounds": 0, "lease_answers": 0,
                             "lease_refused_ticks_owed": 0, "ticks_delivered": 0, "ticks_skipped": 0}
        self._wake = asyncio.Event()
        self._pending: dict[int, tuple[asyncio.Future, float]] = {}
        self._deadlines = DeadlineTimer()  # timeouts of proposals and reads (one loop timer)
        self._req_ids = itertools.count(self._rng.getrandbits(62) | 1)
        self._apply_waiters: list = []
        self._apply_seq = itertools.count()
        self._changed = _new_event()
        # replicated / derived state ----------------------------------------------------
        self.leader_id = 0
        self.role = StateRole.FOLLOWER
        self.term = 0
        self.commit_index = 0
        self.applied_index = 0
        self.snapshot_index = 0
        self.conf_state = ConfState()
        self._leader_committed_in_term = False
        self._commit_seen: collections.deque[tuple[int, float]] = collections.deque(maxlen=MAX_COMMIT_SAMPLES)
        self._caught_up_at = -math.inf
        self.removed = False
        self.stopped = asyncio.Event()
        #: Set when the process should exit on its own (removed from the cluster, or a
        #: fatal driver error); the server's main waits for it beside the signals.
        self.exit_requested = asyncio.Event()
        self.fatal: BaseException | None = None
        self._stopping = False
        self._stats = {"turns": 0, "readies": 0, "entries_persisted": 0, "fsyncs": 0, "entries_applied": 0,
                       "apply_batches": 0, "proposals_batched": 0, "proposal_batches": 0,
                       "snapshots_restored": 0, "snapshots_created": 0, "persist_hops": 0,
                       "thread_applies": 0, "apply_backlog_max": 0, "apply_drain_waits": 0}
        self._tasks: list[asyncio.Task] = []
        self._driver_task: asyncio.Task | None = None
        self._snapshot_task: asyncio.Task | None = None  # at most one snapshot being written
        self._syncer: SyncThread | None = None  # the WAL fsync thread (real disks only)
        # Big applies (see _is_big_apply): at most one store apply runs in this thread at
        # a time; batches committed meanwhile wait in _apply_backlog, in log order.
        self._apply_executor: ThreadPoolExecutor | None = None
        self._apply_job: asyncio.Future | None = None   # the thread's apply_batch
        self._apply_job_ctx: tuple | None = None        # (ents, prepared) of that apply
        self._apply_backlog: collections.deque = collections.deque()  # (ents, hs)
        self._started = False
        self._init_leases()
        self._init_membership()
        self._init_alarms()

    # ================================================================================
    # lifecycle
    # ================================================================================
    async def start(self) -> None:
        cfg = self.config
        if self.store is None:
            from geokv.kv.store import MVCCStore

            self.store = MVCCStore(cfg.db_dir, quota_bytes=cfg.quota_backend_bytes)
        if self.storage is None:
            from geokv.ports.disk import RealDisk
            from geokv.storage import DiskRaftStorage

            self.storage = await asyncio.to_thread(DiskRaftStorage.open, RealDisk(), cfg.wal_dir)
        self._bootstrap()
        if self.tune_gc and memory.tune_gc():
            log.info("garbage collector: start-up objects frozen, thresholds %s", memory.gc_thresholds())
        if getattr(self.storage, "sync_in_thread", True):
            self._syncer = SyncThread(self.storage.sync, name=f"wal-sync-{self.name}",
                                      on_synced=metrics.wal_fsync_seconds.observe)
            self._syncer.start(asyncio.get_running_loop())
        await self._resolve_cluster_id()
        self._build_rawnode()
        self._apply_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"apply-{self.name}")
        try:
            from geokv.runtime.watch import WatchHub

            self.watch_hub = WatchHub(self.store)
        except ImportError:  # pragma: no cover - the watch hub is written by the API layer
            self.watch_hub = None
        host, port = cfg.peer_listen_address()
        self.transport = Transport(
            cluster_id=self.cluster_id, member_id=self.id, name=self.name, region=self.region, zone=self.zone,
            listen_host=host, listen_port=port, on_raft=self._on_raft,
            on_unreachable=self._on_unreachable, on_snapshot_status=self._on_snapshot_status,
            call_handler=self._handle_call, heartbeat_interval_s=self.heartbeat_s,
            outbound_delay_s=self.outbound_delay_s,
            max_frame_bytes=max(64 << 20, 4 * cfg.quota_backend_bytes if cfg.quota_backend_bytes < (128 << 20) else 512 << 20),
        )
        await self.transport.start()
        self._refresh_peers()
        self._driver_task = asyncio.create_task(self._run_driver(), name=f"driver-{self.name}")
        self._tasks = [
            asyncio.create_task(self._run_ticker(), name=f"ticker-{self.name}"),
            asyncio.create_task(self._run_lease_expiry(), name=f"leases-{self.name}"),
            asyncio.create_task(self._run_publish(), name=f"publish-{self.name}"),
        ]
        self._started = True
        if len(self.conf_state.voters) == 1 and self.conf_state.voters[0] == self.id and not self.conf_state.learners:
            self._actions.append(lambda rn: rn.campaign())  # a single-node cluster needs no election timeout
            self._wake.set()

    async def stop(self) -> None:
        """Stop accepting, finish the driver's current turn, close the WAL and LMDB."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._driver_task is not None:
            # The driver finishes its current turn (a WAL sync may be running in a thread).
            done, _ = await asyncio.wait([self._driver_task], timeout=DRIVER_STOP_TIMEOUT_S)
            if not done:
                self._driver_task.cancel()
                await asyncio.wait([self._driver_task])
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task])
        if self._apply_job is not None:
            # The store is closed below: the thread's write txn must end first.
            await asyncio.wait([self._apply_job])
        if self._apply_executor is not None:
            self._apply_executor.shutdown(wait=True)
        if self._syncer is not None:
            await asyncio.to_thread(self._syncer.stop)
        self._fail_all(errors.Stopped())
        self._deadlines.close()
        if self.transport is not None:
            await self.transport.stop()
        if self.storage is not None and self._own_storage:
            self.storage.close()
        if self.store is not None and self._own_store:
            self.store.close()
        self.stopped.set()

    def _fail_all(self, exc: Exception) -> None:
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(type(exc)())
        self._pending.clear()
        for _, _, fut in self._proposals:
            if not fut.done():
                fut.set_exception(type(exc)())
        self._proposals.clear()
        for fut in self._read_queue:
            if not fut.done():
                fut.set_exception(type(exc)())
        self._read_queue.clear()
        for fut in self._lease_queue:
            if not fut.done():
                fut.set_exception(type(exc)())
        self._lease_queue.clear()
        for _, futs in self._read_rounds.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(type(exc)())
        self._read_rounds.clear()
        for _, _, fut in self._apply_waiters:
            if not fut.done():
                fut.set_exception(type(exc)())
        self._apply_waiters.clear()

    def _check_running(self) -> None:
        if self._stopping or not self._started or self.fatal is not None:
            raise errors.Stopped()
        if self.removed:
            raise errors.Stopped("etcdserver: the member has been permanently removed from the cluster")

    # ================================================================================
    # bootstrap / recovery
    # ================================================================================
    def _bootstrap(self) -> None:
        cfg = self.config
        hs, _cs = self.storage.initial_state()
        snap = self.storage.snapshot()
        fresh = (hs.term == 0 and hs.commit == 0 and self.storage.last_index() == 0
                 and snap.metadata.index == 0)
        if fresh and cfg.initial_cluster_state == "new":
            records = sorted(self._initial_member_records(), key=lambda r: r["id"])
            n = len(records)
            if self.store.applied_index == 0:
                self.store.apply_batch([(i + 1, MemberSet(r)) for i, r in enumerate(records)])
            buf = io.BytesIO()
            self.store.snapshot(buf)
            voters = tuple(r["id"] for r in records)
            boot = Snapshot(SnapshotMetadata(n, 1, ConfState(voters=voters)), buf.getvalue())
            self.storage.save(HardState(term=1, vote=0, commit=n), [], boot)
            self.storage.sync()
            log.info("bootstrapped new cluster %x with %d members", self.cluster_id, n)
        elif not fresh:
            if snap.metadata.index > self.store.applied_index:
                if not snap.data:  # a local metadata-only snapshot: the store was synced first
                    raise errors.Unhealthy(
                        f"etcdserver: the store (applied index {self.store.applied_index}) is behind the "
                        f"WAL's snapshot at index {snap.metadata.index}: the store's data was lost")
                log.info("restoring the store from Raft snapshot at index %d", snap.metadata.index)
                self.store.restore(io.BytesIO(snap.data))
        snap = self.storage.snapshot()
        hs, cs = self.storage.initial_state()
        self.snapshot_index = snap.metadata.index
        self.conf_state = cs
        self.term = hs.term
        self.commit_index = hs.commit
        self.applied_index = snap.metadata.index
        self._reload_leases()

    async def _resolve_cluster_id(self) -> None:
        """A member that joined an existing cluster learns the cluster id from its peers
        (its own --initial-cluster differs from the founders') and keeps it on disk."""
        if self.config.initial_cluster_state != "existing":
            return
        path = os.path.join(self.config.data_dir, "member", "cluster_id")
        try:
            with open(path) as f:
                self.cluster_id = int(f.read().strip(), 16)
                return
        except (OSError, ValueError):
            pass
        urls = [u for r in self._initial_member_records() if r["id"] != self.id for u in r["peer_urls"]]
        try:
            cid = await discover_cluster_id(urls, self.id, CLUSTER_ID_DISCOVERY_TIMEOUT_S)
        except TimeoutError as exc:
            raise errors.Unhealthy(f"etcdserver: cannot join the existing cluster: {exc}") from None
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{cid:x}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.cluster_id = cid

    def _build_rawnode(self) -> None:
        try:
            from geokv.raft.rawnode import Config, RawNode
        except ImportError:  # pragma: no cover
            from geokv.raft.config import Config
            from geokv.raft.rawnode import RawNode
        tick_ms = self.tick_s * 1000.0
        election_tick = max(2, round(self.config.election_timeout_ms / tick_ms))
        heartbeat_tick = max(1, min(election_tick - 1, round(self.config.heartbeat_interval_ms / tick_ms)))
        rc = Config(
            id=self.id, election_tick=election_tick, heartbeat_tick=heartbeat_tick, applied=self.applied_index,
            check_quorum=True, pre_vote=True, rng=self._rng,
            max_size_per_msg=1 << 20, max_inflight_msgs=256,
        )
        if election_tick >= LEASE_MIN_ELECTION_TICKS:
            # Built LEASE_BASED (so a restarted node refuses votes for an election timeout),
            # then the gate is closed: the option is LEASE_BASED only inside a driver call
            # that may answer a lease read, and only while no tick is owed.
            rc.read_only_option = ReadOnlyOption.LEASE_BASED
            rc.lease_drift_ticks = LEASE_DRIFT_TICKS
        self._rn = RawNode(rc, self.storage)
        if rc.read_only_option == ReadOnlyOption.LEASE_BASED:
            if getattr(getattr(self._rn, "raft", None), "config", None) is rc:
                self._raft_cfg = rc
            rc.read_only_option = ReadOnlyOption.SAFE
        self._election_tick = election_tick
        self._tick_base = self._tick_clock()
        self._tick_slots = 0

    # ================================================================================
    # inputs to the driver (never block, never touch the RawNode)
    # ================================================================================
    def _on_raft(self, msgs: list[Message]) -> None:
        inbox = self._inbox
        now = time.monotonic()
        for m in msgs:
            if len(inbox) >= MAX_INBOX_MSGS:
                inbox.popleft()
                metrics.peer_messages_dropped.inc()
            inbox.append(m)
            if (m.type == MessageType.APP or m.type == MessageType.HEARTBEAT) and m.frm == self.leader_id:
                # The commit index in the message is the leader's as of its sending, up to
                # one one-way delay ago: date it with the RTT to the leader as that bound,
                # or bounded reads would be staler than promised by the transit time.
                sent = now - self._leader_rtt_s()
                if m.commit <= self.applied_index:
                    self._caught_up_at = sent  # idle cluster: every heartbeat says "caught up"
                else:
                    self._commit_seen.append((m.commit, sent))
        self._wake.set()

    def _leader_rtt_s(self) -> float:
        rtt = self.transport.rtt_ms().get(self.leader_id) if self.transport is not None else None
        return (rtt or 0.0) / 1000.0

    def _on_unreachable(self, peer_id: int) -> None:
        self._add_action(lambda rn: rn.report_unreachable(peer_id))

    def _on_snapshot_status(self, peer_id: int, ok: bool) -> None:
        self._add_action(lambda rn: rn.report_snapshot(peer_id, ok))

    def _add_action(self, fn: Callable[[Any], None]) -> bool:
        if len(self._actions) >= MAX_ACTIONS:
            return False
        self._actions.append(fn)
        self._wake.set()
        return True

    async def _run_ticker(self) -> None:
        """Wake the driver just after each tick slot. It only wakes: the driver counts the
        ticks real time owes from the tick clock, so a late or lost wake-up loses no tick."""
        while True:
            interval = self.tick_s
            now = self._tick_clock()
            nxt = self._tick_base + (math.floor((now - self._tick_base) / interval) + 1) * interval
            await asyncio.sleep(max(0.0, nxt - now) + TICK_WAKE_SLACK_S)
            self._wake.set()

    def _ticks_owed(self) -> int:
        """Tick slots real time has reached that the Raft node has not been given."""
        return math.floor((self._tick_clock() - self._tick_base) / self.tick_s) - self._tick_slots

    def _take_owed_ticks(self) -> int:
        """How many ticks to deliver now: every owed tick, but at most
        ``MAX_CATCHUP_ELECTIONS * election_tick + 1`` after a stall; the rest are skipped.

        Why skipping is safe for leases. Raft's leader trusts its lease while
        ``ticks - s < election_tick - lease_drift_ticks``, s being the tick stamp of
        heartbeats a quorum acknowledged; a follower refuses votes for election_tick of
        its own ticks after hearing from the leader. (1) No tick is ever delivered before
        its slot (floor of the clock), so no member's Raft clock runs ahead of real time:
        a follower's promise never ends early; skipped ticks only make a follower's
        promise last longer. (2) The leader's Raft clock may lag real time only while
        ticks are owed, and no lease answer is given then (_open_lease_gate). (3) A
        catch-up delivers >= election_tick ticks whenever it skips any, so every stamp
        issued before the stall is expired in the node's own view, for good (ticks only
        grow); stamps issued after it are counted one tick per slot again.
        A burst of up to two election timeouts of ticks is harmless: a leader that heard
        from no quorum in that real time steps down (CheckQuorum), as it should; a
        follower campaigns only through PreVote, which members that still hear from a
        leader refuse. Messages already received are stepped before the ticks."""
        owed = self._ticks_owed()
        if owed <= 0:
            return 0
        self._tick_slots += owed
        cap = MAX_CATCHUP_ELECTIONS * self._election_tick + 1
        st = self._lease_stats
        if owed > cap:
            st["ticks_skipped"] += owed - cap
            owed = cap
        st["ticks_delivered"] += owed
        return owed

    def _open_lease_gate(self) -> bool:
        """Let Raft answer reads from its lease, if no tick is owed right now. The caller
        must call ``_close_lease_gate`` before it awaits anything."""
        cfg = self._raft_cfg
        if cfg is None:
            return False
        if self._ticks_owed() > 0:
            self._lease_stats["lease_refused_ticks_owed"] += 1
            return False
        cfg.read_only_option = ReadOnlyOption.LEASE_BASED
        return True

    def _lease_valid_local(self) -> bool:
        """The leader's lease as of real time now, without a driver turn: ticks real time
        owes the node count as delivered (``lease_valid(ticks_ahead)``; more ticks only
        shorten a lease), so it is never trusted beyond real time. No await inside."""
        cfg = self._raft_cfg
        if cfg is None:
            return False
        owed = max(0, self._ticks_owed())
        cfg.read_only_option = ReadOnlyOption.LEASE_BASED
        try:
            valid = self._rn.lease_valid(owed)
            if not valid and owed and self._rn.lease_valid(0):
                self._lease_stats["lease_refused_ticks_owed"] += 1
            return valid
        finally:
            cfg.read_only_option = ReadOnlyOption.SAFE

    def _close_lease_gate(self) -> None:
        if self._raft_cfg is not None:
            self._raft_cfg.read_only_option = ReadOnlyOption.SAFE

    def _step_read_index(self, rn, m: Message) -> None:
        """A follower's forwarded ReadIndex: from the lease if it asked for a lease read."""
        ctx = m.entries[0].data if m.entries else b""
        if ctx[-1:] == _LEASE_CTX and self.role == StateRole.LEADER and self._open_lease_gate():
            try:
                if rn.lease_valid():
                    self._lease_stats["lease_answers"] += 1
                rn.step(m)
            finally:
                self._close_lease_gate()
        else:
            rn.step(m)

    # ================================================================================
    # the driver loop
    # ================================================================================
    async def _run_driver(self) -> None:
        rn = self._rn
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    break
                job = self._apply_job
                if job is not None and job.done():
                    await self._drain_applies(wait=False)
                    await self._maybe_snapshot()
                self._feed(rn)
                self._stats["turns"] += 1
                while rn.has_ready():
                    rd = rn.ready()
                    self._stats["readies"] += 1
                    await self._handle_ready(rd)
                    rn.advance(rd)
                    if self._stopping or self.removed:
                        break
                if self.removed:
                    log.warning("this member was removed from the cluster; stopping its Raft node")
                    self._fail_all(errors.Stopped())
                    self.exit_requested.set()
                    break
        except Exception as exc:  # a bug: crash loudly and make the process exit
            log.exception("driver loop failed")
            self.fatal = exc
            self._fail_all(errors.Stopped())
            self.exit_requested.set()
            raise

    def _feed(self, rn) -> None:
        # Messages first: after a stall, queued heartbeats reset the election clock before
        # the missed ticks arrive. Ticks come from the tick clock (_take_owed_ticks), so a
        # leader's lease never outlives real time; forwarded ReadIndex requests stepped
        # here are answered from the lease only while no tick is owed (_step_read_index).
        # A leader (it never campaigns) takes its ticks first, so the forwarded lease reads
        # of a turn woken by the ticker need no heartbeat round.
        early = self._take_owed_ticks() if self.role == StateRole.LEADER else 0
        for _ in range(early):
            rn.tick()
        inbox = self._inbox
        while inbox:
            m = inbox.popleft()
            try:
                if m.type == MessageType.READ_INDEX:
                    self._step_read_index(rn, m)
                else:
                    rn.step(m)
            except Exception as exc:  # a peer's message the core refuses must not kill us
                log.debug("step(%s from %x) refused: %r", m.type, m.frm, exc)
        ticks = self._take_owed_ticks()
        for _ in range(ticks):
            rn.tick()
        if ticks or early:
            self._on_tick_turn()
        # Actions wait while the apply thread runs: some of them (defragment's swap)
        # replace the store's environment, which the thread's write txn is using.
        actions = self._actions if self._apply_job is None else ()
        while actions:
            fn = actions.popleft()
            try:
                fn(rn)
            except Exception as exc:
                log.debug("driver action failed: %r", exc)
        props = self._proposals
        if props:
            batch: list[bytes] = []
            batch_futs: list[asyncio.Future] = []
            while props:
                kind, data, fut = props.popleft()
                if fut.done():
                    continue
                if kind == 0:
                    batch.append(data)
                    batch_futs.append(fut)
                    continue
                try:
                    rn.propose_conf_change(data)
                except Exception as exc:  # ProposalDropped (or a refused conf change)
                    fut.set_exception(_Dropped(str(exc)))
                else:
                    self._handed.add(fut)
            if batch:
                self._stats["proposal_batches"] += 1
                self._stats["proposals_batched"] += len(batch)
                try:
                    rn.propose_batch(batch)
                except Exception as exc:  # ProposalDropped: nothing of the batch was appended
                    for fut in batch_futs:
                        if not fut.done():
                            fut.set_exception(_Dropped(str(exc)))
                else:
                    for fut in batch_futs:
                        self._handed.add(fut)
        if self._read_queue:
            waiters, self._read_queue = self._read_queue, []
            ctx = struct.pack(">QQ", self.id, next(self._read_seq))
            try:
                rn.read_index(ctx)
                metrics.read_indexes.inc()
                self._read_rounds[ctx] = (time.monotonic(), waiters)
            except Exception as exc:
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(_Dropped(str(exc)))
        if self._lease_queue:
            waiters, self._lease_queue = self._lease_queue, []
            ctx = struct.pack(">QQ", self.id, next(self._read_seq)) + _LEASE_CTX
            gate = self.role == StateRole.LEADER and self._open_lease_gate()
            try:
                if gate and rn.lease_valid():
                    self._lease_stats["lease_answers"] += 1
                rn.read_index(ctx)  # a follower forwards it; the leader may answer at once
                self._lease_stats["lease_read_rounds"] += 1
                metrics.read_indexes.inc()
                self._read_rounds[ctx] = (time.monotonic(), waiters)
            except Exception as exc:
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(_Dropped(str(exc)))
            finally:
                if gate:
                    self._close_lease_gate()

    def _on_tick_turn(self) -> None:
        """Retry ReadIndex rounds that got no answer (the leader may have lost them)."""
        if not self._read_rounds:
            return
        limit = time.monotonic() - max(0.5, 3 * self.heartbeat_s)
        for ctx in [c for c, (t, _) in self._read_rounds.items() if t < limit]:
            _, futs = self._read_rounds.pop(ctx)
            for fut in futs:
                if not fut.done():
                    fut.set_exception(_Dropped("read index round unanswered"))

    async def _handle_ready(self, rd) -> None:
        if rd.hard_state is not None and rd.hard_state.commit > self._raft_commit:
            # Raft's commit index only moves inside driver calls followed by ready()
            # before any await, so between turns this equals the core's commit index.
            self._raft_commit = rd.hard_state.commit
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.messages:
            self._send(rd.messages)
        snap = rd.snapshot if rd.snapshot is not None and not rd.snapshot.is_empty() else None
        applied_early = False
        if rd.hard_state is not None or rd.entries or snap is not None:
            stats = self._stats
            if snap is not None and getattr(self.storage, "sync_in_thread", True):
                # Installing a snapshot writes a file: the whole persist runs off the loop.
                stats["persist_hops"] += 1
                await asyncio.get_running_loop().run_in_executor(
                    None, self._persist, rd.hard_state, rd.entries, snap, True)
            elif not rd.must_sync or self._syncer is None:
                # No fsync needed (a commit-index-only hard state: Raft recovers the
                # commit index anyway), or an in-memory log: buffer it here, no hop.
                self._persist(rd.hard_state, rd.entries, snap, rd.must_sync)
            else:
                # Encode and buffer on the loop (no system call); the sync thread does
                # the one write + fsync with the GIL released.
                self.storage.save(rd.hard_state, rd.entries, None)
                stats["entries_persisted"] += len(rd.entries)
                stats["fsyncs"] += 1
                stats["persist_hops"] += 1
                persist = self._syncer.request()
                # Committed entries are durable on a quorum already, so (as etcd does) they
                # are applied while the local fsync runs. Not with a conf change in the
                # batch: it touches the RawNode's configuration mid-Ready.
                if (rd.committed_entries and rd.hard_state is not None
                        and self.overlap_apply_with_fsync
                        and not any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)):
                    await self._apply_committed(rd.committed_entries, rd.hard_state)
                    applied_early = True
                await persist
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            if rd.hard_state.commit > self.commit_index:
                metrics.proposals_committed.inc(rd.hard_state.commit - self.commit_index)
                self.commit_index = rd.hard_state.commit
                metrics.raft_commit_index.set(self.commit_index)
            metrics.raft_term.set(self.term)
        if snap is not None:
            await self._restore_snapshot(snap)
        if rd.persisted_messages:
            self._send(rd.persisted_messages)
        for rs in rd.read_states:
            round_ = self._read_rounds.pop(rs.request_ctx, None)
            if round_ is not None:
                for fut in round_[1]:
                    if not fut.done():
                        fut.set_result(rs.index)
        if rd.committed_entries:
            if not applied_early:
                await self._apply_committed(rd.committed_entries, rd.hard_state)
            await self._maybe_snapshot()

    async def _maybe_snapshot(self) -> None:
        if (self.applied_index - self.snapshot_index >= self.config.snapshot_count
                and self._snapshot_task is None):
            await self._create_snapshot()

    def _persist(self, hs, entries, snap, must_sync: bool) -> None:
        self.storage.save(hs, entries, snap)
        self._stats["entries_persisted"] += len(entries)
        if must_sync:
            self._stats["fsyncs"] += 1
            t0 = time.perf_counter()
            self.storage.sync()
            metrics.wal_fsync_seconds.observe(time.perf_counter() - t0)

    def _merged_snapshot(self, original: Snapshot) -> Snapshot:
        """The snapshot to send a follower: the store as applied right now (etcd's
        "merged snapshot"), so it includes members added after the last stored snapshot
        (a new member refuses a snapshot whose configuration does not name it)."""
        index = self.applied_index
        if original.data and index <= original.metadata.index:
            return original
        if self._apply_job is not None or self._apply_backlog:
            # The store may be ahead of applied_index (committed, not yet finished).
            raise RuntimeError("an apply is in progress")
        try:
            term = self.storage.term(index)
        except Exception:
            if original.data:
                return original
            raise  # a metadata-only snapshot cannot be sent as it is
        buf = io.BytesIO()
        self.store.snapshot(buf)
        return Snapshot(SnapshotMetadata(index, term, self.conf_state), buf.getvalue())

    def _send(self, msgs: list[Message]) -> None:
        out = []
        merged = None
        for m in msgs:
            if m.type == MessageType.SNAP and m.snapshot is not None:
                if merged is None:
                    try:
                        merged = self._merged_snapshot(m.snapshot)
                    except Exception as exc:
                        log.warning("%s: cannot build a snapshot for %x now: %r", self.name, m.to, exc)
                        self._on_snapshot_status(m.to, False)  # Raft probes again later
                        continue
                m.snapshot = merged
            if m.to == self.id:
                self._inbox.append(m)
                self._wake.set()
            else:
                out.append(m)
        if out and self.transport is not None:
            self.transport.send(out)

    def _on_soft_state(self, ss) -> None:
        old_leader, old_role = self.leader_id, self.role
        self.leader_id = ss.leader_id
        self.role = ss.role
        if ss.leader_id != old_leader:
            if ss.leader_id:
                metrics.leader_changes.inc()
            metrics.has_leader.set(1 if ss.leader_id else 0)
            self._commit_seen.clear()
            log.info("%s: leader is now %x (term %d)", self.name, ss.leader_id, self._rn.term)
        metrics.is_leader.set(1 if ss.role == StateRole.LEADER else 0)
        if ss.role == StateRole.LEADER and old_role != StateRole.LEADER:
            self._leader_committed_in_term = False
            self._on_become_leader()
        self._notify_changed()

    def _notify_changed(self) -> None:
        ev, self._changed = self._changed, _new_event()
        ev.set()

    async def _restore_snapshot(self, snap: Snapshot) -> None:
        """A follower received the leader's snapshot: replace the store with it."""
        # In the loop thread on purpose: restore swaps the LMDB environment, which
        # concurrent reads on the loop must never see half-done. Earlier committed
        # batches are applied first (the snapshot must not overtake them).
        await self._drain_applies(wait=True)
        if self._snapshot_task is not None:  # it reads the environment being replaced
            await asyncio.wait([self._snapshot_task])
        self.store.restore(io.BytesIO(snap.data))
        self.snapshot_index = snap.metadata.index
        self.applied_index = snap.metadata.index
        self.conf_state = snap.metadata.conf_state
        self._reload_leases()
        if self.watch_hub is not None:
            self.watch_hub.on_store_restored()  # watchers catch up from the new store
        self._refresh_peers()
        metrics.snapshots_applied.inc()
        self._stats["snapshots_restored"] += 1
        log.info("%s: restored snapshot at index %d", self.name, snap.metadata.index)
        self._wake_apply_waiters()

    # --- apply ------------------------------------------------------------------------
    def _apply_pending(self) -> bool:
        """Is a store apply running in the apply thread, or are batches queued behind it?"""
        return self._apply_job is not None or bool(self._apply_backlog)

    async def _apply_committed(self, ents, hs) -> None:
        """Apply a Ready's committed entries: inline, in the apply thread, or queued
        behind the apply running there (log order). Conf changes never go behind or
        beside a thread apply: they wait for the queue to drain and apply inline, so the
        RawNode's configuration is updated before this Ready's ``advance``."""
        has_conf = any(e.type == EntryType.CONF_CHANGE for e in ents)
        if self._apply_pending():
            if has_conf or len(self._apply_backlog) >= MAX_APPLY_BACKLOG_BATCHES:
                self._stats["apply_drain_waits"] += 1
                await self._drain_applies(wait=True)
            else:
                self._apply_backlog.append((ents, hs))
                if len(self._apply_backlog) > self._stats["apply_backlog_max"]:
                    self._stats["apply_backlog_max"] = len(self._apply_backlog)
                return
        self._apply_now(ents, hs, allow_thread=not has_conf)

    def _apply_now(self, ents, hs, *, allow_thread: bool) -> None:
        """Nothing is pending: apply ``ents`` inline, or start it in the apply thread."""
        prep = self._prepare_apply(ents, hs)
        if allow_thread and self._apply_executor is not None and _is_big_apply(prep[0]):
            self._stats["thread_applies"] += 1
            job = asyncio.get_running_loop().run_in_executor(
                self._apply_executor, functools.partial(self.store.apply_batch, prep[0], events=prep[4]))
            job.add_done_callback(lambda _f: self._wake.set())
            self._apply_job, self._apply_job_ctx = job, (ents, prep)
            return
        items = prep[0]
        self._finish_apply(ents, prep, self.store.apply_batch(items, events=prep[4]) if items else [])

    async def _drain_applies(self, *, wait: bool) -> None:
        """Finish the thread's apply if it is done (or, with ``wait``, once it is), then
        apply the queued batches in order: inline, or the next big one in the thread.
        With ``wait`` it returns only when nothing is pending."""
        while True:
            job = self._apply_job
            if job is not None:
                if not job.done():
                    if not wait:
                        return
                    await asyncio.wait([job])
                ents, prep = self._apply_job_ctx
                self._apply_job = self._apply_job_ctx = None
                self._finish_apply(ents, prep, job.result())  # a store bug raises: the driver dies loudly
            if not self._apply_backlog:
                return
            ents, hs = self._apply_backlog.popleft()
            self._apply_now(ents, hs, allow_thread=True)

    def _prepare_apply(self, ents, hs) -> tuple:
        """Decode committed entries into store items (on the loop, before the apply):
        (items, meta, confs, t0, with_events)."""
        if hs is not None and hs.term > self.term:
            self.term = hs.term
        for observe in self.apply_observers:
            observe(ents)
        t0 = time.perf_counter()
        store = self.store
        store_applied = store.applied_index
        items: list = []
        meta: list = []
        confs: list = []
        unpackb = msgpack.unpackb
        table = None  # the member table as of the item being built (only if needed)
        for e in ents:
            origin = req = 0
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                confs.append(cc)
                rec = None
                if cc.context:
                    origin, req, rec = unpackb(cc.context, raw=False)
                if e.index <= store_applied:
                    continue
                if rec is None:
                    cmd = Noop()
                else:
                    if table is None:
                        table = {m["id"]: m for m in store.members()}
                    cmd = _conf_member_command(table, rec)
            else:
                if e.index <= store_applied:
                    continue
                if e.data:
                    origin, req, payload = unpackb(e.data, raw=False)
                    cmd = decode_command(payload)
                    if type(cmd) is MemberSet:
                        if table is None:
                            table = {m["id"]: m for m in store.members()}
                        cmd = _attribute_command(table, cmd.member)
                else:
                    cmd = Noop()
            items.append((e.index, cmd))
            meta.append((origin, req, e.term, cmd))
        # Nobody watching: the store builds no events at all (a watcher that starts later
        # reads history from the store's change log; one that starts while this batch is
        # applied is resynced from the log in _finish_apply).
        hub = self.watch_hub
        with_events = hub is None or hub.has_watchers
        return items, meta, confs, t0, with_events

    def _finish_apply(self, ents, prep: tuple, results: list) -> None:
        """Everything after the store's apply (on the loop, in log order): requests,
        leases, conf changes, applied_index, watch hub, waiters. No await."""
        items, meta, confs, t0, with_events = prep
        store = self.store
        self._stats["apply_batches"] += 1
        self._stats["entries_applied"] += len(items)
        hub = self.watch_hub
        # Nobody watching: the events are not gathered (a watcher that starts later
        # reads history from the store's change log); the hub still learns the revision.
        collect = hub is not None and hub.has_watchers
        all_events: list = []
        n_events = 0
        now = time.monotonic()
        membership_changed = False
        term = self.term
        is_leader = self.role == StateRole.LEADER
        for (origin, req, eterm, cmd), (res, events) in zip(meta, results):
            if events:
                n_events += len(events)
                if collect:
                    all_events.extend(events)
            tc = type(cmd)
            if tc is LeaseGrant or tc is LeaseRevoke:
                self._on_lease_applied(cmd, res, now)
            elif tc is MemberSet or tc is MemberRemove:
                membership_changed = True
            if is_leader and eterm == term:
                self._leader_committed_in_term = True
            if origin == self.id:
                p = self._pending.pop(req, None)
                if p is not None:
                    fut, t_start = p
                    if not fut.done():
                        if isinstance(res, Exception):
                            fut.set_exception(res)
                        else:
                            fut.set_result(res)
                    metrics.proposal_commit_seconds.observe(now - t_start)
        if is_leader and not items and ents and ents[-1].term == term:
            self._leader_committed_in_term = True
        for cc in confs:
            self.conf_state = self._rn.apply_conf_change(cc)
            membership_changed = True
            for ch in cc.changes:
                if ch.node_id == self.id and ch.type == 1:  # REMOVE_NODE of ourselves
                    self.removed = True
        self.applied_index = ents[-1].index
        metrics.proposals_applied.inc(len(ents))
        metrics.raft_applied_index.set(self.applied_index)
        if membership_changed:
            self._refresh_peers()
        if hub is not None:
            if not with_events and hub.has_watchers:
                # A watcher arrived while this batch was applied without events: it
                # catches up from the store's change log instead of the live feed.
                hub.on_store_restored()
            elif n_events or store.revision > hub.revision:
                hub.publish(all_events, store.revision)
        if n_events >= memory.TRIM_AFTER_EVENTS_MIN or len(items) >= memory.TRIM_AFTER_EVENTS_MIN:
            # After this batch's events and results are gone (next loop step).
            asyncio.get_running_loop().call_soon(memory.trim_heap)
        # Followers: we are caught up with every leader commit we saw up to our applied index.
        seen = self._commit_seen
        while seen and seen[0][0] <= self.applied_index:
            t = seen.popleft()[1]
            if t > self._caught_up_at:
                self._caught_up_at = t
        self._wake_apply_waiters()
        metrics.apply_seconds.observe(time.perf_counter() - t0)
        metrics.proposals_pending.set(len(self._pending))

    def _wake_apply_waiters(self) -> None:
        w = self._apply_waiters
        applied = self.applied_index
        while w and w[0][0] <= applied:
            _, _, fut = heapq.heappop(w)
            if not fut.done():
                fut.set_result(None)

    async def _create_snapshot(self) -> None:
        """Snapshot at the applied index and compact the WAL.

        A store with ``sync`` (LMDB) is its own durable snapshot: the store is synced
        (durable at >= ``index``) and the Raft snapshot is metadata only (empty data);
        restart replays the WAL from it, and a lagging follower gets the store as applied
        at send time (``_merged_snapshot``). This runs beside the driver (a task): writing
        the whole store into the WAL's snapshot file took 1-10 s per --snapshot-count
        under etcdctl check perf, held the storage lock meanwhile and stalled heartbeats
        (elections, 2-8 s requests). Stores without ``sync``: full data, and the driver
        waits, as before."""
        index, cs = self.applied_index, self.conf_state
        store, storage = self.store, self.storage
        keep = self.snapshot_catchup_entries
        sync = getattr(store, "sync", None)

        def work() -> float:
            t0 = time.perf_counter()
            if sync is not None:
                sync()  # the store is durable at >= index before the WAL forgets entries
                data = b""
            else:
                buf = io.BytesIO()
                store.snapshot(buf)
                data = buf.getvalue()
            storage.create_snapshot(index, cs, data)
            compact_to = index - keep
            if compact_to > storage.first_index():
                storage.compact(compact_to)
            return time.perf_counter() - t0

        async def run() -> None:
            try:
                took = await asyncio.to_thread(work)
            except Exception as exc:  # as when the driver ran it: a storage failure is fatal
                log.exception("snapshot at index %d failed", index)
                self.fatal = exc
                self._fail_all(errors.Stopped())
                self.exit_requested.set()
                return
            finally:
                self._snapshot_task = None
            self.snapshot_index = index
            metrics.snapshots_taken.inc()
            self._stats["snapshots_created"] += 1
            log.info("%s: snapshot at index %d (%.2f s)", self.name, index, took)

        if sync is None:
            await run()
        else:
            self._snapshot_task = asyncio.create_task(run(), name=f"snapshot-{self.name}")

    # ================================================================================
    # writes
    # ================================================================================
    def _deadline(self, timeout_s: float | None) -> float:
        return time.monotonic() + (timeout_s if timeout_s is not None else self.request_timeout_s)

    async def _wait_leader(self, deadline: float) -> int:
        """The known leader's id; waits up to an election timeout for one (NoLeader)."""
        limit = min(deadline, time.monotonic() + max(self.election_s * 2, 0.5))
        while self.leader_id == 0:
            self._check_running()
            remaining = limit - time.monotonic()
            if remaining <= 0:
                raise errors.NoLeader()
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.leader_id

    def _encode_entry(self, req_id: int, cmd) -> bytes:
        payload = encode_command(cmd)
        if len(payload) > self.config.max_request_bytes:
            raise errors.RequestTooLarge()
        return msgpack.packb([self.id, req_id, payload], use_bin_type=True)

    async def propose(self, cmd, *, timeout_s: float | None = None):
        """Replicate ``cmd`` and return its Result once applied here; raises geokv.errors.*."""
        self._check_running()
        validate_command(cmd)
        req_id = next(self._req_ids)
        data = self._encode_entry(req_id, cmd)
        return await self._propose_raw(0, data, req_id, self._deadline(timeout_s))

    async def _propose_raw(self, kind: int, data, req_id: int, deadline: float):
        if len(self._pending) >= MAX_INFLIGHT_PROPOSALS or len(self._proposals) >= MAX_QUEUED_PROPOSALS:
            metrics.proposals_failed.inc()
            raise errors.TooManyRequests()
        loop = asyncio.get_running_loop()
        t_start = time.monotonic()
        leader_at_start = self.leader_id
        handed = False  # Raft got this entry at some attempt: its outcome is unknown
        try:
            for _attempt in range(MAX_PROPOSE_ATTEMPTS):
                await self._wait_leader(deadline)
                fut = loop.create_future()
                self._pending[req_id] = (fut, t_start)
                self._proposals.append((kind, data, fut))
                self._wake.set()
                self._deadlines.add(fut, deadline)
                try:
                    return await fut
                except _Dropped:
                    self._pending.pop(req_id, None)
                    await asyncio.sleep(min(self.heartbeat_s, max(0.0, deadline - time.monotonic())))
                    if time.monotonic() >= deadline:
                        break
                except asyncio.TimeoutError:
                    handed = handed or fut in self._handed
                    if self._apply_pending():
                        # Probably committed and queued behind the apply thread (with the
                        # apply on the loop no timer could fire meanwhile): its outcome
                        # comes when the queue drains, so wait for it a bounded while.
                        fut = loop.create_future()
                        self._pending[req_id] = (fut, t_start)
                        self._deadlines.add(fut, time.monotonic() + APPLY_TIMEOUT_GRACE_S)
                        try:
                            return await fut
                        except (asyncio.TimeoutError, _Dropped):
                            pass
                    break
            metrics.proposals_failed.inc()
            if self.leader_id == 0 and not handed:
                raise errors.NoLeader()  # never reached Raft: safe for the client to resend
            if self.leader_id != leader_at_start:
                raise errors.TimeoutDueToLeaderFail()
            raise errors.Timeout()
        finally:
            self._pending.pop(req_id, None)

    # ================================================================================
    # reads
    # ================================================================================
    async def read(self, r: Range, *, mode: str | None = None, max_staleness_ms: float | None = None,
                   timeout_s: float | None = None) -> RangeResult:
        """Serve a Range. ``mode``: linearizable | lease | serializable | bounded."""
        self._check_running()
        validate_command(r)
        if mode is None:
            mode = self.config.read_mode_default
        if r.serializable:
            mode = "serializable"
        if mode == "serializable":
            return self.store.range(r)
        if mode == "bounded":
            res, _staleness = await self.read_bounded(r, max_staleness_ms or 0.0, timeout_s=timeout_s)
            return res
        if mode == "lease":
            await self._lease_barrier(self._deadline(timeout_s))
            return self.store.range(r)
        if mode != "linearizable":
            raise errors.InvalidArgument(f"etcdserver: unknown read mode {mode!r}")
        await self.wait_linearizable(timeout_s=timeout_s)
        return self.store.range(r)

    async def read_bounded(self, r: Range, max_staleness_ms: float, *, timeout_s: float | None = None):
        """Local read if this replica is at most ``max_staleness_ms`` behind; else linearizable.

        Returns (result, staleness_ms) where staleness_ms bounds how old the data may be.
        """
        self._check_running()
        st = self.staleness_ms()
        if st <= max_staleness_ms:
            return self.store.range(r), st
        await self.wait_linearizable(timeout_s=timeout_s)
        return self.store.range(r), 0.0

    def staleness_ms(self) -> float:
        """Upper bound on how far this replica's applied state lags the leader, in ms."""
        if self.role == StateRole.LEADER:
            return 0.0 if self.applied_index >= self.commit_index else self.heartbeat_s * 1000
        if self._caught_up_at == -math.inf:
            return math.inf
        return (time.monotonic() - self._caught_up_at) * 1000.0

    async def wait_linearizable(self, *, timeout_s: float | None = None) -> None:
        """Linearizable barrier: returns once this replica has applied an index at least as
        new as every write acknowledged before the call. ``--linearizable-read lease`` (the
        default, etcd's ReadOnlyLeaseBased): the leader's lease when it is valid (no quorum
        round; one trip to the leader from a follower), else a ReadIndex round; ``quorum``
        (etcd's ReadOnlySafe): always a ReadIndex quorum round, no clock assumption."""
        self._check_running()
        deadline = self._deadline(timeout_s)
        if getattr(self.config, "linearizable_read", "lease") == "lease":
            await self._lease_barrier(deadline)
            return
        idx = await self._read_index(deadline)
        await self._wait_applied(idx, deadline)

    async def _read_index(self, deadline: float, lease: bool = False) -> int:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_leader(deadline)
            queue = self._lease_queue if lease else self._read_queue
            if len(queue) >= MAX_QUEUED_READS:
                raise errors.TooManyRequests()
            fut = loop.create_future()
            queue.append(fut)
            self._wake.set()
            self._deadlines.add(fut, deadline)
            try:
                return await fut
            except _Dropped:
                await asyncio.sleep(min(self.heartbeat_s, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    raise errors.Timeout() from None
            except asyncio.TimeoutError:
                raise (errors.NoLeader() if self.leader_id == 0 else errors.Timeout()) from None

    async def _wait_applied(self, index: int, deadline: float) -> None:
        if self.applied_index >= index:
            return
        if len(self._apply_waiters) >= MAX_APPLY_WAITERS:
            # drop waiters whose reads already timed out, then decide
            self._apply_waiters = [w for w in self._apply_waiters if not w[2].done()]
            heapq.heapify(self._apply_waiters)
            if len(self._apply_waiters) >= MAX_APPLY_WAITERS:
                raise errors.TooManyRequests()
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._apply_waiters, (index, next(self._apply_seq), fut))
        self._deadlines.add(fut, deadline)
        try:
            await fut
        except asyncio.TimeoutError:
            raise errors.Timeout() from None

    async def _lease_barrier(self, deadline: float) -> None:
        """Lease read barrier. On the leader with a lease valid as of real time now (owed
        ticks counted): no network round and no driver turn -- wait until the Raft commit
        index as of now is applied. Otherwise a lease ReadIndex through the driver: a follower's goes to the
        leader, which answers from its lease (one round trip) or with a heartbeat round."""
        if self.role == StateRole.LEADER and self._leader_committed_in_term:
            valid = self._lease_valid_local()
            index = self._raft_commit
            if valid:
                self._lease_stats["lease_reads_local"] += 1
                await self._wait_applied(index, deadline)
                return
        idx = await self._read_index(deadline, lease=True)
        await self._wait_applied(idx, deadline)

    # ================================================================================
    # status / admin
    # ================================================================================
    def header(self) -> tuple[int, int, int, int]:
        return self.cluster_id, self.id, self.store.revision, self.term

    @property
    def is_leader(self) -> bool:
        return self.role == StateRole.LEADER

    async def status(self) -> dict:
        me = next((m for m in self.store.members() if m.get("id") == self.id), {})
        leader_region = ""
        if self.leader_id == self.id:
            leader_region = self.region
        elif self.leader_id:
            lm = next((m for m in self.store.members() if m.get("id") == self.leader_id), None)
            leader_region = (lm or {}).get("region", "") or ""
        st = self.staleness_ms()
        return {
            "id": self.id, "name": self.name, "cluster_id": self.cluster_id, "leader": self.leader_id,
            "term": self.term, "raft_term": self.term, "raft_index": self.commit_index,
            "raft_applied_index": self.applied_index,
            "revision": self.store.revision, "db_size": self.store.db_size(),
            "db_size_in_use": self.store.db_size(), "is_learner": bool(me.get("is_learner", False)),
            "role": self.role.name.lower(), "region": self.region, "zone": self.zone,
            "leader_region": leader_region, "read_mode_default": self.config.read_mode_default,
            "rtt_ms": dict(self.transport.rtt_ms()) if self.transport else {},
            "staleness_ms": st, "applied_lag_ms": int(min(st, 1e9)) if self.leader_id else 0,
            "errors": [], "version": "3.4.0",
        }

    def statistics(self) -> dict:
        """Counters of the driver loop (turns, Readies, fsyncs, batch sizes)."""
        st = dict(self._stats)
        st["pending_proposals"] = len(self._pending)
        st["queued_proposals"] = len(self._proposals)
        st["inbox"] = len(self._inbox)
        st.update(self._lease_stats)
        return st

    def hash_kv(self, revision: int = 0):
        return self.store.hash_kv(revision)

    def defragment(self):
        """Rewrite the store without free pages (awaitable; see runtime/alarms.py)."""
        return self._alarm_defragment()

    def alarms(self, action: int = 0, member_id: int = 0, alarm: int = 0):
        """etcd's Alarm: GET / ACTIVATE / DEACTIVATE (awaitable; see runtime/alarms.py)."""
        return self._alarm_request(action, member_id, alarm)

    def snapshot_stream(self, chunk_bytes: int = 1 << 20):
        """Yield the MVCC snapshot stream in chunks (etcd's Maintenance.Snapshot)."""
        buf = io.BytesIO()
        self.store.snapshot(buf)
        data = buf.getvalue()
        for off in range(0, len(data), chunk_bytes):
            yield data[off:off + chunk_bytes]

    async def move_leader(self, target_id: int, *, timeout_s: float | None = None) -> None:
        self._check_running()
        deadline = self._deadline(timeout_s)
        if not self.is_leader:
            leader = await self._wait_leader(deadline)
            await self._call(leader, "move_leader", target_id, deadline)
            return
        await self._move_leader_local(target_id, deadline)

    async def _move_leader_local(self, target_id: int, deadline: float) -> None:
        if not self.is_leader:
            raise errors.NotLeader()
        if target_id not in self.conf_state.voters:
            raise errors.BadLeaderTransferee()
        if target_id == self.id:
            return
        self._add_action(lambda rn: rn.transfer_leader(target_id))
        limit = min(deadline, time.monotonic() + 3 * self.election_s)
        while self.leader_id != target_id:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                raise errors.Timeout("etcdserver: request timed out, leader transfer took too long")
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    # ================================================================================
    # hooks for the geo layer (timeouts, election ranges, status)
    # ================================================================================
    @property
    def tick_ms(self) -> float:
        return self.tick_s * 1000.0

    @property
    def timeouts_adjustable(self) -> bool:
        """May the geo layer change the timeouts (the user set neither of them)?"""
        return bool(getattr(self.config, "timeouts_auto", False))

    async def raft_status(self, timeout_s: float = 2.0):
        """The Raft node's Status, taken by the driver between turns; None if the driver
        did not answer within ``timeout_s`` (stopping, or its action queue is full)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()

        def grab(rn) -> None:
            if not fut.done():
                fut.set_result(rn.status())

        if self._rn is None or not self._add_action(grab):
            return None
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            return None

    def set_raft_timing(self, heartbeat_ms: float, election_ms: float,
                        election_range_ticks: tuple[int, int] | None = None,
                        check_quorum_ms: float | None = None) -> tuple[int, int]:
        """Change the heartbeat interval and election timeout of the running Raft node
        (and the [lo, hi) tick range its election timeouts are drawn from; lo >= election
        ticks). Takes effect at the driver's next turn; the tick length never changes.
        Lease reads stay safe across the change (geokv.raft.raft: the leader announces its
        lease hold). ``check_quorum_ms``: how long a leader goes without a quorum's answer
        before it steps down (None: one election timeout). Returns (heartbeat ticks,
        election ticks); raises ValueError if the values do not fit the tick (nothing
        changes then)."""
        tick_ms = self.tick_ms
        hb = max(1, round(heartbeat_ms / tick_ms))
        el = round(election_ms / tick_ms)
        if el <= hb or el < LEASE_MIN_ELECTION_TICKS or el <= LEASE_DRIFT_TICKS:
            raise ValueError(f"election timeout {election_ms} ms must exceed the heartbeat "
                             f"{heartbeat_ms} ms and {LEASE_MIN_ELECTION_TICKS} ticks of {tick_ms} ms")
        if election_range_ticks is not None:
            lo, hi = election_range_ticks
            if not el <= lo < hi:
                raise ValueError(f"election range {election_range_ticks} must satisfy {el} <= lo < hi")
        cq = None if check_quorum_ms is None else max(el, round(check_quorum_ms / tick_ms))

        def apply(rn) -> None:
            rn.set_timing(hb, el, election_range_ticks, cq)
            # Catch-up after a stall must still deliver >= any hold a stamp may carry.
            self._election_tick = max(self._election_tick, el)
            self.heartbeat_s = hb * tick_ms / 1000.0
            # election_s stays: it bounds waits for a new leader (an election takes more
            # than one election timeout) and the derived timeouts never exceed it.

        if not self._add_action(apply):
            raise ValueError("the driver's action queue is full; try again")
        return hb, el

    # ================================================================================
    # forwarded calls between members
    # ================================================================================
    async def _call(self, peer_id: int, method: str, payload, deadline: float):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.Timeout()
        try:
            return await self.transport.call(peer_id, method, payload, remaining)
        except PeerUnavailable:
            raise errors.TimeoutDueToConnectionLost() from None

    async def _on_leader(self, method: str, payload, local, *, timeout_s: float | None = None):
        """Run ``local(payload, deadline)`` on the leader: here, or forwarded to it."""
        self._check_running()
        deadline = self._deadline(timeout_s)
        while True:
            if self.is_leader:
                return await local(payload, deadline)
            leader = await self._wait_leader(deadline)
            try:
                return await self._call(leader, method, payload, deadline)
            except (errors.NotLeader, errors.TimeoutDueToConnectionLost):
                if time.monotonic() + self.heartbeat_s >= deadline:
                    raise
                await asyncio.sleep(self.heartbeat_s)

    async def _handle_call(self, peer_id: int, method: str, payload):
        self._check_running()
        deadline = self._deadline(None)
        if method == "lease_keepalive":
            return await self._lease_keepalive_local(int(payload), deadline)
        if method == "lease_ttl":
            return await self._lease_ttl_local(payload, deadline)
        if method == "member_promote":
            return await self._member_promote_local(int(payload), deadline)
        if method == "move_leader":
            await self._move_leader_local(int(payload), deadline)
            return None
        if method == "propose":  # tools/tests: an encoded command -> encoded result
            res = await self.propose(decode_command(payload))
            return encode_result(res)
        if method == "range":
            r = decode_command(payload[0])
            if type(r) is not Range:
                raise errors.InvalidArgument()
            return encode_result(await self.read(r, mode=str(payload[1])))
        if method == "statistics":  # benchmarks: driver counters (turns, Readies, fsyncs)
            return self.statistics()
        if method == "status":
            st = await self.status()
            st["rtt_ms"] = {str(k): v for k, v in st["rtt_ms"].items()}
            st["staleness_ms"] = st["staleness_ms"] if math.isfinite(st["staleness_ms"]) else -1.0
            return st
        raise errors.InvalidArgument(f"etcdserver: unknown peer call {method!r}")


__all__ = ["Member", "Put", "DeleteRange", "Txn", "Compact", "decode_result"]
