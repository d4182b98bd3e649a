"""Watch: events in order, start revision, prev_kv, filters, cancel, compaction, resume."""

from __future__ import annotations

import asyncio
import threading

import pytest

from geokv import errors
from geokv.client import EVENT_DELETE, EVENT_PUT, AsyncClient, Client

#: How long a test waits for one expected event.
EVENT_WAIT_S = 5.0


@pytest.fixture
def client(server):
    c = Client(server.endpoints, timeout_s=5)
    try:
        yield c
    finally:
        c.close()


def take(watch, n):
    out = []
    for _ in range(n):
        ev = watch.next(EVENT_WAIT_S)
        assert ev is not None, f"expected {n} events, got {len(out)}"
        out.append(ev)
    return out


def test_watch_sees_puts_and_deletes_in_order(client, prefix):
    with client.watch(prefix, prefix=True) as w:
        client.put(prefix + "a", "1")
        client.put(prefix + "b", "2")
        client.delete(prefix + "a")
        evs = take(w, 3)
    assert [(e.type, e.kv.key, e.kv.value) for e in evs] == [
        (EVENT_PUT, (prefix + "a").encode(), b"1"),
        (EVENT_PUT, (prefix + "b").encode(), b"2"),
        (EVENT_DELETE, (prefix + "a").encode(), b""),
    ]
    assert evs[0].kv.mod_revision < evs[1].kv.mod_revision < evs[2].kv.mod_revision


def test_watch_from_a_past_revision_replays_history_with_prev_kv(client, prefix):
    r1 = client.put(prefix + "k", "v1").header.revision
    client.put(prefix + "k", "v2")
    with client.watch(prefix + "k", start_revision=r1, prev_kv=True) as w:
        evs = take(w, 2)
    assert [e.kv.value for e in evs] == [b"v1", b"v2"]
    assert evs[1].prev_kv is not None and evs[1].prev_kv.value == b"v1"


def test_watch_filters_drop_the_filtered_event_types(client, prefix):
    with client.watch(prefix, prefix=True, no_put=True) as w:
        client.put(prefix + "x", "1")
        client.delete(prefix + "x")
        evs = take(w, 1)
        assert w.next(0.3) is None
    assert evs[0].type == EVENT_DELETE


def test_a_canceled_watch_stops_iterating(client, prefix):
    w = client.watch(prefix, prefix=True)
    w.wait_created()
    client.put(prefix + "a", "1")
    assert take(w, 1)[0].kv.value == b"1"
    w.cancel()
    assert list(w) == []


def test_watch_from_a_compacted_revision_raises_compacted(client, prefix):
    r1 = client.put(prefix + "k", "1").header.revision
    r2 = client.put(prefix + "k", "2").header.revision
    client.compact(r2)
    w = client.watch(prefix + "k", start_revision=r1)
    with pytest.raises(errors.Compacted):
        next(iter(w))


def test_async_watch_iterates_with_async_for(server, prefix):
    async def main():
        async with AsyncClient(server.endpoints, timeout_s=5) as c:
            async with c.watch(prefix, prefix=True) as w:
                for i in range(3):
                    await c.put(f"{prefix}{i}", str(i))
                seen = []
                async for ev in w:
                    seen.append(ev.kv.value)
                    if len(seen) == 3:
                        break
                return seen

    assert asyncio.run(main()) == [b"0", b"1", b"2"]


def test_watch_resumes_on_another_endpoint_without_loss_or_repeat(cluster3, prefix):
    with Client(cluster3.endpoints, timeout_s=5) as c:
        w = c.watch(prefix, prefix=True)
        w.wait_created()
        c.put(prefix + "1", "1")
        assert take(w, 1)[0].kv.value == b"1"
        watched = w._watch.endpoint
        cluster3.kill(cluster3.endpoints.index(watched))
        survivors = [e for e in cluster3.endpoints if e != watched]
        with Client(survivors, timeout_s=8) as writer:
            writer.get(prefix)  # a linearizable read: returns once the survivors have a leader
            for i in range(2, 6):
                writer.put(f"{prefix}{i}", str(i))
        evs = take(w, 4)
        assert [e.kv.value for e in evs] == [b"2", b"3", b"4", b"5"]
        assert w.next(0.3) is None  # nothing repeated
        assert w.reconnects >= 1
        w.cancel()


def test_sync_watch_can_be_consumed_from_another_thread(client, prefix):
    got = []
    w = client.watch(prefix, prefix=True)
    w.wait_created()

    def consume():
        for ev in w:
            got.append(ev.kv.value)
            if len(got) == 2:
                break

    t = threading.Thread(target=consume)
    t.start()
    client.put(prefix + "a", "1")
    client.put(prefix + "b", "2")
    t.join(EVENT_WAIT_S)
    w.cancel()
    assert got == [b"1", b"2"]
