"""A gRPC server that answers etcd's KV calls at once and stores nothing.

It is the ceiling of any Python server that sits behind grpcio's default path on this
machine: whatever geokv does behind its gRPC edge can only make it slower than this.
With ``--edge native`` the same servicers run on geokv's native edge (geokv.edge): the
ceiling of a server behind that edge. The environment variable GEOKV_GRPC_EDGE picks
the edge when the flag is absent (so bench/bench_server.py can run either).

    python bench/donothing_server.py PORT [MAX_CONCURRENT_RPCS] [--edge grpcio|native|native-task]
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

CLUSTER_ID = 1


class DoNothingKV(rpc_pb2_grpc.KVServicer):
    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self.revision = 1

    def _header(self) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(cluster_id=CLUSTER_ID, member_id=self.member_id, revision=self.revision, raft_term=1)

    async def Range(self, request, context):
        return rpc_pb2.RangeResponse(header=self._header())

    async def Put(self, request, context):
        self.revision += 1
        return rpc_pb2.PutResponse(header=self._header())

    async def DeleteRange(self, request, context):
        return rpc_pb2.DeleteRangeResponse(header=self._header())

    async def Txn(self, request, context):
        return rpc_pb2.TxnResponse(header=self._header(), succeeded=True)

    async def Compact(self, request, context):
        return rpc_pb2.CompactionResponse(header=self._header())


class DoNothingMaintenance(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, kv: DoNothingKV) -> None:
        self.kv = kv

    async def Status(self, request, context):
        return rpc_pb2.StatusResponse(header=self.kv._header(), version="3.4.0", leader=1, raft_index=1, raft_term=1)


async def serve(port: int, max_concurrent_rpcs: int | None = None, edge: str = "grpcio") -> None:
    if edge.startswith("native"):
        from geokv.edge import EdgeServer

        # native-task: a Task per call (no inline first step), to measure what inlining saves
        server = EdgeServer(max_concurrent_rpcs=max_concurrent_rpcs or 1 << 30,
                            inline_first_step=edge != "native-task")
    else:
        server = grpc.aio.server(maximum_concurrent_rpcs=max_concurrent_rpcs)
    kv = DoNothingKV(member_id=port)
    rpc_pb2_grpc.add_KVServicer_to_server(kv, server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(DoNothingMaintenance(kv), server)
    if edge.startswith("native"):
        await server.add_port("127.0.0.1", port)
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    args = sys.argv[1:]
    edge = os.environ.get("GEOKV_GRPC_EDGE") or "grpcio"
    if "--edge" in args:
        i = args.index("--edge")
        edge = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    if edge not in ("grpcio", "native", "native-task"):
        sys.exit(f"donothing_server: --edge must be grpcio, native or native-task, got {edge!r}")
    port = int(args[0])
    # optional: grpc.aio's maximum_concurrent_rpcs, to measure what that bound costs
    max_rpcs = int(args[1]) if len(args) > 1 else None
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(port, max_rpcs, edge))


if __name__ == "__main__":
    main()
