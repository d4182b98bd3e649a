"""Watch hub publish cost vs the store apply it follows, in the same run.

The runtime's driver loop calls ``hub.publish(events, revision)`` right after
``MVCCStore.apply_batch`` for every applied batch, so publish must stay small next to
apply. For several watcher populations (single-key watchers on distinct keys plus
prefix watchers), apply batches of ``--batch`` puts to a real MVCCStore (LMDB) and
time apply and publish separately; consumers drain between batches as a live stream
would.

    python bench/watch_hub.py [--batches 200] [--batch 64]

Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from geokv.kv import types as kvt  # noqa: E402
from geokv.kv.store import MVCCStore  # noqa: E402
from geokv.runtime.watch import WatchHub  # noqa: E402

KEYSPACE = 100_000
POPULATIONS = ((0, 0), (100, 1), (10_000, 10), (50_000, 100))  # (single-key watchers, prefix watchers)


async def run(single: int, ranged: int, batches: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="geokv-bench-watch-") as d:
        store = MVCCStore(d)
        hub = WatchHub(store)
        watchers = [hub.subscribe(b"k%06d" % (i * (KEYSPACE // max(1, single)))) for i in range(single)]
        watchers += [hub.subscribe(b"k%02d" % i, b"k%02d\xff" % i) for i in range(ranged)]
        index = itertools.count(1)
        keys = itertools.cycle(range(KEYSPACE))
        apply_s = publish_s = 0.0
        delivered = 0
        for _ in range(batches):
            items = [(next(index), kvt.Put(b"k%06d" % next(keys), b"v" * 64)) for _ in range(batch)]
            t0 = time.perf_counter()
            events = [e for _, evs in store.apply_batch(items) for e in evs]
            t1 = time.perf_counter()
            hub.publish(events, store.revision)
            t2 = time.perf_counter()
            apply_s += t1 - t0
            publish_s += t2 - t1
            for w in watchers:  # consumers keep up, as live streams do
                while w._queue:
                    got = await w.next_batch(0)
                    delivered += len(got[0]) if got else 0
        for w in watchers:
            w.close()
        store.close()
        return {"single": single, "ranged": ranged, "apply_us": 1e6 * apply_s / batches,
                "publish_us": 1e6 * publish_s / batches, "delivered": delivered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    rows = [asyncio.run(run(s, r, args.batches, args.batch)) for s, r in POPULATIONS]
    print(f"{'single':>8}{'prefix':>8}{'apply us/batch':>16}{'publish us/batch':>18}{'publish/apply':>15}{'events out':>12}")
    for r in rows:
        r["ratio"] = r["publish_us"] / r["apply_us"]
        print(f"{r['single']:>8}{r['ranged']:>8}{r['apply_us']:>16.0f}{r['publish_us']:>18.0f}"
              f"{r['ratio']:>15.3f}{r['delivered']:>12}")
    print("RESULT " + json.dumps({"bench": "watch_hub", "batch": args.batch, "batches": args.batches,
                                  "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                                           for r in rows]}))


if __name__ == "__main__":
    main()
