"""``geokv cluster up`` / ``geokv cluster down``: a local cluster of real server processes.

``up`` starts n members on free loopback ports (geokv.testing.cluster.LocalCluster),
writes ``<base-dir>/cluster.json`` with its own PID and every member's PID, prints the
endpoints, and runs until Ctrl-C, SIGTERM or ``cluster down``. ``down`` reads that file,
asks the ``up`` process to stop, and kills by PID whatever member is still running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

STATE_FILE = "cluster.json"
#: Most members ``cluster up`` starts.
MEMBERS_MAX = 9
#: How long ``down`` waits for the ``up`` process to stop the members gracefully.
DOWN_GRACE_S = 15.0
#: How long ``down`` waits for killed members to disappear.
KILL_WAIT_S = 5.0
#: How often ``up`` checks that its state file and members are still there.
SUPERVISE_POLL_S = 0.5


class ClusterError(ValueError):
    """A user-facing problem with cluster up/down (one line, exit 1)."""


def _state_path(base_dir: str) -> str:
    return os.path.join(os.path.abspath(base_dir), STATE_FILE)


def _read_state(base_dir: str) -> dict[str, Any] | None:
    try:
        with open(_state_path(base_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise ClusterError(f"cannot read {_state_path(base_dir)}: {e}") from None


def _write_state(base_dir: str, state: dict[str, Any]) -> None:
    path = _state_path(base_dir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _is_geokv_process(pid: int) -> bool:
    """True if ``pid`` is alive and is a geokv process (guards against PID reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"geokv" in cmd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def up(args: argparse.Namespace) -> int:
    n = args.n
    if not 1 <= n <= MEMBERS_MAX:
        raise ClusterError(f"-n must be between 1 and {MEMBERS_MAX}, not {n}")
    regions_given = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else []
    regions = [regions_given[i % len(regions_given)] for i in range(n)] if regions_given else ["local"] * n
    base_dir = os.path.abspath(args.base_dir)
    os.makedirs(base_dir, exist_ok=True)
    old = _read_state(base_dir)
    if old is not None and _alive(int(old.get("supervisor_pid", 0))) and _is_geokv_process(int(old["supervisor_pid"])):
        raise ClusterError(f"a cluster is already running in {base_dir} (pid {old['supervisor_pid']}); "
                           f"stop it with: geokv cluster down --base-dir {base_dir}")

    from geokv.testing.cluster import LocalCluster

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    extra_args = []
    if args.wan:
        extra_args += ["--wan-emulation", "on"]
    if args.leader_preference:
        extra_args += ["--leader-preference", args.leader_preference]
    cluster = LocalCluster(n, base_dir, regions=regions, extra_args=extra_args)  # spawns every member
    try:
        pids = [cluster.pid(i) for i in range(n)]
        state = {"supervisor_pid": os.getpid(), "pids": pids, "endpoints": cluster.endpoints,
                 "names": cluster.names, "regions": regions, "base_dir": base_dir}
        _write_state(base_dir, state)
        cluster.wait_ready()
        endpoints = ",".join(e.replace("http://", "") for e in cluster.endpoints)
        print(f"geokv cluster of {n} members is up in {base_dir}" + (" (WAN emulated)" if args.wan else ""))
        for name, ep, region, pid in zip(cluster.names, cluster.endpoints, regions, pids):
            print(f"  {name}  {ep}  region={region}  pid={pid}")
        print(f"endpoints: {endpoints}")
        print(f"try:  ETCDCTL_API=3 etcdctl --endpoints={endpoints} put foo bar")
        print(f"      geokv --endpoints={endpoints} -w table endpoint status")
        print(f"stop: Ctrl-C, or geokv cluster down --base-dir {base_dir}", flush=True)
        while not stop.is_set():
            if not os.path.exists(_state_path(base_dir)):
                break
            if not any(cluster.is_running(i) for i in range(n)):
                print("Error: every member has exited; see the logs in " + base_dir, file=sys.stderr)
                return 1
            stop.wait(SUPERVISE_POLL_S)
        return 0
    finally:
        cluster.stop()
        try:
            os.remove(_state_path(base_dir))
        except FileNotFoundError:
            pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("geokv cluster stopped", flush=True)


def down(args: argparse.Namespace) -> int:
    base_dir = os.path.abspath(args.base_dir)
    state = _read_state(base_dir)
    if state is None:
        raise ClusterError(f"no cluster is running in {base_dir} (no {STATE_FILE}); is --base-dir right?")
    supervisor = int(state.get("supervisor_pid", 0))
    pids = [int(p) for p in state.get("pids", []) if p]
    if supervisor and _alive(supervisor) and _is_geokv_process(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_GRACE_S
        while time.monotonic() < deadline and (_alive(supervisor) or any(_alive(p) for p in pids)):
            time.sleep(0.1)
    killed = 0
    for pid in pids:
        if _alive(pid) and _is_geokv_process(pid):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    try:
        os.remove(_state_path(base_dir))
    except FileNotFoundError:
        pass
    if left:
        raise ClusterError(f"members still running after SIGKILL: pids {left}")
    print(f"geokv cluster in {base_dir} is down ({len(pids)} members stopped"
          + (f", {killed} killed" if killed else "") + ")")
    return 0
