"""Peer transport over real loopback TCP: batching, hello checks, garbage, delay, RTT."""

import asyncio
import struct
import time

import msgpack
import pytest

from geokv import errors
from geokv.raft.types import Entry, Message, MessageType
from geokv.runtime import transport as tp
from geokv.runtime.transport import PeerClient, Transport, pack_frame

from .conftest import run

CLUSTER = 0xC1


def make(mid, inbox, *, cluster=CLUSTER, delay=None, region="r1", handler=None, unreachable=None):
    return Transport(cluster_id=cluster, member_id=mid, name=f"m{mid}", region=region, zone="",
                     listen_host="127.0.0.1", listen_port=0, on_raft=inbox.extend,
                     on_unreachable=unreachable, call_handler=handler, heartbeat_interval_s=0.02,
                     outbound_delay_s=delay)


async def wait_for(pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def app(frm, to, i):
    return Message(MessageType.APP, to=to, frm=frm, term=1, index=i, entries=[Entry(1, i + 1, data=b"x" * 10)])


def test_messages_arrive_in_order_and_batched():
    async def main():
        in1, in2 = [], []
        t1, t2 = make(1, in1), make(2, in2)
        await t1.start(); await t2.start()
        try:
            t1.set_peers({2: f"http://127.0.0.1:{t2.listen_port}"})
            t2.set_peers({1: f"http://127.0.0.1:{t1.listen_port}"})
            t1.send([app(1, 2, i) for i in range(500)])
            await wait_for(lambda: len(in2) == 500)
            assert [m.index for m in in2] == list(range(500))
            assert in2[0].entries[0].data == b"x" * 10
            # 500 messages queued at once travel in far fewer frames than messages
            assert t2.frames_in < 100
            t2.send([Message(MessageType.APP_RESP, to=1, frm=2, term=1, index=9)])
            await wait_for(lambda: len(in1) == 1)
        finally:
            await t1.stop(); await t2.stop()
    run(main())


def test_hello_from_another_cluster_is_refused():
    async def main():
        in1, in2 = [], []
        t1 = make(1, in1, cluster=0xAAA)
        t2 = make(2, in2, cluster=0xBBB)
        await t1.start(); await t2.start()
        try:
            t1.set_peers({2: f"http://127.0.0.1:{t2.listen_port}"})
            t1.send([app(1, 2, 0)])
            await asyncio.sleep(0.5)
            assert in2 == []
            assert t2.bad_frames >= 1
            assert not t1.connected(2)
        finally:
            await t1.stop(); await t2.stop()
    run(main())


@pytest.mark.parametrize("payload", [
    b"\x00\x00\x00\x05hello",                       # not msgpack list
    struct.pack(">I", 1 << 31) + b"x",              # oversized length
    b"\x00\x00\x00\x00",                            # empty frame
    pack_frame([tp.HELLO, CLUSTER, 9, "x", "", ""]) + pack_frame([tp.RAFT, [[1, 2, 3]]]),  # bad message
    pack_frame([tp.HELLO, CLUSTER, 9, "x", "", ""]) + pack_frame([99, 1]),                 # unknown kind
    pack_frame([tp.HELLO, CLUSTER, 9, "x", "", ""]) + b"\x00\x00\x00\x03\xc1\xc1\xc1",     # invalid msgpack
])
def test_garbage_closes_only_that_connection(payload):
    async def main():
        in1, in2 = [], []
        t1, t2 = make(1, in1), make(2, in2)
        await t1.start(); await t2.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", t2.listen_port)
            w.write(payload)
            await w.drain()
            # the server closes the connection
            rest = await asyncio.wait_for(r.read(), 5.0)
            assert b"" == rest or rest  # closed after at most a hello
            w.close()
            # and still works for real peers
            t1.set_peers({2: f"http://127.0.0.1:{t2.listen_port}"})
            t1.send([app(1, 2, 0)])
            await wait_for(lambda: len(in2) == 1)
        finally:
            await t1.stop(); await t2.stop()
    run(main())


def test_message_claiming_another_sender_is_refused():
    async def main():
        in2 = []
        t2 = make(2, in2)
        await t2.start()
        try:
            from geokv.runtime.transport import encode_message
            r, w = await asyncio.open_connection("127.0.0.1", t2.listen_port)
            w.write(pack_frame([tp.HELLO, CLUSTER, 7, "x", "", ""]))
            w.write(pack_frame([tp.RAFT, [encode_message(app(5, 2, 0))]]))  # frm 5 on 7's connection
            await w.drain()
            await asyncio.wait_for(r.read(), 5.0)
            assert in2 == [] and t2.bad_frames == 1
            w.close()
        finally:
            await t2.stop()
    run(main())


def test_outbound_delay_adds_latency_and_keeps_order():
    async def main():
        in2 = []
        seen_at = []
        t1 = make(1, [], delay=lambda region: 0.15 if region == "far" else 0.0)
        t2 = make(2, in2, region="far")
        orig = t2.on_raft
        t2.on_raft = lambda ms: (seen_at.append(time.monotonic()), orig(ms))
        await t1.start(); await t2.start()
        try:
            t1.set_peers({2: f"http://127.0.0.1:{t2.listen_port}"})
            await wait_for(lambda: t1.connected(2))
            t0 = time.monotonic()
            for i in range(20):
                t1.send([app(1, 2, i)])
                await asyncio.sleep(0.005)
            await wait_for(lambda: len(in2) == 20)
            assert [m.index for m in in2] == list(range(20))
            assert seen_at[0] - t0 >= 0.14
            # RTT probes see the emulated delay one way
            await wait_for(lambda: 1 in t2.rtt_ms() or 2 in t1.rtt_ms(), 5.0)
            await wait_for(lambda: t1.rtt_ms().get(2, 0) >= 140, 5.0)
            st = t1.rtt_stats()[2]
            assert st["p50_ms"] >= 140 and st["samples"] >= 1
        finally:
            await t1.stop(); await t2.stop()
    run(main())


def test_full_queue_drops_oldest_and_reports_unreachable(monkeypatch):
    monkeypatch.setattr(tp, "MAX_PEER_QUEUE_ITEMS", 10)

    async def main():
        unreachable = []
        t1 = make(1, [], unreachable=unreachable.append)
        await t1.start()
        try:
            t1.set_peers({2: "http://127.0.0.1:1"})  # nobody listens there
            t1.send([app(1, 2, i) for i in range(25)])
            assert len(t1._peers[2].queue) == 10
            assert unreachable.count(2) == 15
            assert [o[2][5] for o in t1._peers[2].queue] == list(range(15, 25))
        finally:
            await t1.stop()
    run(main())


def test_calls_and_errors_travel_back():
    async def handler(peer, method, payload):
        if method == "echo":
            return [peer, payload]
        raise errors.LeaseNotFound()

    async def main():
        t1 = make(1, [])
        t2 = make(2, [], handler=handler)
        await t1.start(); await t2.start()
        try:
            t1.set_peers({2: f"http://127.0.0.1:{t2.listen_port}"})
            await wait_for(lambda: t1.connected(2))
            assert await t1.call(2, "echo", b"hi", 5.0) == [1, b"hi"]
            with pytest.raises(errors.LeaseNotFound):
                await t1.call(2, "boom", None, 5.0)
            c = PeerClient("127.0.0.1", t2.listen_port, CLUSTER)
            await c.connect()
            assert await c.call("echo", 3) == [0, 3]
            await c.close()
        finally:
            await t1.stop(); await t2.stop()
    run(main())


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_read_frame_on_arbitrary_bytes_only_raises_frame_errors(data):
    async def main():
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        try:
            f = await tp.read_frame(r, 1 << 16)
        except (tp.FrameError, asyncio.IncompleteReadError):
            return
        assert isinstance(f, list) and type(f[0]) is int
        if f[0] == tp.RAFT and len(f) == 2 and isinstance(f[1], list):
            for obj in f[1]:
                try:
                    tp.decode_message(obj)
                except (ValueError, TypeError, IndexError, KeyError):
                    pass
    asyncio.run(main())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**63), min_size=3, max_size=12), st.binary(max_size=50))
def test_raft_messages_round_trip_through_frames(nums, data):
    m = Message(MessageType.APP, to=nums[0] + 1, frm=nums[1] + 1, term=nums[2],
                entries=[Entry(n % 1000, i + 1, data=data) for i, n in enumerate(nums[3:])], context=data)

    async def main():
        r = asyncio.StreamReader()
        r.feed_data(pack_frame([tp.RAFT, [tp.encode_message(m)]]))
        r.feed_eof()
        f = await tp.read_frame(r, 1 << 20)
        assert tp.decode_message(f[1][0]) == m
    asyncio.run(main())
