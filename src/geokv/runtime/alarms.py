"""Alarms, the backend space quota and defragmentation on a Member (a mixin).

etcd 3.4's semantics, which this module keeps:

* The space quota is checked at the API, before proposing (``space_gate``): a Put, a
  Txn with puts or a LeaseGrant whose cost (etcd's: 256 + key + value per put, the
  larger branch of a txn, 64 per lease) would take the backend's size to
  ``--quota-backend-bytes`` raises the NOSPACE alarm for this member and is answered
  "etcdserver: mvcc: database space exceeded" (RESOURCE_EXHAUSTED). The size is the
  LMDB file's high-water mark (``MVCCStore.db_size``), like bbolt's: deleting and
  compacting frees pages for reuse but only ``defragment`` shrinks it.
* While a NOSPACE alarm is active anywhere in the cluster every member refuses writes
  that cost space (Put, Txn with puts, LeaseGrant); Range, DeleteRange, Compact, Txn
  without puts and lease revokes still work, so space can be freed. It stays until
  ``etcdctl alarm disarm``; a disarm while the file is still over the quota is followed
  by a fresh alarm at the next write, as in etcd.
* The store's own quota check (on logical bytes, at apply) stays the last line of
  defence; a write it refuses also raises the alarm (etcd does the same).

Alarms are replicated: an ACTIVATE / DEACTIVATE is a Raft entry, so every member holds
the same alarm list. The kv layer has no alarm command, so an alarm entry is a
read-only ``Range`` whose key starts with ``ALARM_ENTRY_MAGIC`` (the store applies it as
a harmless read; no client can propose a bare Range): the mixin sees the committed
entries through ``Member.apply_observers`` before they are applied, decodes its own and
keeps the list in ``<data-dir>/member/alarms`` (rewritten and fsynced when the list
changes, with the index it reflects: a restart replays the WAL's later alarm entries
on exactly that list, so each has the effect it had). A follower that installs a leader snapshot missed the entries the
snapshot covers: it marks its list unknown and proposes SYNC_REQUEST; the leader (on a
retry: every member that knows the list) answers with SYNC(list as of that request's
index); the follower takes the first and re-applies the alarm entries it saw after
that index.

Defragmentation: see runtime/defrag.py. CORRUPT alarms are listed, replicated and
disarmed like NOSPACE but nothing raises one and they refuse no request (etcd's corruption
checker is not implemented).

Lease checkpoints: etcd 3.4 checkpoints remaining TTLs only with
``--experimental-enable-lease-checkpoint`` (off by default); without it a new leader
gives every lease its full TTL again. geokv does the same (runtime/leases.py); the
store's LeaseCheckpoint command exists for a later opt-in flag.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import weakref
from typing import Any, Iterator

import msgpack
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from geokv import errors
from geokv.kv.types import Put, Range, decode_command
from geokv.raft.types import StateRole
from geokv.runtime.defrag import DefragMixin, fsync_path

log = logging.getLogger("geokv.alarms")

# etcd's AlarmType and AlarmRequest.AlarmAction numbers (etcdserverpb).
ALARM_NONE = 0
ALARM_NOSPACE = 1
ALARM_CORRUPT = 2
ALARM_NAMES = {ALARM_NONE: "NONE", ALARM_NOSPACE: "NOSPACE", ALARM_CORRUPT: "CORRUPT"}
ACTION_GET = 0
ACTION_ACTIVATE = 1
ACTION_DEACTIVATE = 2

# etcd's quota costs (etcdserver/quota.go).
KV_OVERHEAD_BYTES = 256
LEASE_OVERHEAD_BYTES = 64

ALARM_ENTRY_MAGIC = b"\x00\xffgeokv/alarm\x00"
"""Key prefix of the Range that carries an alarm entry through the Raft log."""
ALARM_ENTRY_BYTES_MAX = 600
"""Entries longer than this are not alarm entries (skipped without a search)."""
_OP_ACTIVATE = 1
_OP_DEACTIVATE = 2
_OP_SYNC_REQUEST = 3
_OP_SYNC = 4

ALARMS_MAX = 24
"""Alarms kept at most (two kinds per member); a SYNC entry must fit a Range key."""
ALARM_PENDING_MAX = 256
"""Alarm entries buffered while the list is unknown (after a snapshot install)."""
ALARM_SYNC_RETRY_S = 2.0
"""A SYNC_REQUEST nobody answered is proposed again after this long..."""
ALARM_SYNC_ATTEMPTS_MAX = 30
"""...at most this many times; then the member keeps its old list and logs an error."""
ALARM_RESTORE_CHECK_S = 0.2
"""How often an idle member looks for a snapshot install (no entry may follow one)."""
ALARM_PROPOSALS_MAX = 16
"""Alarm entries this member has in flight at once (SYNC answers, activations)."""
ALARM_OUTCOMES_MAX = 1024
"""Outcomes of this member's ACTIVATE/DEACTIVATE entries waiting for their caller."""
SPACE_CHECK_INTERVAL_S = 0.01
"""Far from the quota the file size the gate compares is re-read at most this often
(one LMDB call, ~1.3 us); within ``SPACE_EXACT_FRACTION`` of it, at every write."""
SPACE_EXACT_FRACTION = 0.75
_ALARM_FILE_VERSION = 1


def put_cost(key: bytes, value: bytes) -> int:
    return KV_OVERHEAD_BYTES + len(key) + len(value)


def txn_cost(txn: Any) -> int:
    """etcd's costTxn: the puts of the larger branch (top-level puts only)."""
    succ = sum(put_cost(op.key, op.value) for op in txn.success if type(op) is Put)
    fail = sum(put_cost(op.key, op.value) for op in txn.failure if type(op) is Put)
    return max(succ, fail)


def alarm_string(member_id: int, alarm: int) -> str:
    """etcd's AlarmMember text form, as Status ``errors`` and etcdctl print it."""
    return f"memberID:{member_id} alarm:{ALARM_NAMES.get(alarm, str(alarm))} "


class _SpaceMetrics:
    """Prometheus view of the members in this process: etcd's quota and backend size
    gauges, the active alarms, and what defragmentation freed."""

    def __init__(self) -> None:
        self.members: weakref.WeakSet = weakref.WeakSet()

    def collect(self) -> Iterator[Any]:
        quota = GaugeMetricFamily("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.")
        size = GaugeMetricFamily("etcd_mvcc_db_total_size_in_bytes",
                                 "Total size of the underlying database physically allocated in bytes.")
        in_use = GaugeMetricFamily("etcd_mvcc_db_total_size_in_use_in_bytes",
                                   "Total size of the underlying database logically in use in bytes.")
        alarms = GaugeMetricFamily("geokv_alarms_active", "Active alarms (any member) as this member knows them.",
                                   labels=["alarm"])
        freed = CounterMetricFamily("geokv_defrag_freed_bytes", "Bytes defragmentation gave back to the filesystem.")
        counts = {name: 0 for name in ALARM_NAMES.values() if name != "NONE"}
        q = s = u = f = 0
        for m in list(self.members):
            store = getattr(m, "store", None)
            if store is None or getattr(store, "env", None) is None:
                continue
            q += m.config.quota_backend_bytes
            s += store.db_size()
            u += store.db_size_in_use()
            f += m._alarm_stats["defrag_bytes_freed"]
            for _mid, a in m._alarm_set:
                name = ALARM_NAMES.get(a)
                if name in counts:
                    counts[name] += 1
        quota.add_metric([], q)
        size.add_metric([], s)
        in_use.add_metric([], u)
        for name, n in sorted(counts.items()):
            alarms.add_metric([name], n)
        freed.add_metric([], f)
        yield from (quota, size, in_use, alarms, freed)


SPACE_METRICS = _SpaceMetrics()
REGISTRY.register(SPACE_METRICS)


class AlarmMixin(DefragMixin):
    """Alarm list and space gate (and, from DefragMixin, defragmentation); see the
    module docstring."""

    # --- state ----------------------------------------------------------------------
    def _init_alarms(self) -> None:
        self._alarm_set: set[tuple[int, int]] = set()   # (member id, alarm type)
        self._alarm_index = 0          # Raft index of the last alarm entry applied
        self._alarm_known = True       # False after a snapshot install until a SYNC
        self._alarm_mark = 0           # a SYNC as of >= this index may be adopted
        self._alarm_pending: list[list] = []   # [index, op, member, alarm] seen while unknown
        self._alarm_seen = -1          # last entry index observed (-1: none yet)
        self._alarm_restores_seen = 0
        self._alarm_loaded = False
        self._alarm_inflight = 0
        self._alarm_outcomes: dict[int, bool] = {}
        self._alarm_nonces = itertools.count(1)
        self._alarm_sync_task: asyncio.Task | None = None
        self._alarm_watch_task: asyncio.Task | None = None
        self._alarm_loop: asyncio.AbstractEventLoop | None = None
        self._alarm_activation: asyncio.Future | None = None
        self._space_db_bytes = 0
        self._space_checked_at = -1e18
        self._defrag_lock: asyncio.Lock | None = None
        self._alarm_stats = {"alarm_entries": 0, "alarm_syncs_adopted": 0, "nospace_refused": 0,
                             "defrags": 0, "defrag_bytes_freed": 0, "defrag_copies_stale": 0,
                             "defrag_copies_in_driver": 0}
        self.apply_observers.append(self._observe_alarm_entries)
        SPACE_METRICS.members.add(self)

    def _alarm_path(self) -> str:
        return os.path.join(self.config.data_dir, "member", "alarms")

    def _alarm_load(self) -> None:
        if self._alarm_loaded:
            return
        self._alarm_loaded = True
        try:
            with open(self._alarm_path(), "rb") as f:
                st = msgpack.unpackb(f.read(), raw=False)
        except FileNotFoundError:
            st = None
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            # The file is rewritten atomically, so this is damage from outside: ask the
            # cluster for the list instead of trusting it.
            log.error("%s: unreadable alarm file (%r); asking the cluster", self.name, exc)
            self._alarm_known = False
            return
        if st is not None:
            self._alarm_index = int(st["index"])
            self._alarm_set = {(int(m), int(a)) for m, a in st["alarms"]}
            self._alarm_known = bool(st["known"])
            self._alarm_mark = int(st.get("mark", 0))
            self._alarm_pending = [list(p) for p in st.get("pending", [])]
        # A leader's snapshot (full data, term >= 2; the bootstrap one has term 1) newer
        # than the last install this list accounts for: the process stopped between
        # installing it and noticing, or the file is gone. Ask the cluster.
        snap = self.storage.snapshot() if self.storage is not None else None
        if (snap is not None and snap.data and snap.metadata.term >= 2
                and snap.metadata.index > self._alarm_mark and self._alarm_known):
            log.info("%s: the WAL holds a leader snapshot (index %d) newer than the alarm list",
                     self.name, snap.metadata.index)
            self._alarm_known = False
            self._alarm_mark = snap.metadata.index
            self._alarm_pending = []

    def _alarm_save(self) -> None:
        path = self._alarm_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        blob = msgpack.packb({"v": _ALARM_FILE_VERSION, "index": self._alarm_index,
                              "alarms": sorted(self._alarm_set), "known": self._alarm_known,
                              "mark": self._alarm_mark, "pending": self._alarm_pending}, use_bin_type=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(os.path.dirname(path))

    @property
    def nospace_alarm(self) -> bool:
        """True while a NOSPACE alarm is active (for any member)."""
        for _m, a in self._alarm_set:
            if a == ALARM_NOSPACE:
                return True
        return False

    def alarm_list(self, alarm: int = ALARM_NONE) -> list[tuple[int, int]]:
        """The alarms this member knows of, (member id, type) sorted; local, no barrier."""
        self._alarm_load()
        self._alarm_check_restored(self.applied_index)
        return sorted((m, a) for m, a in self._alarm_set if alarm == ALARM_NONE or a == alarm)

    def alarm_status_errors(self) -> list[str]:
        """etcd's Status ``errors`` entries for the active alarms."""
        return [alarm_string(m, a) for m, a in self.alarm_list()]

    def alarm_statistics(self) -> dict:
        self._alarm_load()
        self._alarm_check_restored(self.applied_index)
        st = dict(self._alarm_stats)
        st.update(alarms=len(self._alarm_set), alarm_list_known=self._alarm_known, alarm_index=self._alarm_index)
        return st

    # --- the applied log ------------------------------------------------------------
    def _alarm_check_restored(self, mark: int) -> None:
        """Notice a snapshot install (the store was replaced: alarm entries were skipped)."""
        restored = self._stats.get("snapshots_restored", 0)
        if restored != self._alarm_restores_seen:
            self._alarm_restores_seen = restored
            self._alarm_mark_unknown(mark)

    def _alarm_mark_unknown(self, mark: int) -> None:
        self._alarm_known = False
        self._alarm_mark = max(self._alarm_mark, mark)
        self._alarm_pending = []
        log.info("%s: alarm list unknown after a snapshot install; asking the cluster", self.name)
        try:
            self._alarm_save()
        except OSError as exc:
            log.error("%s: cannot save the alarm list: %r", self.name, exc)
        self._alarm_start_sync()

    def _observe_alarm_entries(self, ents: list) -> None:
        """Apply observer (driver task, before the store applies ``ents``): never raises."""
        if not ents:
            return
        try:
            self._alarm_load()
            first = ents[0].index
            if 0 <= self._alarm_seen < first - 1:
                # Entries were skipped: a snapshot replaced the store.
                self._alarm_restores_seen = self._stats.get("snapshots_restored", 0)
                self._alarm_mark_unknown(first - 1)
            else:
                self._alarm_check_restored(first - 1)
            self._alarm_seen = ents[-1].index
            if self._alarm_watch_task is None:
                self._alarm_in_loop(self._alarm_start_watch)
            if not self._alarm_known and self._alarm_sync_task is None:
                self._alarm_start_sync()  # after a restart in the unknown state
            magic = ALARM_ENTRY_MAGIC
            store = self.store
            replayed = store.applied_index if store is not None else 0  # applied before a restart
            for e in ents:
                data = e.data
                if len(data) > ALARM_ENTRY_BYTES_MAX or magic not in data or e.index <= self._alarm_index:
                    continue
                op = self._alarm_decode(data)
                if op is not None:
                    self._alarm_apply(e.index, op, e.index <= replayed)
        except Exception:  # noqa: BLE001 - an observer must not kill the driver
            log.exception("%s: alarm observer failed", self.name)

    def _alarm_in_loop(self, fn) -> None:
        """Run ``fn`` now if called on the member's event loop; from another thread (an
        apply observer run in a worker) hand it to the loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            self._alarm_loop = running
            fn()
        elif self._alarm_loop is not None and not self._alarm_loop.is_closed():
            self._alarm_loop.call_soon_threadsafe(fn)

    def _alarm_start_watch(self) -> None:
        if self._alarm_watch_task is None:
            self._alarm_watch_task = asyncio.ensure_future(self._alarm_watch_restores())

    async def _alarm_watch_restores(self) -> None:
        """Notice a snapshot install on an idle member (the observer sees none until the
        next entry). Ends with the member."""
        while not self._stopping and not self.removed and self.fatal is None:
            await asyncio.sleep(ALARM_RESTORE_CHECK_S)
            try:
                self._alarm_check_restored(self.applied_index)
            except Exception:  # noqa: BLE001 - keep watching
                log.exception("%s: alarm restore check failed", self.name)

    @staticmethod
    def _alarm_decode(data: bytes) -> list | None:
        try:
            origin, _req, payload = msgpack.unpackb(data, raw=False)
            cmd = decode_command(payload)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if type(cmd) is not Range or not cmd.key.startswith(ALARM_ENTRY_MAGIC):
            return None
        try:
            op = msgpack.unpackb(cmd.key[len(ALARM_ENTRY_MAGIC):], raw=False)
        except (ValueError, msgpack.UnpackException):
            return None
        if not isinstance(op, list) or not op or not isinstance(op[0], int):
            return None
        return [origin, *op]

    def _alarm_apply(self, index: int, op: list, replay: bool = False) -> None:
        """Apply one alarm entry. The file is rewritten (fsync) only when the list or the
        sync state changed: replaying an entry that changed nothing changes nothing
        again, so its index need not be durable."""
        origin, kind = op[0], op[1]
        self._alarm_stats["alarm_entries"] += 1
        dirty = False
        if kind in (_OP_ACTIVATE, _OP_DEACTIVATE):
            member_id, alarm, nonce = int(op[2]), int(op[3]), int(op[4])
            changed = dirty = self._alarm_change(kind, member_id, alarm)
            if not self._alarm_known:
                dirty = True  # the pending list grows
                if len(self._alarm_pending) >= ALARM_PENDING_MAX:
                    self._alarm_pending = []
                    self._alarm_mark = index  # ask again from here
                    self._alarm_start_sync(restart=True)
                else:
                    self._alarm_pending.append([index, kind, member_id, alarm])
            if nonce and origin == self.id and len(self._alarm_outcomes) < ALARM_OUTCOMES_MAX:
                self._alarm_outcomes[nonce] = changed  # nonce 0: nobody waits for it
            if changed and self._alarm_known:
                log.warning("%s: alarm %s %s (entry %d)", self.name,
                            "raised" if kind == _OP_ACTIVATE else "disarmed", alarm_string(member_id, alarm), index)
        elif kind == _OP_SYNC_REQUEST:
            # The leader answers at once; everyone who knows the list answers a retry.
            attempt = int(op[2]) if len(op) > 2 else 1
            if (self._alarm_known and origin != self.id and not replay
                    and (attempt > 0 or self.role == StateRole.LEADER)):
                self._alarm_spawn([_OP_SYNC, sorted(self._alarm_set), index])
        elif kind == _OP_SYNC:
            alarms, as_of = op[2], int(op[3])
            if not self._alarm_known and as_of >= self._alarm_mark:
                self._alarm_set = {(int(m), int(a)) for m, a in alarms}
                for p_index, p_kind, p_member, p_alarm in self._alarm_pending:
                    if p_index > as_of:
                        self._alarm_change(p_kind, p_member, p_alarm)
                self._alarm_pending = []
                self._alarm_known = True
                dirty = True
                self._alarm_stats["alarm_syncs_adopted"] += 1
                log.info("%s: alarm list synced (%d alarms)", self.name, len(self._alarm_set))
        else:
            return
        self._alarm_index = index
        if dirty:
            self._alarm_save()

    def _alarm_change(self, kind: int, member_id: int, alarm: int) -> bool:
        item = (member_id, alarm)
        if kind == _OP_ACTIVATE:
            if item in self._alarm_set or alarm == ALARM_NONE or len(self._alarm_set) >= ALARMS_MAX:
                return False
            self._alarm_set.add(item)
            return True
        if item not in self._alarm_set:
            return False
        self._alarm_set.discard(item)
        return True

    # --- proposing alarm entries ----------------------------------------------------
    @staticmethod
    def _alarm_command(op: list) -> Range:
        return Range(key=ALARM_ENTRY_MAGIC + msgpack.packb(op, use_bin_type=True))

    async def _alarm_propose(self, op: list, timeout_s: float | None = None) -> None:
        res = await self.propose(self._alarm_command(op), timeout_s=timeout_s)
        if isinstance(res, BaseException):
            raise res

    def _alarm_spawn(self, op: list) -> None:
        """Propose ``op`` in the background (from the driver: must not block or raise)."""
        if self._alarm_inflight >= ALARM_PROPOSALS_MAX:
            return  # the requester asks again after ALARM_SYNC_RETRY_S

        async def run() -> None:
            self._alarm_inflight += 1
            try:
                await self._alarm_propose(op)
            except errors.GeoKVError as exc:
                log.debug("%s: alarm entry %r not proposed: %s", self.name, op[0], exc)
            finally:
                self._alarm_inflight -= 1

        self._alarm_in_loop(lambda: asyncio.ensure_future(run()))

    def _alarm_start_sync(self, restart: bool = False) -> None:
        def start() -> None:
            if restart and self._alarm_sync_task is not None:
                self._alarm_sync_task.cancel()
                self._alarm_sync_task = None
            if self._alarm_sync_task is None and not self._alarm_known:
                self._alarm_sync_task = asyncio.ensure_future(self._alarm_sync())

        self._alarm_in_loop(start)  # (no loop yet: the first observed batch starts it)

    async def _alarm_sync(self) -> None:
        try:
            for attempt in range(ALARM_SYNC_ATTEMPTS_MAX):
                if self._alarm_known or self._stopping or self.removed:
                    return
                try:
                    await self._alarm_propose([_OP_SYNC_REQUEST, attempt], timeout_s=ALARM_SYNC_RETRY_S * 2)
                except errors.Stopped:
                    return
                except errors.GeoKVError as exc:
                    log.debug("%s: alarm sync request failed: %s", self.name, exc)
                deadline = time.monotonic() + ALARM_SYNC_RETRY_S
                while not self._alarm_known and time.monotonic() < deadline and not self._stopping:
                    await asyncio.sleep(0.05)
            if not self._alarm_known:
                log.error("%s: no member answered the alarm sync; keeping the old alarm list", self.name)
                self._alarm_known = True
                self._alarm_save()
        finally:
            if self._alarm_sync_task is asyncio.current_task():
                self._alarm_sync_task = None

    async def _alarm_request(self, action: int = ACTION_GET, member_id: int = 0,
                             alarm: int = ALARM_NONE) -> list[tuple[int, int]]:
        """etcd's Alarm RPC: GET lists (linearizably); ACTIVATE / DEACTIVATE go through
        Raft and return the alarm when it changed (etcd's response), else nothing."""
        self._check_running()
        if action == ACTION_GET:
            await self.wait_linearizable()
            return self.alarm_list(alarm)
        if action not in (ACTION_ACTIVATE, ACTION_DEACTIVATE):
            raise errors.InvalidArgument(f"etcdserver: unknown alarm action {action}")
        if alarm not in ALARM_NAMES:
            raise errors.InvalidArgument(f"etcdserver: unknown alarm type {alarm}")
        nonce = next(self._alarm_nonces)
        kind = _OP_ACTIVATE if action == ACTION_ACTIVATE else _OP_DEACTIVATE
        try:
            await self._alarm_propose([kind, int(member_id), int(alarm), nonce])
        finally:
            changed = self._alarm_outcomes.pop(nonce, False)
        return [(int(member_id), int(alarm))] if changed else []

    # --- the space quota --------------------------------------------------------------
    def space_gate(self, cost: int):
        """Called by the API before proposing a write of ``cost`` quota bytes (0: the
        write frees or keeps space). Returns None if it may go on; raises NoSpace while a
        NOSPACE alarm is active; returns an awaitable that raises the alarm and then
        NoSpace when the write would take the backend past the quota."""
        if cost <= 0:
            return None
        if not self._alarm_loaded:
            self._alarm_load()
        if self._alarm_set and self.nospace_alarm:
            self._alarm_stats["nospace_refused"] += 1
            raise errors.NoSpace()
        quota = self.config.quota_backend_bytes
        now = time.monotonic()
        if (now - self._space_checked_at >= SPACE_CHECK_INTERVAL_S
                or self._space_db_bytes + cost >= quota * SPACE_EXACT_FRACTION):
            self._space_db_bytes = self.store.db_size()
            self._space_checked_at = now
        if self._space_db_bytes + cost < quota:
            return None
        self._alarm_stats["nospace_refused"] += 1
        return self.raise_nospace_alarm(refuse=True)

    async def raise_nospace_alarm(self, refuse: bool = False) -> None:
        """Activate NOSPACE for this member (once, however many writers hit the quota);
        with ``refuse`` raise NoSpace afterwards, as etcd answers the write."""
        if not self.nospace_alarm:
            fut = self._alarm_activation
            if fut is None or fut.done():
                fut = self._alarm_activation = asyncio.ensure_future(
                    self._alarm_propose([_OP_ACTIVATE, self.id, ALARM_NOSPACE, 0]))
            try:
                await asyncio.shield(fut)
            except errors.GeoKVError as exc:
                log.warning("%s: raising the NOSPACE alarm failed: %s", self.name, exc)
        if refuse:
            raise errors.NoSpace()
