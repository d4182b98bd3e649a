"""Server benchmark: etcd 3.4 vs a do-nothing grpcio ceiling vs geokv, same machine, same run.

Three members on loopback for each system. Two loads:
  * writes: the real `etcdctl check perf --load=<l>` (Go client, 500 clients for "l");
    writes/s, slowest request and stddev as etcdctl reports them;
  * read-heavy: bench/loadgen.py (grpc.aio, 90% linearizable Range / 10% Put on
    1,000 prefilled 256 B keys with 1 KiB values), p50/p99 and ops/s.
For each: RSS per member and CPU seconds per 1,000 acknowledged writes summed over the
members (utime+stime from /proc/<pid>/stat, before and after the write load).

    python bench/bench_server.py [--load l] [--read-seconds 20] [--systems etcd,donothing,donothing_native,geokv]

(donothing: grpcio's grpc.aio, the issue's reference ceiling; donothing_native: the same
servicers behind geokv's native edge.)

Prints a table and a final line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from geokv.testing.ports import free_ports  # noqa: E402
from procstat import cpu_seconds, rss_breakdown_mib, rss_mib  # noqa: E402  (bench/ is sys.path[0])

READY_TIMEOUT_S = 60.0
CHECK_PERF_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 120.0      # longest wait for the cluster to settle after the write load
SETTLE_LATENCY_S = 0.5        # an etcdctl get (process start included) this fast counts as settled
SETTLE_FAST_IN_A_ROW = 3


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages: the machine is shared, so every row records them."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def wait_ready(endpoints: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        r = subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints), "--command-timeout=2s",
                            "put", "/bench-ready", "1"], capture_output=True, text=True,
                           env={**os.environ, "ETCDCTL_API": "3"})
        if r.returncode == 0:
            subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints), "del", "/bench-ready"],
                           capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
            return
        time.sleep(0.5)
    raise RuntimeError(f"cluster at {endpoints} not ready after {READY_TIMEOUT_S}s")


class EtcdCluster:
    def __init__(self, base: str, n: int = 3) -> None:
        ports = free_ports(2 * n)
        self.procs: list[subprocess.Popen] = []
        names = [f"e{i}" for i in range(n)]
        peers = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(n)]
        clients = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(n)]
        initial = ",".join(f"{nm}={p}" for nm, p in zip(names, peers))
        self.endpoints = [c.replace("http://", "") for c in clients]
        for i in range(n):
            log = open(os.path.join(base, f"{names[i]}.log"), "w")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", names[i], "--data-dir", os.path.join(base, names[i]),
                 "--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "bench"],
                stdout=log, stderr=subprocess.STDOUT))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class DoNothingCluster(EtcdCluster):
    """Three do-nothing servers on grpcio's grpc.aio: the issue's reference ceiling."""
    edge = "grpcio"

    def __init__(self, base: str, n: int = 3) -> None:
        ports = free_ports(n)
        self.endpoints = [f"127.0.0.1:{p}" for p in ports]
        self.procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "donothing_server.py"), str(p),
                                        "--edge", self.edge],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for p in ports]


class DoNothingNativeCluster(DoNothingCluster):
    """The same do-nothing servicers behind geokv's native edge (the edge's own ceiling)."""
    edge = "native"


class GeokvCluster:
    edge = ""  # --geokv-edge: passed to the members as --grpc-edge ("" = the server's default)

    def __init__(self, base: str, n: int = 3) -> None:
        from geokv.testing.cluster import LocalCluster

        extra = ["--grpc-edge", self.edge] if self.edge else []
        self.cluster = LocalCluster(n, base_dir=base, heartbeat_ms=100, election_ms=1000, extra_args=extra)
        self.endpoints = [e.replace("http://", "") for e in self.cluster.endpoints]

    @property
    def pids(self) -> list[int]:
        return [self.cluster.pid(i) for i in range(len(self.endpoints))]

    def stop(self) -> None:
        self.cluster.stop()


def run_check_perf(endpoints: list[str], load: str) -> dict:
    r = subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints), "check", "perf", f"--load={load}"],
                       capture_output=True, text=True, timeout=CHECK_PERF_TIMEOUT_S,
                       env={**os.environ, "ETCDCTL_API": "3"})
    out = r.stdout + r.stderr
    res: dict = {"passed": "PASS" in out and "FAIL" not in out, "exit": r.returncode}
    # etcdctl prints "Throughput is N writes/s" on PASS and "Throughput too low: N writes/s"
    # on FAIL (likewise "Slowest request took [too long: ]Xs", "Stddev is|too high: Xs").
    m = re.search(r"Throughput (?:is|too low:) ([0-9.]+) writes/s", out)
    res["writes_per_s"] = float(m.group(1)) if m else None
    m = re.search(r"Slowest request took (?:too long: )?([0-9.]+)s", out)
    res["slowest_s"] = float(m.group(1)) if m else None
    m = re.search(r"Stddev (?:is|too high:) ([0-9.]+)s", out)
    res["stddev_s"] = float(m.group(1)) if m else None
    if res["writes_per_s"] is None:
        res["output_tail"] = out[-600:]
    return res


def settle(endpoints: list[str]) -> float:
    """Wait until the cluster answers a linearizable get quickly again, a few times in a
    row, after the write load: etcdctl check perf ends by deleting all its keys (and etcd
    compacts), which can keep a server busy for seconds. Returns the seconds waited."""
    t_start = time.monotonic()
    fast = 0
    while fast < SETTLE_FAST_IN_A_ROW and time.monotonic() - t_start < SETTLE_TIMEOUT_S:
        t0 = time.monotonic()
        r = subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints), "--command-timeout=5s",
                            "get", "/bench-settle"], capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
        fast = fast + 1 if r.returncode == 0 and time.monotonic() - t0 < SETTLE_LATENCY_S else 0
        if fast == 0:
            time.sleep(0.5)
    return round(time.monotonic() - t_start, 1)


def run_loadgen(endpoints: list[str], seconds: float, processes: int, concurrency: int) -> dict:
    eps = ",".join(endpoints)
    r = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), "--endpoints", eps, "--prefill"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return {"ops_per_s": 0.0, "p50_ms": None, "p99_ms": None, "max_ms": None, "errors": None,
                "prefill_failed": (r.stdout + r.stderr)[-400:]}
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "loadgen.py"), "--endpoints", eps,
                               "--seconds", str(seconds), "--concurrency", str(concurrency), "--seed", str(i)],
                              stdout=subprocess.PIPE, text=True) for i in range(processes)]
    lat: list[float] = []
    ops = 0
    errors = 0
    elapsed = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        d = json.loads(out.strip().splitlines()[-1])
        lat += d["latencies_s"]
        ops += d["counts"]["read"] + d["counts"]["write"]
        errors += d["counts"]["error"]
        elapsed = max(elapsed, d["elapsed_s"])
    lat.sort()

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

    return {"ops_per_s": round(ops / elapsed, 1) if elapsed else 0.0, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": round(lat[-1] * 1000, 1) if lat else None, "errors": errors}


def bench_system(name: str, args) -> dict:
    base = tempfile.mkdtemp(prefix=f"bench-{name}-")
    cls = {"etcd": EtcdCluster, "donothing": DoNothingCluster, "donothing_native": DoNothingNativeCluster,
           "geokv": GeokvCluster}[name]
    system = cls(base)
    try:
        wait_ready(system.endpoints)
        pids = system.pids
        load0 = loadavg()
        cpu0 = sum(cpu_seconds(p) for p in pids)
        perf = run_check_perf(system.endpoints, args.load)
        cpu1 = sum(cpu_seconds(p) for p in pids)
        perf["loadavg_before"] = load0
        perf["loadavg_after"] = loadavg()
        perf["cpu_s_total"] = round(cpu1 - cpu0, 2)
        writes = (perf["writes_per_s"] or 0.0) * 60.0
        perf["cpu_s_per_1000_writes"] = round((cpu1 - cpu0) / writes * 1000, 3) if writes else None
        perf["rss_mib_per_member"] = [round(rss_mib(p), 1) for p in pids]
        perf["rss_breakdown_mib"] = [rss_breakdown_mib(p) for p in pids]
        settled_s = settle(system.endpoints)
        reads = run_loadgen(system.endpoints, args.read_seconds, args.loadgen_procs, args.concurrency)
        reads["settle_s"] = settled_s
        reads["loadavg_after"] = loadavg()
        reads["rss_mib_per_member_after"] = [round(rss_mib(p), 1) for p in pids]
        reads["rss_breakdown_mib_after"] = [rss_breakdown_mib(p) for p in pids]
        return {"write": perf, "read_heavy": reads}
    finally:
        system.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", default="l", choices=["s", "m", "l", "xl"])
    p.add_argument("--read-seconds", type=float, default=20.0)
    p.add_argument("--loadgen-procs", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--systems", default="etcd,donothing,geokv")
    p.add_argument("--geokv-edge", choices=["native", "grpcio"], default=None,
                   help="the members' client gRPC server (--grpc-edge); default: the server's default")
    args = p.parse_args()
    GeokvCluster.edge = args.geokv_edge or ""
    results = {}
    for name in args.systems.split(","):
        print(f"== {name}: etcdctl check perf --load={args.load}, then read-heavy loadgen", flush=True)
        results[name] = bench_system(name, args)
        print(json.dumps(results[name]), flush=True)

    print()
    print(f"{'system':<16} {'writes/s':>9} {'slowest s':>9} {'cpu s/1k w':>10} {'rss MiB':>16} "
          f"{'rh ops/s':>9} {'rh p50 ms':>9} {'rh p99 ms':>9} {'load1 before/after':>19}")
    for name, r in results.items():
        w, rh = r["write"], r["read_heavy"]
        print(f"{name:<16} {w['writes_per_s'] or 0:>9.0f} {w['slowest_s'] or 0:>9.3f} "
              f"{w['cpu_s_per_1000_writes'] or 0:>10.3f} {str(w['rss_mib_per_member']):>16} "
              f"{rh['ops_per_s']:>9.0f} {rh['p50_ms'] or 0:>9.2f} {rh['p99_ms'] or 0:>9.2f} "
              f"{w['loadavg_before'][0]:>9.2f}/{w['loadavg_after'][0]:<9.2f}")
    ratios = {}
    g = results.get("geokv", {}).get("write", {}).get("writes_per_s")
    for ref in ("etcd", "donothing", "donothing_native"):
        r = results.get(ref, {}).get("write", {}).get("writes_per_s")
        if g and r:
            ratios[f"geokv_vs_{ref}_writes"] = round(g / r, 3)
    print("RESULT " + json.dumps({"results": results, "ratios": ratios, "loadavg_end": loadavg(),
                              "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
