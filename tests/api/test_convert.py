"""Conversion between etcd protobuf messages and geokv.kv dataclasses."""

from __future__ import annotations

import pytest

from geokv import errors
from geokv.api import convert
from geokv.etcdpb import kv_pb2, rpc_pb2
from geokv.kv import types as kvt


def test_range_request_fields_carry_over():
    req = rpc_pb2.RangeRequest(key=b"a", range_end=b"z", limit=5, revision=7, sort_order=2, sort_target=3,
                               serializable=True, keys_only=True, count_only=False, min_mod_revision=1,
                               max_mod_revision=9, min_create_revision=2, max_create_revision=8)
    r = convert.range_from_pb(req)
    assert r == kvt.Range(key=b"a", range_end=b"z", limit=5, revision=7, sort_order=2, sort_target=3,
                          serializable=True, keys_only=True, count_only=False, min_mod_revision=1,
                          max_mod_revision=9, min_create_revision=2, max_create_revision=8)


def test_put_and_delete_requests():
    p = convert.put_from_pb(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=3, prev_kv=True))
    assert p == kvt.Put(key=b"k", value=b"v", lease=3, prev_kv=True)
    d = convert.delete_from_pb(rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"\x00", prev_kv=True))
    assert d == kvt.DeleteRange(key=b"a", range_end=b"\x00", prev_kv=True)


@pytest.mark.parametrize("target,field,value", [
    (rpc_pb2.Compare.VERSION, "version", 4),
    (rpc_pb2.Compare.CREATE, "create_revision", 5),
    (rpc_pb2.Compare.MOD, "mod_revision", 6),
    (rpc_pb2.Compare.VALUE, "value", b"x"),
    (rpc_pb2.Compare.LEASE, "lease", 7),
])
def test_compare_targets_map_to_their_field(target, field, value):
    c = rpc_pb2.Compare(result=rpc_pb2.Compare.GREATER, target=target, key=b"k", **{field: value})
    out = convert.compare_from_pb(c)
    assert (out.result, out.target, out.key, getattr(out, field)) == (1, target, b"k", value)


def test_nested_txn_request():
    inner = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"x", value=b"1"))])
    req = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"k", target=rpc_pb2.Compare.VALUE, value=b"v")],
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k")),
                 rpc_pb2.RequestOp(request_txn=inner)],
        failure=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k"))])
    t = convert.txn_from_pb(req)
    assert isinstance(t.success[0], kvt.Range) and isinstance(t.success[1], kvt.Txn)
    assert t.success[1].success == [kvt.Put(key=b"x", value=b"1")]
    assert t.failure == [kvt.DeleteRange(key=b"k")]


def test_empty_request_op_is_a_user_error():
    with pytest.raises(errors.InvalidArgument):
        convert.txn_from_pb(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()]))


def test_key_value_round_trip_and_keys_only():
    kv = kvt.KeyValue(key=b"k", create_revision=2, mod_revision=3, version=1, value=b"v", lease=9)
    pb = convert.kv_to_pb(kv)
    assert convert.kv_from_pb(pb) == kv
    assert convert.kv_to_pb(kv, keys_only=True).value == b""


def test_results_to_responses():
    kv = kvt.KeyValue(key=b"k", create_revision=2, mod_revision=3, version=1, value=b"v")
    h = convert.header_pb((11, 22, 33, 44), revision=5)
    assert (h.cluster_id, h.member_id, h.revision, h.raft_term) == (11, 22, 5, 44)
    hdr = (11, 22, 33, 44)
    rr = convert.range_result_to_pb(kvt.RangeResult(kvs=[kv], more=True, count=3, revision=5), hdr)
    assert rr.more and rr.count == 3 and rr.kvs[0].value == b"v"
    assert (rr.header.cluster_id, rr.header.member_id, rr.header.revision, rr.header.raft_term) == (11, 22, 5, 44)
    assert convert.kv_from_pb(rr.kvs[0]) == kv
    pr = convert.put_result_to_pb(kvt.PutResult(revision=5, prev_kv=kv), hdr)
    assert pr.HasField("prev_kv") and pr.prev_kv.key == b"k"
    assert not convert.put_result_to_pb(kvt.PutResult(revision=5), hdr).HasField("prev_kv")
    dr = convert.delete_result_to_pb(kvt.DeleteResult(revision=5, deleted=1, prev_kvs=[kv]), hdr)
    assert dr.deleted == 1 and dr.prev_kvs[0].key == b"k"
    txn = kvt.TxnResult(revision=6, succeeded=False, responses=[
        kvt.RangeResult(kvs=[kv], more=False, count=1, revision=6),
        kvt.PutResult(revision=6), kvt.DeleteResult(revision=6, deleted=0),
        kvt.TxnResult(revision=6, succeeded=True, responses=[])])
    ops = [kvt.Range(key=b"k", keys_only=True), kvt.Put(key=b"a"), kvt.DeleteRange(key=b"b"), kvt.Txn()]
    tr = convert.txn_result_to_pb(txn, hdr, ops)
    assert not tr.succeeded and tr.header.revision == 6
    assert tr.responses[1].HasField("response_put") and tr.responses[1].response_put.header.revision == 6
    kinds = [r.WhichOneof("response") for r in tr.responses]
    assert kinds == ["response_range", "response_put", "response_delete_range", "response_txn"]
    assert tr.responses[3].response_txn.succeeded
    assert tr.responses[0].response_range.kvs[0].value == b""  # keys_only honoured inside txn


def test_event_prev_kv_only_when_asked():
    prev = kvt.KeyValue(key=b"k", value=b"old", mod_revision=2)
    ev = kvt.Event(type=kvt.EventType.DELETE, kv=kvt.KeyValue(key=b"k", mod_revision=3), prev_kv=prev)
    assert convert.event_to_pb(ev, prev_kv=True).prev_kv.value == b"old"
    assert not convert.event_to_pb(ev, prev_kv=False).HasField("prev_kv")
    assert convert.event_to_pb(ev, prev_kv=False).type == kv_pb2.Event.DELETE


def test_add_events_matches_event_to_pb():
    from geokv.etcdpb import rpc_pb2 as r

    evs = [kvt.Event(type=0, kv=kvt.KeyValue(b"a", 2, 3, 1, b"v", 7), prev_kv=kvt.KeyValue(b"a", 2, 2, 1, b"o")),
           kvt.Event(type=1, kv=kvt.KeyValue(b"b", 0, 4), prev_kv=None)]
    for want_prev in (True, False):
        resp = r.WatchResponse()
        convert.add_events(resp.events, evs, want_prev)
        assert list(resp.events) == [convert.event_to_pb(e, want_prev) for e in evs]


def test_member_record_to_pb_from_dict_and_object():
    d = {"id": 5, "name": "n1", "peer_urls": ["http://127.0.0.1:1"], "client_urls": ["http://127.0.0.1:2"],
         "is_learner": True, "region": "eu", "zone": "eu-a"}
    m = convert.member_to_pb(d)
    assert (m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner, m.region, m.zone) == (
        5, "n1", ["http://127.0.0.1:1"], ["http://127.0.0.1:2"], True, "eu", "eu-a")

    class Rec:
        id = 6
        name = "n2"
        peer_urls = ("http://h:1",)

    assert convert.member_to_pb(Rec()).ID == 6
