"""Client CPU per call: the native channel (geokv.edge.client) against grpc.aio.

A do-nothing etcd KV server (bench/donothing_server.py on the native edge) runs in a
child process, so the server's cost stays out of this process. In this process, one
after another and in the same run, ``--ops`` Put calls with ``--inflight`` in flight go
through:

* ``stub/grpcio``   the generated KV stub on a grpc.aio channel (the reference);
* ``stub/native``   the same stub on a NativeChannel;
* ``client/grpcio`` geokv.client.AsyncClient(transport="grpcio").put;
* ``client/native`` geokv.client.AsyncClient(transport="native").put.

Reported per row: calls/s and this process's CPU per call (time.process_time, so other
processes' load does not count), and the ratio to the grpcio row of the same kind.
Prints a table and a final line ``RESULT {json}``.

    python bench/client/native_channel_bench.py [--ops 20000] [--inflight 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))

SERVER_START_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


async def drive(call, ops: int, inflight: int) -> tuple[float, float]:
    """(seconds, cpu seconds) for ``ops`` calls with ``inflight`` at once."""
    left = [ops]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await call()

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - t0, time.process_time() - c0


async def run_row(kind: str, target: str, ops: int, inflight: int) -> dict:
    import grpc.aio

    from geokv.client import AsyncClient
    from geokv.edge.client import NativeChannel
    from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

    req = rpc_pb2.PutRequest(key=b"/bench/key/0000000000000000000000", value=b"v" * 256)
    what, transport = kind.split("/")
    if what == "stub":
        ch = NativeChannel(target) if transport == "native" else grpc.aio.insecure_channel(target)
        stub = rpc_pb2_grpc.KVStub(ch)

        async def call():
            await stub.Put(req, timeout=CALL_TIMEOUT_S)

        try:
            await drive(call, min(ops, 1000), inflight)  # warm-up
            secs, cpu = await drive(call, ops, inflight)
        finally:
            await ch.close()
    else:
        async with AsyncClient([target], timeout_s=CALL_TIMEOUT_S, transport=transport) as c:
            async def call():
                await c.put(req.key, req.value)

            await drive(call, min(ops, 1000), inflight)
            secs, cpu = await drive(call, ops, inflight)
    return {"calls_per_s": round(ops / secs, 1), "cpu_us_per_call": round(cpu / ops * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="each row runs this often; the best CPU counts")
    ap.add_argument("--rows", default="stub/grpcio,stub/native,client/grpcio,client/native")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "..", "donothing_server.py"), str(port),
                               "100000", "--edge", "native"], stdout=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the do-nothing server did not start")
                time.sleep(0.1)
        load0 = loadavg()
        rows: dict[str, dict] = {}
        for _ in range(args.rounds):
            for kind in args.rows.split(","):
                r = asyncio.run(run_row(kind, target, args.ops, args.inflight))
                best = rows.get(kind)
                if best is None or r["cpu_us_per_call"] < best["cpu_us_per_call"]:
                    rows[kind] = r
        load1 = loadavg()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(f"{args.ops} Put calls, {args.inflight} in flight, {loop_name}, best of {args.rounds}; "
          f"load average {load0[0]:.2f} -> {load1[0]:.2f}")
    print(f"{'row':<15} {'calls/s':>9} {'client CPU us/call':>19} {'vs grpcio':>10}")
    ratios = {}
    for kind, r in rows.items():
        ref = rows.get(kind.split("/")[0] + "/grpcio")
        ratio = round(r["cpu_us_per_call"] / ref["cpu_us_per_call"], 3) if ref else None
        if ratio is not None and kind.endswith("/native"):
            ratios[kind.replace("/", "_") + "_cpu_vs_grpcio"] = ratio
        print(f"{kind:<15} {r['calls_per_s']:>9.0f} {r['cpu_us_per_call']:>19.1f} {ratio if ratio else '':>10}")
    print("RESULT " + json.dumps({"rows": rows, "ratios": ratios, "ops": args.ops, "inflight": args.inflight,
                                  "loop": loop_name, "loadavg_before": load0, "loadavg_after": load1}))


if __name__ == "__main__":
    main()
