"""Fixtures for the ``geokv`` command's tests: a real server and a CLI runner."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))

from etcdproc import EtcdCluster, start_local_cluster  # noqa: E402

from cli_runner import Cli  # noqa: E402

from geokv.client import parse_endpoint  # noqa: E402

#: Back-ends the CLI's tests run against: geokv itself (the client library is also
#: checked against etcd in tests/client); GEOKV_CLI_BACKENDS=etcd,geokv adds etcd.
BACKENDS = os.environ.get("GEOKV_CLI_BACKENDS", "geokv").split(",")


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    base = str(tmp_path_factory.mktemp(f"cli-{request.param}"))
    if request.param == "etcd":
        if not os.path.exists(shutil.which("etcd") or "/usr/bin/etcd"):
            pytest.skip("etcd server binary is not installed")
        cluster = EtcdCluster(base, 1)
    else:
        cluster = start_local_cluster(1, base)
    try:
        if request.param == "etcd":
            cluster.start()
        yield [parse_endpoint(e) for e in cluster.endpoints]
    finally:
        cluster.stop()


@pytest.fixture
def cli(server):
    return Cli(server)


@pytest.fixture
def prefix(request):
    return f"/cli/{request.node.name}/"
