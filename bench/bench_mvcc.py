"""Benchmark of geokv.kv.MVCCStore against raw LMDB on the same data.

    python bench/bench_mvcc.py [--keys N] [--reads N] [--batch 100] [--dir DIR]

Loads N keys of 256 bytes with 1 KiB values (puts applied with apply_batch, --batch per
call), overwrites them once (the update path reads the previous version), then does
random point reads at the current revision (after one untimed pass over the same keys,
so both sides read from mapped pages).  Then it compacts the first generation away: a
third round of writes runs while the compaction is pending (each write does its share
of it), and Noops finish the rest.

Last, one DeleteRange removes --delete-keys keys (what ``etcdctl check perf`` ends
with): one revision, one tombstone and one change-log row per key, one event each.
A second one, over the next as many keys, runs in a worker thread while the main thread
sleeps 1 ms in a loop: the gaps between its wake-ups say how responsive an event loop
stays when the apply runs off it.

The reference is raw LMDB with the same settings (sync off, the store's writemap
setting, one write txn per batch, one read txn per get) on the same keys and values;
its delete removes the same keys in one write txn.  Reference and MVCC work alternate
batch by batch (reads: chunk by chunk), so both see the same load on a shared machine.
Every figure is given twice: per wall-clock second, and per CPU second of this process
(``time.process_time``, user + system), which the other work on a shared machine
disturbs much less; the load average is printed beside them.  Prints a table and a
final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

import lmdb

from geokv.kv import store as kv_store
from geokv.kv.store import MVCCStore
from geokv.kv.types import Compact, DeleteRange, Noop, Put, Range

KEY_BYTES = 256
VALUE_BYTES = 1024
READ_CHUNK = 1000  # reads timed per side before switching to the other
GOAL_PUTS_PER_S = 50_000
GOAL_READS_PER_S = 100_000


class Clock:
    """Accumulated wall-clock and CPU seconds of the timed sections."""

    def __init__(self) -> None:
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def __enter__(self) -> Clock:
        self._w0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s += time.perf_counter() - self._w0
        self.cpu_s += time.process_time() - self._c0

    def rates(self, n: int) -> tuple[float, float]:
        """(ops per wall second, ops per CPU second)."""
        return n / self.wall_s, n / max(self.cpu_s, 1e-9)


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
        self.env = lmdb.open(path, map_size=64 << 30, sync=False, metasync=False, readahead=False, max_dbs=2,
                             writemap=kv_store.LMDB_WRITEMAP)
        self.db = self.env.open_db(b"raw")

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True, db=self.db) as txn:
            for k, v in pairs:
                txn.put(k, v)

    def get(self, k: bytes) -> bytes | None:
        with self.env.begin(db=self.db) as txn:
            return txn.get(k)

    def delete_range(self, lo: bytes, hi: bytes) -> int:
        """Delete every key in [lo, hi) in one write txn; returns how many."""
        n = 0
        with self.env.begin(write=True, db=self.db) as txn:
            cur = txn.cursor()
            ok = cur.set_range(lo)
            while ok and cur.key() < hi:
                ok = cur.delete()
                n += 1
        return n

    def db_bytes(self) -> int:
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]


def write_phase(raw: Raw, store: MVCCStore, n: int, batch: int, gen: int, index: int):
    """Put keys 0..n-1 (generation gen) on both sides; returns (raw clock, mvcc clock, index)."""
    c_raw, c_mvcc = Clock(), Clock()
    for lo in range(0, n, batch):
        pairs = [(make_key(i), make_value(i, gen)) for i in range(lo, min(lo + batch, n))]
        items = []
        for k, v in pairs:
            index += 1
            items.append((index, Put(k, v)))
        with c_raw:
            raw.put_batch(pairs)
        with c_mvcc:
            store.apply_batch(items)
    return c_raw, c_mvcc, index


def run(base: str, n: int, batch: int, read_keys: list[bytes], delete_keys: int) -> tuple[dict, dict]:
    raw = Raw(os.path.join(base, "raw"))
    store = MVCCStore(os.path.join(base, "mvcc"), quota_bytes=16 << 30)
    r: dict = {}
    m: dict = {}
    index = 0
    rss0 = rss_bytes()
    for phase, gen in (("insert", 0), ("update", 1)):
        c_raw, c_mvcc, index = write_phase(raw, store, n, batch, gen, index)
        r[f"{phase}_per_s"], r[f"{phase}_per_cpu_s"] = c_raw.rates(n)
        m[f"{phase}_per_s"], m[f"{phase}_per_cpu_s"] = c_mvcc.rates(n)
    rss1 = rss_bytes()
    assert store.revision == 2 * n + 1
    for k in read_keys:  # warm the page mappings, as on a server that has been up a while
        raw.get(k)
        store.get(k)
    c_raw, c_range, c_get = Clock(), Clock(), Clock()
    got = 0
    for lo in range(0, len(read_keys), READ_CHUNK):
        chunk = read_keys[lo : lo + READ_CHUNK]
        with c_raw:
            for k in chunk:
                raw.get(k)
        with c_range:
            for k in chunk:
                got += len(store.range(Range(k)).kvs)
        with c_get:
            for k in chunk:
                store.get(k)
    assert got == len(read_keys)
    r["read_per_s"], r["read_per_cpu_s"] = c_raw.rates(len(read_keys))
    m["read_per_s"], m["read_per_cpu_s"] = c_range.rates(len(read_keys))
    m["get_per_s"], m["get_per_cpu_s"] = c_get.rates(len(read_keys))
    rss2 = rss_bytes()
    r["db_bytes"] = raw.db_bytes()
    m["db_bytes"] = store.db_size()
    # Compact the first generation away: logical at once, physical in chunks, first as
    # the share of a third round of writes (on the first w keys), then with Noops.
    index += 1
    store.apply_batch([(index, Compact(store.revision))])
    w = min(n, 100_000)
    c_raw, c_mvcc, index = write_phase(raw, store, w, batch, 2, index)
    r["update2_per_s"], r["update2_per_cpu_s"] = c_raw.rates(w)
    m["update_while_compacting_per_s"], m["update_while_compacting_per_cpu_s"] = c_mvcc.rates(w)
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
    # One DeleteRange over the first d keys (as etcdctl check perf ends), against raw
    # LMDB deleting the same keys in one write txn.
    d = min(n, delete_keys)
    lo, hi = make_key(0), make_key(d)
    c_raw, c_mvcc = Clock(), Clock()
    with c_raw:
        assert raw.delete_range(lo, hi) == d
    index += 1
    with c_mvcc:
        [(res, events)] = store.apply_batch([(index, DeleteRange(lo, hi, prev_kv=True))])
    assert res.deleted == d and len(events) == d and len(res.prev_kvs) == d
    del res, events
    r["delete_keys"] = m["delete_keys"] = d
    r["delete_per_s"], r["delete_per_cpu_s"] = c_raw.rates(d)
    m["delete_per_s"], m["delete_per_cpu_s"] = c_mvcc.rates(d)
    m["delete_apply_s"] = c_mvcc.wall_s
    m["delete_apply_cpu_s"] = c_mvcc.cpu_s
    if n >= 2 * d:
        index += 1
        gaps = delete_in_thread(store, index, make_key(d), make_key(2 * d))
        m["thread_delete_gap_ms_p50"] = gaps[len(gaps) // 2] * 1000
        m["thread_delete_gap_ms_p99"] = gaps[int(len(gaps) * 0.99)] * 1000
        m["thread_delete_gap_ms_max"] = gaps[-1] * 1000
    m["rss_anon_growth_bytes"] = rss1["RssAnon"] - rss0["RssAnon"]
    m["rss_after_reads_bytes"] = rss2["VmRSS"]
    m["rss_file_after_reads_bytes"] = rss2["RssFile"]
    store.close()
    raw.env.close()
    return r, m


def delete_in_thread(store: MVCCStore, index: int, lo: bytes, hi: bytes) -> list[float]:
    """Apply DeleteRange(lo, hi) in a worker thread; the sorted gaps (s) between the
    wake-ups of this thread, which sleeps 1 ms in a loop meanwhile."""
    done = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            store.apply_batch([(index, DeleteRange(lo, hi, prev_kv=True))])
        except BaseException as exc:  # reported below, in the main thread
            failure.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=work)
    gaps: list[float] = []
    last = time.perf_counter()
    worker.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    if failure:
        raise failure[0]
    return sorted(gaps) or [0.0]


def loadavg() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--delete-keys", type=int, default=100_000, help="keys one DeleteRange removes")
    ap.add_argument("--dir", default=None, help="where the two databases go (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.keys < 1 or args.batch < 1 or args.reads < 1 or args.delete_keys < 1:
        ap.error("--keys, --reads, --batch and --delete-keys must be >= 1")
    load_start = loadavg()
    base = tempfile.mkdtemp(prefix="geokv-bench-", dir=args.dir)
    try:
        rng = random.Random(args.seed)
        read_keys = [make_key(rng.randrange(args.keys)) for _ in range(args.reads)]
        raw, mvcc = run(base, args.keys, args.batch, read_keys, args.delete_keys)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load_end = loadavg()
    per_m = 1_000_000 / args.keys
    rows = [
        ("insert puts/s (batch %d)" % args.batch, "insert_per", "insert_per"),
        ("update puts/s (batch %d)" % args.batch, "update_per", "update_per"),
        ("update puts/s, compacting", "update2_per", "update_while_compacting_per"),
        ("point reads/s (Range)", "read_per", "read_per"),
        ("point reads/s (get)", "read_per", "get_per"),
        ("DeleteRange keys/s (%d keys)" % raw["delete_keys"], "delete_per", "delete_per"),
    ]
    print(f"keys={args.keys} key={KEY_BYTES}B value={VALUE_BYTES}B reads={args.reads} batch={args.batch} "
          f"writemap={kv_store.LMDB_WRITEMAP} load average {load_start:.1f} -> {load_end:.1f}")
    print(f"{'':<32}{'per wall-clock second':^36}{'per CPU second':^36}")
    print(f"{'metric':<32}" + f"{'raw LMDB':>14}{'MVCCStore':>14}{'ratio':>8}" * 2)
    for name, rk, mk in rows:
        line = f"{name:<32}"
        for unit in ("_s", "_cpu_s"):
            a, b = raw[rk + unit], mvcc[mk + unit]
            line += f"{a:>14,.0f}{b:>14,.0f}{b / a:>8.2f}"
        print(line)
    print(f"{'db MiB per 1M keys':<32}{raw['db_bytes'] * per_m / 2**20:>14,.0f}"
          f"{mvcc['db_bytes'] * per_m / 2**20:>14,.0f}{mvcc['db_bytes'] / raw['db_bytes']:>8.2f}")
    print(f"one DeleteRange of {mvcc['delete_keys']} keys (prev_kv, {mvcc['delete_keys']} events): "
          f"{mvcc['delete_apply_s'] * 1000:.0f} ms wall, {mvcc['delete_apply_cpu_s'] * 1000:.0f} ms CPU in one apply "
          f"({mvcc['delete_apply_cpu_s'] / mvcc['delete_keys'] * 1e6:.1f} us CPU per key)")
    if "thread_delete_gap_ms_max" in mvcc:
        print(f"the same DeleteRange on the next {mvcc['delete_keys']} keys in a worker thread: the main thread, "
              f"sleeping 1 ms in a loop, woke with gaps of {mvcc['thread_delete_gap_ms_p50']:.1f} ms p50, "
              f"{mvcc['thread_delete_gap_ms_p99']:.1f} ms p99, {mvcc['thread_delete_gap_ms_max']:.1f} ms max")
    print(f"compaction of {args.keys} superseded versions: the rest after the writes above took "
          f"{mvcc['compact_noop_s']:.2f} s in {mvcc['compact_noops']} Noop chunks "
          f"(longest {mvcc['compact_noop_ms_max']:.1f} ms); {mvcc['kv_rows_after_compact']} kv rows left")
    print(f"RSS after reads: {mvcc['rss_after_reads_bytes'] / 2**20:.0f} MiB, of which "
          f"{mvcc['rss_file_after_reads_bytes'] / 2**20:.0f} MiB are mapped LMDB pages of both databases "
          f"(page cache, reclaimable); heap growth while loading "
          f"{mvcc['rss_anon_growth_bytes'] * per_m / 2**20:.1f} MiB per 1M keys (no in-memory index)")

    def met(unit: str) -> dict:
        return {
            "insert": mvcc["insert_per" + unit] >= GOAL_PUTS_PER_S,
            "update": mvcc["update_per" + unit] >= GOAL_PUTS_PER_S,
            "read": mvcc["read_per" + unit] >= GOAL_READS_PER_S,
        }

    result = {
        "keys": args.keys,
        "batch": args.batch,
        "writemap": kv_store.LMDB_WRITEMAP,
        "loadavg": [round(load_start, 2), round(load_end, 2)],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "raw": {k: round(v) for k, v in raw.items()},
        "mvcc": {k: round(v, 3) for k, v in mvcc.items()},
        "put_ratio": round(mvcc["insert_per_s"] / raw["insert_per_s"], 3),
        "update_ratio": round(mvcc["update_per_s"] / raw["update_per_s"], 3),
        "read_ratio": round(mvcc["read_per_s"] / raw["read_per_s"], 3),
        "delete_ratio": round(mvcc["delete_per_s"] / raw["delete_per_s"], 3),
        "delete_us_cpu_per_key": round(mvcc["delete_apply_cpu_s"] / mvcc["delete_keys"] * 1e6, 2),
        "goal_puts_per_s": GOAL_PUTS_PER_S,
        "goal_reads_per_s": GOAL_READS_PER_S,
        "goal_met": met("_s"),
        "goal_met_per_cpu_s": met("_cpu_s"),
        "rss_anon_mib_per_million_keys": round(mvcc["rss_anon_growth_bytes"] * per_m / 2**20, 1),
        "rss_mib_per_million_keys": round(mvcc["rss_after_reads_bytes"] * per_m / 2**20, 1),
    }
    print("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
