"""API-edge benchmark: geokv's etcd gRPC handlers vs do-nothing servers, on both gRPC
edges (grpcio's grpc.aio and geokv's native HTTP/2 edge, geokv.edge).

All servers are real processes on loopback, driven by the same grpc.aio load
generator (one process, ``--concurrency`` requests in flight, ``--seconds`` per case):

  donothing         bench/donothing_server.py on grpcio (answers at once): the reference
  donothing_native  the same servicers on the native edge
  geokv             one ``python -m geokv.runtime.serve`` member, --grpc-edge grpcio
  geokv_native      the same, --grpc-edge native

For each case: ops/s, p50/p99 and the server's CPU microseconds per request
(utime+stime from /proc over the measured window; stable under outside load).
Cases: Range serializable (API edge + one LMDB read), Range linearizable (adds the
ReadIndex barrier), Put (adds a Raft round with one WAL fsync per batch).
Ratios are against the grpcio do-nothing server measured in the same run; "cpu eff" is
its server CPU per request divided by the system's (above 1 = cheaper per request).

    python bench/api_edge.py [--seconds 5] [--concurrency 64] [--systems donothing,geokv_native]
    python bench/api_edge.py --micro    # the native edge's own CPU per request, in-process

``--micro`` feeds Go-client-shaped request bytes (HPACK with indexing, 16 calls per read)
straight into one native-edge connection in front of the do-nothing KV servicer and
reports process CPU per call, for a constant header block (the block cache hits) and
for a grpc-timeout that changes every call (as with etcdctl: the block inserts into the
dynamic table). The reference in the same run is the bare servicer call + protobuf
(de)serialisation without any edge.

Prints a table and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from geokv.testing.cluster import LocalCluster  # noqa: E402
from geokv.testing.ports import free_ports  # noqa: E402

READY_TIMEOUT_S = 30.0
KEYS = 1000
VALUE_BYTES = 256
CASES = ("range_serializable", "range_linearizable", "put")


# --- load generator (runs in its own process: `api_edge.py --load ...`) -------------------
async def load(endpoint: str, case: str, seconds: float, concurrency: int) -> dict:
    import grpc

    from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        value = b"v" * VALUE_BYTES
        if case != "put":
            for i in range(0, KEYS, 50):
                await asyncio.gather(*[kv.Put(rpc_pb2.PutRequest(key=b"key%06d" % j, value=value))
                                       for j in range(i, min(i + 50, KEYS))])
        lat: list[float] = []
        done = 0
        stop_at = 0.0

        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while time.perf_counter() < stop_at:
                key = b"key%06d" % (i % KEYS)
                i += concurrency
                t0 = time.perf_counter()
                if case == "put":
                    await kv.Put(rpc_pb2.PutRequest(key=key, value=value))
                else:
                    await kv.Range(rpc_pb2.RangeRequest(key=key, serializable=case == "range_serializable"))
                lat.append(time.perf_counter() - t0)
                done += 1

        stop_at = time.perf_counter() + 0.5  # warm-up
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        lat.clear()
        done = 0
        print("START", flush=True)  # the parent samples the server's CPU time here ...
        t_start = time.perf_counter()
        stop_at = t_start + seconds
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        elapsed = time.perf_counter() - t_start
        print("END", flush=True)  # ... and here
        lat.sort()
        return {"ops_s": done / elapsed, "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
                "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0, "n": done}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_load(endpoint: str, case: str, seconds: float, concurrency: int, server_pid: int) -> dict:
    """Drive one case; also report the server's CPU microseconds per request, which is
    far less sensitive than ops/s to other load on a shared machine."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--load", endpoint, case,
                          str(seconds), str(concurrency)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        cpu = {}
        lines = []
        for line in p.stdout:
            line = line.strip()
            if line in ("START", "END"):
                cpu[line] = cpu_seconds(server_pid)
            elif line:
                lines.append(line)
        p.wait(seconds * 4 + 120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed: {p.stderr.read()[-2000:]}")
    p.stdout.close()
    p.stderr.close()
    res = json.loads(lines[-1])
    res["cpu_us_per_op"] = 1e6 * (cpu["END"] - cpu["START"]) / max(1, res["n"])
    return res


# --- servers ------------------------------------------------------------------------------
SYSTEMS = ("donothing", "donothing_native", "geokv", "geokv_native")
OPTIONAL_SYSTEMS = ("donothing_native_task",)  # native edge with a Task per call (no inline step)


def start_donothing(edge: str = "grpcio") -> tuple[subprocess.Popen, str]:
    port = free_ports(1)[0]
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "donothing_server.py"), str(port), "--edge", edge],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import grpc

    from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

    deadline = time.monotonic() + READY_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        while True:
            try:
                rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or p.poll() is not None:
                    p.kill()
                    raise RuntimeError("do-nothing server did not start")
                time.sleep(0.1)
    return p, f"127.0.0.1:{port}"


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _median_run(rs: list[dict]) -> dict:
    by_ops = sorted(rs, key=lambda r: r["ops_s"])[len(rs) // 2]
    cpu = sorted(r["cpu_us_per_op"] for r in rs)[len(rs) // 2]
    return dict(by_ops, cpu_us_per_op=cpu)


def micro(calls: int = 20000, per_read: int = 16, reps: int = 5) -> None:
    """In-process CPU per call of the native edge (see --micro in the module docstring)."""
    try:
        import hpack as hpack_oracle  # the client-side encoder (pyproject [test] extra)
    except ImportError:
        sys.exit("--micro needs the hpack package (pip install hpack) to encode like a client")
    from geokv.edge import EdgeServer
    from geokv.edge import frames as f
    from geokv.edge.connection import H2Connection
    from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

    sys.path.insert(0, HERE)
    import donothing_server

    class Sink:
        def write(self, b: bytes) -> None:
            pass

        def close(self) -> None:
            pass

        def get_extra_info(self, name: str, default=None):
            return ("127.0.0.1", 1) if name == "peername" else default

    body = rpc_pb2.PutRequest(key=b"k" * 256, value=b"v" * 1024).SerializeToString()
    msg = f.MESSAGE_PREFIX.pack(0, len(body)) + body

    def chunks(vary: bool) -> list[bytes]:
        enc = hpack_oracle.Encoder()
        hs = [(":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Put"),
              (":authority", "127.0.0.1:2379"), ("content-type", "application/grpc"),
              ("user-agent", "grpc-go/1.26.0"), ("te", "trailers"), ("grpc-timeout", "4999872u")]
        out, sid = [], 1
        for _ in range(calls // per_read):
            parts = []
            for _ in range(per_read):
                if vary:
                    hs[-1] = ("grpc-timeout", "%du" % (4_990_000 + sid % 9973))
                parts += [f.frame(f.HEADERS, f.END_HEADERS, sid, enc.encode(hs)), f.frame(f.DATA, f.END_STREAM, sid, msg),
                          f.window_update_frame(0, len(msg))]
                sid += 2
            out.append(b"".join(parts))
        return out

    async def edge_us(data: list[bytes]) -> float:
        server = EdgeServer()
        rpc_pb2_grpc.add_KVServicer_to_server(donothing_server.DoNothingKV(1), server)
        conn = H2Connection(server)
        conn.connection_made(Sink())  # type: ignore[arg-type]
        conn.data_received(f.PREFACE + f.settings_frame({}))
        t0 = time.process_time()
        for c in data:
            conn.data_received(c)
        return (time.process_time() - t0) / calls * 1e6

    async def bare_us() -> float:
        kv = donothing_server.DoNothingKV(1)
        t0 = time.process_time()
        for _ in range(calls):
            req = rpc_pb2.PutRequest.FromString(body)
            coro = kv.Put(req, None)
            try:
                coro.send(None)
            except StopIteration as stop:
                stop.value.SerializeToString()
        return (time.process_time() - t0) / calls * 1e6

    const, vary = chunks(False), chunks(True)
    rows = {"servicer only (reference)": [], "native edge, constant headers": [],
            "native edge, varying grpc-timeout": []}
    for _ in range(reps):
        rows["servicer only (reference)"].append(asyncio.run(bare_us()))
        rows["native edge, constant headers"].append(asyncio.run(edge_us(const)))
        rows["native edge, varying grpc-timeout"].append(asyncio.run(edge_us(vary)))
    print(f"load average {loadavg()} (2 cores, shared); {calls} calls, {per_read} per read, best of {reps}")
    print(f"{'path':<36}{'CPU us/call':>12}")
    best = {k: min(v) for k, v in rows.items()}
    for k, v in best.items():
        print(f"{k:<36}{v:>12.1f}")
    print("RESULT " + json.dumps({"bench": "api_edge_micro", "cpu_us_per_call": {k: round(v, 2) for k, v in best.items()},
                                  "edge_only_us": {"constant": round(best["native edge, constant headers"]
                                                                     - best["servicer only (reference)"], 2),
                                                   "varying": round(best["native edge, varying grpc-timeout"]
                                                                    - best["servicer only (reference)"], 2)}}))


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _, _, endpoint, case, seconds, conc = sys.argv
        print(json.dumps(asyncio.run(load(endpoint, case, float(seconds), int(conc)))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--micro":
        micro()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--reps", type=int, default=3, help="alternating runs per case and system (median counts)")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS + OPTIONAL_SYSTEMS]
    if bad:
        sys.exit(f"unknown system(s) {bad}; choose from {', '.join(SYSTEMS + OPTIONAL_SYSTEMS)}")
    if "donothing" not in systems:
        systems.insert(0, "donothing")  # the reference is always measured
    runs: dict[str, dict[str, list[dict]]] = {s: {c: [] for c in cases} for s in systems}
    load_before = loadavg()
    # All servers run at once and the cases alternate between them, so a burst of load
    # from elsewhere on the machine hits every system alike; the median run counts.
    procs: list[subprocess.Popen] = []
    endpoints: dict[str, tuple[str, int]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="geokv-bench-") as base, contextlib.ExitStack() as stack:
            for system in systems:
                if system.startswith("donothing"):
                    p, ep = start_donothing({"donothing": "grpcio", "donothing_native": "native",
                                             "donothing_native_task": "native-task"}[system])
                    procs.append(p)
                    endpoints[system] = (ep, p.pid)
                else:
                    edge = "native" if system.endswith("_native") else "grpcio"
                    c = stack.enter_context(LocalCluster(1, os.path.join(base, system),
                                                         extra_args=["--grpc-edge", edge]))
                    c.wait_ready(READY_TIMEOUT_S)
                    endpoints[system] = (c.endpoints[0].removeprefix("http://"), c.pid(0))
            for _rep in range(args.reps):
                for case in cases:
                    for system in systems:
                        ep, pid = endpoints[system]
                        runs[system][case].append(run_load(ep, case, args.seconds, args.concurrency, pid))
    finally:
        for p in procs:
            stop(p)
    load_after = loadavg()
    results = {system: {case: _median_run(rs) for case, rs in by_case.items()} for system, by_case in runs.items()}

    print(f"load average before {load_before}, after {load_after} (2 cores, shared)")
    print(f"{'case':<22}{'system':<18}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/op':>11}"
          f"{'ops/s vs ref':>14}{'cpu eff':>9}")
    summary: dict[str, dict] = {}
    for case in cases:
        ref = results["donothing"][case]
        summary[case] = {}
        for system in systems:
            r = results[system][case]
            ratio = r["ops_s"] / ref["ops_s"] if ref["ops_s"] else 0.0
            eff = ref["cpu_us_per_op"] / r["cpu_us_per_op"] if r["cpu_us_per_op"] else 0.0
            print(f"{case:<22}{system:<18}{r['ops_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['cpu_us_per_op']:>11.1f}{ratio:>13.2f}x{eff:>8.2f}x")
            summary[case][system] = {"ops_s": round(r["ops_s"], 1), "p50_ms": round(r["p50_ms"], 2),
                                     "p99_ms": round(r["p99_ms"], 2), "cpu_us_per_op": round(r["cpu_us_per_op"], 1),
                                     "ops_ratio_vs_donothing": round(ratio, 3), "cpu_efficiency": round(eff, 3)}
    print("RESULT " + json.dumps({"bench": "api_edge", "seconds": args.seconds, "reps": args.reps,
                                  "concurrency": args.concurrency, "loadavg_before": load_before,
                                  "loadavg_after": load_after, "cases": summary}))


if __name__ == "__main__":
    main()
