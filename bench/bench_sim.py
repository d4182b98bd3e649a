"""How fast the deterministic simulator explores: seeds/s, events/s, virtual/wall.

The reference, measured in the same run, is the same seeds with faults off (the
cost of simulating a healthy cluster); the faulty runs are compared against it.

    python bench/bench_sim.py [--seeds 0..49]

Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import time

from geokv.sim.__main__ import parse_seed_range
from geokv.sim.config import SimConfig
from geokv.sim.run import Simulation


def measure(seeds: range, faults: bool) -> dict:
    t0 = time.perf_counter()
    events = virtual_ms = failed = acked = 0
    for seed in seeds:
        res = Simulation(SimConfig.generate(seed, faults=faults)).run()
        events += res.events
        virtual_ms += res.virtual_ms
        acked += res.ops_acked
        failed += not res.ok
    wall = time.perf_counter() - t0
    return {"faults": "on" if faults else "off", "runs": len(seeds), "failed": failed,
            "wall_s": round(wall, 3), "seeds_per_s": round(len(seeds) / wall, 2),
            "events_per_s": round(events / wall), "virtual_per_wall": round(virtual_ms / 1000 / wall, 1),
            "writes_acked": acked}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=parse_seed_range, default=range(0, 50))
    args = ap.parse_args()
    ref = measure(args.seeds, faults=False)
    run = measure(args.seeds, faults=True)
    cols = ["faults", "runs", "failed", "wall_s", "seeds_per_s", "events_per_s",
            "virtual_per_wall", "writes_acked"]
    print(" ".join(f"{c:>16}" for c in cols))
    for row in (ref, run):
        print(" ".join(f"{row[c]!s:>16}" for c in cols))
    ratio = round(run["wall_s"] / ref["wall_s"], 2) if ref["wall_s"] else None
    print("RESULT " + json.dumps({"reference": ref, "faults": run,
                                  "wall_ratio_faults_vs_reference": ratio}))
    return 1 if ref["failed"] or run["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
