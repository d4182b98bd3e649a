"""Geo benchmark: per-region latency and failover, geokv against etcd 3.4, same emulated WAN.

Both systems run three members in three emulated regions (default us-east, eu-west,
ap-south; RTTs from geokv.geo.wan's table: 75 / 190 / 120 ms) on loopback:

* etcd 3.4 (/usr/bin/etcd): every member's peer port sits behind a WanProxy (a separate
  process, ``python -m geokv.geo.wan etcd-proxy``) that delays each connection by half the
  RTT between the sending member's region (read from etcd's X-PeerURLs header) and the
  receiving member's region, both directions, order preserved.
* geokv: LocalCluster with ``--wan-emulation on``: the peer transport delays each frame
  by the one-way delay to the peer's region.

In both, the leader is placed in the preferred region (us-east; etcd by MoveLeader,
geokv by ``--leader-preference``), each region's client talks to its local member
directly (no delay on client traffic). Timeouts: etcd runs with its defaults (100 /
1000 ms; ``--etcd-timeouts geokv`` gives it geokv's derived ones instead); geokv runs
without --heartbeat-interval / --election-timeout, so its geo layer derives them from
the RTTs and applies them at runtime (``--geokv-timeouts fixed`` pins them to the etcd
values). geokv also gets a learner (``--learners eu-central``) whose client reads
locally. Measured: p50/p99 per region for put,
linearizable get, serializable get (and geokv's lease / bounded reads) next to the
physical floors; then the leader is SIGKILLed: time to the first successful put from each
surviving region, who became leader, and whether leadership returned to the preferred
region after the old leader restarted.

Prints a table and a final line ``RESULT {json}``.
Usage: python bench/geo/bench_geo.py [--rounds 30] [--systems etcd,geokv]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from geokv.geo.timeouts import TimeoutPlan, derive_for_topology
from geokv.geo.topology import MemberPlacement, Topology
from geokv.geo.wan import build_rtt_table
from geokv.geo.workload import (
    READ_MODES_ETCD,
    READ_MODES_GEOKV,
    RegionEndpoint,
    leader_region,
    measure_write_recovery,
    move_leader_to,
    op_name,
    run_mixed_workload,
    wait_leader,
)

ETCD_BIN = "/usr/bin/etcd"
STARTUP_TIMEOUT_S = 60.0
PROXY_READY_TIMEOUT_S = 20.0
RETURN_WAIT_S = 25.0           # after the restart, how long to wait for the leader to return
STOP_TIMEOUT_S = 10.0
WARMUP_ROUNDS = 3
SETTLE_S = 2.0                 # between a leader's return and the next failover trial
ETCD_DEFAULT_HEARTBEAT_MS = 100
ETCD_DEFAULT_ELECTION_MS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class SystemResult:
    name: str
    latency: dict = field(default_factory=dict)      # region -> op -> {p50, p99, n, errors}
    failover: dict = field(default_factory=dict)
    error: str | None = None


def summarize(samples) -> dict:
    out = {}
    for region, s in samples.items():
        out[region] = {}
        for op in sorted(set(s.ms) | set(s.errors)):
            out[region][op] = {
                "p50_ms": round(s.p(op, 50), 1) if s.ms.get(op) else None,
                "p99_ms": round(s.p(op, 99), 1) if s.ms.get(op) else None,
                "n": len(s.ms.get(op, ())),
                "errors": s.errors.get(op, 0),
            }
    return out


def stop_proc(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- etcd -----------------------------------------------------------------------------------
class EtcdGeoCluster:
    """Three etcd 3.4 members whose peer traffic crosses per-sender WAN delay proxies."""

    def __init__(self, regions: list[str], rtt: str, heartbeat_ms: int, election_ms: int) -> None:
        self.regions = regions
        self.rtt = rtt
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.dir = tempfile.mkdtemp(prefix="geokv-bench-etcd-")
        self.names = [f"etcd-{r}" for r in regions]
        self.client_ports = [free_port() for _ in regions]
        self.peer_ports = [free_port() for _ in regions]
        self.proxy: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen | None] = [None] * len(regions)
        self.advertise: list[str] = []

    @property
    def endpoints(self) -> list[RegionEndpoint]:
        return [RegionEndpoint(r, f"127.0.0.1:{p}") for r, p in zip(self.regions, self.client_ports)]

    def start(self) -> None:
        args = [sys.executable, "-m", "geokv.geo.wan", "etcd-proxy"]
        for r, pp in zip(self.regions, self.peer_ports):
            args += ["--member", f"{r}@127.0.0.1:0=127.0.0.1:{pp}"]
        if self.rtt:
            args += ["--rtt", self.rtt]
        self.proxy = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proxy.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"etcd proxy did not start: {line!r}")
        self.advertise = [f"http://{a}" for a in line.split()[1:]]
        for i in range(len(self.regions)):
            self.start_member(i)

    def start_member(self, i: int) -> None:
        initial = ",".join(f"{n}={u}" for n, u in zip(self.names, self.advertise))
        cmd = [
            ETCD_BIN, "--name", self.names[i], "--data-dir", os.path.join(self.dir, self.names[i]),
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", self.advertise[i],
            "--listen-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "geokv-bench",
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            "--log-level", "error",
        ]
        log_f = open(os.path.join(self.dir, f"{self.names[i]}.log"), "ab")
        self.procs[i] = subprocess.Popen(cmd, stdout=log_f, stderr=log_f)
        log_f.close()

    def kill(self, i: int) -> None:
        p = self.procs[i]
        assert p is not None
        p.send_signal(signal.SIGKILL)
        p.wait()

    def restart(self, i: int) -> None:
        self.start_member(i)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None:
                stop_proc(p)
        if self.proxy is not None:
            stop_proc(self.proxy)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- geokv ----------------------------------------------------------------------------------
class GeokvGeoCluster:
    """geokv server processes (with the geo service) under WAN emulation, leader preference set."""

    def __init__(self, regions: list[str], rtt: str, preferred: str, plan: TimeoutPlan | None,
                 learners: list[str] = ()) -> None:
        from geokv.geo.cluster import start_geo_cluster   # needs the runtime's LocalCluster

        self._start = lambda: start_geo_cluster(
            regions, base_dir=self.dir, leader_preference=[preferred], rtt=rtt or None, plan=plan,
        )
        self.regions = regions
        self.learners = list(learners)
        self.dir = tempfile.mkdtemp(prefix="geokv-bench-geokv-")
        self.cluster = None

    @property
    def endpoints(self) -> list[RegionEndpoint]:
        assert self.cluster is not None, "start() first"
        return [RegionEndpoint(r, e.replace("http://", ""))
                for r, e in zip(self.regions + self.learners, self.cluster.endpoints)]

    def start(self) -> None:
        if self.cluster is None:
            self.cluster = self._start()
            self.cluster.wait_ready(STARTUP_TIMEOUT_S)
            for r in self.learners:
                self.cluster.add_member(region=r, learner=True)
        self.cluster.wait_ready(STARTUP_TIMEOUT_S)

    def kill(self, i: int) -> None:
        self.cluster.kill(i, signal.SIGKILL)

    def restart(self, i: int) -> None:
        self.cluster.restart(i)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the benchmark ----------------------------------------------------------------------------
def run_system(name: str, cluster, regions: list[str], preferred: str, rounds: int, read_modes, move_by_api: bool,
               failovers: int = 1) -> SystemResult:
    res = SystemResult(name)
    try:
        log(f"{name}: starting {len(regions)} members in {', '.join(regions)}")
        cluster.start()
        all_eps = cluster.endpoints
        eps = [e for e in all_eps if e.region in regions]     # voters (failover is about them)
        st = wait_leader(eps, STARTUP_TIMEOUT_S)
        log(f"{name}: leader in {leader_region(st)}")
        if move_by_api:
            st = move_leader_to(eps, preferred, STARTUP_TIMEOUT_S)
        else:
            st = wait_leader(eps, STARTUP_TIMEOUT_S, region=preferred)
        log(f"{name}: leader in {leader_region(st)}; warming up")
        run_mixed_workload(all_eps, WARMUP_ROUNDS, read_modes)
        log(f"{name}: {rounds} rounds per region (put + {len(read_modes)} reads each)")
        res.latency = summarize(run_mixed_workload(all_eps, rounds, read_modes))

        # Failover trials: SIGKILL the leader (in the preferred region), time the first
        # successful put from each survivor, restart it, and see whether leadership
        # returns by itself. etcd never moves it back, so after its first trial the bench
        # moves it with MoveLeader to set up the next trial.
        li = regions.index(preferred)
        survivors = [e for e in eps if e.region != preferred]
        trials = []
        for k in range(failovers):
            if k > 0:
                if move_by_api:
                    wait_leader(eps, STARTUP_TIMEOUT_S, require_all=True)
                    move_leader_to(eps, preferred, STARTUP_TIMEOUT_S)
                else:
                    wait_leader(eps, STARTUP_TIMEOUT_S, region=preferred)
                # Let the returned leader commit in its term and every member settle
                # before the next crash (a crash right after a transfer is another test).
                time.sleep(SETTLE_S)
                run_mixed_workload(eps, 1, read_modes)
            # The leader must still be in the preferred region at the kill (a load spike
            # may have moved it during the settle time; then wait for its return).
            wait_leader(eps, STARTUP_TIMEOUT_S, region=preferred)
            log(f"{name}: failover {k + 1}/{failovers}: killing the leader in {preferred}")
            t0 = time.perf_counter()
            cluster.kill(li)
            recovery = measure_write_recovery(survivors, t0)
            st2 = wait_leader(survivors, STARTUP_TIMEOUT_S, require_all=True)
            new_leader = leader_region(st2)
            log(f"{name}: writes resumed {recovery}; new leader in {new_leader}; restarting {preferred}")
            cluster.restart(li)
            t1 = time.perf_counter()
            returned_after = None
            if k == 0 or not move_by_api:
                try:
                    wait_leader(eps, RETURN_WAIT_S, region=preferred)
                    returned_after = time.perf_counter() - t1
                except TimeoutError:
                    pass
                log(f"{name}: returned to {preferred}: {returned_after is not None}")
            trials.append({
                "write_recovery_s": {r: (round(v, 3) if v is not None else None) for r, v in recovery.items()},
                "new_leader_region": new_leader,
                "returned_to_preferred": returned_after is not None if (k == 0 or not move_by_api) else None,
                "return_after_restart_s": round(returned_after, 2) if returned_after is not None else None,
            })
        rec_by_region = {e.region: [t["write_recovery_s"][e.region] for t in trials] for e in survivors}
        first = trials[0]
        res.failover = {
            "killed_region": preferred,
            "trials": trials,
            "write_recovery_s": {r: (statistics.median(v) if None not in v else None) for r, v in rec_by_region.items()},
            "write_recovery_max_s": {r: (max(v) if None not in v else None) for r, v in rec_by_region.items()},
            "new_leader_region": first["new_leader_region"],
            "new_leader_regions": [t["new_leader_region"] for t in trials],
            "returned_to_preferred": first["returned_to_preferred"],
            "return_after_restart_s": first["return_after_restart_s"],
            "return_wait_bound_s": RETURN_WAIT_S,
        }
    except Exception as e:  # a system that fails is reported, the other still runs
        res.error = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {res.error}")
    finally:
        cluster.stop()
    return res


def fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_table(results: list[SystemResult], topo: Topology, leader_id: int, regions: list[str]) -> None:
    print()
    print(f"{'system':8s} {'region':10s} {'op':18s} {'p50 ms':>8s} {'p99 ms':>8s} {'floor ms':>9s} {'etcd p50':>9s} {'n':>4s} {'err':>4s}")
    floors = {r: row for r, row in ((row['region'], row) for row in topo.floors_table(leader_id))}
    floor_of = {
        # linearizable reads take the leader's lease (--linearizable-read lease, the default):
        # one trip to the leader at most, like lease reads (etcd's floor is the put's).
        "put": "put_floor_ms", "get_linearizable": "lease_floor_ms", "get_lease": "lease_floor_ms",
        "get_serializable": "serializable_floor_ms", "get_bounded": "serializable_floor_ms",
    }
    order = ["put", "get_linearizable", "get_lease", "get_serializable", "get_bounded"]
    etcd = next((r for r in results if r.name == "etcd"), None)
    for res in results:
        if res.error and not res.latency:
            print(f"{res.name:8s} FAILED: {res.error}")
            continue
        for r in regions:
            ops = res.latency.get(r, {})
            for op in sorted(ops, key=lambda o: order.index(o) if o in order else len(order)):
                st = ops[op]
                floor = floors[r][floor_of[op]]
                ref = etcd.latency.get(r, {}).get(op, {}).get("p50_ms") if etcd is not None and res is not etcd else None
                print(f"{res.name:8s} {r:10s} {op:18s} {fmt(st['p50_ms']):>8s} {fmt(st['p99_ms']):>8s} {floor:9.1f} "
                      f"{fmt(ref):>9s} {st['n']:4d} {st['errors']:4d}")
    print()
    for r in regions:
        print(f"leaderless floor (RTT to nearest majority) from {r}: {topo.leaderless_floor_ms(r):.0f} ms")
    print()
    for res in results:
        f = res.failover
        if not f:
            continue
        rec = ", ".join(
            f"{r} {fmt(v * 1000 if v is not None else None)} ms (max {fmt(f['write_recovery_max_s'][r] * 1000 if f['write_recovery_max_s'][r] is not None else None)})"
            for r, v in f["write_recovery_s"].items())
        print(f"{res.name:8s} failover x{len(f['trials'])} (kill leader in {f['killed_region']}): writes resumed (median): {rec}; "
              f"new leaders: {', '.join(str(x) for x in f['new_leader_regions'])}; back in {f['killed_region']} after restart: "
              f"{f['returned_to_preferred']}" + (f" ({f['return_after_restart_s']} s)" if f["returned_to_preferred"] else ""))


def compare(results: list[SystemResult], regions: list[str]) -> dict:
    """geokv / etcd ratios of p50 per region and op, and the failover summary side by side."""
    by = {r.name: r for r in results}
    g, e = by.get("geokv"), by.get("etcd")
    if g is None or e is None or not g.latency or not e.latency:
        return {}
    ratios: dict = {}
    for r in regions:
        for op, st in g.latency.get(r, {}).items():
            ref = e.latency.get(r, {}).get(op)
            if ref and ref.get("p50_ms") and st.get("p50_ms") is not None:
                ratios.setdefault(r, {})[op] = round(st["p50_ms"] / ref["p50_ms"], 3)
    fo = {}
    for name, res in (("geokv", g), ("etcd", e)):
        rec = [v for v in res.failover.get("write_recovery_s", {}).values() if v is not None]
        fo[name] = {
            "max_write_recovery_s": max(rec) if rec else None,
            "new_leader_region": res.failover.get("new_leader_region"),
            "returned_to_preferred": res.failover.get("returned_to_preferred"),
        }
    return {"p50_ratio_geokv_over_etcd": ratios, "failover": fo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="rounds per region (a put and each read mode)")
    ap.add_argument("--regions", default="us-east,eu-west,ap-south")
    ap.add_argument("--preferred", default="us-east")
    ap.add_argument("--rtt", default="", help="RTT overrides, e.g. eu-west:ap-south=120ms")
    ap.add_argument("--systems", default="etcd,geokv")
    ap.add_argument("--failovers", type=int, default=3, help="failover trials per system (median and max reported)")
    ap.add_argument("--learners", default="eu-central", help="regions that get a geokv learner (none: '')")
    ap.add_argument("--geokv-timeouts", choices=("auto", "fixed"), default="auto",
                    help="auto: derived and applied at runtime by geokv; fixed: the etcd timeouts")
    ap.add_argument("--etcd-timeouts", choices=("default", "geokv"), default="default",
                    help="default: 100/1000 ms; geokv: geokv's derived timeouts")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    if args.preferred not in regions:
        print(f"error: --preferred {args.preferred} is not one of --regions", file=sys.stderr)
        return 2
    learners = [r.strip() for r in args.learners.split(",") if r.strip()]
    table = build_rtt_table(args.rtt)
    topo = Topology([MemberPlacement(i + 1, r) for i, r in enumerate(regions)]
                    + [MemberPlacement(len(regions) + j + 1, r, voter=False) for j, r in enumerate(learners)], table)
    derived = derive_for_topology(Topology([MemberPlacement(i + 1, r) for i, r in enumerate(regions)], table))
    etcd_plan = (derived if args.etcd_timeouts == "geokv"
                 else TimeoutPlan(float(ETCD_DEFAULT_HEARTBEAT_MS), float(ETCD_DEFAULT_ELECTION_MS)))
    hb, el = int(etcd_plan.heartbeat_interval_ms), int(etcd_plan.election_timeout_ms)
    geokv_plan = None if args.geokv_timeouts == "auto" else etcd_plan
    log(f"timeouts: etcd heartbeat {hb} ms / election {el} ms; geokv "
        + (f"derived at runtime (heartbeat {derived.heartbeat_interval_ms:.0f} ms / election "
           f"{derived.election_timeout_ms:.0f} ms from the table)" if geokv_plan is None else f"fixed {hb}/{el} ms"))
    leader_id = regions.index(args.preferred) + 1

    results: list[SystemResult] = []
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        if system == "etcd":
            if not os.path.exists(ETCD_BIN):
                results.append(SystemResult("etcd", error=f"{ETCD_BIN} not found"))
                continue
            results.append(run_system("etcd", EtcdGeoCluster(regions, args.rtt, hb, el), regions, args.preferred,
                                      args.rounds, READ_MODES_ETCD, move_by_api=True, failovers=args.failovers))
        elif system == "geokv":
            try:
                cluster = GeokvGeoCluster(regions, args.rtt, args.preferred, geokv_plan, learners)
            except ImportError as e:
                results.append(SystemResult("geokv", error=f"geokv server harness not available: {e}"))
                continue
            results.append(run_system("geokv", cluster, regions, args.preferred, args.rounds, READ_MODES_GEOKV,
                                      move_by_api=False, failovers=args.failovers))
        else:
            print(f"error: unknown system {system!r} (etcd, geokv)", file=sys.stderr)
            return 2

    print_table(results, topo, leader_id, regions + learners)
    load_end = os.getloadavg()
    print(f"load average: {load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    out = {
        "regions": regions,
        "learners": learners,
        "load_average": {"start": round(load_start[0], 2), "end": round(load_end[0], 2)},
        "rtt_ms": {k: v for k, v in table.as_dict().items() if all(r in regions + learners for r in k.split(":"))},
        "timeouts_ms": {"etcd": {"heartbeat": hb, "election": el},
                        "geokv": ({"heartbeat": derived.heartbeat_interval_ms, "election": derived.election_timeout_ms,
                                   "applied": "at runtime"} if geokv_plan is None else {"heartbeat": hb, "election": el})},
        "floors_ms": {row["region"]: {k: v for k, v in row.items() if k != "region"} for row in topo.floors_table(leader_id)},
        "systems": {r.name: {"latency": r.latency, "failover": r.failover, "error": r.error} for r in results},
    }
    out["comparison"] = compare(results, regions)
    print("RESULT " + json.dumps(out, sort_keys=True))
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
