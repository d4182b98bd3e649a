"""Fixtures: a real server for the client to talk to.

``server`` is parametrized over the back-ends listed in BACKENDS: etcd 3.4 (the
reference) and geokv once its server runs. Each back-end is started in a temp dir on
free loopback ports and stopped by PID, even when a test fails.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

from etcdproc import EtcdCluster, client_backends, start_local_cluster

from geokv.client import parse_endpoint


@dataclass
class Server:
    backend: str
    endpoints: list[str]  # host:port
    cluster: object

BACKENDS = client_backends()

needs_etcd = pytest.mark.skipif(not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"),
                                reason="etcd server binary (Debian etcd-server) is not installed")


@pytest.fixture(scope="session", params=BACKENDS)
def server(request, tmp_path_factory):
    """A one-member cluster shared by every client test (each uses its own key prefix)."""
    base = str(tmp_path_factory.mktemp(f"{request.param}1"))
    if request.param == "etcd":
        if not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"):
            pytest.skip("etcd server binary is not installed")
        cluster = EtcdCluster(base, 1)
    else:
        cluster = start_local_cluster(1, base)
    try:
        if request.param == "etcd":
            cluster.start()
        yield Server(request.param, [parse_endpoint(e) for e in cluster.endpoints], cluster)
    finally:
        cluster.stop()


class Cluster3:
    """Three members of either back-end: ``endpoints`` (host:port) and ``kill(i)`` by PID."""

    def __init__(self, backend: str, base: str) -> None:
        self.backend = backend
        if backend == "etcd":
            self._c = EtcdCluster(base, 3)
        else:
            self._c = None
            self._base = base

    def start(self) -> None:
        if self.backend == "etcd":
            self._c.start()
        else:
            self._c = start_local_cluster(3, self._base)
        self.endpoints = [parse_endpoint(e) for e in self._c.endpoints]

    def kill(self, i: int) -> None:
        self._c.kill(i)

    def stop(self) -> None:
        if self._c is not None:
            self._c.stop()


@pytest.fixture(params=BACKENDS)
def cluster3(request, tmp_path):
    """A fresh three-member cluster for failover tests (members may be killed)."""
    if request.param == "etcd" and not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"):
        pytest.skip("etcd server binary is not installed")
    cluster = Cluster3(request.param, str(tmp_path))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix(request):
    """A key prefix unique to the test, so tests sharing a server do not collide."""
    return f"/t/{request.node.name}/"
