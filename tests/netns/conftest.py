"""Fixtures for the network-namespace partition tests (real processes, real network)."""

import tempfile

import pytest

from geokv.testing.netns import NetnsCluster, NetnsUnavailable, netns_unavailable_reason

_REASON = netns_unavailable_reason()


def pytest_collection_modifyitems(config, items):
    if _REASON is None:
        return
    skip = pytest.mark.skip(reason=f"netns tests skipped: {_REASON}")
    for item in items:
        if "tests/netns" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture
def netns_cluster():
    """``make(n, **kw)`` -> a started NetnsCluster, stopped (and its network removed) afterwards."""
    made = []
    tmp = tempfile.TemporaryDirectory(prefix="geokv-netns-")

    def make(n=3, **kw):
        try:
            c = NetnsCluster(n, f"{tmp.name}/c{len(made)}", **kw)
        except NetnsUnavailable as exc:  # e.g. iptables missing and not installable
            pytest.skip(f"netns tests skipped: {exc}")
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()
        tmp.cleanup()
