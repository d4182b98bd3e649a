"""How gRPC statuses become geokv exceptions and retry decisions (pure functions)."""

from __future__ import annotations

import grpc
import pytest

from geokv import errors
from geokv.client import errors as cerr


class Status(grpc.RpcError):
    """A gRPC status as grpc.aio reports it: code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("cls", [errors.LeaseNotFound, errors.Compacted, errors.NoLeader, errors.DuplicateKey,
                                 errors.RequestTooLarge, errors.ElectionNoLeader, errors.MemberNotFound])
def test_etcd_texts_map_back_to_their_classes(cls):
    exc = cerr.from_rpc_error(Status(grpc.StatusCode[cls.code], cls.message))
    assert type(exc) is cls and str(exc) == cls.message


def test_a_known_text_with_more_detail_maps_by_its_prefix():
    text = "etcdserver: request timed out, leader transfer took too long"
    assert type(cerr.from_rpc_error(Status(grpc.StatusCode.UNAVAILABLE, text))) is errors.Timeout


def test_unknown_invalid_argument_texts_are_invalid_argument():
    exc = cerr.from_rpc_error(Status(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: negative revision"))
    assert type(exc) is errors.InvalidArgument and str(exc) == "etcdserver: negative revision"


def test_an_unknown_text_keeps_its_code_and_message():
    exc = cerr.from_rpc_error(Status(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"))
    assert exc.code == "PERMISSION_DENIED" and str(exc) == "etcdserver: permission denied"


@pytest.mark.parametrize("status,final", [
    (Status(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"), False),
    (Status(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out"), False),
    (Status(grpc.StatusCode.UNAVAILABLE, "Socket closed"), False),
    (Status(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"), True),
    (Status(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"), True),
])
def test_which_errors_end_a_read(status, final):
    assert cerr.is_final_for_reads(status) is final


def test_outcome_unknown_names_the_operation_the_endpoint_and_the_cause():
    exc = cerr.OutcomeUnknown("KV.Put", "127.0.0.1:2379", "DEADLINE_EXCEEDED: Deadline Exceeded")
    assert isinstance(exc, errors.GeoKVError)
    assert str(exc).startswith("outcome unknown: KV.Put was sent to 127.0.0.1:2379")
    assert "not retried" in str(exc)
