"""Endpoint failover, and the rule that a write with an unknown outcome is never repeated."""

from __future__ import annotations

import asyncio
import time

import pytest

from etcdproc import free_port
from tcpproxy import TcpProxy

from geokv.client import AsyncClient, Client, Op, OutcomeUnknown
from geokv.client.errors import EndpointsUnavailable


@pytest.fixture
def proxy(server):
    p = TcpProxy(server.endpoints[0])
    try:
        yield p
    finally:
        p.stop()


def version_of(endpoints, key):
    with Client(endpoints, timeout_s=5) as c:
        got = c.get(key)
        return got.kvs[0].version if got.kvs else 0


def test_a_write_goes_to_the_next_endpoint_when_the_first_cannot_be_reached(server, prefix):
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, *server.endpoints], timeout_s=5) as c:
        c.put(prefix + "counter", "1")
        assert c.current_endpoint == server.endpoints[0]
    assert version_of(server.endpoints, prefix + "counter") == 1  # sent exactly once


def test_all_endpoints_down_gives_a_clear_error_quickly():
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with Client(dead, timeout_s=1.5) as c:
        with pytest.raises((EndpointsUnavailable, Exception)) as ei:
            c.put("k", "v")
        assert "cannot connect" in str(ei.value)
        with pytest.raises(Exception) as ei:
            c.get("k")
        assert "cannot connect" in str(ei.value)


def test_a_write_whose_answer_is_lost_is_reported_unknown_and_not_repeated(server, proxy, prefix):
    key = prefix + "counter"
    with Client([proxy.endpoint, *server.endpoints], timeout_s=5) as c:
        c.put(key, "1")  # through the proxy: counter version 1
        assert c.current_endpoint == proxy.endpoint
        proxy.drop_responses = True
        sent_before = proxy.bytes_to_server
        with pytest.raises(OutcomeUnknown) as ei:
            c.put(key, "2", timeout_s=1.0)
        assert proxy.bytes_to_server > sent_before  # the request did reach the server
        assert "outcome unknown" in str(ei.value) and "not retried" in str(ei.value)
        assert ei.value.endpoint == proxy.endpoint
        # The server applied it once; the client did not send it again to the healthy endpoint.
        assert version_of(server.endpoints, key) == 2
        # Reads change nothing, so the same client moves on to the next endpoint for them.
        assert c.get(key, timeout_s=4).value == b"2"
        assert c.current_endpoint == server.endpoints[0]
    assert version_of(server.endpoints, key) == 2


def test_a_txn_cut_by_a_dropped_connection_is_reported_unknown(server, proxy, prefix):
    key = prefix + "counter"

    async def main():
        async with AsyncClient([proxy.endpoint, *server.endpoints], timeout_s=5) as c:
            await c.put(key, "1")
            proxy.drop_responses = True
            task = asyncio.ensure_future(c.txn().then(Op.put(key, "2")).commit())
            await asyncio.sleep(0.5)
            proxy.close_connections()
            with pytest.raises(OutcomeUnknown) as ei:
                await task
            return str(ei.value)

    msg = asyncio.run(main())
    assert "UNAVAILABLE" in msg or "CANCELLED" in msg or "Deadline" in msg
    assert version_of(server.endpoints, key) == 2


def test_reads_and_writes_continue_when_the_current_endpoint_is_killed(cluster3, prefix):
    with Client(cluster3.endpoints, timeout_s=8) as c:
        c.put(prefix + "k", "before")
        first = c.current_endpoint
        cluster3.kill(cluster3.endpoints.index(first))
        assert c.get(prefix + "k").value == b"before"  # returns once the survivors have a leader
        assert c.current_endpoint != first
        c.put(prefix + "k", "after")
        assert c.get(prefix + "k").value == b"after"


def test_move_leader_transfers_leadership_to_the_chosen_member(cluster3):
    with Client(cluster3.endpoints, timeout_s=8) as c:
        before = c.status()
        target = next(m.id for m in c.member_list() if m.id != before.leader)
        c.move_leader(target)
        assert c.status(c.leader_endpoint()).header.member_id == target
        deadline = time.monotonic() + 5.0  # followers learn of the new leader by its next heartbeat
        while not all(s.leader == target for s in c.statuses()):
            assert time.monotonic() < deadline, [s.leader for s in c.statuses()]
            time.sleep(0.05)
        c.put("/moved", "yes")  # the new leader takes writes
        assert c.get("/moved").value == b"yes"
