"""``geokv cluster up`` starts real processes; ``geokv cluster down`` stops them by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from cli_runner import Cli

#: Bound on waiting for ``cluster up`` to print its endpoints.
UP_TIMEOUT_S = 60.0
#: Bound on waiting for processes to disappear.
GONE_TIMEOUT_S = 20.0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_cluster_up_serves_requests_and_cluster_down_stops_every_process(tmp_path):
    base = str(tmp_path / "c")
    up = subprocess.Popen([sys.executable, "-m", "geokv", "cluster", "up", "-n", "3",
                           "--regions", "us-east,eu-west,ap-south", "--base-dir", base],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    pids: list[int] = []
    try:
        endpoints = None
        deadline = time.monotonic() + UP_TIMEOUT_S
        lines = []
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("endpoints: "):
                endpoints = line.split(": ", 1)[1].strip().split(",")
            if line.startswith("try:  ETCDCTL_API=3 etcdctl --endpoints="):
                break
        assert endpoints is not None, "".join(lines)
        state = json.load(open(os.path.join(base, "cluster.json")))
        pids = state["pids"]
        assert state["supervisor_pid"] == up.pid and len(pids) == 3 and all(alive(p) for p in pids)

        cli = Cli(endpoints)
        assert cli("put", "hello", "world").stdout == "OK\n"
        assert cli("get", "hello", "--print-value-only").stdout == "world\n"
        # --cluster finds every member from the one endpoint it is given.
        status = json.loads(Cli(endpoints[:1])("-w", "json", "endpoint", "status", "--cluster").stdout)
        assert sorted(s["Endpoint"] for s in status) == sorted(endpoints)
        assert sorted(s["Status"]["region"] for s in status) == ["ap-south", "eu-west", "us-east"]
        assert sum(1 for s in status if s["Status"]["leader"] == s["Status"]["header"]["member_id"]) == 1

        leader = status[0]["Status"]["leader"]
        members = json.loads(cli("-w", "json", "member", "list").stdout)["members"]
        target = next(m["ID"] for m in members if m["ID"] != leader)
        moved = cli("move-leader", f"{target:x}")
        assert moved.returncode == 0 and moved.stdout == f"Leadership transferred from {leader:x} to {target:x}\n"
        rtt = cli("endpoint", "rtt", "--count", "3")
        assert rtt.returncode == 0 and "us-east" in rtt.stdout and "P50 MS" in rtt.stdout

        # Without a quorum a write fails with one clear line, not a traceback.
        for pid in pids[1:]:
            os.kill(pid, signal.SIGKILL)
        assert wait_gone(pids[1:]) == []
        lost = Cli(endpoints[:1])("--timeout", "2s", "put", "k", "v")
        assert lost.returncode == 1 and "Traceback" not in lost.stderr
        assert lost.stderr.startswith("Error: ") and len(lost.stderr.strip().splitlines()) == 1
        assert "no leader" in lost.stderr or "outcome unknown" in lost.stderr or "deadline" in lost.stderr

        # A second `up` in the same dir refuses clearly.
        again = cli("cluster", "up", "-n", "1", "--base-dir", base, endpoints=False)
        assert again.returncode == 1 and "already running" in again.stderr and "Traceback" not in again.stderr

        down = cli("cluster", "down", "--base-dir", base, endpoints=False)
        assert down.returncode == 0, down.stderr
        assert "is down" in down.stdout
        assert up.wait(GONE_TIMEOUT_S) == 0
        assert wait_gone(pids) == []
        assert not os.path.exists(os.path.join(base, "cluster.json"))
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(GONE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        up.stdout.close()


def test_cluster_down_without_a_cluster_is_a_clear_error(tmp_path):
    r = Cli([])("cluster", "down", "--base-dir", str(tmp_path), endpoints=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: no cluster is running in")
