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


#: How long a test waits for a write that reached the server to be applied.
APPLY_WAIT_S = 10.0


def version_of(endpoints, key, *, at_least=0):
    """The key's version (how many puts were applied), waiting (bounded) for ``at_least``."""
    deadline = time.monotonic() + APPLY_WAIT_S
    with Client(endpoints, timeout_s=5) as c:
        while True:
            got = c.get(key)
            version = got.kvs[0].version if got.kvs else 0
            if version >= at_least or time.monotonic() > deadline:
                return version
            time.sleep(0.05)


def wait_sent(proxy, before):
    deadline = time.monotonic() + APPLY_WAIT_S
    while proxy.bytes_to_server <= before:
        assert time.monotonic() < deadline, "the request never reached the proxy"
        time.sleep(0.01)


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
        assert version_of(server.endpoints, key, at_least=2) == 2
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
            before = proxy.bytes_to_server
            task = asyncio.ensure_future(c.txn().then(Op.put(key, "2")).commit())
            await asyncio.get_running_loop().run_in_executor(None, wait_sent, proxy, before)
            # Cut the connection only once the server has applied the txn (its answer is
            # being dropped), so the outcome really is "applied, but the client cannot know".
            applied = await asyncio.get_running_loop().run_in_executor(
                None, lambda: version_of(server.endpoints, key, at_least=2))
            assert applied == 2
            proxy.close_connections()
            with pytest.raises(OutcomeUnknown) as ei:
                await task
            return str(ei.value)

    msg = asyncio.run(main())
    assert "UNAVAILABLE" in msg or "CANCELLED" in msg or "Deadline" in msg
    assert version_of(server.endpoints, key, at_least=2) == 2
    time.sleep(0.3)  # a repeat, had the client sent one, would have landed by now
    assert version_of(server.endpoints, key) == 2


#: TTL of the lease kept alive across a member's death: renewals run every TTL/3, and one
#: failed renewal on the dead endpoint plus a reconnect elsewhere must fit in the rest.
KEEPALIVE_TEST_TTL_S = 3
#: Renewals after the kill that show the keep-alive moved on for good, not just once.
RENEWALS_AFTER_KILL_MIN = 3
#: How far past twice the TTL (counted from the kill) the lease must stay alive.
LEASE_OUTLIVE_MARGIN_S = 0.5


def test_reads_writes_and_keep_alives_move_on_when_the_clients_endpoint_dies(cluster3, prefix):
    ttl_s = KEEPALIVE_TEST_TTL_S
    with Client(cluster3.endpoints, timeout_s=5) as probe:
        leader = probe.leader_endpoint()
    # Connect to a follower first, so killing it does not also cost an election.
    follower = next(e for e in cluster3.endpoints if e != leader)
    with Client([follower] + [e for e in cluster3.endpoints if e != follower], timeout_s=8) as c:
        c.put(prefix + "k", "before")
        assert c.current_endpoint == follower
        lease = c.lease_grant(ttl_s).id
        c.put(prefix + "owned", "v", lease=lease)
        with c.keep_alive(lease) as ka:
            cluster3.kill(cluster3.endpoints.index(follower))
            killed_at = time.monotonic()
            renewals_at_kill = ka.renewals
            assert c.get(prefix + "k").value == b"before"
            assert c.current_endpoint != follower
            c.put(prefix + "k", "after")
            assert c.get(prefix + "k").value == b"after"
            # Only renewals through the other members can keep the lease alive this long.
            outlive_until = killed_at + 2 * ttl_s + LEASE_OUTLIVE_MARGIN_S
            while time.monotonic() < outlive_until or ka.renewals - renewals_at_kill < RENEWALS_AFTER_KILL_MIN:
                assert not ka.expired, ka.error
                # Without a renewal within one TTL the server may drop the lease: a real failure.
                assert c._run(ka.wait_renewed(ttl_s)), f"no renewal within the lease's TTL ({ka.error})"
            assert not ka.expired
            assert c.get(prefix + "owned").value == b"v"


def test_move_leader_then_kill_the_new_leader_and_writes_continue(cluster3, prefix):
    with Client(cluster3.endpoints, timeout_s=8) as c:
        before = c.status()
        target = next(m.id for m in c.member_list() if m.id != before.leader)
        c.move_leader(target)
        leader = c.leader_endpoint()
        assert c.status(leader).header.member_id == target
        c.put(prefix + "k", "before")  # the new leader takes writes
        cluster3.kill(cluster3.endpoints.index(leader))
        assert c.get(prefix + "k").value == b"before"  # returns once the survivors have a leader
        # leader_endpoint waits out the election instead of naming the dead leader or
        # giving up on a member's passing "no leader".
        survivor_leader = c.leader_endpoint()
        assert survivor_leader != leader and c.status(survivor_leader).is_leader
        c.put(prefix + "k", "after")
        assert c.get(prefix + "k").value == b"after"
