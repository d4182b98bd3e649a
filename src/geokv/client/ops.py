"""Request builders: key ranges, operations, comparisons and the transaction builder.

    from geokv.client import Compare, Op
    result = await client.txn() \
        .if_(Compare.value("k") == "v1", Compare.version("k") > 0) \
        .then(Op.put("k", "v2")) \
        .else_(Op.get("k")) \
        .commit()
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from geokv.client.types import prefix_range_end, to_bytes
from geokv.etcdpb import rpc_pb2

#: etcd's default limit of operations in one txn (server side: --max-txn-ops).
MAX_TXN_OPS = 128

SORT_ORDERS = {"none": 0, "ascend": 1, "descend": 2}
SORT_TARGETS = {"key": 0, "version": 1, "create": 2, "mod": 3, "value": 4}


def key_range(key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
              from_key: bool = False) -> tuple[bytes, bytes]:
    """(key, range_end) for a single key, a prefix, an explicit range or ``key..end``."""
    k = to_bytes(key)
    chosen = sum(1 for x in (prefix, range_end is not None, from_key) if x)
    if chosen > 1:
        raise ValueError("choose at most one of prefix, range_end and from_key")
    if prefix:
        if not k:
            return b"\x00", b"\x00"  # the whole keyspace
        return k, prefix_range_end(k)
    if from_key:
        return (k or b"\x00"), b"\x00"
    if range_end is not None:
        return k, to_bytes(range_end, "range_end")
    return k, b""


def range_request(key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
                  from_key: bool = False, limit: int = 0, revision: int = 0,
                  sort_order: str = "none", sort_target: str = "key", serializable: bool = False,
                  keys_only: bool = False, count_only: bool = False,
                  min_mod_revision: int = 0, max_mod_revision: int = 0,
                  min_create_revision: int = 0, max_create_revision: int = 0) -> rpc_pb2.RangeRequest:
    k, end = key_range(key, prefix=prefix, range_end=range_end, from_key=from_key)
    if sort_order not in SORT_ORDERS:
        raise ValueError(f"sort_order must be one of {sorted(SORT_ORDERS)}, not {sort_order!r}")
    if sort_target not in SORT_TARGETS:
        raise ValueError(f"sort_target must be one of {sorted(SORT_TARGETS)}, not {sort_target!r}")
    if limit < 0:
        raise ValueError("limit must be >= 0")
    return rpc_pb2.RangeRequest(
        key=k, range_end=end, limit=limit, revision=revision,
        sort_order=SORT_ORDERS[sort_order], sort_target=SORT_TARGETS[sort_target],
        serializable=serializable, keys_only=keys_only, count_only=count_only,
        min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision, max_create_revision=max_create_revision,
    )


def put_request(key: bytes | str, value: bytes | str, *, lease: int = 0, prev_kv: bool = False,
                ignore_value: bool = False, ignore_lease: bool = False) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(
        key=to_bytes(key), value=to_bytes(value, "value"), lease=lease, prev_kv=prev_kv,
        ignore_value=ignore_value, ignore_lease=ignore_lease,
    )


def delete_request(key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
                   from_key: bool = False, prev_kv: bool = False) -> rpc_pb2.DeleteRangeRequest:
    k, end = key_range(key, prefix=prefix, range_end=range_end, from_key=from_key)
    return rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)


class Op:
    """Operations inside a transaction (each builds an etcd RequestOp)."""

    @staticmethod
    def get(key: bytes | str, **kwargs: Any) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_range=range_request(key, **kwargs))

    @staticmethod
    def put(key: bytes | str, value: bytes | str, **kwargs: Any) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_put=put_request(key, value, **kwargs))

    @staticmethod
    def delete(key: bytes | str, **kwargs: Any) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_delete_range=delete_request(key, **kwargs))

    @staticmethod
    def txn(compare: list[rpc_pb2.Compare], success: list[rpc_pb2.RequestOp],
            failure: list[rpc_pb2.RequestOp] = ()) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(
            compare=list(compare), success=list(success), failure=list(failure)))


_RESULTS = {"==": 0, ">": 1, "<": 2, "!=": 3}
_TARGETS = {"version": 0, "create": 1, "mod": 2, "value": 3, "lease": 4}
_TARGET_FIELDS = {"version": "version", "create": "create_revision", "mod": "mod_revision",
                  "value": "value", "lease": "lease"}


class _CompareTarget:
    """``Compare.value("k") == "v"`` builds an etcd Compare; so do <, > and !=."""

    __slots__ = ("_target", "_key", "_range_end")

    def __init__(self, target: str, key: bytes | str, prefix: bool, range_end: bytes | str | None) -> None:
        self._target = target
        self._key, self._range_end = key_range(key, prefix=prefix, range_end=range_end)

    def _build(self, op: str, operand: Any) -> rpc_pb2.Compare:
        if self._target == "value":
            operand = to_bytes(operand, "value")
        elif not isinstance(operand, int) or isinstance(operand, bool):
            raise TypeError(f"compare on {self._target} needs an int, not {type(operand).__name__}")
        cmp = rpc_pb2.Compare(result=_RESULTS[op], target=_TARGETS[self._target], key=self._key,
                              range_end=self._range_end)
        setattr(cmp, _TARGET_FIELDS[self._target], operand)
        return cmp

    def __eq__(self, other: Any) -> rpc_pb2.Compare:  # type: ignore[override]
        return self._build("==", other)

    def __ne__(self, other: Any) -> rpc_pb2.Compare:  # type: ignore[override]
        return self._build("!=", other)

    def __gt__(self, other: Any) -> rpc_pb2.Compare:
        return self._build(">", other)

    def __lt__(self, other: Any) -> rpc_pb2.Compare:
        return self._build("<", other)

    __hash__ = None  # type: ignore[assignment]


class Compare:
    """Comparison targets of a transaction guard."""

    @staticmethod
    def value(key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None) -> _CompareTarget:
        return _CompareTarget("value", key, prefix, range_end)

    @staticmethod
    def version(key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None) -> _CompareTarget:
        return _CompareTarget("version", key, prefix, range_end)

    @staticmethod
    def create_revision(key: bytes | str, *, prefix: bool = False,
                        range_end: bytes | str | None = None) -> _CompareTarget:
        return _CompareTarget("create", key, prefix, range_end)

    @staticmethod
    def mod_revision(key: bytes | str, *, prefix: bool = False,
                     range_end: bytes | str | None = None) -> _CompareTarget:
        return _CompareTarget("mod", key, prefix, range_end)

    @staticmethod
    def lease(key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None) -> _CompareTarget:
        return _CompareTarget("lease", key, prefix, range_end)

    @staticmethod
    def parse(target: str, key: bytes | str, op: str, operand: Any) -> rpc_pb2.Compare:
        """Build a comparison from words, e.g. ``("mod", "k", ">", 4)`` (used by the CLI)."""
        if target not in _TARGETS:
            raise ValueError(f"compare target must be one of {sorted(_TARGETS)}, not {target!r}")
        if op not in _RESULTS:
            raise ValueError(f"compare operator must be one of {sorted(_RESULTS)}, not {op!r}")
        return _CompareTarget(target, key, False, None)._build(op, operand)


class Txn:
    """A transaction being built; ``commit()`` sends it (async or sync per client)."""

    __slots__ = ("_compare", "_success", "_failure", "_commit", "_state")

    def __init__(self, commit: Callable[[rpc_pb2.TxnRequest], Any]) -> None:
        self._compare: list[rpc_pb2.Compare] = []
        self._success: list[rpc_pb2.RequestOp] = []
        self._failure: list[rpc_pb2.RequestOp] = []
        self._commit = commit
        self._state = 0  # 0: may add compares, 1: in then, 2: in else

    def if_(self, *compares: rpc_pb2.Compare) -> Txn:
        if self._state > 0:
            raise ValueError("if_() must come before then() and else_()")
        for c in compares:
            if not isinstance(c, rpc_pb2.Compare):
                raise TypeError("if_() takes comparisons, e.g. Compare.value('k') == 'v'")
        self._compare.extend(compares)
        return self

    def then(self, *ops: rpc_pb2.RequestOp) -> Txn:
        if self._state > 1:
            raise ValueError("then() must come before else_()")
        self._state = 1
        self._success.extend(_check_ops(ops))
        return self

    def else_(self, *ops: rpc_pb2.RequestOp) -> Txn:
        self._state = 2
        self._failure.extend(_check_ops(ops))
        return self

    def request(self) -> rpc_pb2.TxnRequest:
        for name, ops in (("then", self._success), ("else", self._failure), ("if", self._compare)):
            if len(ops) > MAX_TXN_OPS:
                raise ValueError(f"too many operations in the {name} branch: {len(ops)} > {MAX_TXN_OPS}")
        return rpc_pb2.TxnRequest(compare=self._compare, success=self._success, failure=self._failure)

    def commit(self) -> Awaitable[Any] | Any:
        return self._commit(self.request())


def _check_ops(ops: tuple[Any, ...]) -> tuple[rpc_pb2.RequestOp, ...]:
    for op in ops:
        if not isinstance(op, rpc_pb2.RequestOp):
            raise TypeError("then()/else_() take operations, e.g. Op.put('k', 'v')")
    return ops
