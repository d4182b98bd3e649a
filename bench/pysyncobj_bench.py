"""geokv (durable, AsyncClient) vs PySyncObj (in memory, no fsync): 1,000 writes in flight.

Same machine, same run, 3 nodes on loopback each:
  * pysyncobj  three PySyncObj processes, each holding a replicated dict (ReplDict);
               node 0 also runs the client: it keeps ``--inflight`` ``set`` calls in
               flight through PySyncObj's asynchronous callbacks (forwarded to the
               leader when node 0 is a follower). Data is in memory, nothing is fsynced.
  * geokv      three ``geokv serve`` processes (LocalCluster: WAL fsync per batch, LMDB),
               driven by one client process with geokv.client.AsyncClient keeping
               ``--inflight`` puts in flight (the client talks to one endpoint and the
               member forwards to the leader). With ``--client-transport native,grpcio``
               the same cluster is driven once per client transport, one after the other
               (rows ``geokv/native``, ``geokv/grpcio``).
Both write the same keys (``--key-bytes``) and values (``--value-bytes``); the first
``--warmup`` seconds are not counted. Reported: writes/s, p50/p99/max latency, CPU seconds
per 1,000 writes (all server processes, and the client process separately; for PySyncObj
the client shares node 0's process, so its CPU is inside the servers' figure) and RSS.

    python bench/pysyncobj_bench.py [--seconds 20] [--inflight 1000] [--systems pysyncobj,geokv]
                                    [--client-transport native,grpcio]

Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from procstat import cpu_seconds, rss_mib  # noqa: E402  (bench/ is the script's directory)

READY_TIMEOUT_S = 60.0          # cluster start and leader election
RUN_MARGIN_S = 120.0            # extra time a child may take beyond its run
ERRORS_MAX = 100_000            # a client gives up after this many failed writes
LATENCY_SAMPLES_MAX = 500_000
GEOKV_REQUEST_TIMEOUT_S = 10.0


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def key_for(i: int, key_bytes: int) -> bytes:
    prefix = b"/bench/%08d/" % i
    return prefix + b"k" * max(0, key_bytes - len(prefix))


def summarize(lat: list[float], count: int, seconds: float, errors: int) -> dict:
    lat.sort()

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

    return {"writes": count, "writes_per_s": round(count / seconds, 1) if seconds else 0.0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(lat[-1] * 1000, 1) if lat else None,
            "errors": errors}


# ---------------------------------------------------------------------------------------
# PySyncObj: one node per process; node 0 drives the writes
# ---------------------------------------------------------------------------------------
def pysyncobj_node(args) -> None:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    ports = [int(p) for p in args.ports.split(",")]
    me = f"127.0.0.1:{ports[args.node]}"
    others = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != args.node]
    d = ReplDict()
    obj = SyncObj(me, others, SyncObjConf(dynamicMembershipChange=False), consumers=[d])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.node != 0:
        stop.wait()
        obj.destroy()
        return
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not (obj.isReady() and obj._getLeader() is not None):
        time.sleep(0.05)
    if obj._getLeader() is None:
        print(json.dumps({"error": "no leader"}), flush=True)
        obj.destroy()
        return
    value = b"v" * args.value_bytes
    keys = [key_for(i, args.key_bytes) for i in range(args.keys)]
    lock = threading.Lock()
    st = {"count": 0, "errors": 0, "issued": 0, "done": False}
    lat: list[float] = []
    kinds: dict[str, int] = {}  # FAIL_REASON value -> count
    t_begin = time.monotonic()
    t_measure = t_begin + args.warmup
    t_end = t_measure + args.seconds
    finished = threading.Event()
    inflight = [0]

    def submit() -> None:
        with lock:
            i = st["issued"]
            st["issued"] = i + 1
            inflight[0] += 1
        t0 = time.monotonic()

        def cb(_res, err) -> None:
            now = time.monotonic()
            with lock:
                inflight[0] -= 1
                if err == FAIL_REASON.SUCCESS:
                    if t_measure <= now < t_end:
                        st["count"] += 1
                        if len(lat) < LATENCY_SAMPLES_MAX:
                            lat.append(now - t0)
                else:
                    st["errors"] += 1
                    kinds[str(err)] = kinds.get(str(err), 0) + 1
                again = now < t_end and st["errors"] < ERRORS_MAX
                if not again and inflight[0] == 0:
                    finished.set()
            if again:
                submit()

        d.set(keys[i % len(keys)], value, callback=cb)

    for _ in range(args.inflight):
        submit()
    finished.wait(args.warmup + args.seconds + RUN_MARGIN_S)
    out = summarize(lat, st["count"], args.seconds, st["errors"])
    out["error_kinds"] = kinds
    out["leader"] = str(obj._getLeader())
    out["self"] = me
    print(json.dumps(out), flush=True)
    stop.wait()
    obj.destroy()


def bench_pysyncobj(args) -> dict:
    from geokv.testing.ports import free_ports

    ports = free_ports(3)
    cmd = [sys.executable, os.path.abspath(__file__), "--role", "pysyncobj-node", "--ports",
           ",".join(map(str, ports)), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
           "--inflight", str(args.inflight), "--key-bytes", str(args.key_bytes),
           "--value-bytes", str(args.value_bytes), "--keys", str(args.keys)]
    procs = [subprocess.Popen(cmd + ["--node", str(i)], stdout=subprocess.PIPE, text=True) for i in range(3)]
    try:
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        load0 = loadavg()
        line = procs[0].stdout.readline()
        cpu1 = [cpu_seconds(p.pid) for p in procs]
        rss = [round(rss_mib(p.pid), 1) for p in procs]
        res = json.loads(line) if line.strip() else {"error": "node 0 printed nothing"}
        # CPU includes start-up and the election; small next to the run itself.
        cpu = sum(cpu1) - sum(cpu0)
        res["cpu_s_servers"] = round(cpu, 2)
        res["cpu_s_per_1000_writes"] = (round(cpu / (res["writes_per_s"] * (args.seconds + args.warmup)) * 1000, 3)
                                        if res.get("writes_per_s") else None)
        res["cpu_s_per_1000_writes_note"] = "servers incl. the in-process client, over warm-up + run"
        res["rss_mib_per_member"] = rss
        res["loadavg_before"], res["loadavg_after"] = load0, loadavg()
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ---------------------------------------------------------------------------------------
# geokv: 3 members (LocalCluster), one AsyncClient process
# ---------------------------------------------------------------------------------------
async def geokv_client_run(args) -> dict:
    from geokv.client import AsyncClient

    value = b"v" * args.value_bytes
    keys = [key_for(i, args.key_bytes) for i in range(args.keys)]
    lat: list[float] = []
    st = {"count": 0, "errors": 0, "issued": 0, "ok": 0}
    errs: dict[str, int] = {}
    async with AsyncClient(args.endpoints.split(","), timeout_s=GEOKV_REQUEST_TIMEOUT_S,
                           transport=args.client_transport) as c:
        await c.put(b"/bench-warm", b"1")
        t_begin = time.monotonic()
        t_measure = t_begin + args.warmup
        t_end = t_measure + args.seconds

        async def worker() -> None:
            while True:
                now = time.monotonic()
                if now >= t_end or st["errors"] >= ERRORS_MAX:
                    return
                i = st["issued"]
                st["issued"] = i + 1
                t0 = time.monotonic()
                try:
                    await c.put(keys[i % len(keys)], value)
                except Exception as exc:  # counted and reported; the run goes on
                    st["errors"] += 1
                    errs[type(exc).__name__] = errs.get(type(exc).__name__, 0) + 1
                    await asyncio.sleep(0.01)
                    continue
                t1 = time.monotonic()
                st["ok"] += 1
                if t_measure <= t1 < t_end:
                    st["count"] += 1
                    if len(lat) < LATENCY_SAMPLES_MAX:
                        lat.append(t1 - t0)

        cpu0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(args.inflight)))
        cpu = time.process_time() - cpu0
    out = summarize(lat, st["count"], args.seconds, st["errors"])
    out["error_kinds"] = errs
    out["writes_total"] = st["ok"]  # warm-up + run
    out["client_cpu_s"] = round(cpu, 2)
    out["client_cpu_s_per_1000_writes"] = round(cpu / st["ok"] * 1000, 3) if st["ok"] else None
    return out


def geokv_client_main(args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(geokv_client_run(args))), flush=True)


def bench_geokv(args) -> dict[str, dict]:
    """One 3-member cluster; one client run per transport in ``--client-transport``."""
    from geokv.testing.cluster import LocalCluster

    out: dict[str, dict] = {}
    base = tempfile.mkdtemp(prefix="bench-pso-geokv-")
    with LocalCluster(3, base_dir=base, heartbeat_ms=100, election_ms=1000) as cluster:
        cluster.wait_ready()
        pids = [cluster.pid(i) for i in range(3)]
        eps = ",".join(e.replace("http://", "") for e in cluster.endpoints)
        for transport in args.client_transport.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "--role", "geokv-client", "--endpoints", eps,
                   "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--inflight", str(args.inflight),
                   "--key-bytes", str(args.key_bytes), "--value-bytes", str(args.value_bytes), "--keys",
                   str(args.keys), "--client-transport", transport]
            print(f"   geokv client on the {transport} transport", flush=True)
            cpu0 = [cpu_seconds(p) for p in pids]
            load0 = loadavg()
            client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            try:
                stdout, _ = client.communicate(timeout=args.seconds + args.warmup + RUN_MARGIN_S)
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
            cpu1 = [cpu_seconds(p) for p in pids]
            lines = stdout.strip().splitlines()
            res = json.loads(lines[-1]) if lines else {"error": "client printed nothing"}
            cpu = sum(cpu1) - sum(cpu0)
            total_writes = res.get("writes_total") or 0
            res["transport"] = transport
            res["cpu_s_servers"] = round(cpu, 2)
            res["cpu_s_per_1000_writes"] = round(cpu / total_writes * 1000, 3) if total_writes else None
            res["cpu_s_per_1000_writes_note"] = ("3 members, over warm-up + run (client process not included: "
                                                 "client_cpu_s_per_1000_writes)")
            res["rss_mib_per_member"] = [round(rss_mib(p), 1) for p in pids]
            res["loadavg_before"], res["loadavg_after"] = load0, loadavg()
            res["leader_index"] = cluster.leader_index()
            out[f"geokv/{transport}"] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default="pysyncobj,geokv")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--inflight", type=int, default=1000)
    p.add_argument("--key-bytes", type=int, default=32)
    p.add_argument("--value-bytes", type=int, default=256)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--role", default="main", choices=["main", "pysyncobj-node", "geokv-client"])
    p.add_argument("--node", type=int, default=0)
    p.add_argument("--ports", default="")
    p.add_argument("--endpoints", default="")
    p.add_argument("--client-transport", default="native,grpcio",
                   help="geokv client transport(s), comma-separated: native, grpcio")
    args = p.parse_args()
    if args.role == "pysyncobj-node":
        pysyncobj_node(args)
        return
    if args.role == "geokv-client":
        geokv_client_main(args)
        return
    results = {}
    for name in args.systems.split(","):
        print(f"== {name}: {args.inflight} writes in flight, {args.seconds:.0f} s (+{args.warmup:.0f} s warm-up)",
              flush=True)
        if name == "geokv":
            for row, res in bench_geokv(args).items():
                results[row] = res
                print(json.dumps(res), flush=True)
        else:
            results[name] = bench_pysyncobj(args)
            print(json.dumps(results[name]), flush=True)
    print()
    print(f"{'system':<14} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} "
          f"{'srv cpu s/1k':>12} {'cli cpu s/1k':>12} {'rss MiB':>20} {'load1':>6}")
    for name, r in results.items():
        print(f"{name:<14} {r.get('writes_per_s') or 0:>9.0f} {r.get('p50_ms') or 0:>8.1f} "
              f"{r.get('p99_ms') or 0:>8.1f} {r.get('max_ms') or 0:>8.1f} {r.get('errors') or 0:>7} "
              f"{r.get('cpu_s_per_1000_writes') or 0:>12.3f} {r.get('client_cpu_s_per_1000_writes') or 0:>12.3f} "
              f"{str(r.get('rss_mib_per_member')):>20} {r.get('loadavg_before', [0])[0]:>6.2f}")
    ratios = {}
    s = results.get("pysyncobj", {}).get("writes_per_s")
    for name, r in results.items():
        g = r.get("writes_per_s")
        if name.startswith("geokv/") and g and s:
            ratios[f"{name}_vs_pysyncobj_writes"] = round(g / s, 3)
    n, gr = results.get("geokv/native", {}), results.get("geokv/grpcio", {})
    if n.get("writes_per_s") and gr.get("writes_per_s"):
        ratios["native_vs_grpcio_writes"] = round(n["writes_per_s"] / gr["writes_per_s"], 3)
    if n.get("client_cpu_s_per_1000_writes") and gr.get("client_cpu_s_per_1000_writes"):
        ratios["native_vs_grpcio_client_cpu"] = round(n["client_cpu_s_per_1000_writes"]
                                                      / gr["client_cpu_s_per_1000_writes"], 3)
    print("RESULT " + json.dumps({"results": results, "ratios": ratios, "inflight": args.inflight,
                                  "key_bytes": args.key_bytes, "value_bytes": args.value_bytes,
                                  "loadavg_end": loadavg()}))


if __name__ == "__main__":
    main()
