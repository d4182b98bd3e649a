"""Conversion between etcd protobuf messages and geokv.kv dataclasses.

Pure functions, no I/O. Requests go pb -> dataclass (``*_from_pb``), results go
dataclass -> pb (``*_to_pb``). Field names follow etcd's on both sides.
"""

from __future__ import annotations

from typing import Any

from geokv.etcdpb import kv_pb2, rpc_pb2
from geokv.kv import types as kvt

_KeyValuePB = kv_pb2.KeyValue
_EventPB = kv_pb2.Event
_HeaderPB = rpc_pb2.ResponseHeader
_RangeResponsePB = rpc_pb2.RangeResponse
_PutResponsePB = rpc_pb2.PutResponse
_DeleteRangeResponsePB = rpc_pb2.DeleteRangeResponse
_TxnResponsePB = rpc_pb2.TxnResponse


# --- headers -----------------------------------------------------------------------
def header_pb(header: tuple[int, int, int, int], revision: int | None = None) -> rpc_pb2.ResponseHeader:
    """Build a ResponseHeader from ``member.header()``; ``revision`` overrides its revision."""
    cluster_id, member_id, rev, term = header
    return _HeaderPB(cluster_id=cluster_id, member_id=member_id,
                     revision=rev if revision is None else revision, raft_term=term)


# --- key-values and events -----------------------------------------------------------
def kv_to_pb(kv: kvt.KeyValue, keys_only: bool = False) -> kv_pb2.KeyValue:
    return _KeyValuePB(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                       version=kv.version, value=b"" if keys_only else kv.value, lease=kv.lease)


def kv_from_pb(kv: kv_pb2.KeyValue) -> kvt.KeyValue:
    return kvt.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                        version=kv.version, value=kv.value, lease=kv.lease)


def add_events(dst: Any, events: list[kvt.Event], prev_kv: bool) -> None:
    """Append ``events`` to a repeated mvccpb.Event field, fields set in place."""
    add = dst.add
    for ev in events:
        pe = add(type=ev.type)
        kv, k = ev.kv, pe.kv
        k.key = kv.key
        k.create_revision = kv.create_revision
        k.mod_revision = kv.mod_revision
        k.version = kv.version
        k.value = kv.value
        k.lease = kv.lease
        if prev_kv and ev.prev_kv is not None:
            p, q = ev.prev_kv, pe.prev_kv
            q.key = p.key
            q.create_revision = p.create_revision
            q.mod_revision = p.mod_revision
            q.version = p.version
            q.value = p.value
            q.lease = p.lease


def event_to_pb(ev: kvt.Event, prev_kv: bool) -> kv_pb2.Event:
    out = _EventPB(type=ev.type, kv=kv_to_pb(ev.kv))
    if prev_kv and ev.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(ev.prev_kv))
    return out


# --- requests: pb -> dataclass --------------------------------------------------------
def range_from_pb(r: rpc_pb2.RangeRequest) -> kvt.Range:
    return kvt.Range(key=r.key, range_end=r.range_end, limit=r.limit, revision=r.revision,
                     sort_order=r.sort_order, sort_target=r.sort_target, serializable=r.serializable,
                     keys_only=r.keys_only, count_only=r.count_only,
                     min_mod_revision=r.min_mod_revision, max_mod_revision=r.max_mod_revision,
                     min_create_revision=r.min_create_revision, max_create_revision=r.max_create_revision)


def put_from_pb(r: rpc_pb2.PutRequest) -> kvt.Put:
    return kvt.Put(key=r.key, value=r.value, lease=r.lease, prev_kv=r.prev_kv,
                   ignore_value=r.ignore_value, ignore_lease=r.ignore_lease)


def delete_from_pb(r: rpc_pb2.DeleteRangeRequest) -> kvt.DeleteRange:
    return kvt.DeleteRange(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


_COMPARE_FIELD = {
    rpc_pb2.Compare.VERSION: "version",
    rpc_pb2.Compare.CREATE: "create_revision",
    rpc_pb2.Compare.MOD: "mod_revision",
    rpc_pb2.Compare.VALUE: "value",
    rpc_pb2.Compare.LEASE: "lease",
}


def compare_from_pb(c: rpc_pb2.Compare) -> kvt.Compare:
    field = _COMPARE_FIELD.get(c.target)
    if field is None:
        from geokv import errors
        raise errors.InvalidArgument("etcdserver: unknown compare target")
    return kvt.Compare(result=c.result, target=c.target, key=c.key, range_end=c.range_end,
                       **{field: getattr(c, field)})


def op_from_pb(op: rpc_pb2.RequestOp) -> Any:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_from_pb(op.request_range)
    if which == "request_put":
        return put_from_pb(op.request_put)
    if which == "request_delete_range":
        return delete_from_pb(op.request_delete_range)
    if which == "request_txn":
        return txn_from_pb(op.request_txn)
    from geokv import errors
    raise errors.InvalidArgument("etcdserver: empty request operation in txn")


def txn_from_pb(t: rpc_pb2.TxnRequest) -> kvt.Txn:
    return kvt.Txn(compare=[compare_from_pb(c) for c in t.compare],
                   success=[op_from_pb(o) for o in t.success],
                   failure=[op_from_pb(o) for o in t.failure])


# --- results: dataclass -> pb -----------------------------------------------------------
# Results are written into fresh messages field by field (``kvs.add``, header fields set
# in place): about twice as fast as building sub-messages and copying them in.
# ``header`` is ``member.header()``'s (cluster_id, member_id, revision, raft_term); the
# header's revision is the result's revision.
_NO_HEADER = (0, 0, 0, 0)


def _fill_header(h: rpc_pb2.ResponseHeader, header: tuple[int, int, int, int], revision: int) -> None:
    h.cluster_id = header[0]
    h.member_id = header[1]
    h.revision = revision
    h.raft_term = header[3]


def _add_kvs(dst: Any, kvs: list[kvt.KeyValue], keys_only: bool = False) -> None:
    add = dst.add
    for kv in kvs:
        add(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
            version=kv.version, value=b"" if keys_only else kv.value, lease=kv.lease)


def _fill_range(out: rpc_pb2.RangeResponse, res: kvt.RangeResult, header: tuple, keys_only: bool) -> None:
    _fill_header(out.header, header, res.revision)
    if res.more:
        out.more = True
    out.count = res.count
    if res.kvs:
        _add_kvs(out.kvs, res.kvs, keys_only)


def _fill_put(out: rpc_pb2.PutResponse, res: kvt.PutResult, header: tuple) -> None:
    _fill_header(out.header, header, res.revision)
    if res.prev_kv is not None:
        p = res.prev_kv
        pk = out.prev_kv
        pk.key = p.key
        pk.create_revision = p.create_revision
        pk.mod_revision = p.mod_revision
        pk.version = p.version
        pk.value = p.value
        pk.lease = p.lease


def _fill_delete(out: rpc_pb2.DeleteRangeResponse, res: kvt.DeleteResult, header: tuple) -> None:
    _fill_header(out.header, header, res.revision)
    out.deleted = res.deleted
    if res.prev_kvs:
        _add_kvs(out.prev_kvs, res.prev_kvs)


def _fill_txn(out: rpc_pb2.TxnResponse, res: kvt.TxnResult, header: tuple, ops: list[Any] | None) -> None:
    _fill_header(out.header, header, res.revision)
    out.succeeded = res.succeeded
    sub = (0, 0, 0, 0)  # nested responses carry only their revision, as etcd's do
    for i, r in enumerate(res.responses):
        op = ops[i] if ops is not None and i < len(ops) else None
        _fill_response_op(out.responses.add(), r, sub, op)


def _fill_response_op(dst: rpc_pb2.ResponseOp, r: Any, header: tuple, op: Any) -> None:
    t = type(r)
    if t is kvt.RangeResult:
        m = dst.response_range
        m.SetInParent()
        _fill_range(m, r, header, bool(getattr(op, "keys_only", False)))
    elif t is kvt.PutResult:
        m = dst.response_put
        m.SetInParent()
        _fill_put(m, r, header)
    elif t is kvt.DeleteResult:
        m = dst.response_delete_range
        m.SetInParent()
        _fill_delete(m, r, header)
    elif t is kvt.TxnResult:
        nested_ops = None
        if isinstance(op, kvt.Txn):
            nested_ops = op.success if r.succeeded else op.failure
        m = dst.response_txn
        m.SetInParent()
        _fill_txn(m, r, header, nested_ops)
    else:
        raise TypeError(f"unexpected txn response type {t.__name__}")


def range_result_to_pb(res: kvt.RangeResult, header: tuple = _NO_HEADER, keys_only: bool = False) -> rpc_pb2.RangeResponse:
    out = _RangeResponsePB()
    _fill_range(out, res, header, keys_only)
    return out


def put_result_to_pb(res: kvt.PutResult, header: tuple = _NO_HEADER) -> rpc_pb2.PutResponse:
    out = _PutResponsePB()
    _fill_put(out, res, header)
    return out


def delete_result_to_pb(res: kvt.DeleteResult, header: tuple = _NO_HEADER) -> rpc_pb2.DeleteRangeResponse:
    out = _DeleteRangeResponsePB()
    _fill_delete(out, res, header)
    return out


def txn_result_to_pb(res: kvt.TxnResult, header: tuple = _NO_HEADER,
                     ops: list[Any] | None = None) -> rpc_pb2.TxnResponse:
    """``ops`` are the executed branch's request ops (for keys_only of nested ranges)."""
    out = _TxnResponsePB()
    _fill_txn(out, res, header, ops)
    return out


# --- members ------------------------------------------------------------------------------
def _field(obj: Any, name: str, default: Any) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def member_to_pb(m: Any) -> rpc_pb2.Member:
    """A member record (dict or object with id, name, peer_urls, client_urls, is_learner,
    region, zone) as etcd's Member message."""
    return rpc_pb2.Member(
        ID=int(_field(m, "id", 0)),
        name=str(_field(m, "name", "") or ""),
        peerURLs=list(_field(m, "peer_urls", ()) or ()),
        clientURLs=list(_field(m, "client_urls", ()) or ()),
        isLearner=bool(_field(m, "is_learner", False)),
        region=str(_field(m, "region", "") or ""),
        zone=str(_field(m, "zone", "") or ""),
    )
