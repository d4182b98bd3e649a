"""Fixtures: a real server for the client to talk to.

``server`` is parametrized over the back-ends listed in BACKENDS: etcd 3.4 (the
reference) and geokv once its server runs. Each back-end is started in a temp dir on
free loopback ports and stopped by PID, even when a test fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

from etcdproc import EtcdCluster

#: Back-ends the client's tests run against.
BACKENDS = ["etcd"]

needs_etcd = pytest.mark.skipif(not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"),
                                reason="etcd server binary (Debian etcd-server) is not installed")


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    """A one-member cluster shared by the tests of a module; yields an object with .endpoints."""
    base = str(tmp_path_factory.mktemp(f"{request.param}1"))
    if request.param == "etcd":
        if not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"):
            pytest.skip("etcd server binary is not installed")
        cluster = EtcdCluster(base, 1)
    else:
        from geokv.testing.cluster import LocalCluster

        cluster = LocalCluster(1, base)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd3(tmp_path):
    """A fresh three-member etcd cluster for failover tests (members may be killed)."""
    if not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"):
        pytest.skip("etcd server binary is not installed")
    cluster = EtcdCluster(str(tmp_path), 3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix(request):
    """A key prefix unique to the test, so tests sharing a server do not collide."""
    return f"/t/{request.node.name}/"
