"""What the maintenance features cost, against references measured in the same run.

    python bench/bench_maintenance.py [--entries N] [--mib M] [--dir DIR]

1. Quota gate (``Member.space_gate``), called by the API before every Put/Txn/LeaseGrant:
   CPU microseconds per call far from the quota (a cached file size) and near it (one
   LMDB call per write), against a plain method call and one ``MVCCStore.get`` point
   read (reference: what a write already costs on the read side).
2. Alarm commands applied by ``MVCCStore.apply_batch`` (alternating ACTIVATE and
   DEACTIVATE, each changing the alarm table): CPU microseconds per entry, against
   ``Noop`` entries applied the same way (the cheapest command). Alarms cost nothing on
   other entries: there is no per-batch alarm observer any more.
3. Defragment of a single-member store holding M MiB of deleted+compacted data plus live
   keys: wall and CPU seconds of ``Member.defragment`` (copy in a thread, swap in the
   driver) against a raw ``lmdb.Environment.copy(compact=True)`` of the same file plus
   an fsync of the copy.

CPU time is ``time.process_time`` (the machine is shared; wall time is shown beside it).
Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time


from geokv.kv.store import MVCCStore
from geokv.kv.types import ALARM_NOSPACE, Alarm, Compact, DeleteRange, Noop, Put
from geokv.runtime.member import Member
from geokv.testing.inproc import InProcCluster, member_configs

GATE_CALLS = 200_000
OBSERVER_BATCH = 1000
OBSERVER_ROUNDS = 50
KEY_BYTES = 256
VALUE_BYTES = 1024


def cpu_us_per(fn, n: int) -> tuple[float, float]:
    """(CPU us, wall us) per call of ``fn`` run ``n`` times."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6


def bench_gate(base: str) -> dict:
    cfg = member_configs(1, base)[0]
    m = Member(cfg)
    m.store = MVCCStore(os.path.join(base, "gate-db"), quota_bytes=cfg.quota_backend_bytes)
    try:
        m.store.apply_batch([(1, Put(b"k" * KEY_BYTES, b"v" * VALUE_BYTES))])
        key = b"k" * KEY_BYTES
        gate = m.space_gate
        cost = 256 + KEY_BYTES + VALUE_BYTES

        class Plain:
            def f(self, c):
                return None

        p = Plain()
        out = {
            "gate_far_cpu_us": cpu_us_per(lambda: gate(cost), GATE_CALLS),
            "method_call_cpu_us": cpu_us_per(lambda: p.f(cost), GATE_CALLS),
            "store_get_cpu_us": cpu_us_per(lambda: m.store.get(key), GATE_CALLS // 4),
        }
        m.config.quota_backend_bytes = m.store.db_size() + cost + 1  # within the exact zone
        out["gate_near_cpu_us"] = cpu_us_per(lambda: gate(cost), GATE_CALLS // 4)
        return out
    finally:
        m.store.close()


def bench_alarm_apply(base: str) -> dict:
    store = MVCCStore(os.path.join(base, "alarm-db"))
    index = 0

    def batch_of(make):
        nonlocal index
        items = []
        for i in range(OBSERVER_BATCH):
            index += 1
            items.append((index, make(i)))
        return items

    def alarm_round():
        store.apply_batch(batch_of(lambda i: Alarm(1 + i % 2, 7, ALARM_NOSPACE)))

    def noop_round():
        store.apply_batch(batch_of(lambda i: Noop()))

    try:
        a_cpu, a_wall = cpu_us_per(alarm_round, OBSERVER_ROUNDS)
        n_cpu, n_wall = cpu_us_per(noop_round, OBSERVER_ROUNDS)
    finally:
        store.close()
    return {"alarm_apply_cpu_us_per_entry": (a_cpu / OBSERVER_BATCH, a_wall / OBSERVER_BATCH),
            "noop_apply_cpu_us_per_entry": (n_cpu / OBSERVER_BATCH, n_wall / OBSERVER_BATCH)}


async def bench_defrag(base: str, mib: int, live_keys: int) -> dict:
    import lmdb

    async with InProcCluster(1, base) as c:
        m = await c.wait_leader()
        value = b"d" * 8000
        n = mib * (1 << 20) // len(value)
        for start in range(0, n, 100):
            await asyncio.gather(*(m.propose(Put(b"dead/%06d" % i, value)) for i in range(start, min(n, start + 100))))
        for start in range(0, live_keys, 100):
            await asyncio.gather(*(m.propose(Put(b"live/%06d" % i, b"l" * VALUE_BYTES))
                                   for i in range(start, min(live_keys, start + 100))))
        res = await m.propose(DeleteRange(b"dead/", b"dead0"))
        await m.propose(Compact(res.revision, physical=True))
        before = m.store.db_size()
        # reference: LMDB's own compacting copy of the same environment
        ref_dir = tempfile.mkdtemp(dir=base)
        c0, w0 = time.process_time(), time.perf_counter()
        m.store.env.copy(ref_dir, compact=True)
        fd = os.open(os.path.join(ref_dir, "data.mdb"), os.O_RDONLY)
        os.fsync(fd)  # the defragment makes its copy durable before the swap: so does the reference
        os.close(fd)
        ref = (time.process_time() - c0, time.perf_counter() - w0)
        ref_bytes = os.path.getsize(os.path.join(ref_dir, "data.mdb"))
        shutil.rmtree(ref_dir)
        c0, w0 = time.process_time(), time.perf_counter()
        rep = await m.defragment()
        took = (time.process_time() - c0, time.perf_counter() - w0)
        stats = m.alarm_statistics()
        return {"defrag_before_bytes": before, "defrag_after_bytes": rep["after_bytes"],
                "lmdb_copy_bytes": ref_bytes, "defrag_s": took, "lmdb_copy_s": ref,
                "defrag_copies_stale": stats["defrag_copies_stale"],
                "defrag_copies_in_driver": stats["defrag_copies_in_driver"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=200, help="MiB of data deleted before the defrag")
    ap.add_argument("--live-keys", type=int, default=5000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-maint-", dir=args.dir)
    try:
        load = os.getloadavg()
        gate = bench_gate(os.path.join(base, "g"))
        obs = bench_alarm_apply(os.path.join(base, "o"))
        dfr = asyncio.run(bench_defrag(os.path.join(base, "d"), args.mib, args.live_keys))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = [
        ("quota gate, far from quota", *gate["gate_far_cpu_us"], "us/call"),
        ("quota gate, near quota (LMDB call)", *gate["gate_near_cpu_us"], "us/call"),
        ("  ref: plain method call", *gate["method_call_cpu_us"], "us/call"),
        ("  ref: MVCCStore.get point read", *gate["store_get_cpu_us"], "us/call"),
        ("apply Alarm (activate/deactivate)", *obs["alarm_apply_cpu_us_per_entry"], "us/entry"),
        ("  ref: apply Noop", *obs["noop_apply_cpu_us_per_entry"], "us/entry"),
        ("defragment (copy+swap)", dfr["defrag_s"][0], dfr["defrag_s"][1], "s"),
        ("  ref: lmdb env.copy(compact=True)+fsync", dfr["lmdb_copy_s"][0], dfr["lmdb_copy_s"][1], "s"),
    ]
    print(f"load average before {load[0]:.2f}, after {load_after[0]:.2f} (2 cores, shared)")
    print(f"{'what':40} {'CPU':>10} {'wall':>10}  unit")
    for name, cpu, wall, unit in rows:
        print(f"{name:40} {cpu:10.3f} {wall:10.3f}  {unit}")
    print(f"defragment: {dfr['defrag_before_bytes']:,} -> {dfr['defrag_after_bytes']:,} bytes "
          f"(LMDB's own copy: {dfr['lmdb_copy_bytes']:,}); stale background copies "
          f"{dfr['defrag_copies_stale']}, copies in the driver {dfr['defrag_copies_in_driver']}")
    result = {"load_avg": [round(load[0], 2), round(load_after[0], 2)], **gate, **obs, **dfr,
              "gate_far_over_get": gate["gate_far_cpu_us"][0] / gate["store_get_cpu_us"][0],
              "alarm_over_noop": obs["alarm_apply_cpu_us_per_entry"][0] / obs["noop_apply_cpu_us_per_entry"][0],
              "defrag_over_lmdb_copy_wall": dfr["defrag_s"][1] / max(dfr["lmdb_copy_s"][1], 1e-9)}
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
