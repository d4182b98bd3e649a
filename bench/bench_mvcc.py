"""Benchmark of geokv.kv.MVCCStore against raw LMDB on the same data.

    python bench/bench_mvcc.py [--keys N] [--reads N] [--batch 100] [--dir DIR]

Loads N keys of 256 bytes with 1 KiB values (puts applied with apply_batch, --batch per
call), overwrites them once (the update path reads the previous version), then does
random point reads at the current revision (after one untimed pass over the same keys,
so both sides read from mapped pages).  Then it compacts the first generation away: a
third round of writes runs while the compaction is pending (each write does its share
of it), and Noops finish the rest.

The reference is raw LMDB with the same settings (sync off, one write txn per batch,
one read txn per get) on the same keys and values.  Reference and MVCC work alternate
batch by batch (reads: chunk by chunk), so both see the same load on a shared machine.
Prints a table and a final ``RESULT {json}`` line.
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
READ_CHUNK = 1000  # reads timed per side before switching to the other


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


class Raw:
    def __init__(self, path: str) -> None:
        self.env = lmdb.open(path, map_size=64 << 30, sync=False, metasync=False, readahead=False, max_dbs=2)
        self.db = self.env.open_db(b"raw")

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True, db=self.db) as txn:
            for k, v in pairs:
                txn.put(k, v)

    def get(self, k: bytes) -> bytes | None:
        with self.env.begin(db=self.db) as txn:
            return txn.get(k)

    def db_bytes(self) -> int:
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]


def write_phase(raw: Raw | None, store: MVCCStore, n: int, batch: int, gen: int, index: int):
    """Put keys 0..n-1 (generation gen) on both sides; returns (raw s, mvcc s, index)."""
    t_raw = t_mvcc = 0.0
    for lo in range(0, n, batch):
        pairs = [(make_key(i), make_value(i, gen)) for i in range(lo, min(lo + batch, n))]
        items = []
        for k, v in pairs:
            index += 1
            items.append((index, Put(k, v)))
        if raw is not None:
            t0 = time.perf_counter()
            raw.put_batch(pairs)
            t_raw += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.apply_batch(items)
        t_mvcc += time.perf_counter() - t0
    return t_raw, t_mvcc, index


def run(base: str, n: int, batch: int, read_keys: list[bytes]) -> tuple[dict, dict]:
    raw = Raw(os.path.join(base, "raw"))
    store = MVCCStore(os.path.join(base, "mvcc"), quota_bytes=16 << 30)
    r: dict = {}
    m: dict = {}
    index = 0
    rss0 = rss_bytes()
    for phase, gen in (("insert", 0), ("update", 1)):
        t_raw, t_mvcc, index = write_phase(raw, store, n, batch, gen, index)
        r[f"{phase}_per_s"] = n / t_raw
        m[f"{phase}_per_s"] = n / t_mvcc
    rss1 = rss_bytes()
    assert store.revision == 2 * n + 1
    for k in read_keys:  # warm the page mappings, as on a server that has been up a while
        raw.get(k)
        store.get(k)
    t_raw = t_range = t_get = 0.0
    got = 0
    for lo in range(0, len(read_keys), READ_CHUNK):
        chunk = read_keys[lo : lo + READ_CHUNK]
        t0 = time.perf_counter()
        for k in chunk:
            raw.get(k)
        t1 = time.perf_counter()
        for k in chunk:
            got += len(store.range(Range(k)).kvs)
        t2 = time.perf_counter()
        for k in chunk:
            store.get(k)
        t3 = time.perf_counter()
        t_raw, t_range, t_get = t_raw + t1 - t0, t_range + t2 - t1, t_get + t3 - t2
    assert got == len(read_keys)
    r["read_per_s"] = len(read_keys) / t_raw
    m["read_per_s"] = len(read_keys) / t_range
    m["get_per_s"] = len(read_keys) / t_get
    rss2 = rss_bytes()
    r["db_bytes"] = raw.db_bytes()
    m["db_bytes"] = store.db_size()
    # Compact the first generation away: logical at once, physical in chunks, first as
    # the share of a third round of writes (on the first w keys), then with Noops.
    index += 1
    store.apply_batch([(index, Compact(store.revision))])
    w = min(n, 100_000)
    t_raw, t_mvcc, index = write_phase(raw, store, w, batch, 2, index)
    r["update2_per_s"] = w / t_raw
    m["update_while_compacting_per_s"] = w / t_mvcc
    t0 = time.perf_counter()
    chunk_s = []
    while store.compaction_pending:
        index += 1
        t1 = time.perf_counter()
        store.apply_batch([(index, Noop())])
        chunk_s.append(time.perf_counter() - t1)
    m["compact_noop_s"] = time.perf_counter() - t0
    m["compact_noops"] = len(chunk_s)
    m["compact_noop_ms_max"] = max(chunk_s, default=0.0) * 1000
    with store.env.begin() as txn:
        m["kv_rows_after_compact"] = txn.stat(store._kv)["entries"]
    m["rss_anon_growth_bytes"] = rss1["RssAnon"] - rss0["RssAnon"]
    m["rss_after_reads_bytes"] = rss2["VmRSS"]
    m["rss_file_after_reads_bytes"] = rss2["RssFile"]
    store.close()
    raw.env.close()
    return r, m


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
        raw, mvcc = run(base, args.keys, args.batch, read_keys)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    per_m = 1_000_000 / args.keys
    rows = [
        ("insert puts/s (batch %d)" % args.batch, raw["insert_per_s"], mvcc["insert_per_s"]),
        ("update puts/s (batch %d)" % args.batch, raw["update_per_s"], mvcc["update_per_s"]),
        ("update puts/s, compacting", raw["update2_per_s"], mvcc["update_while_compacting_per_s"]),
        ("point reads/s (Range)", raw["read_per_s"], mvcc["read_per_s"]),
        ("point reads/s (get)", raw["read_per_s"], mvcc["get_per_s"]),
        ("db MiB per 1M keys", raw["db_bytes"] * per_m / 2**20, mvcc["db_bytes"] * per_m / 2**20),
    ]
    print(f"keys={args.keys} key={KEY_BYTES}B value={VALUE_BYTES}B reads={args.reads} batch={args.batch}")
    print(f"{'metric':<30}{'raw LMDB':>14}{'MVCCStore':>14}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<30}{a:>14,.0f}{b:>14,.0f}{b / a:>8.2f}")
    print(f"compaction of {args.keys} superseded versions: the rest after the writes above took "
          f"{mvcc['compact_noop_s']:.2f} s in {mvcc['compact_noops']} Noop chunks "
          f"(longest {mvcc['compact_noop_ms_max']:.1f} ms); {mvcc['kv_rows_after_compact']} kv rows left")
    print(f"RSS after reads: {mvcc['rss_after_reads_bytes'] / 2**20:.0f} MiB, of which "
          f"{mvcc['rss_file_after_reads_bytes'] / 2**20:.0f} MiB are mapped LMDB pages of both databases "
          f"(page cache, reclaimable); heap growth while loading "
          f"{mvcc['rss_anon_growth_bytes'] * per_m / 2**20:.1f} MiB per 1M keys (no in-memory index)")
    result = {
        "keys": args.keys,
        "batch": args.batch,
        "raw": {k: round(v) for k, v in raw.items()},
        "mvcc": {k: round(v, 3) for k, v in mvcc.items()},
        "put_ratio": round(mvcc["insert_per_s"] / raw["insert_per_s"], 3),
        "update_ratio": round(mvcc["update_per_s"] / raw["update_per_s"], 3),
        "read_ratio": round(mvcc["read_per_s"] / raw["read_per_s"], 3),
        "goal_puts_per_s": 50_000,
        "goal_reads_per_s": 100_000,
        "goal_met": {
            "insert": mvcc["insert_per_s"] >= 50_000,
            "update": mvcc["update_per_s"] >= 50_000,
            "read": mvcc["read_per_s"] >= 100_000,
        },
        "rss_anon_mib_per_million_keys": round(mvcc["rss_anon_growth_bytes"] * per_m / 2**20, 1),
        "rss_mib_per_million_keys": round(mvcc["rss_after_reads_bytes"] * per_m / 2**20, 1),
    }
    print("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
