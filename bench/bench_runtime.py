"""Runtime benchmark: the write path behind the gRPC edge (Member.propose), in-process.

Three Members in one asyncio loop on loopback TCP with the real WAL (fsync) and LMDB,
writes spread over all members (followers forward to the leader). Reported per
concurrency: writes/s, p50/p99 latency of Member.propose. References measured in the
same run on the same disk and CPU:
  * ``fsync``    - one thread doing write+fsync of a 300-byte record: the disk's floor
                   for one durable write (a member needs one per batch);
  * ``mvcc``     - MVCCStore.apply_batch alone, 100 puts per batch (the apply cost);
  * ``memwal``   - the same 3 Members with an in-memory Raft log (no fsync): what the
                   driver loop, transport and apply cost without the disk.
``--profile`` adds a cProfile split of one run by layer (runtime/raft/kv/storage/asyncio).

    python bench/bench_runtime.py [--writes 6000] [--concurrency 1,64,256] [--profile]

Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from geokv.kv.store import MVCCStore  # noqa: E402
from geokv.kv.types import Put  # noqa: E402
from geokv.runtime.memstorage import MemoryRaftStorage  # noqa: E402
from geokv.testing.inproc import InProcCluster  # noqa: E402

VALUE = b"v" * 256
LATENCY_SAMPLES_MAX = 200_000


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def ref_fsync(base: str, n: int = 300) -> float:
    path = os.path.join(base, "fsync.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"x" * 300)
            os.fsync(fd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def ref_mvcc(base: str, n: int = 20000, batch: int = 100) -> float:
    store = MVCCStore(os.path.join(base, "mvcc"))
    try:
        t0 = time.perf_counter()
        idx = 0
        for b in range(0, n, batch):
            items = []
            for i in range(b, b + batch):
                idx += 1
                items.append((idx, Put(b"k%08d" % i, VALUE)))
            store.apply_batch(items)
        return n / (time.perf_counter() - t0)
    finally:
        store.close()


async def drive(c: InProcCluster, writes: int, concurrency: int, prefix: bytes) -> tuple[float, list[float]]:
    members = c.live()
    lat: list[float] = []
    counter = iter(range(writes))

    async def worker(w: int) -> None:
        m = members[w % len(members)]
        for i in counter:
            t = time.perf_counter()
            await m.propose(Put(prefix + b"%08d" % i, VALUE))
            if len(lat) < LATENCY_SAMPLES_MAX:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return writes / (time.perf_counter() - t0), lat


async def run_cluster(base: str, writes: int, concurrencies: list[int], memwal: bool,
                      profile: cProfile.Profile | None) -> dict:
    c = InProcCluster(3, base, heartbeat_ms=100, election_ms=1000)
    if memwal:
        for i, cfg in enumerate(c.configs):
            from geokv.runtime.member import Member

            m = Member(cfg, storage=MemoryRaftStorage())
            c.members[i] = m
        for m in c.members:
            await m.start()
    else:
        await c.start()
    out = {}
    try:
        await c.wait_leader()
        await drive(c, 200, 16, b"warm/")
        for conc in concurrencies:
            n = writes if conc > 1 else max(200, writes // 20)
            if profile is not None and conc == max(concurrencies):
                profile.enable()
            wps, lat = await drive(c, n, conc, b"c%d/" % conc)
            if profile is not None and conc == max(concurrencies):
                profile.disable()
            out[conc] = {"writes_per_s": wps, "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000}
    finally:
        await c.stop()
    return out


LAYERS = [("geokv/runtime", "runtime"), ("geokv/raft", "raft"), ("geokv/kv", "kv"),
          ("geokv/storage", "storage"), ("asyncio", "asyncio"), ("msgpack", "codec")]


def profile_split(prof: cProfile.Profile) -> dict[str, float]:
    st = pstats.Stats(prof)
    split: dict[str, float] = {}
    total = 0.0
    for (fname, _line, _fn), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        total += tt
        layer = "other"
        for needle, name in LAYERS:
            if needle in fname:
                layer = name
                break
        if fname == "~":
            layer = "builtins (sockets, lmdb, fsync wait, select)"
        split[layer] = split.get(layer, 0.0) + tt
    return {k: v / total for k, v in sorted(split.items(), key=lambda kv: -kv[1])}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=6000)
    ap.add_argument("--concurrency", default="1,64,256")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    concs = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="geokv-bench-rt-", dir=os.environ.get("BENCH_DIR")) as base:
        fsync_per_s = ref_fsync(base)
        mvcc_puts_per_s = ref_mvcc(base)
        prof = cProfile.Profile() if args.profile else None
        disk = asyncio.run(run_cluster(os.path.join(base, "disk"), args.writes, concs, False, prof))
        mem = asyncio.run(run_cluster(os.path.join(base, "mem"), args.writes, concs, True, None))
    print(f"references: fsync {fsync_per_s:,.0f}/s (one durable write = {1000 / fsync_per_s:.2f} ms), "
          f"MVCC apply alone {mvcc_puts_per_s:,.0f} puts/s")
    print(f"{'3 members in-process':<28}{'conc':>6}{'writes/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for label, res in (("WAL+fsync (real)", disk), ("in-memory log (no fsync)", mem)):
        for conc, r in res.items():
            print(f"{label:<28}{conc:>6}{r['writes_per_s']:>12,.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")
    result = {
        "ref_fsync_per_s": round(fsync_per_s, 1), "ref_mvcc_puts_per_s": round(mvcc_puts_per_s, 1),
        "disk": {str(k): {kk: round(vv, 3) for kk, vv in v.items()} for k, v in disk.items()},
        "memwal": {str(k): {kk: round(vv, 3) for kk, vv in v.items()} for k, v in mem.items()},
        "serial_write_vs_fsync_floor": round(disk[concs[0]]["p50_ms"] / (1000 / fsync_per_s), 2),
    }
    if prof is not None:
        split = profile_split(prof)
        print(f"profile of the c={max(concs)} run (share of CPU time by layer):")
        for k, v in split.items():
            print(f"  {k:<48}{v * 100:6.1f}%")
        result["profile_share"] = {k: round(v, 3) for k, v in split.items()}
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
