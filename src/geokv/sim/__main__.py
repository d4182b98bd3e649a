"""``python -m geokv.sim``: replay one seed, or run a swarm of seeds.

  python -m geokv.sim --seed 42            one run: config, fault schedule, outcome
  python -m geokv.sim --seeds 0..999       a swarm: failing seeds and a summary
  python -m geokv.sim --seeds 0..99 --faults off

Exit status: 0 if every run passed, 1 if any failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .config import RunResult, SimConfig
from .run import Simulation

#: Trace lines printed with a failure.
TRACE_TAIL_LINES = 60


def parse_seed_range(text: str) -> range:
    """'A..B' (inclusive) or a single number."""
    try:
        if ".." in text:
            a, b = text.split("..", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B or N, got {text!r}") from None
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"empty or negative seed range {text!r}")
    return range(lo, hi + 1)


def parse_seed(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"seed must be >= 0, got {n}")
    return n


def parse_faults(text: str) -> bool:
    if text in ("on", "off"):
        return text == "on"
    raise argparse.ArgumentTypeError(f"--faults takes 'on' or 'off', not {text!r}")


def run_one(seed: int, faults: bool) -> RunResult:
    return Simulation(SimConfig.generate(seed, faults=faults)).run()


def print_single(res: RunResult, *, verbose: bool) -> None:
    cfg = res.config
    print(f"seed {res.seed}: voters={cfg['n_voters']} regions={','.join(cfg['regions'])} "
          f"drift={cfg['drift_max']} loss={cfg['loss_rate']} dup={cfg['dup_rate']} "
          f"reorder={cfg['reorder_rate']} read_mode={cfg['read_mode']} "
          f"pre_vote={cfg['pre_vote']} check_quorum={cfg['check_quorum']} "
          f"snapshot_interval={cfg['snapshot_interval']}")
    print(f"fault kinds: {', '.join(cfg['fault_kinds']) or 'none'}")
    print(f"fault schedule ({len(res.fault_log)} actions):")
    for line in res.fault_log:
        print(f"  {line}")
    if verbose:
        print("trace:")
        for line in res.trace_tail:
            print(f"  {line}")
    live = "-" if res.liveness_ms is None else f"{res.liveness_ms:.0f}ms"
    print(f"virtual {res.virtual_ms:.0f}ms, {res.events} events, wall {res.wall_s:.3f}s; "
          f"writes acked {res.ops_acked}, unknown {res.ops_unknown}, reads {res.reads_done}; "
          f"leaders {res.leaders}, crashes {res.crashes}; liveness after heal {live}")
    print(f"network: {json.dumps(res.net)}")
    if res.ok:
        print(f"seed {res.seed}: PASS")
    else:
        print(f"seed {res.seed}: FAIL [{res.failure_kind}] {res.failure}")
        if not verbose:
            print(f"trace tail (last {TRACE_TAIL_LINES} lines):")
            for line in res.trace_tail[-TRACE_TAIL_LINES:]:
                print(f"  {line}")


def _pct(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def recovery_summary(liveness: list[tuple[float, int]]) -> dict:
    """p50/p90/p99/max of the time from healing to the first committed write, the seed
    of the slowest run, and how many runs took more than half the liveness bound."""
    if not liveness:
        return {"liveness_ms_p50": None, "liveness_ms_p90": None, "liveness_ms_p99": None,
                "liveness_ms_max_seed": None, "liveness_over_half_bound": 0}
    vals = sorted(v for v, _ in liveness)
    worst_ms, worst_seed = max(liveness)
    half = SimConfig(seed=0).liveness_ms_max / 2
    return {
        "liveness_ms_p50": round(_pct(vals, 0.50), 1),
        "liveness_ms_p90": round(_pct(vals, 0.90), 1),
        "liveness_ms_p99": round(_pct(vals, 0.99), 1),
        "liveness_ms_max_seed": worst_seed,
        "liveness_over_half_bound": sum(1 for v in vals if v > half),
    }


def run_swarm(seeds: range, faults: bool, *, quiet: bool) -> int:
    t0 = time.perf_counter()
    failures: list[RunResult] = []
    walls: list[float] = []
    liveness: list[tuple[float, int]] = []
    for seed in seeds:
        res = run_one(seed, faults)
        walls.append(res.wall_s)
        if res.liveness_ms is not None:
            liveness.append((res.liveness_ms, seed))
        if not res.ok:
            failures.append(res)
            print(f"FAIL seed {seed} [{res.failure_kind}] {res.failure}", flush=True)
        elif not quiet:
            print(f"ok   seed {seed} ({res.wall_s:.2f}s, {res.events} events, "
                  f"{res.ops_acked} acked)", flush=True)
    elapsed = time.perf_counter() - t0
    walls.sort()
    n = len(walls)
    summary = {
        "seeds": f"{seeds.start}..{seeds.stop - 1}",
        "faults": "on" if faults else "off",
        "runs": n,
        "failed": len(failures),
        "failing_seeds": [r.seed for r in failures],
        "wall_s_total": round(elapsed, 2),
        "wall_s_per_seed_mean": round(sum(walls) / n, 4),
        "wall_s_per_seed_p50": round(walls[n // 2], 4),
        "wall_s_per_seed_max": round(walls[-1], 4),
        "liveness_ms_max": round(max(liveness)[0], 1) if liveness else None,
        **recovery_summary(liveness),
    }
    print(f"summary: {n} runs, {len(failures)} failed, {elapsed:.1f}s wall "
          f"(mean {summary['wall_s_per_seed_mean']:.3f}s, max "
          f"{summary['wall_s_per_seed_max']:.3f}s per seed)")
    if liveness:
        print(f"recovery after heal (ms): p50 {summary['liveness_ms_p50']:.0f}, p90 "
              f"{summary['liveness_ms_p90']:.0f}, p99 {summary['liveness_ms_p99']:.0f}, max "
              f"{summary['liveness_ms_max']:.0f} (seed {summary['liveness_ms_max_seed']}); "
              f"{summary['liveness_over_half_bound']} runs over half the bound")
    if failures:
        print("failing seeds: " + " ".join(str(r.seed) for r in failures))
    print("RESULT " + json.dumps(summary))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m geokv.sim",
                                 description="deterministic simulation of a geokv Raft cluster")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=parse_seed, help="replay one run")
    group.add_argument("--seeds", type=parse_seed_range, help="run a swarm, e.g. 0..999")
    ap.add_argument("--faults", type=parse_faults, default=True, metavar="on|off",
                    help="inject faults (default on)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="with --seed: print the whole kept trace")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="with --seeds: print only failures and the summary")
    args = ap.parse_args(argv)
    if args.seed is not None:
        res = run_one(args.seed, args.faults)
        print_single(res, verbose=args.verbose)
        return 0 if res.ok else 1
    return run_swarm(args.seeds, args.faults, quiet=args.quiet)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        sys.stderr.close()
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
