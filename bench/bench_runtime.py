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
``--grpc`` adds a write-only load through the etcd gRPC API (bench/loadgen.py, grpc.aio)
against 3 real geokv processes (LocalCluster) and, as the reference, 3 etcd 3.4
processes, same client, same machine, same run.

    python bench/bench_runtime.py [--writes 6000] [--concurrency 1,64,256] [--profile] [--grpc]

CPU microseconds per write are reported beside the rates: on a shared machine they are
the steadier number (in-process: the whole process, i.e. all 3 members, client included).

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
sys.path.insert(0, HERE)

from geokv.kv.store import MVCCStore  # noqa: E402
from geokv.kv.types import Put  # noqa: E402
from geokv.runtime.memstorage import MemoryRaftStorage  # noqa: E402
from geokv.testing.inproc import InProcCluster  # noqa: E402

VALUE = b"v" * 256
#: --shape checkperf: what etcdctl check perf writes (random 256-byte keys, 1 KiB values)
SHAPES = {"small": (0, 256), "checkperf": (256, 1024)}
SHAPE = SHAPES["small"]
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


def _key(prefix: bytes, i: int, rng) -> bytes:
    key_bytes = SHAPE[0]
    if not key_bytes:
        return prefix + b"%08d" % i
    k = prefix + b"%016x" % rng.getrandbits(64)
    return k + b"k" * (key_bytes - len(k))


async def drive(c: InProcCluster, writes: int, concurrency: int, prefix: bytes) -> tuple[float, list[float]]:
    import random

    members = c.live()
    lat: list[float] = []
    counter = iter(range(writes))
    rng = random.Random(writes * 7919 + concurrency)
    value = b"v" * SHAPE[1]

    async def worker(w: int) -> None:
        m = members[w % len(members)]
        for i in counter:
            t = time.perf_counter()
            await m.propose(Put(_key(prefix, i, rng), value))
            if len(lat) < LATENCY_SAMPLES_MAX:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return writes / (time.perf_counter() - t0), lat


MEMBER_KWARGS: dict = {}
GC_PAUSES: list[tuple[int, float]] = []  # (generation, seconds) of each collection in a run
_gc_t0 = [0.0]


def _gc_callback(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_t0[0] = time.perf_counter()
    else:
        GC_PAUSES.append((info["generation"], time.perf_counter() - _gc_t0[0]))


def gc_summary() -> dict:
    if not GC_PAUSES:
        return {}
    out: dict = {"gc_collections": len(GC_PAUSES), "gc_total_ms": sum(p for _, p in GC_PAUSES) * 1000,
                 "gc_max_ms": max(p for _, p in GC_PAUSES) * 1000}
    return out


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
        for i in range(len(c.configs)):
            await c.start_member(i, **MEMBER_KWARGS)
    out = {}
    try:
        await c.wait_leader()
        await drive(c, 200, 16, b"warm/")
        for conc in concurrencies:
            n = writes if conc > 1 else max(200, writes // 20)
            if profile is not None and conc == max(concurrencies):
                profile.enable()
            GC_PAUSES.clear()
            cpu0 = time.process_time()
            wps, lat = await drive(c, n, conc, b"c%d/" % conc)
            cpu_us = (time.process_time() - cpu0) / n * 1e6
            gc_rep = gc_summary()
            if profile is not None and conc == max(concurrencies):
                profile.disable()
            out[conc] = {"writes_per_s": wps, "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
                         "max_ms": max(lat) * 1000, "cpu_us_per_write": cpu_us, **gc_rep}
    finally:
        await c.stop()
    return out


GRPC_SECONDS = 8.0
GRPC_CONCURRENCY = 64


def grpc_write_load(endpoints: list[str], seconds: float, concurrency: int) -> dict:
    import subprocess

    out = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), "--endpoints", ",".join(endpoints),
                          "--seconds", str(seconds), "--concurrency", str(concurrency), "--read-fraction", "0"],
                         capture_output=True, text=True, timeout=seconds + 120)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    lat = doc["latencies_s"]
    return {"writes_per_s": doc["counts"]["write"] / doc["elapsed_s"], "p50_ms": pct(lat, 0.5) * 1000,
            "p99_ms": pct(lat, 0.99) * 1000, "errors": doc["counts"]["error"]}


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_with_cpu(endpoints: list[str], pids: list[int]) -> dict:
    """The write load plus server CPU microseconds per acknowledged write (all members)."""
    c0 = [cpu_seconds(p) for p in pids]
    r = grpc_write_load(endpoints, GRPC_SECONDS, GRPC_CONCURRENCY)
    used = sum(cpu_seconds(p) - c for p, c in zip(pids, c0))
    writes = max(1.0, r["writes_per_s"] * GRPC_SECONDS)
    r["server_cpu_us_per_write"] = used / writes * 1e6
    return r


def bench_grpc(base: str) -> dict:
    from bench_server import EtcdCluster, wait_ready

    from geokv.testing.cluster import LocalCluster

    res = {}
    os.makedirs(os.path.join(base, "etcd"), exist_ok=True)
    etcd = EtcdCluster(os.path.join(base, "etcd"))
    try:
        wait_ready(etcd.endpoints)
        res["etcd"] = load_with_cpu(etcd.endpoints, etcd.pids)
    finally:
        etcd.stop()
    with LocalCluster(3, os.path.join(base, "geokv"), heartbeat_ms=100, election_ms=1000) as c:
        c.wait_ready()
        eps = [e.replace("http://", "") for e in c.endpoints]
        res["geokv"] = load_with_cpu(eps, [c.pid(i) for i in range(3)])
    return res


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
    ap.add_argument("--grpc", action="store_true")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small",
                    help="small: sequential keys, 256 B values; checkperf: random 256 B keys, 1 KiB values")
    ap.add_argument("--uvloop", action="store_true", help="run the members on uvloop (as geokv serve does)")
    ap.add_argument("--no-memwal", action="store_true", help="skip the in-memory-log reference run")
    ap.add_argument("--gc-report", action="store_true", help="time every garbage collection (count, total, max)")
    ap.add_argument("--no-gc-tune", action="store_true", help="keep CPython's GC thresholds (the reference)")
    args = ap.parse_args()
    if args.gc_report:
        import gc

        gc.callbacks.append(_gc_callback)
    if args.no_gc_tune:
        MEMBER_KWARGS["tune_gc"] = False
    global SHAPE
    SHAPE = SHAPES[args.shape]
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    concs = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="geokv-bench-rt-", dir=os.environ.get("BENCH_DIR")) as base:
        fsync_per_s = ref_fsync(base)
        mvcc_puts_per_s = ref_mvcc(base)
        prof = cProfile.Profile() if args.profile else None
        disk = asyncio.run(run_cluster(os.path.join(base, "disk"), args.writes, concs, False, prof))
        mem = {} if args.no_memwal else asyncio.run(
            run_cluster(os.path.join(base, "mem"), args.writes, concs, True, None))
        grpc_res = bench_grpc(base) if args.grpc else None
    print(f"references: fsync {fsync_per_s:,.0f}/s (one durable write = {1000 / fsync_per_s:.2f} ms), "
          f"MVCC apply alone {mvcc_puts_per_s:,.0f} puts/s")
    print(f"{'3 members in-process':<28}{'conc':>6}{'writes/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
          f"{'CPU us/write':>14}{'GC n/total ms/max ms':>24}")
    for label, res in (("WAL+fsync (real)", disk), ("in-memory log (no fsync)", mem)):
        for conc, r in res.items():
            gcs = (f"{r['gc_collections']}/{r['gc_total_ms']:.0f}/{r['gc_max_ms']:.1f}"
                   if "gc_collections" in r else "")
            print(f"{label:<28}{conc:>6}{r['writes_per_s']:>12,.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                  f"{r['max_ms']:>10.1f}{r['cpu_us_per_write']:>14.0f}{gcs:>24}")
    result = {
        "loadavg": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
        "ref_fsync_per_s": round(fsync_per_s, 1), "ref_mvcc_puts_per_s": round(mvcc_puts_per_s, 1),
        "disk": {str(k): {kk: round(vv, 3) for kk, vv in v.items()} for k, v in disk.items()},
        "memwal": {str(k): {kk: round(vv, 3) for kk, vv in v.items()} for k, v in mem.items()},
        "serial_write_vs_fsync_floor": round(disk[concs[0]]["p50_ms"] / (1000 / fsync_per_s), 2),
    }
    if grpc_res is not None:
        print(f"through gRPC, 3 processes, writes only, concurrency {GRPC_CONCURRENCY}, {GRPC_SECONDS:.0f} s:")
        for name, r in grpc_res.items():
            print(f"  {name:<10}{r['writes_per_s']:>10,.0f} writes/s  p50 {r['p50_ms']:.2f} ms  "
                  f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  "
                  f"server CPU {r['server_cpu_us_per_write']:.0f} us/write (3 members)")
        result["grpc"] = {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in grpc_res.items()}
        result["grpc_geokv_vs_etcd_writes"] = round(
            grpc_res["geokv"]["writes_per_s"] / max(1e-9, grpc_res["etcd"]["writes_per_s"]), 3)
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
