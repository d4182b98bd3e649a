"""Both gRPC edges in front of the same member answer alike: the same responses for
reads and the same (code, etcd message) for every user error, as a grpcio client sees
them. Also: serve_grpc picks the edge and refuses an unknown one clearly."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from geokv.api.server import ServeError, serve_grpc
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.testing.inproc import InProcCluster
from geokv.testing.ports import free_ports

RPC_TIMEOUT_S = 5.0


async def _outcome(call):
    try:
        resp = await call
    except grpc.aio.AioRpcError as exc:
        return ("error", exc.code(), exc.details())
    return ("ok", resp)


def _strip_header(resp):
    resp = type(resp).FromString(resp.SerializeToString())
    resp.ClearField("header")
    return resp


# requests a user can get wrong, each answered with etcd's code and message
ERROR_CASES = [
    ("Range", rpc_pb2.RangeRequest(key=b"")),                                  # empty key
    ("Range", rpc_pb2.RangeRequest(key=b"a", revision=10**9)),                 # future revision
    ("Put", rpc_pb2.PutRequest(key=b"", value=b"v")),                          # empty key
    ("Put", rpc_pb2.PutRequest(key=b"k", value=b"v", lease=12345)),            # unknown lease
    ("Put", rpc_pb2.PutRequest(key=b"k", value=b"x" * (1572864 + 1))),         # too large
    ("Txn", rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d", value=b"1")),
                                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d", value=b"2"))])),
    ("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"")),
    ("Compact", rpc_pb2.CompactionRequest(revision=10**9)),
]


def test_both_edges_answer_alike(tmp_path):
    async def main():
        async with InProcCluster(1, str(tmp_path)) as c:
            member = await c.wait_leader()
            ports = free_ports(2)
            servers = []
            stubs = {}
            channels = []
            try:
                for edge, port in zip(("grpcio", "native"), ports):
                    cfg = dataclasses.replace(member.config, listen_client_urls=[f"http://127.0.0.1:{port}"],
                                              grpc_edge=edge)
                    servers.append(await serve_grpc(member, cfg))
                    ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                                   options=[("grpc.max_send_message_length", 64 << 20)])
                    channels.append(ch)
                    stubs[edge] = rpc_pb2_grpc.KVStub(ch)
                assert type(servers[1]).__module__.startswith("geokv.edge")
                await stubs["grpcio"].Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=RPC_TIMEOUT_S)
                await stubs["native"].Put(rpc_pb2.PutRequest(key=b"b", value=b"2"), timeout=RPC_TIMEOUT_S)
                for method, req in ERROR_CASES:
                    got = [await _outcome(getattr(stubs[e], method)(req, timeout=RPC_TIMEOUT_S))
                           for e in ("grpcio", "native")]
                    assert got[0][0] == "error", (method, got[0])
                    assert got[0] == got[1], (method, got)
                reads = [rpc_pb2.RangeRequest(key=b"a", range_end=b"z"),
                         rpc_pb2.RangeRequest(key=b"a", range_end=b"z", count_only=True, serializable=True),
                         rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00", limit=1, keys_only=True)]
                for req in reads:
                    a = await stubs["grpcio"].Range(req, timeout=RPC_TIMEOUT_S)
                    b = await stubs["native"].Range(req, timeout=RPC_TIMEOUT_S)
                    assert _strip_header(a) == _strip_header(b)
                    assert a.header.member_id == b.header.member_id and a.header.cluster_id == b.header.cluster_id
                # metadata-driven read modes work through the native edge too
                md = (("geokv-read-mode", "bounded"), ("geokv-max-staleness-ms", "1000"))
                call = stubs["native"].Range(rpc_pb2.RangeRequest(key=b"a"), timeout=RPC_TIMEOUT_S, metadata=md)
                assert (await call).kvs[0].value == b"1"
                assert "geokv-staleness-ms" in dict(await call.trailing_metadata())
                bad = await _outcome(stubs["native"].Range(rpc_pb2.RangeRequest(key=b"a"), timeout=RPC_TIMEOUT_S,
                                                           metadata=(("geokv-read-mode", "psychic"),)))
                assert bad[0] == "error" and bad[1] == grpc.StatusCode.INVALID_ARGUMENT
            finally:
                for ch in channels:
                    await ch.close()
                for s in servers:
                    await s.stop(0)

    asyncio.run(main())


def test_serve_grpc_refuses_an_unknown_edge():
    class Cfg:
        max_request_bytes = 1024
        listen_client_urls = ["http://127.0.0.1:0"]
        grpc_edge = "carrier-pigeon"

    with pytest.raises(ServeError, match="grpc-edge"):
        asyncio.run(serve_grpc(None, Cfg))


def test_serve_grpc_native_reports_a_port_in_use():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)

    class Cfg:
        max_request_bytes = 1024
        listen_client_urls = [f"http://127.0.0.1:{s.getsockname()[1]}"]
        grpc_edge = "native"

    try:
        with pytest.raises(ServeError, match="cannot listen"):
            asyncio.run(serve_grpc(None, Cfg))
    finally:
        s.close()
