"""Generated bad requests through gRPC: each gets a clear etcd error, the cluster keeps
serving, and nothing written before is lost."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

pytestmark = pytest.mark.e2e

MAX_REQUEST_BYTES = 1536 * 1024  # the cluster runs with etcd's default --max-request-bytes
KEEP = {b"keep/%02d" % i: b"value-%02d" % i for i in range(10)}
RPC_TIMEOUT_S = 10.0

keys = st.binary(min_size=1, max_size=32)


def put(key: bytes, value: bytes = b"v", **kw) -> tuple[str, object]:
    return "Put", rpc_pb2.PutRequest(key=key, value=value, **kw)


# Each strategy yields (expected code, expected message fragment, (method, request)).
bad_requests = st.one_of(
    st.builds(lambda v: ("INVALID_ARGUMENT", "etcdserver: key is not provided", put(b"", v)), st.binary(max_size=8)),
    st.builds(lambda k, extra: ("INVALID_ARGUMENT", "etcdserver: request is too large",
                                put(k, b"x" * (MAX_REQUEST_BYTES + extra))),
              keys, st.integers(1, 64 * 1024)),
    st.builds(lambda n: ("INVALID_ARGUMENT", "key is too long", put(b"k" * n)), st.integers(481, 4096)),
    st.builds(lambda k, v: ("INVALID_ARGUMENT", "etcdserver: value is provided",
                            put(k, v, ignore_value=True)), keys, st.binary(min_size=1, max_size=8)),
    st.builds(lambda k, lease: ("INVALID_ARGUMENT", "etcdserver: lease is provided",
                                put(k, b"", lease=lease, ignore_lease=True)), keys, st.integers(1, 2**62)),
    st.builds(lambda k, lease: ("NOT_FOUND", "etcdserver: requested lease not found",
                                put(k, b"v", lease=lease)), keys, st.integers(1, 2**62)),
    st.builds(lambda lease: ("NOT_FOUND", "etcdserver: requested lease not found",
                             ("LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease))), st.integers(1, 2**62)),
    st.builds(lambda ttl: ("OUT_OF_RANGE", "etcdserver: too large lease TTL",
                           ("LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl))), st.integers(9_000_000_001, 2**62)),
    st.builds(lambda k, rev: ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision",
                              ("Range", rpc_pb2.RangeRequest(key=k, revision=rev))), keys, st.integers(10**9, 2**62)),
    st.builds(lambda rev: ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision",
                           ("Compact", rpc_pb2.CompactionRequest(revision=rev))), st.integers(10**9, 2**62)),
    st.builds(lambda: ("INVALID_ARGUMENT", "etcdserver: key is not provided",
                       ("Range", rpc_pb2.RangeRequest(key=b""))),),
    st.builds(lambda n: ("INVALID_ARGUMENT", "etcdserver: too many operations in txn request",
                         ("Txn", rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                             request_put=rpc_pb2.PutRequest(key=b"t%d" % i)) for i in range(n)]))),
              st.integers(129, 400)),
    st.builds(lambda k: ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request",
                         ("Txn", rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k)),
                                                             rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k))]))),
              keys),
    st.builds(lambda k: ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request",
                         ("Txn", rpc_pb2.TxnRequest(success=[
                             rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k, range_end=b"\x00")),
                             rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k + b"z"))]))),
              keys),
    st.builds(lambda k, res: ("INVALID_ARGUMENT", "etcdserver: invalid compare result",
                              ("Txn", rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=k, result=res)]))),
              keys, st.integers(4, 1000)),
    st.builds(lambda: ("INVALID_ARGUMENT", "etcdserver: empty request operation in txn",
                       ("Txn", rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()]))),),
)


@pytest.fixture(scope="module")
def stubs(cluster):
    ch = grpc.insecure_channel(cluster.endpoints[0], options=[("grpc.max_send_message_length", 8 << 20)])
    kv = rpc_pb2_grpc.KVStub(ch)
    lease = rpc_pb2_grpc.LeaseStub(ch)
    for k, v in KEEP.items():
        kv.Put(rpc_pb2.PutRequest(key=k, value=v), timeout=RPC_TIMEOUT_S)
    yield {"kv": kv, "lease": lease}
    ch.close()


def call(stubs, method: str, req):
    stub = stubs["lease"] if method.startswith("Lease") else stubs["kv"]
    return getattr(stub, method)(req, timeout=RPC_TIMEOUT_S)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=bad_requests)
def test_bad_request_gets_clear_error_and_nothing_is_lost(stubs, case):
    code, text, (method, req) = case
    with pytest.raises(grpc.RpcError) as e:
        call(stubs, method, req)
    assert e.value.code().name == code, e.value.details()
    assert text in e.value.details()
    resp = stubs["kv"].Range(rpc_pb2.RangeRequest(key=b"keep/", range_end=b"keep0"), timeout=RPC_TIMEOUT_S)
    assert {kv.key: kv.value for kv in resp.kvs} == KEEP


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lo=keys, hi=keys)
def test_inverted_range_is_empty_not_an_error(stubs, lo, hi):
    if hi == b"\x00" or lo < hi:
        return
    resp = stubs["kv"].Range(rpc_pb2.RangeRequest(key=lo, range_end=hi), timeout=RPC_TIMEOUT_S)
    assert list(resp.kvs) == [] and resp.count == 0
    d = stubs["kv"].DeleteRange(rpc_pb2.DeleteRangeRequest(key=lo, range_end=hi), timeout=RPC_TIMEOUT_S)
    assert d.deleted == 0
