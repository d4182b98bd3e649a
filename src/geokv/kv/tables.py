"""The lease, membership and alarm tables of MVCCStore (a mixin; see store.py for the rules).

Leases: ``lease`` maps a lease id to (granted ttl, last checkpointed remaining ttl) and
``lease_keys`` holds one row per (lease id, key) attached.  Expiry is decided by the
leader outside the store and arrives as LeaseRevoke.  Members: ``member`` maps a member
id to the runtime's msgpack record.  Alarms: ``alarm`` holds one empty row per active
(member id, alarm type), as etcd's backend "alarm" bucket does; snapshots carry it, the
keyspace hash does not (etcd's HashKV covers only the key bucket).  None of this bumps
the MVCC revision, except the key deletions a LeaseRevoke makes.
"""

from __future__ import annotations

import struct

import msgpack

from geokv import errors
from geokv.kv.layout import M64, scan_live
from geokv.kv.types import (
    ALARM_ACTION_ACTIVATE,
    Alarm,
    AlarmResult,
    LeaseCheckpoint,
    LeaseCheckpointResult,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    MemberRemove,
    MemberResult,
    MemberSet,
    validate_command,
)

_LEASE = struct.Struct(">qq")  # granted ttl, remaining ttl (0: none checkpointed)
_ID = struct.Struct(">q")
_MEMBER_ID = struct.Struct(">Q")
_ALARM = struct.Struct(">QI")  # member id, alarm type

ALARMS_MAX = 64
"""Active alarms the table holds at most (etcd raises two kinds per member); an
ACTIVATE past it gets InvalidArgument and changes nothing."""


def alarms_in(txn, db) -> tuple[tuple[int, int], ...]:
    """Every (member id, alarm type) row of the alarm table, sorted."""
    return tuple(_ALARM.unpack(k) for k, _ in txn.cursor(db))


class LeaseMemberTables:
    """Lease and member commands and reads; relies on MVCCStore's transaction state."""

    # --- apply (inside MVCCStore.apply_batch's write transaction) -----------------------

    def _apply_lease_grant(self, g: LeaseGrant, index: int) -> LeaseGrantResult:
        validate_command(g)
        lid = g.id
        if lid == 0:
            # The leader normally picks the id; a zero id gets one derived from the Raft
            # index so that every replica picks the same.
            lid = ((index * 0x9E3779B97F4A7C15) & ((1 << 63) - 1)) or 1
            while self._txn.get(_ID.pack(lid), db=self._lease) is not None:
                lid = lid % ((1 << 63) - 1) + 1
        elif self._txn.get(_ID.pack(lid), db=self._lease) is not None:
            raise errors.LeaseExist()
        self._check_quota(_LEASE.size)
        self._txn.put(_ID.pack(lid), _LEASE.pack(g.ttl, 0), db=self._lease)
        return LeaseGrantResult(lid, g.ttl, self._rev)

    def _apply_lease_revoke(self, r: LeaseRevoke, index: int) -> LeaseRevokeResult:
        lkey = _ID.pack(r.id)
        txn = self._txn
        if txn.get(lkey, db=self._lease) is None:
            raise errors.LeaseNotFound()
        keys = self._lease_keys_in(txn, r.id)
        # Sorted, so every replica deletes in the same sub-revision order.
        victims = (row for key in keys for row in scan_live(self._cur, key, b"", 0))
        deleted = self._tombstones(victims, keep=False)[0]
        txn.delete(lkey, db=self._lease)
        return LeaseRevokeResult(self._wrev if self._sub else self._rev, deleted)

    def _apply_lease_checkpoint(self, c: LeaseCheckpoint, index: int) -> LeaseCheckpointResult:
        lkey = _ID.pack(c.id)
        raw = self._txn.get(lkey, db=self._lease)
        if raw is None:
            raise errors.LeaseNotFound()
        ttl, _ = _LEASE.unpack(raw)
        self._txn.put(lkey, _LEASE.pack(ttl, c.remaining_ttl), db=self._lease)
        return LeaseCheckpointResult(self._rev)

    def _apply_member_set(self, m: MemberSet, index: int) -> MemberResult:
        mid = m.member.get("id") if isinstance(m.member, dict) else None
        if not isinstance(mid, int) or isinstance(mid, bool):
            raise errors.InvalidArgument("etcdserver: member has no integer id")
        self._txn.put(_MEMBER_ID.pack(mid & M64), msgpack.packb(m.member, use_bin_type=True), db=self._member)
        return MemberResult(self._rev, self._members_in(self._txn))

    def _apply_member_remove(self, m: MemberRemove, index: int) -> MemberResult:
        if not self._txn.delete(_MEMBER_ID.pack(m.id & M64), db=self._member):
            raise errors.MemberNotFound()
        return MemberResult(self._rev, self._members_in(self._txn))

    def _apply_alarm(self, a: Alarm, index: int) -> AlarmResult:
        validate_command(a)
        key = _ALARM.pack(a.member_id, a.alarm)
        txn = self._txn
        if a.action == ALARM_ACTION_ACTIVATE:
            if txn.get(key, db=self._alarm) is not None:
                return AlarmResult(self._rev, False)
            if txn.stat(self._alarm)["entries"] >= ALARMS_MAX:
                raise errors.InvalidArgument(f"etcdserver: too many active alarms (at most {ALARMS_MAX})")
            txn.put(key, b"", db=self._alarm)
        elif not txn.delete(key, db=self._alarm):
            return AlarmResult(self._rev, False)
        self._alarms_pending = alarms_in(txn, self._alarm)
        return AlarmResult(self._rev, True)

    # --- reads --------------------------------------------------------------------------

    def alarms(self) -> tuple[tuple[int, int], ...]:
        """The active alarms as of the last commit, (member id, alarm type) sorted; no
        LMDB access (a cached tuple, republished by every commit that changes it)."""
        return self._alarms_committed

    def leases(self) -> list[tuple[int, int]]:
        """(lease id, granted ttl) of every lease, by id."""
        with self.env.begin(db=self._lease) as txn:
            return sorted((_ID.unpack(k)[0], _LEASE.unpack(v)[0]) for k, v in txn.cursor())

    def lease_info(self, lease_id: int) -> tuple[int, int] | None:
        """(granted ttl, last checkpointed remaining ttl or 0) or None if absent."""
        with self.env.begin(db=self._lease) as txn:
            raw = txn.get(_ID.pack(lease_id))
        return None if raw is None else _LEASE.unpack(raw)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        with self.env.begin() as txn:
            return self._lease_keys_in(txn, lease_id)

    def _lease_keys_in(self, txn, lease_id: int) -> list[bytes]:
        head = _ID.pack(lease_id)
        cur = txn.cursor(self._lkeys)
        out = []
        ok = cur.set_range(head)
        while ok:
            k = cur.key()
            if not k.startswith(head):
                break
            out.append(k[len(head):])
            ok = cur.next()
        return out

    def members(self) -> list[dict]:
        with self.env.begin() as txn:
            return self._members_in(txn)

    def _members_in(self, txn) -> list[dict]:
        return [msgpack.unpackb(v, raw=False, strict_map_key=False) for _, v in txn.cursor(self._member)]
