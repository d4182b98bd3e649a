"""Exceptions become gRPC statuses with etcd's code and text; the server lives on."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from geokv import errors
from geokv.api.status import GRPC_LATENCY, status_code_of, unary
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

ALL_ERRORS = [v for v in vars(errors).values()
              if isinstance(v, type) and issubclass(v, errors.GeoKVError) and v is not errors.GeoKVError]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_has_a_real_status_code(cls):
    assert status_code_of(cls()) is grpc.StatusCode[cls.code]


class Raising(rpc_pb2_grpc.KVServicer):
    """Each request key names what the handler does."""

    @unary("Range")
    async def Range(self, request, context):
        if request.key == b"ok":
            return rpc_pb2.RangeResponse(count=1)
        if request.key == b"bug":
            raise ZeroDivisionError("a bug")
        raise getattr(errors, request.key.decode())()


async def _call_all(port: int):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = rpc_pb2_grpc.KVStub(ch)
        out = []
        for key in (b"Compacted", b"NoLeader", b"bug", b"ok", b"LeaseNotFound", b"ok"):
            try:
                resp = await stub.Range(rpc_pb2.RangeRequest(key=key))
                out.append(("OK", resp.count))
            except grpc.aio.AioRpcError as e:
                out.append((e.code().name, e.details()))
        return out


def test_errors_map_to_etcd_status_and_server_keeps_serving():
    async def main():
        server = grpc.aio.server()
        rpc_pb2_grpc.add_KVServicer_to_server(Raising(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await _call_all(port)
        finally:
            await server.stop(None)

    before = GRPC_LATENCY.child("Range").count
    out = asyncio.run(main())
    assert out == [
        ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"),
        ("UNAVAILABLE", "etcdserver: no leader"),
        ("INTERNAL", "geokv: internal error: ZeroDivisionError"),
        ("OK", 1),
        ("NOT_FOUND", "etcdserver: requested lease not found"),
        ("OK", 1),
    ]
    assert GRPC_LATENCY.child("Range").count == before + 6


def test_latency_histogram_is_exported_in_prometheus_text():
    from prometheus_client import REGISTRY, generate_latest

    GRPC_LATENCY.child("Put").observe(0.0015)
    text = generate_latest(REGISTRY).decode()
    assert 'geokv_grpc_request_duration_seconds_bucket{le="0.002",method="Put"}' in text
    assert 'geokv_grpc_request_duration_seconds_count{method="Put"}' in text


def test_serve_grpc_refuses_unsupported_or_bad_urls_clearly():
    from geokv.api.server import ServeError, serve_grpc

    class Cfg:
        max_request_bytes = 1024

    async def main(urls):
        Cfg.listen_client_urls = urls
        await serve_grpc(None, Cfg)

    for urls, text in ((["https://127.0.0.1:2379"], "only http://"), (["http://127.0.0.1"], "host:port"),
                       ([], "no client URL")):
        with pytest.raises(ServeError, match=text):
            asyncio.run(main(urls))


def test_serve_grpc_reports_a_port_in_use():
    import socket

    from geokv.api.server import ServeError, serve_grpc

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]

    class Cfg:
        max_request_bytes = 1024
        listen_client_urls = [f"http://127.0.0.1:{port}"]

    try:
        with pytest.raises(ServeError, match="cannot listen"):
            asyncio.run(serve_grpc(None, Cfg))
    finally:
        s.close()
