"""Region-aware routing: local reads go to the member in the client's own region."""

from __future__ import annotations

import pytest

from etcdproc import client_backends, start_local_cluster

from geokv.client import Client, parse_endpoint

pytestmark = pytest.mark.skipif("geokv" not in client_backends(), reason="needs the geokv server (regions)")

REGIONS = ["us-east", "eu-west", "ap-south"]


@pytest.fixture(scope="module")
def geo_cluster(tmp_path_factory):
    c = start_local_cluster(3, str(tmp_path_factory.mktemp("geo")), regions=REGIONS)
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize("region", REGIONS)
def test_serializable_reads_are_served_by_the_member_in_the_clients_region(geo_cluster, region):
    endpoints = [parse_endpoint(e) for e in geo_cluster.endpoints]
    local_id = geo_cluster.member_id(REGIONS.index(region))
    with Client(endpoints, timeout_s=5, region=region, read_mode="serializable") as c:
        c.put("/geo/k", region)
        got = c.get("/geo/k")
        assert got.header.member_id == local_id
        assert c.get("/geo/k", read_mode="linearizable").value == region.encode()


def test_regions_are_reported_by_status(geo_cluster):
    endpoints = [parse_endpoint(e) for e in geo_cluster.endpoints]
    with Client(endpoints, timeout_s=5) as c:
        assert [s.region for s in c.statuses()] == REGIONS


def test_emulated_wan_delays_each_request_by_the_servers_region(geo_cluster):
    from geokv.geo.wan import default_rtt_table

    us_east = parse_endpoint(geo_cluster.endpoints[REGIONS.index("us-east")])
    with Client([us_east], timeout_s=5, region="eu-west", emulate_wan=True) as c:
        real = c.async_client._wan
        asked = []

        class Recorder:
            def one_way_delay_s(self, region):
                asked.append(region)
                return real.one_way_delay_s(region)

            def rtt_ms(self, region):
                return real.rtt_ms(region)

        c.async_client._wan = Recorder()
        c.put("/wan/k", "v")
        assert c.get("/wan/k").value == b"v"
    assert asked == ["us-east"] * 4  # before and after each of the two requests
    assert real.one_way_delay_s("us-east") == default_rtt_table().rtt_ms("eu-west", "us-east") / 2000


#: How long the survivor may take to notice it lost its quorum (many election timeouts).
QUORUM_LOSS_WAIT_S = 20.0
#: How long the first "no leader" refusal may take to show in the client's counters.
REFUSAL_WAIT_S = 20.0
#: The put's budget: the refusal, then a Python + gRPC member restart and an election,
#: which take seconds idle but far longer on a loaded 2-core machine (a 30 s budget ran
#: out once in ~30 runs beside four CPU burners).
RESEND_BUDGET_S = 120.0


def test_a_write_refused_with_no_leader_is_resent_and_applied_exactly_once(geo_cluster):
    """'etcdserver: no leader' is returned before execution, so the client may resend.

    Last in the module: it kills two members of the shared cluster."""
    import threading
    import time

    c = geo_cluster
    c.kill(1)
    c.kill(2)
    survivor = parse_endpoint(c.endpoints[0])
    deadline = time.monotonic() + QUORUM_LOSS_WAIT_S
    while c.status(0).leader != 0:  # the survivor notices it has lost its quorum
        assert time.monotonic() < deadline, "survivor kept a leader without a quorum"
        time.sleep(0.1)
    with Client([survivor], timeout_s=RESEND_BUDGET_S) as client:
        stats = client.statistics()  # live counters

        def restart_after_a_refusal():
            # Bring a quorum back only once the write was refused at least once.
            give_up = time.monotonic() + REFUSAL_WAIT_S
            while stats.refused_before_execution == 0 and time.monotonic() < give_up:
                time.sleep(0.05)
            c.restart(1)

        restarter = threading.Thread(target=restart_after_a_refusal)
        restarter.start()
        try:
            client.put("/noleader/counter", "1")
        except Exception as exc:
            logs = "\n".join(f"--- member {i} (running: {c.is_running(i)}):\n{c.tail_log(i)}" for i in range(3))
            raise AssertionError(f"the resent put failed: {exc!r}; stats {stats}\n{logs}") from exc
        finally:
            restarter.join()
        assert stats.refused_before_execution >= 1 and stats.outcome_unknown == 0
        got = client.get("/noleader/counter")
        assert got.kvs[0].version == 1  # applied exactly once
