"""Fixtures for the maintenance tests: real geokv processes with a small space quota and
the real etcdctl (ETCDCTL_API=3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import pytest

from geokv.testing.cluster import LocalCluster
from geokv.testing.ports import free_ports

QUOTA_BYTES = 1 << 20  # 1 MiB: a few dozen 20 KB values fill it
CLUSTER_START_TIMEOUT_S = 60.0
CLUSTER_START_ATTEMPTS_MAX = 2
ETCDCTL_TIMEOUT_S = 30.0
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class QuotaCluster:
    local: LocalCluster
    base_dir: str
    metrics: list[str]

    @property
    def endpoints(self) -> list[str]:
        return [u.removeprefix("http://") for u in self.local.endpoints]

    def etcdctl(self, *args: str, endpoint: int | None = None, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        eps = ",".join(self.endpoints) if endpoint is None else self.endpoints[endpoint]
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = [ETCDCTL, f"--endpoints={eps}", "--command-timeout=10s", *args]
        cp = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=ETCDCTL_TIMEOUT_S, env=env)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        return cp


def _start_once() -> QuotaCluster:
    base = tempfile.mkdtemp(prefix="geokv-maint-")
    lc = LocalCluster(3, base, extra_args=["--quota-backend-bytes", str(QUOTA_BYTES)], start=False)
    metrics = [f"http://127.0.0.1:{p}" for p in free_ports(3)]
    try:
        for i, url in enumerate(metrics):
            lc.specs[i].extra_args = ["--listen-metrics-urls", url]
            lc.restart(i)
        lc.wait_ready(CLUSTER_START_TIMEOUT_S)
    except BaseException as exc:
        logs = "\n".join(f"--- {lc.names[i]} ---\n{lc.tail_log(i, 3000)}" for i in range(3))
        lc.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"cluster did not start: {exc}\n{logs}") from None
    return QuotaCluster(lc, base, metrics)


@pytest.fixture(scope="module")
def quota_cluster():
    for attempt in range(CLUSTER_START_ATTEMPTS_MAX):
        try:
            c = _start_once()
            break
        except RuntimeError:
            if attempt + 1 == CLUSTER_START_ATTEMPTS_MAX:
                raise
    try:
        yield c
    finally:
        c.local.stop()
        shutil.rmtree(c.base_dir, ignore_errors=True)
