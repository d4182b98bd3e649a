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

Alarms are part of the replicated state machine, as in etcd (its backend's "alarm"
bucket): an ACTIVATE / DEACTIVATE is the kv layer's ``Alarm`` command, applied by
``MVCCStore.apply_batch`` to the store's alarm table, which store snapshots carry; so a
member that installs a snapshot, or restarts, has the list as of its applied index,
with nothing to ask of anyone. This mixin reads the list from the store
(``MVCCStore.alarms()``, a cached tuple).

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
import logging
import time
import weakref
from typing import Any, Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from geokv import errors
from geokv.kv import types as kvt
from geokv.kv.types import Alarm, AlarmResult, Put
from geokv.runtime.defrag import DefragMixin

log = logging.getLogger("geokv.alarms")

# etcd's AlarmType and AlarmRequest.AlarmAction numbers (etcdserverpb).
ALARM_NONE = 0
ALARM_NOSPACE = kvt.ALARM_NOSPACE
ALARM_CORRUPT = kvt.ALARM_CORRUPT
ALARM_NAMES = {ALARM_NONE: "NONE", ALARM_NOSPACE: "NOSPACE", ALARM_CORRUPT: "CORRUPT"}
ACTION_GET = 0
ACTION_ACTIVATE = kvt.ALARM_ACTION_ACTIVATE
ACTION_DEACTIVATE = kvt.ALARM_ACTION_DEACTIVATE

# etcd's quota costs (etcdserver/quota.go).
KV_OVERHEAD_BYTES = 256
LEASE_OVERHEAD_BYTES = 64

SPACE_CHECK_INTERVAL_S = 0.01
"""Far from the quota the file size the gate compares is re-read at most this often
(one LMDB call, ~1.3 us); within ``SPACE_EXACT_FRACTION`` of it, at every write."""
SPACE_EXACT_FRACTION = 0.75


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
            for _mid, a in store.alarms():
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
        self._alarm_activation: asyncio.Future | None = None
        self._space_db_bytes = 0
        self._space_checked_at = -1e18
        self._defrag_lock: asyncio.Lock | None = None
        self._alarm_stats = {"alarm_entries": 0, "nospace_refused": 0,
                             "defrags": 0, "defrag_bytes_freed": 0, "defrag_copies_stale": 0,
                             "defrag_copies_in_driver": 0}
        SPACE_METRICS.members.add(self)

    def _alarms_now(self) -> tuple[tuple[int, int], ...]:
        store = self.store
        return () if store is None else store.alarms()  # None: not started yet

    @property
    def nospace_alarm(self) -> bool:
        """True while a NOSPACE alarm is active (for any member)."""
        for _m, a in self._alarms_now():
            if a == ALARM_NOSPACE:
                return True
        return False

    def alarm_list(self, alarm: int = ALARM_NONE) -> list[tuple[int, int]]:
        """The alarms as of this member's applied index, (member id, type) sorted; local,
        no barrier."""
        return [(m, a) for m, a in self._alarms_now() if alarm == ALARM_NONE or a == alarm]

    def alarm_status_errors(self) -> list[str]:
        """etcd's Status ``errors`` entries for the active alarms."""
        return [alarm_string(m, a) for m, a in self.alarm_list()]

    def alarm_statistics(self) -> dict:
        st = dict(self._alarm_stats)
        st.update(alarms=len(self._alarms_now()))
        return st

    # --- proposing alarm commands ---------------------------------------------------
    async def _alarm_propose(self, cmd: Alarm, timeout_s: float | None = None) -> bool:
        """Replicate ``cmd``; True if it changed the alarm table."""
        res = await self.propose(cmd, timeout_s=timeout_s)
        if isinstance(res, BaseException):
            raise res
        assert type(res) is AlarmResult, res
        self._alarm_stats["alarm_entries"] += 1
        if res.changed:
            log.warning("%s: alarm %s %s", self.name,
                        "raised" if cmd.action == ACTION_ACTIVATE else "disarmed", alarm_string(cmd.member_id, cmd.alarm))
        return res.changed

    async def _alarm_request(self, action: int = ACTION_GET, member_id: int = 0,
                             alarm: int = ALARM_NONE) -> list[tuple[int, int]]:
        """etcd's Alarm RPC: GET lists (linearizably); ACTIVATE / DEACTIVATE go through
        Raft and return the alarm when it changed (etcd's response), else nothing."""
        self._check_running()
        if action == ACTION_GET:
            await self.wait_linearizable()
            return self.alarm_list(alarm)
        cmd = Alarm(int(action), int(member_id), int(alarm))
        kvt.validate_command(cmd)  # a user's mistake: InvalidArgument before Raft
        changed = await self._alarm_propose(cmd)
        return [(cmd.member_id, cmd.alarm)] if changed else []

    # --- the space quota --------------------------------------------------------------
    def space_gate(self, cost: int):
        """Called by the API before proposing a write of ``cost`` quota bytes (0: the
        write frees or keeps space). Returns None if it may go on; raises NoSpace while a
        NOSPACE alarm is active; returns an awaitable that raises the alarm and then
        NoSpace when the write would take the backend past the quota."""
        if cost <= 0:
            return None
        if self.store.alarms() and self.nospace_alarm:
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
                    self._alarm_propose(Alarm(ACTION_ACTIVATE, self.id, ALARM_NOSPACE)))
            try:
                await asyncio.shield(fut)
            except errors.GeoKVError as exc:
                log.warning("%s: raising the NOSPACE alarm failed: %s", self.name, exc)
        if refuse:
            raise errors.NoSpace()
