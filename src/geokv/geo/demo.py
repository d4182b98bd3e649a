"""``geokv demo``: a three-continent geokv cluster on one machine, measured against physics.

Starts real server processes (one voter per region, default us-east, eu-west, ap-south;
optional learners) with WAN emulation, puts the leader in the preferred region, runs a
mixed workload from a client in every region (each client next to its region's member),
and prints per-region p50/p99 for puts and every read mode beside the physical floors.
Then it kills the leader's region, shows how long each surviving region waited until its
writes succeeded again and who took over, restarts the region and shows leadership
returning to it. Everything it started is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from typing import Sequence

from .placement import COOLDOWN_S_DEFAULT, RETURN_DELAY_S_DEFAULT, PlacementError, parse_leader_preference
from .topology import MemberPlacement, Topology
from .wan import RttError, build_rtt_table
from .workload import (
    READ_MODES_GEOKV,
    RegionEndpoint,
    leader_region,
    measure_write_recovery,
    op_name,
    run_mixed_workload,
    wait_leader,
)

DEFAULT_REGIONS = "us-east,eu-west,ap-south"
STARTUP_TIMEOUT_S = 60.0
PLACEMENT_TIMEOUT_S = 60.0
RETURN_TIMEOUT_S = RETURN_DELAY_S_DEFAULT + COOLDOWN_S_DEFAULT + 30.0
MAX_ROUNDS = 1000
MAX_REGIONS = 7


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Progress:
    """A one-line progress display for the workload (rounds done per region)."""

    def __init__(self, regions: Sequence[str], total: int) -> None:
        self.done = {r: 0 for r in regions}
        self.total = total
        self.lock = threading.Lock()
        self.last_print = 0.0

    def __call__(self, region: str, n: int) -> None:
        with self.lock:
            self.done[region] = n
            now = time.monotonic()
            tty = sys.stdout.isatty()
            # A terminal gets a line redrawn twice a second; a log gets a line every 5 s.
            if now - self.last_print < (0.5 if tty else 5.0) and sum(self.done.values()) < self.total * len(self.done):
                return
            self.last_print = now
            line = "  ".join(f"{r} {d}/{self.total}" for r, d in self.done.items())
            print(f"\r    {line}" if tty else f"    {line}", end="" if tty else "\n", flush=True)


def _fmt(v: float | None) -> str:
    return "     -" if v is None else f"{v:6.1f}"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="geokv demo", description=__doc__.split("\n")[0])
    ap.add_argument("--regions", default=DEFAULT_REGIONS, help="one voter per region (default %(default)s)")
    ap.add_argument("--learners", default="", help="regions that get an extra non-voting learner")
    ap.add_argument("--leader-preference", default="", help="preferred leader regions (default: the first region)")
    ap.add_argument("--rtt", default="", help="RTT overrides, e.g. eu-west:ap-south=120ms, or @file")
    ap.add_argument("--rounds", type=int, default=20, help="workload rounds per region (default %(default)s)")
    ap.add_argument("--no-failover", action="store_true", help="skip the failover part")
    ap.add_argument("--base-dir", default=None, help="keep data and logs here (default: a temp dir, removed)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        regions = [r.strip() for r in args.regions.split(",") if r.strip()]
        learners = [r.strip() for r in args.learners.split(",") if r.strip()]
        table = build_rtt_table(args.rtt or None)
        for r in regions + learners:
            if not table.has_region(r):
                table.rtt_ms(r, regions[0])   # raises the user-facing "unknown region" error
        preference = parse_leader_preference(args.leader_preference) or regions[:1]
        if not regions or len(regions) > MAX_REGIONS or len(set(regions)) != len(regions):
            raise PlacementError(f"--regions needs 1..{MAX_REGIONS} distinct regions")
        if preference[0] not in regions:
            raise PlacementError(f"preferred region {preference[0]} has no voter (--regions {args.regions})")
        if not 1 <= args.rounds <= MAX_ROUNDS:
            raise PlacementError(f"--rounds must be in 1..{MAX_ROUNDS}")
    except (RttError, PlacementError) as e:
        print(f"geokv demo: error: {e}", file=sys.stderr)
        return 2

    # A SIGTERM must run the same clean-up as Ctrl-C.
    def on_term(signum, frame):  # pragma: no cover - signal path
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    stop_workload = threading.Event()
    cluster = None
    tmp = None
    try:
        from .cluster import plan_for, start_geo_cluster

        base_dir = args.base_dir
        if base_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="geokv-demo-")
            base_dir = tmp.name
        plan = plan_for(regions, args.rtt or None)
        members = [MemberPlacement(i + 1, r) for i, r in enumerate(regions)]
        members += [MemberPlacement(len(regions) + j + 1, r, voter=False) for j, r in enumerate(learners)]
        topo = Topology(members, table)
        preferred = preference[0]
        leader_idx = regions.index(preferred)

        say("geokv demo: a geo-distributed cluster on one machine, WAN emulated between regions")
        say(f"  voters: {', '.join(regions)}" + (f"; learners: {', '.join(learners)}" if learners else ""))
        say("  RTTs: " + ", ".join(f"{a}/{b} {table.rtt_ms(a, b):.0f} ms"
                                  for i, a in enumerate(regions + learners) for b in (regions + learners)[i + 1:]))
        say(f"  timeouts derived from the RTTs and applied at runtime: heartbeat {plan.heartbeat_interval_ms:.0f} ms, "
            f"election {plan.election_timeout_ms:.0f} ms")
        say(f"  leader preference: {', '.join(preference)}")
        say()
        say(f"[1/4] starting {len(regions) + len(learners)} server processes ...")
        t0 = time.monotonic()
        cluster = start_geo_cluster(regions, base_dir=base_dir, leader_preference=preference,
                                    rtt=args.rtt or None)
        cluster.wait_ready(STARTUP_TIMEOUT_S)
        for r in learners:
            cluster.add_member(region=r, learner=True)
        all_regions = regions + learners
        eps = [RegionEndpoint(r, e.replace("http://", "")) for r, e in zip(all_regions, cluster.endpoints)]
        voter_eps = eps[: len(regions)]
        st = wait_leader(voter_eps, STARTUP_TIMEOUT_S, require_all=True)
        say(f"    cluster up in {time.monotonic() - t0:.1f}s; first leader elected in {leader_region(st)}")
        if leader_region(st) != preferred:
            say(f"    waiting for leader placement to move the leader to {preferred} ...")
            st = wait_leader(voter_eps, PLACEMENT_TIMEOUT_S, region=preferred)
        say(f"    leader in {preferred} after {time.monotonic() - t0:.1f}s")
        if learners:
            wait_leader(eps, STARTUP_TIMEOUT_S, region=preferred)   # learners serving too
        say()

        say(f"[2/4] mixed workload: {args.rounds} rounds per region, each a put and a get in every read mode")
        prog = Progress(all_regions, args.rounds)
        run_mixed_workload(eps, 2, READ_MODES_GEOKV)    # warm-up: connections, leases
        results = run_mixed_workload(eps, args.rounds, READ_MODES_GEOKV, progress=prog, stop=stop_workload)
        if sys.stdout.isatty():
            say()
        say()
        leader_pos = leader_idx + 1
        say(f"  {'region':12s} {'op':18s} {'p50 ms':>7s} {'p99 ms':>7s} {'floor ms':>9s}   floor = physics with the leader in {preferred}")
        for r in all_regions:
            floors = {
                "put": topo.single_leader_put_floor_ms(r, leader_pos),
                # Linearizable reads take the leader's lease (--linearizable-read lease,
                # the default the demo's members run with): one trip to the leader at most.
                "get_linearizable": topo.read_floor_ms(r, leader_pos, "lease"),
                "get_lease": topo.read_floor_ms(r, leader_pos, "lease"),
                "get_serializable": 0.0,
                "get_bounded": 0.0,
            }
            s = results[r]
            for op in ["put"] + [op_name(m) for m in READ_MODES_GEOKV]:
                errs = s.errors.get(op, 0)
                extra = f"   ({errs} errors)" if errs else ""
                say(f"  {r:12s} {op:18s} {_fmt(s.p(op, 50))} {_fmt(s.p(op, 99))} {floors[op]:9.1f}{extra}")
        say()
        for r in all_regions:
            say(f"  leaderless floor from {r}: {topo.leaderless_floor_ms(r):.0f} ms (RTT to its nearest majority)")
        say()

        if args.no_failover:
            say("[3/4] failover skipped (--no-failover)")
            return 0
        say(f"[3/4] failover: killing the leader's region ({preferred}) with SIGKILL")
        survivors = [e for e in eps if e.region != preferred]
        t_kill = time.perf_counter()
        cluster.kill(leader_idx, signal.SIGKILL)
        recovery = measure_write_recovery(survivors, t_kill)
        for r, v in recovery.items():
            say(f"    {r:12s} writes succeed again after " + (f"{v * 1000:.0f} ms" if v is not None else "never (gave up)"))
        st2 = wait_leader([e for e in voter_eps if e.region != preferred], STARTUP_TIMEOUT_S)
        say(f"    new leader: {leader_region(st2)}")
        say()

        say(f"[4/4] restarting {preferred}; the leader should return once it is healthy and caught up")
        t_restart = time.monotonic()
        cluster.restart(leader_idx)
        try:
            wait_leader(voter_eps, RETURN_TIMEOUT_S, region=preferred)
            say(f"    leader back in {preferred} {time.monotonic() - t_restart:.1f}s after the restart "
                f"(return delay {RETURN_DELAY_S_DEFAULT:.0f}s, cool-down {COOLDOWN_S_DEFAULT:.0f}s after a leader change)")
        except TimeoutError:
            say(f"    leader did NOT return to {preferred} within {RETURN_TIMEOUT_S:.0f}s")
            return 1
        say()
        say("done; stopping the cluster")
        return 0
    except KeyboardInterrupt:
        stop_workload.set()
        say("\ninterrupted; stopping the cluster")
        return 130
    except TimeoutError as e:
        print(f"geokv demo: error: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
        if tmp is not None:
            tmp.cleanup()
        signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
