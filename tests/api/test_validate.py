"""Request validation gives etcd's errors for user mistakes."""

from __future__ import annotations

import pytest

from geokv import errors
from geokv.api import validate
from geokv.etcdpb import rpc_pb2
from geokv.kv.types import MAX_KEY_BYTES

LIMITS = validate.Limits(max_request_bytes=1024, max_txn_ops=4)


def put_op(key: bytes, value: bytes = b"v") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


def del_op(key: bytes, end: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end))


@pytest.mark.parametrize("req,err", [
    (rpc_pb2.PutRequest(key=b"", value=b"v"), errors.EmptyKey),
    (rpc_pb2.PutRequest(key=b"k", value=b"x" * 2000), errors.RequestTooLarge),
    (rpc_pb2.PutRequest(key=b"k" * 2000), errors.RequestTooLarge),
    (rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True), errors.ValueProvided),
    (rpc_pb2.PutRequest(key=b"k", lease=5, ignore_lease=True), errors.LeaseProvided),
    (rpc_pb2.PutRequest(key=b"k" * (MAX_KEY_BYTES + 1)), errors.InvalidArgument),
    (rpc_pb2.PutRequest(key=b"\x00" * (MAX_KEY_BYTES + 1)), errors.InvalidArgument),
])
def test_bad_puts(req, err):
    with pytest.raises(err):
        validate.check_put(req, LIMITS)


def test_good_put_passes():
    validate.check_put(rpc_pb2.PutRequest(key=b"k", value=b"x" * 900), LIMITS)
    validate.check_put(rpc_pb2.PutRequest(key=b"k" * MAX_KEY_BYTES), LIMITS)
    validate.check_put(rpc_pb2.PutRequest(key=b"\x00" * MAX_KEY_BYTES), LIMITS)


def test_range_and_delete_need_a_key():
    with pytest.raises(errors.EmptyKey):
        validate.check_range(rpc_pb2.RangeRequest())
    with pytest.raises(errors.EmptyKey):
        validate.check_delete(rpc_pb2.DeleteRangeRequest())
    validate.check_range(rpc_pb2.RangeRequest(key=b"a", limit=-1, revision=-1))  # etcd: no limit, now


@pytest.mark.parametrize("txn,err", [
    (rpc_pb2.TxnRequest(success=[put_op(b"k%d" % i) for i in range(5)]), errors.TooManyOps),
    (rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"k")] * 5), errors.TooManyOps),
    (rpc_pb2.TxnRequest(success=[put_op(b"a"), put_op(b"a")]), errors.DuplicateKey),
    (rpc_pb2.TxnRequest(failure=[del_op(b"a", b"c"), put_op(b"b")]), errors.DuplicateKey),
    (rpc_pb2.TxnRequest(success=[del_op(b"a", b"\x00"), put_op(b"zzz")]), errors.DuplicateKey),
    (rpc_pb2.TxnRequest(success=[put_op(b"")]), errors.EmptyKey),
    (rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")]), errors.EmptyKey),
    (rpc_pb2.TxnRequest(success=[put_op(b"a", b"x" * 600), put_op(b"b", b"x" * 600)]), errors.RequestTooLarge),
    (rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()]), errors.InvalidArgument),
])
def test_bad_txns(txn, err):
    with pytest.raises(err):
        validate.check_txn(txn, LIMITS)


def test_good_txn_passes_and_put_in_other_branch_is_fine():
    validate.check_txn(rpc_pb2.TxnRequest(success=[put_op(b"a"), del_op(b"b")], failure=[put_op(b"a")]), LIMITS)


def test_read_only_txn_detection():
    rng = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a"))
    assert validate.txn_is_read_only(rpc_pb2.TxnRequest(success=[rng], failure=[rng]))
    assert not validate.txn_is_read_only(rpc_pb2.TxnRequest(success=[rng], failure=[put_op(b"a")]))


def test_lease_ttl_limit():
    validate.check_lease_ttl(validate.MAX_LEASE_TTL_S)
    with pytest.raises(errors.LeaseTTLTooLarge):
        validate.check_lease_ttl(validate.MAX_LEASE_TTL_S + 1)
