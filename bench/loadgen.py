"""A bounded gRPC load generator for etcd-API servers (etcd, geokv, the do-nothing ceiling).

Each worker process keeps `--concurrency` requests in flight on grpc.aio for
`--seconds`, spread over the endpoints, and prints one JSON line with its counts and
latency samples summary. The same generator drives every system in a run, so its own
cost is the same for all of them.

    python bench/loadgen.py --endpoints 127.0.0.1:2379,... --seconds 20 \
        --concurrency 100 --read-fraction 0.9 --keys 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import grpc

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

KEY_BYTES = 256
VALUE_BYTES = 1024
LATENCY_SAMPLES_MAX = 200_000
PREFILL_ATTEMPTS_MAX = 5
PREFILL_RETRY_S = 1.0


def key_for(i: int) -> bytes:
    prefix = b"/bench/%08d/" % i
    return prefix + b"k" * (KEY_BYTES - len(prefix))


async def run(args) -> dict:
    endpoints = args.endpoints.split(",")
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    rng = random.Random(args.seed)
    value = b"v" * VALUE_BYTES
    keys = [key_for(i) for i in range(args.keys)]
    latencies_s: list[float] = []
    counts = {"read": 0, "write": 0, "error": 0}
    errors: dict[str, int] = {}
    deadline = time.monotonic() + args.seconds

    async def worker(w: int) -> None:
        stub = stubs[w % len(stubs)]
        while time.monotonic() < deadline:
            key = keys[rng.randrange(len(keys))]
            is_read = rng.random() < args.read_fraction
            t0 = time.perf_counter()
            try:
                if is_read:
                    await stub.Range(rpc_pb2.RangeRequest(key=key, serializable=args.serializable), timeout=10)
                else:
                    await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
            except grpc.aio.AioRpcError as exc:
                counts["error"] += 1
                name = exc.code().name
                errors[name] = errors.get(name, 0) + 1
                await asyncio.sleep(0.01)
                continue
            dt = time.perf_counter() - t0
            counts["read" if is_read else "write"] += 1
            if len(latencies_s) < LATENCY_SAMPLES_MAX:
                latencies_s.append(dt)

    t_start = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    elapsed_s = time.monotonic() - t_start
    for ch in channels:
        await ch.close()
    return {"counts": counts, "errors": errors, "elapsed_s": elapsed_s, "latencies_s": latencies_s}


async def prefill(args) -> None:
    endpoints = args.endpoints.split(",")
    async with grpc.aio.insecure_channel(endpoints[0]) as ch:
        stub = rpc_pb2_grpc.KVStub(ch)
        value = b"v" * VALUE_BYTES
        sem = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with sem:
                for attempt in range(PREFILL_ATTEMPTS_MAX):
                    try:
                        await stub.Put(rpc_pb2.PutRequest(key=key_for(i), value=value), timeout=30)
                        return
                    except grpc.aio.AioRpcError as exc:
                        # A server still busy after the previous load (e.g. etcdctl check
                        # perf's final delete of its keys) may time out or change leader.
                        if attempt + 1 == PREFILL_ATTEMPTS_MAX:
                            raise
                        await asyncio.sleep(PREFILL_RETRY_S)

        await asyncio.gather(*(put(i) for i in range(args.keys)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--read-fraction", type=float, default=0.9)
    p.add_argument("--serializable", action="store_true")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prefill", action="store_true")
    args = p.parse_args()
    if args.prefill:
        asyncio.run(prefill(args))
        print(json.dumps({"prefilled": args.keys}))
        return
    out = asyncio.run(run(args))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
