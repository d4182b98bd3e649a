"""A bounded-staleness read at a revision the serving replica has not applied yet waits
for it (a linearizable catch-up) instead of answering "future revision": a client that
saw revision R elsewhere reads at least R. In-process members on loopback with the
leader's messages to region "b" delayed, so the follower there lags for sure."""

from __future__ import annotations

import asyncio

import grpc

from geokv.api.kv import MAX_STALENESS_KEY, READ_MODE_KEY, STALENESS_TRAILER_KEY
from geokv.api.server import serve_grpc
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.kv.types import Put
from geokv.testing.inproc import InProcCluster

TEST_TIMEOUT_S = 60.0
DELAY_TO_B_S = 0.4


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT_S)
    return asyncio.run(bounded())


def test_bounded_read_at_a_revision_ahead_of_the_replica_waits_for_it(tmp_path):
    async def main():
        c = InProcCluster(3, str(tmp_path), regions=["a", "a", "b"], heartbeat_ms=100, election_ms=2000)
        await c.start()
        server = None
        try:
            for i in (0, 1):  # members in region a reach region b DELAY_TO_B_S late
                await c.stop_member(i)
                await c.start_member(i, outbound_delay_s=lambda region: DELAY_TO_B_S if region == "b" else 0.0)
            leader = await c.wait_leader()
            lagging = c.members[2]
            if leader is lagging:
                await leader.move_leader(c.members[0].id)
                leader = await c.wait_leader()
            server = await serve_grpc(lagging, "127.0.0.1:0")
            port = server.geokv_ports[0]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                md = ((READ_MODE_KEY, "bounded"), (MAX_STALENESS_KEY, "60000"))
                for i in range(3):
                    put = await leader.propose(Put(b"k", b"v%d" % i))
                    assert lagging.store.revision < put.revision  # still on its way to region b
                    call = kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=put.revision), metadata=md,
                                    timeout=10)
                    res = await call
                    assert [kv_.value for kv_ in res.kvs] == [b"v%d" % i]
                    assert res.header.revision >= put.revision
                    trailers = dict(await call.trailing_metadata())
                    assert STALENESS_TRAILER_KEY in trailers
                # a revision no member has reached is still a future revision
                try:
                    await kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=put.revision + 100), metadata=md,
                                   timeout=10)
                    raise AssertionError("a future revision was served")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.OUT_OF_RANGE
                    assert "future revision" in exc.details()
        finally:
            if server is not None:
                await server.stop(0)
            await c.stop()
    run(main())
