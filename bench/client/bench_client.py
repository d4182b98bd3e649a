"""Client benchmark: what geokv's Python client adds on top of a raw gRPC stub.

For each server (etcd 3.4 and geokv, one member each, on loopback) it measures, in the
same run and against the same server:

* ``raw``: grpc.aio KV stubs, no failover logic (the reference);
* ``async``: geokv.client.AsyncClient (failover, error mapping, read-mode metadata; on its
  default transport, the native channel, or GEOKV_CLIENT_TRANSPORT=grpcio);
* ``sync``: geokv.client.Client (the same, through its loop thread);
* ``raw x32`` / ``async x32``: 32 requests in flight (throughput), stub vs AsyncClient.

Each row gives ops/s, p50 and p99 latency, and the ratio of its p50 to the raw stub's
p50 at the same concurrency. A second table runs linearizable gets with the client's WAN
emulation (``region=``, ``emulate_wan=True``) from each region against a geokv member in
us-east, next to the RTT floor from geokv.geo.wan's table.
Prints a table and a final line ``RESULT {json}``.

Usage: python bench/client/bench_client.py [--ops 300] [--systems etcd,geokv]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "client"))

import grpc  # noqa: E402

from etcdproc import EtcdCluster  # noqa: E402
from geokv.client import AsyncClient, Client, parse_endpoint  # noqa: E402
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc  # noqa: E402

#: Requests in flight for the concurrent row.
CONCURRENCY = 32
#: Upper bound on --ops, so a run stays short on a 2-core machine.
OPS_MAX = 5000


def summarize(lat_s: list[float], wall_s: float) -> dict[str, float]:
    lat_ms = sorted(x * 1000 for x in lat_s)
    return {"ops": len(lat_ms), "ops_per_s": len(lat_ms) / wall_s if wall_s > 0 else 0.0,
            "p50_ms": statistics.median(lat_ms), "p99_ms": lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]}


async def bench_raw(endpoint: str, op: str, n: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        await kv.Put(rpc_pb2.PutRequest(key=b"/bench/k", value=b"v"), timeout=5)
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            if op == "put":
                await kv.Put(rpc_pb2.PutRequest(key=b"/bench/k", value=b"v%d" % i), timeout=5)
            else:
                await kv.Range(rpc_pb2.RangeRequest(key=b"/bench/k"), timeout=5)
            lat.append(time.perf_counter() - t)
        return summarize(lat, time.perf_counter() - t0)


async def bench_async(endpoint: str, op: str, n: int) -> dict[str, float]:
    async with AsyncClient([endpoint], timeout_s=5) as c:
        await c.put("/bench/k", "v")
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            if op == "put":
                await c.put("/bench/k", b"v%d" % i)
            else:
                await c.get("/bench/k")
            lat.append(time.perf_counter() - t)
        return summarize(lat, time.perf_counter() - t0)


async def bench_async_concurrent(endpoint: str, op: str, n: int) -> dict[str, float]:
    async with AsyncClient([endpoint], timeout_s=10) as c:
        await c.put("/bench/k", "v")
        lat: list[float] = []
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                if op == "put":
                    await c.put(f"/bench/c{i % 64}", b"v")
                else:
                    await c.get("/bench/k")
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return summarize(lat, time.perf_counter() - t0)


async def bench_raw_concurrent(endpoint: str, op: str, n: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        await kv.Put(rpc_pb2.PutRequest(key=b"/bench/k", value=b"v"), timeout=5)
        lat: list[float] = []
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                if op == "put":
                    await kv.Put(rpc_pb2.PutRequest(key=b"/bench/c%d" % (i % 64), value=b"v"), timeout=10)
                else:
                    await kv.Range(rpc_pb2.RangeRequest(key=b"/bench/k"), timeout=10)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return summarize(lat, time.perf_counter() - t0)


def bench_sync(endpoint: str, op: str, n: int) -> dict[str, float]:
    with Client([endpoint], timeout_s=5) as c:
        c.put("/bench/k", "v")
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            if op == "put":
                c.put("/bench/k", b"v%d" % i)
            else:
                c.get("/bench/k")
            lat.append(time.perf_counter() - t)
        return summarize(lat, time.perf_counter() - t0)


async def bench_wan(endpoint: str, client_region: str, n: int) -> dict[str, float]:
    """Linearizable gets from ``client_region`` with the client's WAN emulation on."""
    async with AsyncClient([endpoint], timeout_s=10, region=client_region, emulate_wan=True) as c:
        await c.put("/bench/k", "v")
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await c.get("/bench/k")
            lat.append(time.perf_counter() - t)
        return summarize(lat, time.perf_counter() - t0)


def run_wan(n: int) -> list[dict[str, float]]:
    """geokv in us-east, clients in each region: p50 next to the RTT floor."""
    from geokv.geo.wan import default_rtt_table
    from geokv.testing.cluster import LocalCluster

    rows = []
    table = default_rtt_table()
    with tempfile.TemporaryDirectory(prefix="bench-client-wan-") as base:
        c = LocalCluster(1, base, regions=["us-east"])
        try:
            c.wait_ready()
            ep = parse_endpoint(c.endpoints[0])
            for region in ("us-east", "eu-west", "ap-south"):
                r = asyncio.run(bench_wan(ep, region, n))
                floor_ms = table.rtt_ms(region, "us-east") if region != "us-east" else 0.0
                rows.append({"client_region": region, "server_region": "us-east", "floor_ms": floor_ms, **r,
                             "p50_over_floor_ms": r["p50_ms"] - floor_ms})
        finally:
            c.stop()
    return rows


def start(system: str, base: str):
    if system == "etcd":
        c = EtcdCluster(base, 1)
        c.start()
        return c, c.endpoints[0]
    from geokv.testing.cluster import LocalCluster

    c = LocalCluster(1, base)
    try:
        c.wait_ready()
    except BaseException:
        c.stop()
        raise
    return c, parse_endpoint(c.endpoints[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--systems", default="etcd,geokv")
    args = ap.parse_args(argv)
    n = max(10, min(args.ops, OPS_MAX))
    rows = []
    for system in [s for s in args.systems.split(",") if s]:
        with tempfile.TemporaryDirectory(prefix=f"bench-client-{system}-") as base:
            cluster, ep = start(system, base)
            try:
                for op in ("put", "get"):
                    raw = asyncio.run(bench_raw(ep, op, n))
                    raw_c = asyncio.run(bench_raw_concurrent(ep, op, n))
                    results = [("raw", raw, raw), ("async", asyncio.run(bench_async(ep, op, n)), raw),
                               ("sync", bench_sync(ep, op, n), raw),
                               (f"raw x{CONCURRENCY}", raw_c, raw_c),
                               (f"async x{CONCURRENCY}", asyncio.run(bench_async_concurrent(ep, op, n)), raw_c)]
                    for path, r, ref in results:
                        rows.append({"system": system, "op": op, "path": path, **r,
                                     "p50_vs_raw": r["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] else 0.0})
            finally:
                cluster.stop()
    head = f"{'system':<7} {'op':<4} {'path':<10} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50/raw':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['system']:<7} {r['op']:<4} {r['path']:<10} {r['ops_per_s']:>9.0f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['p50_vs_raw']:>8.2f}")
    wan_rows = run_wan(max(10, n // 10)) if "geokv" in args.systems else []
    if wan_rows:
        print()
        head = f"{'client':<9} {'server':<8} {'RTT floor ms':>12} {'p50 ms':>8} {'p99 ms':>8} {'p50-floor':>10}"
        print(head)
        print("-" * len(head))
        for r in wan_rows:
            print(f"{r['client_region']:<9} {r['server_region']:<8} {r['floor_ms']:>12.1f} {r['p50_ms']:>8.1f} "
                  f"{r['p99_ms']:>8.1f} {r['p50_over_floor_ms']:>10.1f}")
    summary = {f"{r['system']}_{r['op']}_{r['path'].replace(' ', '')}_p50_vs_raw": round(r["p50_vs_raw"], 3)
               for r in rows if not r["path"].startswith("raw")}
    print("RESULT " + json.dumps({"bench": "client", "ops": n, "concurrency": CONCURRENCY, "summary": summary,
                                  "rows": rows, "wan": wan_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
