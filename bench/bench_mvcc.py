"""Benchmark of geokv.kv.MVCCStore against raw LMDB on the same data.

    python bench/bench_mvcc.py [--keys N] [--reads N] [--batch 100] [--dir DIR]

Loads N keys of 256 bytes with 1 KiB values (puts applied with apply_batch, --batch per
call), overwrites them once (the update path reads the previous version), then does
random point reads at the current revision (after one untimed pass over the same keys,
so both sides read from mapped pages).  Then it compacts the first generation away: a
third round of writes runs while the compaction is pending (each write does its share
of it), and Noops finish the rest.  The reference is raw LMDB with the same settings
(sync off, one write txn per batch, one read txn per get) on the same keys and values,
measured in the same run.  Prints a table and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

import lmdb

from geokv.kv.store import MVCCStore
from geokv.kv.types import Compact, Noop, Put, Range

KEY_BYTES = 256
VALUE_BYTES = 1024


def make_key(i: int) -> bytes:
    head = b"/bench/key/%012d/" % i
    return head + b"k" * (KEY_BYTES - len(head))


def make_value(i: int, gen: int) -> bytes:
    head = b"%d:%d:" % (gen, i)
    return head + b"v" * (VALUE_BYTES - len(head))


def rss_bytes() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                out[name] = int(rest.split()[0]) * 1024
    return out


def bench_raw(path: str, n: int, batch: int, read_keys: list[bytes]) -> dict:
    env = lmdb.open(path, map_size=64 << 30, sync=False, metasync=False, readahead=False, max_dbs=2)
    db = env.open_db(b"raw")
    res = {}
    for phase, gen in (("insert", 0), ("update", 1)):
        t_total = 0.0
        for lo in range(0, n, batch):
            pairs = [(make_key(i), make_value(i, gen)) for i in range(lo, min(lo + batch, n))]
            t0 = time.perf_counter()
            with env.begin(write=True, db=db) as txn:
                for k, v in pairs:
                    txn.put(k, v)
            t_total += time.perf_counter() - t0
        res[f"{phase}_per_s"] = n / t_total
    for k in read_keys:  # warm the page mapping, as on a server that has been up a while
        with env.begin(db=db) as txn:
            txn.get(k)
    t0 = time.perf_counter()
    got = 0
    for k in read_keys:
        with env.begin(db=db) as txn:
            got += txn.get(k) is not None
    res["read_per_s"] = len(read_keys) / (time.perf_counter() - t0)
    assert got == len(read_keys)
    res["db_bytes"] = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    env.close()
    return res


def bench_mvcc(path: str, n: int, batch: int, read_keys: list[bytes]) -> dict:
    store = MVCCStore(path, quota_bytes=16 << 30)
    res = {}
    index = 0
    rss0 = rss_bytes()
    for phase, gen in (("insert", 0), ("update", 1)):
        # Commands are built outside the timed loop: building them is the API's job.
        t_total = 0.0
        for lo in range(0, n, batch):
            items = []
            for i in range(lo, min(lo + batch, n)):
                index += 1
                items.append((index, Put(make_key(i), make_value(i, gen))))
            t0 = time.perf_counter()
            store.apply_batch(items)
            t_total += time.perf_counter() - t0
        res[f"{phase}_per_s"] = n / t_total
    rss1 = rss_bytes()
    assert store.revision == 2 * n + 1
    for k in read_keys:  # warm the page mapping, as for the reference
        store.get(k)
    t0 = time.perf_counter()
    got = 0
    for k in read_keys:
        got += len(store.range(Range(k)).kvs)
    res["read_per_s"] = len(read_keys) / (time.perf_counter() - t0)
    assert got == len(read_keys)
    t0 = time.perf_counter()
    for k in read_keys:
        store.get(k)
    res["get_per_s"] = len(read_keys) / (time.perf_counter() - t0)
    rss2 = rss_bytes()
    res["db_bytes"] = store.db_size()
    # Compaction of the first generation: logical at once, then physical in chunks,
    # first piggybacked on a round of writes, then driven by Noops (an idle cluster).
    index += 1
    store.apply_batch([(index, Compact(store.revision))])
    m = min(n, 100_000)  # a third round of writes, on the first m keys
    t_total = 0.0
    for lo in range(0, m, batch):
        items = []
        for i in range(lo, min(lo + batch, m)):
            index += 1
            items.append((index, Put(make_key(i), make_value(i, 2))))
        t0 = time.perf_counter()
        store.apply_batch(items)
        t_total += time.perf_counter() - t0
    res["update_while_compacting_per_s"] = m / t_total
    t0 = time.perf_counter()
    chunk_s = []
    while store.compaction_pending:
        index += 1
        t1 = time.perf_counter()
        store.apply_batch([(index, Noop())])
        chunk_s.append(time.perf_counter() - t1)
    res["compact_noop_s"] = time.perf_counter() - t0
    res["compact_noops"] = len(chunk_s)
    res["compact_noop_ms_max"] = max(chunk_s, default=0.0) * 1000
    with store.env.begin() as txn:
        res["kv_rows_after_compact"] = txn.stat(store._kv)["entries"]
    res["rss_anon_growth_bytes"] = rss1["RssAnon"] - rss0["RssAnon"]
    res["rss_after_load_bytes"] = rss1["VmRSS"]
    res["rss_after_reads_bytes"] = rss2["VmRSS"]
    res["rss_file_after_reads_bytes"] = rss2["RssFile"]
    store.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--dir", default=None, help="where the two databases go (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.keys < 1 or args.batch < 1 or args.reads < 1:
        ap.error("--keys, --reads and --batch must be >= 1")
    base = tempfile.mkdtemp(prefix="geokv-bench-", dir=args.dir)
    try:
        rng = random.Random(args.seed)
        read_keys = [make_key(rng.randrange(args.keys)) for _ in range(args.reads)]
        raw = bench_raw(os.path.join(base, "raw"), args.keys, args.batch, read_keys)
        shutil.rmtree(os.path.join(base, "raw"))
        mvcc = bench_mvcc(os.path.join(base, "mvcc"), args.keys, args.batch, read_keys)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    per_m = 1_000_000 / args.keys
    rows = [
        ("insert puts/s (batch %d)" % args.batch, raw["insert_per_s"], mvcc["insert_per_s"]),
        ("update puts/s (batch %d)" % args.batch, raw["update_per_s"], mvcc["update_per_s"]),
        ("point reads/s (Range)", raw["read_per_s"], mvcc["read_per_s"]),
        ("point reads/s (get)", raw["read_per_s"], mvcc["get_per_s"]),
        ("update puts/s, compacting", raw["update_per_s"], mvcc["update_while_compacting_per_s"]),
        ("db MiB per 1M keys", raw["db_bytes"] * per_m / 2**20, mvcc["db_bytes"] * per_m / 2**20),
    ]
    print(f"keys={args.keys} key={KEY_BYTES}B value={VALUE_BYTES}B reads={args.reads}")
    print(f"{'metric':<30}{'raw LMDB':>14}{'MVCCStore':>14}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<30}{a:>14,.0f}{b:>14,.0f}{b / a:>8.2f}")
    print(f"compaction of {args.keys} superseded versions: the rest after the writes above took "
          f"{mvcc['compact_noop_s']:.2f} s in {mvcc['compact_noops']} Noop chunks "
          f"(longest {mvcc['compact_noop_ms_max']:.1f} ms); {mvcc['kv_rows_after_compact']} kv rows left")
    print(f"RSS after reads: {mvcc['rss_after_reads_bytes'] / 2**20:.0f} MiB, of which "
          f"{mvcc['rss_file_after_reads_bytes'] / 2**20:.0f} MiB mapped LMDB pages (page cache, reclaimable); "
          f"heap growth while loading {mvcc['rss_anon_growth_bytes'] * per_m / 2**20:.1f} MiB per 1M keys "
          f"(no in-memory index)")
    result = {
        "keys": args.keys,
        "batch": args.batch,
        "raw": {k: round(v) for k, v in raw.items()},
        "mvcc": {k: round(v, 3) for k, v in mvcc.items()},
        "put_ratio": round(mvcc["insert_per_s"] / raw["insert_per_s"], 3),
        "read_ratio": round(mvcc["read_per_s"] / raw["read_per_s"], 3),
        "goal_puts_per_s": 50_000,
        "goal_reads_per_s": 100_000,
        "rss_anon_mib_per_million_keys": round(mvcc["rss_anon_growth_bytes"] * per_m / 2**20, 1),
        "rss_mib_per_million_keys": round(mvcc["rss_after_reads_bytes"] * per_m / 2**20, 1),
        "rss_file_mib_per_million_keys": round(mvcc["rss_file_after_reads_bytes"] * per_m / 2**20, 1),
    }
    print("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
