"""A deliberately naive in-memory model of etcd v3's MVCC semantics.

It keeps a full copy of the keyspace for every revision, so reads at any past revision
are plain dictionary lookups; nothing about it is shared with the LMDB store except the
command/result dataclasses and the request validation (tested on its own).
"""

from __future__ import annotations

import copy

from geokv import errors
from geokv.kv.tables import ALARMS_MAX
from geokv.kv.types import (
    ALARM_ACTION_ACTIVATE,
    Alarm,
    AlarmResult,
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    Event,
    KeyValue,
    LeaseCheckpoint,
    LeaseCheckpointResult,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Noop,
    NoopResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
    validate_command,
)


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


class Model:
    def __init__(self) -> None:
        self.rev = 1
        self.crev = 0
        self.states: dict[int, dict[bytes, KeyValue]] = {1: {}}
        self.log: list[Event] = []
        self.leases: dict[int, list[int]] = {}  # id -> [ttl, remaining]
        self.alarms: set[tuple[int, int]] = set()  # (member id, alarm type)

    # --- reads -------------------------------------------------------------------------

    def range(self, r: Range, state=None, cur_rev=None) -> RangeResult:
        cur_rev = self.rev if cur_rev is None else cur_rev
        if not r.key:
            raise errors.EmptyKey()
        if r.revision > cur_rev:
            raise errors.FutureRev()
        if 0 < r.revision < self.crev:
            raise errors.Compacted()
        if state is None or (0 < r.revision < cur_rev):
            state = self.states[r.revision if r.revision > 0 else cur_rev]
        keys = sorted(k for k in state if in_range(k, r.key, r.range_end))
        count = len(keys)
        if r.count_only:
            return RangeResult([], False, count, cur_rev)
        filtered = bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision)
        if r.sort_order == 0 and not filtered and r.limit > 0:
            keys = keys[: r.limit + 1]
        kvs = [copy.copy(state[k]) for k in keys]
        if r.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
        if r.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
        if r.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
        if r.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
        order = r.sort_order
        if r.sort_target != 0 and order == 0:
            order = 1
        getter = [
            lambda kv: kv.key,
            lambda kv: kv.version,
            lambda kv: kv.create_revision,
            lambda kv: kv.mod_revision,
            lambda kv: kv.value,
        ][r.sort_target]
        if order == 1:
            kvs.sort(key=getter)
        elif order == 2:
            kvs.sort(key=getter, reverse=True)
        more = False
        if r.limit > 0 and len(kvs) > r.limit:
            kvs = kvs[: r.limit]
            more = True
        if r.keys_only:
            for kv in kvs:
                kv.value = b""
        return RangeResult(kvs, more, count, cur_rev)

    def events(self, start_rev: int) -> list[Event]:
        start_rev = max(start_rev, 1)
        if start_rev < self.crev:
            raise errors.Compacted()
        out = []
        kept_at_crev = self.states[self.crev] if self.crev else {}
        for ev in self.log:
            rev = ev.kv.mod_revision
            if rev < start_rev:
                continue
            if rev == self.crev and not (ev.type == 0 and kept_at_crev.get(ev.kv.key) == ev.kv):
                continue  # compaction keeps only each key's newest version, never a deletion
            out.append(Event(ev.type, ev.kv, ev.prev_kv if rev > self.crev else None))
        return out

    # --- writes ------------------------------------------------------------------------

    def apply(self, cmd):
        """Returns (result or error, events)."""
        try:
            validate_command(cmd)
            return self._apply(cmd)
        except errors.GeoKVError as e:
            return e, []

    def _apply(self, cmd):
        if isinstance(cmd, Range):
            return self.range(cmd), []
        if isinstance(cmd, Compact):
            if cmd.revision <= self.crev:
                raise errors.Compacted()
            if cmd.revision > self.rev:
                raise errors.FutureRev()
            self.crev = cmd.revision
            return CompactResult(self.rev), []
        if isinstance(cmd, LeaseGrant):
            if cmd.id in self.leases:
                raise errors.LeaseExist()
            self.leases[cmd.id] = [cmd.ttl, 0]
            return LeaseGrantResult(cmd.id, cmd.ttl, self.rev), []
        if isinstance(cmd, LeaseCheckpoint):
            if cmd.id not in self.leases:
                raise errors.LeaseNotFound()
            self.leases[cmd.id][1] = cmd.remaining_ttl
            return LeaseCheckpointResult(self.rev), []
        if isinstance(cmd, Noop):
            return NoopResult(self.rev), []
        if isinstance(cmd, Alarm):
            item = (cmd.member_id, cmd.alarm)
            if cmd.action == ALARM_ACTION_ACTIVATE:
                if item in self.alarms:
                    return AlarmResult(self.rev, False), []
                if len(self.alarms) >= ALARMS_MAX:
                    raise errors.InvalidArgument("too many alarms")
                self.alarms.add(item)
                return AlarmResult(self.rev, True), []
            if item not in self.alarms:
                return AlarmResult(self.rev, False), []
            self.alarms.discard(item)
            return AlarmResult(self.rev, True), []
        w = _Write(self)
        if isinstance(cmd, Put):
            # Outside a txn etcd looks the lease up before anything else.
            if cmd.lease and cmd.lease not in self.leases:
                raise errors.LeaseNotFound()
            res = w.put(cmd)
        elif isinstance(cmd, DeleteRange):
            res = w.delete(cmd)
        elif isinstance(cmd, LeaseRevoke):
            if cmd.id not in self.leases:
                raise errors.LeaseNotFound()
            keys = sorted(k for k, kv in w.state.items() if kv.lease == cmd.id)
            for k in keys:
                w.delete(DeleteRange(k))
            del self.leases[cmd.id]
            res = LeaseRevokeResult(w.rev_now(), len(keys))
        elif isinstance(cmd, Txn):
            res = w.txn(cmd)
        else:
            raise TypeError(cmd)
        w.commit()
        return res, w.events


class _Write:
    """One write transaction against the model: works on a copy, commits at the end."""

    def __init__(self, m: Model) -> None:
        self.m = m
        self.pre = m.states[m.rev]
        self.state = dict(self.pre)
        self.events: list[Event] = []
        self.new_rev = m.rev + 1

    def rev_now(self) -> int:
        return self.new_rev if self.events else self.m.rev

    def commit(self) -> None:
        if self.events:
            self.m.rev = self.new_rev
            self.m.states[self.new_rev] = self.state
            self.m.log.extend(self.events)

    def put(self, p: Put) -> PutResult:
        old = self.state.get(p.key)
        if (p.ignore_value or p.ignore_lease) and old is None:
            raise errors.KeyNotFound()
        lease = old.lease if p.ignore_lease else p.lease
        if lease and lease not in self.m.leases:
            raise errors.LeaseNotFound()
        value = old.value if p.ignore_value else p.value
        if old is None:
            kv = KeyValue(p.key, self.new_rev, self.new_rev, 1, value, lease)
        else:
            kv = KeyValue(p.key, old.create_revision, self.new_rev, old.version + 1, value, lease)
        self.state[p.key] = kv
        self.events.append(Event(0, kv, self.pre.get(p.key)))
        return PutResult(self.new_rev, copy.copy(old) if p.prev_kv else None)

    def delete(self, d: DeleteRange) -> DeleteResult:
        keys = sorted(k for k in self.state if in_range(k, d.key, d.range_end))
        prev = []
        for k in keys:
            old = self.state.pop(k)
            prev.append(old)
            self.events.append(Event(1, KeyValue(k, 0, self.new_rev, 0, b"", 0), self.pre.get(k)))
        return DeleteResult(self.rev_now(), len(keys), prev if d.prev_kv else [])

    def compare(self, c: Compare) -> bool:
        kvs = [self.pre[k] for k in sorted(self.pre) if in_range(k, c.key, c.range_end)]
        if not kvs:
            if c.target == 3:
                return False
            kvs = [KeyValue(c.key)]
        for kv in kvs:
            a, b = [
                (kv.version, c.version),
                (kv.create_revision, c.create_revision),
                (kv.mod_revision, c.mod_revision),
                (kv.value, c.value),
                (kv.lease, c.lease),
            ][c.target]
            ok = [a == b, a > b, a < b, a != b][c.result]
            if not ok:
                return False
        return True

    def check(self, t: Txn, puts: bool) -> None:
        """etcd checks the chosen path before writing: all puts first, then all ranges."""
        ok = all(self.compare(c) for c in t.compare)
        for op in t.success if ok else t.failure:
            if isinstance(op, Put) and puts:
                if (op.ignore_value or op.ignore_lease) and op.key not in self.pre:
                    raise errors.KeyNotFound()
                if op.lease and op.lease not in self.m.leases:
                    raise errors.LeaseNotFound()
            elif isinstance(op, Range) and not puts:
                if op.revision > self.m.rev:
                    raise errors.FutureRev()
                if 0 < op.revision < self.m.crev:
                    raise errors.Compacted()
            elif isinstance(op, Txn):
                self.check(op, puts)

    def txn(self, t: Txn, top: bool = True) -> TxnResult:
        if top:
            self.check(t, puts=True)
            self.check(t, puts=False)
        ok = all(self.compare(c) for c in t.compare)
        responses = []
        for op in t.success if ok else t.failure:
            if isinstance(op, Put):
                # etcd checks ignore_* and leases against the state before the txn
                if (op.ignore_value or op.ignore_lease) and op.key not in self.pre:
                    raise errors.KeyNotFound()
                responses.append(self.put(op))
            elif isinstance(op, DeleteRange):
                responses.append(self.delete(op))
            elif isinstance(op, Range):
                if op.revision > self.m.rev:
                    raise errors.FutureRev()
                responses.append(self.m.range(op, self.state, self.rev_now()))
            else:
                responses.append(self.txn(op, top=False))
        return TxnResult(self.rev_now(), ok, responses)
