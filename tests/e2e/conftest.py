"""Fixtures for end-to-end tests: a real 3-member geokv cluster on loopback and the
real etcdctl (ETCDCTL_API=3) talking to it.

The cluster runs in a child process (tests/e2e/inproc_cluster_main.py: three Members
with real peer TCP, WAL and LMDB, each behind its own gRPC server). One cluster per
test module keeps the suite fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_START_TIMEOUT_S = 60.0
CLUSTER_STOP_TIMEOUT_S = 15.0
ETCDCTL_TIMEOUT_S = 30.0
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Cluster:
    endpoints: list[str]
    metrics: list[str]
    ids: list[int]
    proc: subprocess.Popen
    base_dir: str
    log_path: str
    extra: dict = field(default_factory=dict)

    @property
    def all_endpoints(self) -> str:
        return ",".join(self.endpoints)

    def etcdctl(self, *args: str, endpoints: str | None = None, input: str | bytes | None = None,
                timeout_s: float = ETCDCTL_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = [ETCDCTL, f"--endpoints={endpoints or self.all_endpoints}", "--command-timeout=10s", *args]
        text = not isinstance(input, bytes)
        cp = subprocess.run(cmd, input=input, capture_output=True, text=text, timeout=timeout_s, env=env)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        return cp

    def spawn_etcdctl(self, *args: str, endpoints: str | None = None) -> subprocess.Popen:
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = [ETCDCTL, f"--endpoints={endpoints or self.all_endpoints}", *args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=env)

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n_chars:]
        except OSError:
            return ""


def stop_process(p: subprocess.Popen, timeout_s: float = CLUSTER_STOP_TIMEOUT_S) -> None:
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout_s)


def start_cluster(n: int = 3) -> Cluster:
    base = tempfile.mkdtemp(prefix="geokv-e2e-")
    log_path = os.path.join(base, "cluster.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "inproc_cluster_main.py"), str(n), base],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    log.close()
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(CLUSTER_START_TIMEOUT_S):
            raise RuntimeError("cluster did not start in time")
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("cluster process exited during start")
        info = json.loads(line)
    except BaseException:
        stop_process(proc)
        with open(log_path, errors="replace") as f:
            tail = f.read()[-4000:]
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"cluster failed to start:\n{tail}") from None
    finally:
        sel.close()
    return Cluster(info["endpoints"], info["metrics"], info["ids"], proc, base, log_path)


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(3)
    try:
        yield c
    finally:
        stop_process(c.proc)
        if c.proc.stdin:
            c.proc.stdin.close()
        if c.proc.stdout:
            c.proc.stdout.close()
        shutil.rmtree(c.base_dir, ignore_errors=True)
