"""Lease reads vs ReadIndex, in-process, with an emulated one-way peer delay.

Three Members in one asyncio loop on loopback TCP (real WAL and LMDB); every peer frame
is delayed by ``--one-way-ms`` through the transport's WAN hook, so the RTT between any
two members is about twice that. Sequential reads of one key, per member role and mode:

  * leader   lease         - expected: no network round (local);
  * leader   linearizable  - ReadIndex: one heartbeat round to a quorum (~1 RTT);
  * follower lease         - one forward to the leader, answered from its lease (~1 RTT);
  * follower linearizable  - forward + the leader's heartbeat round (~2 RTT);
  * follower serializable  - local.

The reference, measured in the same run: the transport's own ping RTT between the
members (``transport.rtt_ms()``). The goal (issue 5): lease reads p50 <= RTT to the
leader + 5 ms, and < 2 ms on the leader itself.

    python bench/bench_lease_reads.py [--one-way-ms 10] [--reads 200]

Prints a table and a final line ``RESULT {json}``.
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
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from geokv.kv.types import Put, Range  # noqa: E402
from geokv.runtime.member import Member  # noqa: E402
from geokv.testing.inproc import member_configs  # noqa: E402

LEADER_WAIT_S = 20.0
LEASE_WAIT_S = 10.0
READ_TIMEOUT_S = 5.0


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


async def wait_leader(members: list[Member]) -> Member:
    deadline = time.monotonic() + LEADER_WAIT_S
    while time.monotonic() < deadline:
        ld = next((m for m in members if m.is_leader), None)
        if ld is not None and all(m.leader_id == ld.id for m in members):
            return ld
        await asyncio.sleep(0.02)
    raise TimeoutError("no leader")


async def measure(m: Member, mode: str, n: int) -> tuple[list[float], dict]:
    before = m.statistics()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await m.read(Range(b"k"), mode=mode, timeout_s=READ_TIMEOUT_S)
        lat.append((time.perf_counter() - t0) * 1000.0)
    after = m.statistics()
    return lat, {k: after[k] - before[k] for k in ("lease_reads_local", "lease_read_rounds")}


async def main_async(args) -> dict:
    one_way_s = args.one_way_ms / 1000.0
    with tempfile.TemporaryDirectory(prefix="bench-lease-") as base:
        cfgs = member_configs(3, base, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms)
        members = [Member(c, outbound_delay_s=lambda region: one_way_s) for c in cfgs]
        try:
            for m in members:
                await m.start()
            leader = await wait_leader(members)
            follower = next(m for m in members if m is not leader)
            await leader.propose(Put(b"k", b"v" * 100))
            deadline = time.monotonic() + LEASE_WAIT_S
            while leader.statistics()["lease_reads_local"] == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the leader's lease never became valid")
                await leader.read(Range(b"k"), mode="lease")
                await asyncio.sleep(0.01)
            await asyncio.sleep(3 * args.heartbeat_ms / 1000.0)  # RTT probes settle
            rtts = [v for m in members for v in m.transport.rtt_ms().values() if v]
            ref_rtt = statistics.median(rtts) if rtts else float("nan")
            rows = []
            for who, m in (("leader", leader), ("follower", follower)):
                modes = ("lease", "linearizable") if who == "leader" else ("lease", "linearizable", "serializable")
                for mode in modes:
                    lat, counts = await measure(m, mode, args.reads)
                    rows.append({"member": who, "mode": mode, "p50_ms": round(pct(lat, 0.5), 3),
                                 "p99_ms": round(pct(lat, 0.99), 3), **counts})
        finally:
            for m in members:
                await m.stop()
    return {"one_way_ms": args.one_way_ms, "ref_rtt_ms": round(ref_rtt, 3), "reads": args.reads, "rows": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one-way-ms", type=float, default=10.0)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--heartbeat-ms", type=int, default=50)
    ap.add_argument("--election-ms", type=int, default=500)
    args = ap.parse_args(argv)
    res = asyncio.run(main_async(args))
    rtt = res["ref_rtt_ms"]
    print(f"emulated one-way delay {args.one_way_ms} ms; measured member RTT (reference) p50 {rtt} ms")
    print(f"{'member':9} {'mode':13} {'p50 ms':>8} {'p99 ms':>8} {'local':>6} {'rounds':>6}  goal")
    for r in res["rows"]:
        goal = ""
        if r["mode"] == "lease":
            bound = 2.0 if r["member"] == "leader" else rtt + 5.0
            goal = f"p50 <= {bound:.1f}: {'ok' if r['p50_ms'] <= bound else 'MISSED'}"
        print(f"{r['member']:9} {r['mode']:13} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['lease_reads_local']:6d} {r['lease_read_rounds']:6d}  {goal}")
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
