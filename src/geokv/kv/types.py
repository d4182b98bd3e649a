"""Commands, results and events of the MVCC state machine, and their msgpack form.

These are the only shapes other layers exchange with ``geokv.kv``: the API layer builds
commands from etcd protobuf requests and turns results back into responses; the runtime
puts ``encode_command(cmd)`` into Raft entries and hands ``decode_command(data)`` to
``MVCCStore.apply_batch``.  Nothing here knows about gRPC, protobuf or LMDB.

Range-end conventions are etcd's: ``range_end == b""`` means the single key ``key``;
``range_end == b"\\0"`` means every key ``>= key`` (so ``key=b"\\0", range_end=b"\\0"`` is
the whole keyspace); otherwise the half-open interval ``[key, range_end)``.

``validate_command`` performs the checks etcd does before a request enters Raft
(EmptyKey, ValueProvided, LeaseProvided, TooManyOps, DuplicateKey); the store repeats
them at apply time so a bad command in the log can never corrupt state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Union

import msgpack

from geokv import errors

MAX_TXN_OPS_DEFAULT = 128
"""etcd's default --max-txn-ops."""

MAX_KEY_BYTES = 464
"""Longest key the LMDB layout can index: LMDB keys are at most 511 bytes, the store
adds a 12-byte revision suffix and encodes the key in groups of 16 bytes plus a marker
byte (kv/layout.py), whatever bytes the key holds.  Checked by tests/kv."""

MAX_LEASE_TTL_S = 9_000_000_000
"""etcd's MaxLeaseTTL: a larger TTL gives LeaseTTLTooLarge."""

# etcd's AlarmRequest.AlarmAction and AlarmType numbers (etcdserverpb).
ALARM_ACTION_ACTIVATE = 1
ALARM_ACTION_DEACTIVATE = 2
ALARM_NOSPACE = 1
ALARM_CORRUPT = 2
ALARM_TYPES = frozenset({ALARM_NOSPACE, ALARM_CORRUPT})


class EventType(IntEnum):
    PUT = 0
    DELETE = 1


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


# --- data ---------------------------------------------------------------------------------


@dataclass(slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@dataclass(slots=True)
class Event:
    type: int  # EventType.PUT or EventType.DELETE
    kv: KeyValue  # for DELETE: key and mod_revision (the delete's revision) only
    prev_kv: KeyValue | None = None


# --- commands -----------------------------------------------------------------------------


@dataclass(slots=True)
class Put:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(slots=True)
class DeleteRange:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(slots=True)
class Range:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = 0
    sort_target: int = 0
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(slots=True)
class Compare:
    result: int  # CompareResult
    target: int  # CompareTarget
    key: bytes
    range_end: bytes = b""
    value: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0


@dataclass(slots=True)
class Txn:
    compare: list[Compare] = field(default_factory=list)
    success: list[Op] = field(default_factory=list)
    failure: list[Op] = field(default_factory=list)


@dataclass(slots=True)
class Compact:
    revision: int
    physical: bool = False


@dataclass(slots=True)
class LeaseGrant:
    id: int  # 0: the store picks a deterministic id from the Raft index
    ttl: int


@dataclass(slots=True)
class LeaseRevoke:
    id: int


@dataclass(slots=True)
class LeaseCheckpoint:
    id: int
    remaining_ttl: int


@dataclass(slots=True)
class MemberSet:
    member: dict  # must hold an int "id"; other fields are the runtime's (msgpack-able)


@dataclass(slots=True)
class MemberRemove:
    id: int


@dataclass(slots=True)
class Alarm:
    """Raise (ACTIVATE) or clear (DEACTIVATE) ``alarm`` for ``member_id``: etcd's
    AlarmRequest as it enters Raft (GET is a read and never does)."""

    action: int  # ALARM_ACTION_ACTIVATE or ALARM_ACTION_DEACTIVATE
    member_id: int  # unsigned 64-bit, as etcd's memberID
    alarm: int  # ALARM_NOSPACE or ALARM_CORRUPT


@dataclass(slots=True)
class Noop:
    pass


Op = Union[Put, DeleteRange, Range, Txn]
Command = Union[Put, DeleteRange, Range, Txn, Compact, LeaseGrant, LeaseRevoke, LeaseCheckpoint, MemberSet, MemberRemove,
                Alarm, Noop]

# --- results ------------------------------------------------------------------------------
# ``revision`` is always the store revision after the command (etcd's header revision).


@dataclass(slots=True)
class RangeResult:
    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int


@dataclass(slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(slots=True)
class TxnResult:
    revision: int
    succeeded: bool
    responses: list[Result] = field(default_factory=list)  # RangeResult|PutResult|DeleteResult|TxnResult


@dataclass(slots=True)
class CompactResult:
    revision: int


@dataclass(slots=True)
class LeaseGrantResult:
    id: int
    ttl: int
    revision: int


@dataclass(slots=True)
class LeaseRevokeResult:
    revision: int
    deleted: int = 0


@dataclass(slots=True)
class LeaseCheckpointResult:
    revision: int


@dataclass(slots=True)
class MemberResult:
    revision: int
    members: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class AlarmResult:
    revision: int
    changed: bool  # the alarm table changed (etcd answers the alarm only then)


@dataclass(slots=True)
class NoopResult:
    revision: int


Result = Union[
    RangeResult,
    PutResult,
    DeleteResult,
    TxnResult,
    CompactResult,
    LeaseGrantResult,
    LeaseRevokeResult,
    LeaseCheckpointResult,
    MemberResult,
    AlarmResult,
    NoopResult,
]

# --- validation (etcd's pre-Raft request checks) -----------------------------------------


def validate_command(cmd: Command, max_txn_ops: int = MAX_TXN_OPS_DEFAULT) -> None:
    """Raise the geokv.errors class etcd returns for a malformed request; else None."""
    t = type(cmd)
    if t is Put:
        _check_put(cmd)
    elif t is Range:
        _check_range(cmd)
    elif t is DeleteRange:
        if not cmd.key:
            raise errors.EmptyKey()
    elif t is Txn:
        _check_txn(cmd, max_txn_ops)
        _check_intervals(cmd.success)
        _check_intervals(cmd.failure)
    elif t is LeaseGrant:
        if cmd.ttl > MAX_LEASE_TTL_S:
            raise errors.LeaseTTLTooLarge()
    elif t is Alarm:
        _check_alarm(cmd)


def _check_alarm(a: Alarm) -> None:
    if a.action not in (ALARM_ACTION_ACTIVATE, ALARM_ACTION_DEACTIVATE):
        raise errors.InvalidArgument(f"etcdserver: unknown alarm action {a.action}")
    if a.alarm not in ALARM_TYPES:
        raise errors.InvalidArgument(f"etcdserver: unknown alarm type {a.alarm}")
    if not 0 <= a.member_id < 1 << 64:
        raise errors.InvalidArgument(f"etcdserver: member id {a.member_id} is not an unsigned 64-bit integer")


def _check_range(r: Range) -> None:
    if not r.key:
        raise errors.EmptyKey()
    if not (0 <= r.sort_order <= 2 and 0 <= r.sort_target <= 4):
        raise errors.InvalidArgument("etcdserver: invalid sort option")


def _check_compare(c: Compare) -> None:
    if not c.key:
        raise errors.EmptyKey()
    if not (0 <= c.result <= 3 and 0 <= c.target <= 4):
        raise errors.InvalidArgument("etcdserver: invalid compare")


def _check_put(p: Put) -> None:
    if not p.key:
        raise errors.EmptyKey()
    if p.ignore_value and p.value:
        raise errors.ValueProvided()
    if p.ignore_lease and p.lease:
        raise errors.LeaseProvided()


def _check_txn(t: Txn, max_txn_ops: int) -> None:
    opc = max(len(t.compare), len(t.success), len(t.failure))
    if opc > max_txn_ops:
        raise errors.TooManyOps()
    for c in t.compare:
        _check_compare(c)
    for branch in (t.success, t.failure):
        for op in branch:
            ot = type(op)
            if ot is Put:
                _check_put(op)
            elif ot is Txn:
                _check_txn(op, max_txn_ops - opc)
            elif ot is Range:
                _check_range(op)
            elif ot is DeleteRange:
                if not op.key:
                    raise errors.EmptyKey()
            else:
                raise errors.InvalidArgument(f"etcdserver: {ot.__name__} is not allowed in a txn")


def _del_interval(d: DeleteRange) -> tuple[bytes, bytes]:
    """[lo, hi) of a delete as etcd's duplicate check sees it: a single key k is
    [k, k+\\0), and range_end is taken literally, so etcd's "every key >= key" (range_end
    \\0) is an empty interval here and never collides (checked against etcd 3.4)."""
    if not d.range_end:
        return d.key, d.key + b"\x00"
    return d.key, d.range_end


def _in_dels(key: bytes, dels: list[tuple[bytes, bytes]]) -> bool:
    for lo, hi in dels:
        if lo <= key < hi:
            return True
    return False


def _check_intervals(ops: list) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """etcd's duplicate-key rule for one branch; returns (puts, delete intervals).

    A key may be put at most once per executed path, and may not be both put and
    deleted, where deletes of this level are checked against the puts of this level and
    of nested txns; puts in the then- and else-branch of one nested txn may repeat each
    other because only one of them runs.  Deletes may overlap each other freely.
    """
    dels: list[tuple[bytes, bytes]] = [_del_interval(op) for op in ops if type(op) is DeleteRange]
    puts: set[bytes] = set()
    for op in ops:
        if type(op) is not Txn:
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in puts_then:
            if k in puts or _in_dels(k, dels):
                raise errors.DuplicateKey()
            puts.add(k)
        for k in puts_else:
            if k in puts and k not in puts_then:
                raise errors.DuplicateKey()
            if _in_dels(k, dels):
                raise errors.DuplicateKey()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if type(op) is not Put:
            continue
        if op.key in puts or _in_dels(op.key, dels):
            raise errors.DuplicateKey()
        puts.add(op.key)
    return puts, dels


# --- msgpack encoding ---------------------------------------------------------------------
# Every object is a list whose first element is a small integer tag.  Tags are part of
# the Raft log format: never renumber them, only add new ones.

_T_PUT, _T_DEL, _T_RANGE, _T_TXN, _T_COMPACT = 1, 2, 3, 4, 5
_T_LGRANT, _T_LREVOKE, _T_LCHECK, _T_MSET, _T_MREMOVE, _T_NOOP = 6, 7, 8, 9, 10, 11
_T_ALARM = 12
_T_CMP = 20
_T_KV, _T_EVENT = 30, 31
_T_RANGE_R, _T_PUT_R, _T_DEL_R, _T_TXN_R, _T_COMPACT_R = 40, 41, 42, 43, 44
_T_LGRANT_R, _T_LREVOKE_R, _T_LCHECK_R, _T_MEMBER_R, _T_NOOP_R = 45, 46, 47, 48, 49
_T_ALARM_R = 50
_T_ERROR = 60

_FLAT = {
    Put: _T_PUT,
    DeleteRange: _T_DEL,
    Range: _T_RANGE,
    Compact: _T_COMPACT,
    LeaseGrant: _T_LGRANT,
    LeaseRevoke: _T_LREVOKE,
    LeaseCheckpoint: _T_LCHECK,
    MemberSet: _T_MSET,
    MemberRemove: _T_MREMOVE,
    Alarm: _T_ALARM,
    Noop: _T_NOOP,
    Compare: _T_CMP,
    CompactResult: _T_COMPACT_R,
    LeaseGrantResult: _T_LGRANT_R,
    LeaseRevokeResult: _T_LREVOKE_R,
    LeaseCheckpointResult: _T_LCHECK_R,
    MemberResult: _T_MEMBER_R,
    AlarmResult: _T_ALARM_R,
    NoopResult: _T_NOOP_R,
}
_FLAT_BY_TAG = {tag: cls for cls, tag in _FLAT.items()}
_FIELDS = {cls: cls.__slots__ for cls in _FLAT}
_SIMPLE_TYPES = {"bytes": bytes, "int": int, "bool": bool, "dict": dict}
# For decoding: the expected Python type of each field of the flat classes.
_FIELD_TYPES = {
    cls: tuple(_SIMPLE_TYPES.get(f.type, object) for f in fields(cls)) for cls in _FLAT
}


def _kv_obj(kv: KeyValue | None):
    if kv is None:
        return None
    return [kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease]


def _kv_from(o) -> KeyValue | None:
    return None if o is None else KeyValue(*o)


def _to_obj(x):
    t = type(x)
    tag = _FLAT.get(t)
    if tag is not None:
        return [tag, *[getattr(x, f) for f in _FIELDS[t]]]
    if t is Txn:
        return [_T_TXN, [_to_obj(c) for c in x.compare], [_to_obj(o) for o in x.success], [_to_obj(o) for o in x.failure]]
    if t is KeyValue:
        return [_T_KV, *_kv_obj(x)]
    if t is Event:
        return [_T_EVENT, x.type, _kv_obj(x.kv), _kv_obj(x.prev_kv)]
    if t is RangeResult:
        return [_T_RANGE_R, [_kv_obj(k) for k in x.kvs], x.more, x.count, x.revision]
    if t is PutResult:
        return [_T_PUT_R, x.revision, _kv_obj(x.prev_kv)]
    if t is DeleteResult:
        return [_T_DEL_R, x.revision, x.deleted, [_kv_obj(k) for k in x.prev_kvs]]
    if t is TxnResult:
        return [_T_TXN_R, x.revision, x.succeeded, [_to_obj(r) for r in x.responses]]
    if isinstance(x, errors.GeoKVError):
        return [_T_ERROR, type(x).__name__, x.message]
    raise TypeError(f"cannot encode {t.__name__}")


def _from_obj(o):
    if not isinstance(o, list) or not o or not isinstance(o[0], int):
        raise ValueError("not an encoded geokv.kv object")
    tag = o[0]
    cls = _FLAT_BY_TAG.get(tag)
    if cls is not None:
        args = o[1:]
        types = _FIELD_TYPES[cls]
        if len(args) != len(types):
            raise ValueError(f"{cls.__name__} needs {len(types)} fields, got {len(args)}")
        for a, t in zip(args, types):
            if not isinstance(a, t):
                raise ValueError(f"{cls.__name__}: {type(a).__name__} where {t.__name__} belongs")
        return cls(*args)
    if tag == _T_TXN:
        return Txn([_from_obj(c) for c in o[1]], [_from_obj(x) for x in o[2]], [_from_obj(x) for x in o[3]])
    if tag == _T_KV:
        return KeyValue(*o[1:])
    if tag == _T_EVENT:
        return Event(o[1], _kv_from(o[2]), _kv_from(o[3]))
    if tag == _T_RANGE_R:
        return RangeResult([KeyValue(*k) for k in o[1]], o[2], o[3], o[4])
    if tag == _T_PUT_R:
        return PutResult(o[1], _kv_from(o[2]))
    if tag == _T_DEL_R:
        return DeleteResult(o[1], o[2], [KeyValue(*k) for k in o[3]])
    if tag == _T_TXN_R:
        return TxnResult(o[1], o[2], [_from_obj(r) for r in o[3]])
    if tag == _T_ERROR:
        cls = getattr(errors, o[1], None)
        if not (isinstance(cls, type) and issubclass(cls, errors.GeoKVError)):
            cls = errors.GeoKVError
        return cls(o[2])
    raise ValueError(f"unknown geokv.kv tag {tag}")


def encode_command(cmd: Command) -> bytes:
    """The Raft entry payload for ``cmd`` (msgpack)."""
    return msgpack.packb(_to_obj(cmd), use_bin_type=True)


def decode_command(data: bytes) -> Command:
    """Inverse of encode_command; raises ValueError on bytes that are not a command."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        cmd = _from_obj(obj)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise ValueError(f"undecodable command: {e}") from None
    if type(cmd) not in _COMMAND_TYPES:
        raise ValueError(f"not a command: {type(cmd).__name__}")
    return cmd


def encode_result(x: Result | Event | errors.GeoKVError) -> bytes:
    """msgpack form of a result, an event or a user error (for forwarding between nodes)."""
    return msgpack.packb(_to_obj(x), use_bin_type=True)


def decode_result(data: bytes) -> Result | Event | errors.GeoKVError:
    try:
        return _from_obj(msgpack.unpackb(data, raw=False, strict_map_key=False))
    except (TypeError, msgpack.UnpackException) as e:
        raise ValueError(f"undecodable result: {e}") from None


_COMMAND_TYPES = frozenset(
    {Put, DeleteRange, Range, Txn, Compact, LeaseGrant, LeaseRevoke, LeaseCheckpoint, MemberSet, MemberRemove, Alarm,
     Noop}
)
