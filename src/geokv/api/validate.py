"""Request validation: the checks etcd makes before a request reaches the store.

Every check raises a ``geokv.errors`` class with etcd's code and text.
"""

from __future__ import annotations

from dataclasses import dataclass

from geokv import errors
from geokv.etcdpb import rpc_pb2
from geokv.kv.types import MAX_KEY_BYTES

MAX_REQUEST_BYTES_DEFAULT = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)
MAX_TXN_OPS_DEFAULT = 128  # etcd's --max-txn-ops default
MAX_LEASE_TTL_S = 9_000_000_000  # etcd's MaxLeaseTTL
GRPC_OVERHEAD_BYTES = 512 * 1024  # slack on the gRPC message limit above max_request_bytes


@dataclass(slots=True)
class Limits:
    max_request_bytes: int = MAX_REQUEST_BYTES_DEFAULT
    max_txn_ops: int = MAX_TXN_OPS_DEFAULT


def check_range(r: rpc_pb2.RangeRequest) -> None:
    """etcd reads a negative limit as "no limit" and a negative revision as "now"; so do we."""
    if not r.key:
        raise errors.EmptyKey()


def check_put(r: rpc_pb2.PutRequest, limits: Limits) -> None:
    if not r.key:
        raise errors.EmptyKey()
    if r.ignore_value and r.value:
        raise errors.ValueProvided()
    if r.ignore_lease and r.lease:
        raise errors.LeaseProvided()
    if len(r.key) + len(r.value) > limits.max_request_bytes or r.ByteSize() > limits.max_request_bytes:
        raise errors.RequestTooLarge()
    if len(r.key) > MAX_KEY_BYTES:
        # The store's limit (LMDB keys); refused here so it costs no Raft round.
        raise errors.InvalidArgument(f"etcdserver: key is too long (at most {MAX_KEY_BYTES} bytes)")


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.EmptyKey()


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


def _check_branch(ops, limits: Limits) -> None:
    """etcd's rule: a key may be written at most once per branch (no put twice, no put
    inside a deleted range)."""
    puts: set[bytes] = set()
    deletes: list[tuple[bytes, bytes]] = []
    for op in ops:
        which = op.WhichOneof("request")
        if which == "request_range":
            check_range(op.request_range)
        elif which == "request_put":
            p = op.request_put
            check_put(p, limits)
            if p.key in puts:
                raise errors.DuplicateKey()
            puts.add(p.key)
        elif which == "request_delete_range":
            d = op.request_delete_range
            check_delete(d)
            deletes.append((d.key, d.range_end))
        elif which == "request_txn":
            _check_txn_shape(op.request_txn, limits)
        else:
            raise errors.InvalidArgument("etcdserver: empty request operation in txn")
    if deletes and puts:
        for key in puts:
            for start, end in deletes:
                if _in_range(key, start, end):
                    raise errors.DuplicateKey()


def _check_txn_shape(t: rpc_pb2.TxnRequest, limits: Limits) -> None:
    m = limits.max_txn_ops
    if len(t.compare) > m or len(t.success) > m or len(t.failure) > m:
        raise errors.TooManyOps()
    for c in t.compare:
        if not c.key:
            raise errors.EmptyKey()
        if not 0 <= c.result <= 3:
            raise errors.InvalidArgument("etcdserver: invalid compare result")
        if not 0 <= c.target <= 4:
            raise errors.InvalidArgument("etcdserver: invalid compare target")
    _check_branch(t.success, limits)
    _check_branch(t.failure, limits)


def check_txn(t: rpc_pb2.TxnRequest, limits: Limits) -> None:
    _check_txn_shape(t, limits)
    if t.ByteSize() > limits.max_request_bytes:
        raise errors.RequestTooLarge()


def txn_is_read_only(t: rpc_pb2.TxnRequest) -> bool:
    for branch in (t.success, t.failure):
        for op in branch:
            which = op.WhichOneof("request")
            if which == "request_range":
                continue
            if which == "request_txn" and txn_is_read_only(op.request_txn):
                continue
            return False
    return True


def check_lease_ttl(ttl: int) -> None:
    if ttl > MAX_LEASE_TTL_S:
        raise errors.LeaseTTLTooLarge()
