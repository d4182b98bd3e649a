"""Fixtures for end-to-end tests: a real 3-member geokv cluster (three
``python -m geokv.runtime.serve`` processes from geokv.testing.cluster.LocalCluster, real
peer TCP, WAL and LMDB) and the real etcdctl (ETCDCTL_API=3) talking to it. One
cluster per test module keeps the suite fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import pytest

from geokv.testing.cluster import LocalCluster
from geokv.testing.ports import free_ports

CLUSTER_START_TIMEOUT_S = 60.0
CLUSTER_START_ATTEMPTS_MAX = 2
ETCDCTL_TIMEOUT_S = 30.0
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Cluster:
    endpoints: list[str]
    metrics: list[str]
    ids: list[int]
    local: LocalCluster
    base_dir: str
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

    def spawn_etcdctl(self, *args: str, endpoints: str | None = None, stderr: bool = False) -> subprocess.Popen:
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = [ETCDCTL, f"--endpoints={endpoints or self.all_endpoints}", *args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=env)

    def log_tail(self, n_bytes: int = 2000) -> str:
        return "\n".join(self.local.tail_log(i, n_bytes) for i in range(len(self.endpoints)))


def _start_cluster_once(n: int) -> Cluster:
    base = tempfile.mkdtemp(prefix="geokv-e2e-")
    lc = LocalCluster(n, base, start=False)
    try:
        metrics = [f"http://127.0.0.1:{p}" for p in free_ports(n)]
        for i, url in enumerate(metrics):
            lc.specs[i].extra_args = ["--listen-metrics-urls", url]
            lc.restart(i)
        lc.wait_ready(CLUSTER_START_TIMEOUT_S)
    except BaseException as exc:
        logs = "\n".join(f"--- {lc.names[i]} ---\n{lc.tail_log(i, 3000)}" for i in range(n))
        lc.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"cluster did not start: {exc}\n{logs}") from None
    return Cluster([u.removeprefix("http://") for u in lc.endpoints], metrics,
                   [lc.member_id(i) for i in range(n)], lc, base)


def start_cluster(n: int = 3) -> Cluster:
    """Start a cluster; retry once on fresh ports, because free ports are picked by
    binding port 0 and releasing it, and another process on this shared machine can take
    one before our member binds it."""
    for attempt in range(CLUSTER_START_ATTEMPTS_MAX):
        try:
            return _start_cluster_once(n)
        except RuntimeError as exc:
            if attempt + 1 == CLUSTER_START_ATTEMPTS_MAX:
                raise
            print(f"retrying cluster start on fresh ports after: {str(exc)[:2000]}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(3)
    try:
        yield c
    finally:
        c.local.stop()
        shutil.rmtree(c.base_dir, ignore_errors=True)
