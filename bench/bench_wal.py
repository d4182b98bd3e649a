"""WAL group commit against one fsync per record, on the same disk in the same run.

Reference: ``os.write`` of one 1 KiB record + ``os.fdatasync``, per record.
Measured:  the geokv WAL with group commit, for 1 KiB records:
  * ``threads=N``  N writer threads, each appending one record and waiting until it
                   is durable (``WAL.sync(lsn)``), so one fsync serves many writers;
  * ``batch=B``    one writer appending B records per ``sync``;
  * ``raft-save=B`` ``DiskRaftStorage.save`` of B entries + hard state, then ``sync``.
For each: records/s, the ratio to the reference, and the p50/p99 time a writer waited
in ``sync`` for durability.

Usage: python bench/bench_wal.py [--seconds S] [--dir DIR]
Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

from geokv.ports.disk import RealDisk
from geokv.raft.types import Entry, HardState
from geokv.storage import DiskRaftStorage
from geokv.storage.framing import RecordType
from geokv.storage.wal import WAL

RECORD_BYTES = 1024
#: Goal from the storage brief: group commit at least this many times the reference.
RATIO_GOAL = 20.0


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def bench_raw(d: str, seconds: float) -> dict:
    path = os.path.join(d, "raw.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rec = os.urandom(RECORD_BYTES)
    waits = []
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, rec)
            s = time.perf_counter()
            os.fdatasync(fd)
            waits.append(time.perf_counter() - s)
            n += 1
    finally:
        os.close(fd)
        os.remove(path)
    dt = time.perf_counter() - t0
    return {"name": "raw write+fdatasync", "records": n, "rps": n / dt, "waits": waits}


def bench_threads(d: str, seconds: float, threads_n: int) -> dict:
    wal = WAL.open(RealDisk(), os.path.join(d, f"wal-t{threads_n}"), lambda *a: None)
    rec = os.urandom(RECORD_BYTES)
    stop = threading.Event()
    counts = [0] * threads_n
    waits: list[list[float]] = [[] for _ in range(threads_n)]

    def writer(k: int) -> None:
        w = waits[k]
        while not stop.is_set():
            lsn = wal.append(RecordType.ENTRIES, rec)[0]
            s = time.perf_counter()
            wal.sync(lsn)
            w.append(time.perf_counter() - s)
            counts[k] += 1

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(threads_n)]
    syncs0 = wal.stats_syncs
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    syncs = wal.stats_syncs - syncs0
    wal.close()
    n = sum(counts)
    return {"name": f"wal threads={threads_n}", "records": n, "rps": n / dt,
            "waits": [x for w in waits for x in w], "per_fsync": n / max(1, syncs)}


def bench_batch(d: str, seconds: float, batch: int) -> dict:
    wal = WAL.open(RealDisk(), os.path.join(d, f"wal-b{batch}"), lambda *a: None)
    recs = [(RecordType.ENTRIES, os.urandom(RECORD_BYTES)) for _ in range(batch)]
    waits = []
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        wal.append_batch(recs)
        s = time.perf_counter()
        wal.sync()
        waits.append(time.perf_counter() - s)
        n += batch
    dt = time.perf_counter() - t0
    wal.close()
    return {"name": f"wal batch={batch}", "records": n, "rps": n / dt, "waits": waits, "per_fsync": batch}


def bench_raft_save(d: str, seconds: float, batch: int) -> dict:
    st = DiskRaftStorage.open(RealDisk(), os.path.join(d, f"raft-b{batch}"))
    data = os.urandom(RECORD_BYTES)
    waits = []
    n = 0
    idx = 1
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ents = [Entry(1, i, data=data) for i in range(idx, idx + batch)]
        idx += batch
        st.save(HardState(1, 1, idx - 1), ents)
        s = time.perf_counter()
        st.sync()
        waits.append(time.perf_counter() - s)
        n += batch
    dt = time.perf_counter() - t0
    st.close()
    t1 = time.perf_counter()
    st = DiskRaftStorage.open(RealDisk(), os.path.join(d, f"raft-b{batch}"))  # recovery: full replay
    recover_s = time.perf_counter() - t1
    assert st.last_index() == idx - 1
    st.close()
    return {"name": f"raft-save batch={batch}", "records": n, "rps": n / dt, "waits": waits, "per_fsync": batch,
            "recover_s": recover_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: a temp dir)")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench-wal-", dir=args.dir)
    try:
        # The reference is measured before and after the others and pooled, so a load
        # change on a shared machine during the run moves both sides alike.
        raw_a = bench_raw(d, args.seconds / 2)
        runs = [
            bench_threads(d, args.seconds, 16),
            bench_threads(d, args.seconds, 64),
            bench_batch(d, args.seconds, 100),
            bench_batch(d, args.seconds, 1000),
            bench_raft_save(d, args.seconds, 100),
            bench_raft_save(d, args.seconds, 1000),
        ]
        raw_b = bench_raw(d, args.seconds / 2)
        raw = {"name": raw_a["name"], "records": raw_a["records"] + raw_b["records"],
               "rps": (raw_a["records"] + raw_b["records"]) / (args.seconds / 2 * 2),
               "waits": raw_a["waits"] + raw_b["waits"]}
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'config':<24} {'records/s':>11} {'x raw':>7} {'rec/fsync':>9} {'wait p50 ms':>11} {'wait p99 ms':>11}")
    for r in [raw] + runs:
        ratio = r["rps"] / raw["rps"]
        print(f"{r['name']:<24} {r['rps']:>11.0f} {ratio:>7.1f} {r.get('per_fsync', 1):>9.1f} "
              f"{_pct(r['waits'], 50) * 1e3:>11.3f} {_pct(r['waits'], 99) * 1e3:>11.3f}")
    for r in runs:
        if "recover_s" in r:
            print(f"recovery after {r['name']}: replayed {r['records']} entries in {r['recover_s']:.2f} s "
                  f"({r['records'] / r['recover_s']:.0f} entries/s)")
    best = max(runs, key=lambda r: r["rps"])
    result = {
        "record_bytes": RECORD_BYTES,
        "raw_fdatasync_rps": round(raw["rps"]),
        "raw_fdatasync_p50_ms": round(_pct(raw["waits"], 50) * 1e3, 3),
        "configs": {r["name"]: {"rps": round(r["rps"]), "ratio": round(r["rps"] / raw["rps"], 1),
                                "records_per_fsync": round(r.get("per_fsync", 1), 1),
                                "sync_wait_p50_ms": round(_pct(r["waits"], 50) * 1e3, 3),
                                "sync_wait_p99_ms": round(_pct(r["waits"], 99) * 1e3, 3),
                                **({"recover_entries_per_s": round(r["records"] / r["recover_s"])}
                                   if "recover_s" in r else {})} for r in runs},
        "best": best["name"],
        "best_ratio": round(best["rps"] / raw["rps"], 1),
        "ratio_goal": RATIO_GOAL,
        "goal_met": best["rps"] / raw["rps"] >= RATIO_GOAL,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
