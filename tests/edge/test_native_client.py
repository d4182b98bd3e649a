"""The native gRPC client channel (geokv.edge.client) against a grpc.aio server, the
native EdgeServer, and scripted hostile HTTP/2 servers (GOAWAY, RST_STREAM, a server
that closes mid-call or never sends SETTINGS, tiny stream limits)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import grpc
import grpc.aio
import pytest

from .conftest import EdgeTestService, _handlers
from geokv.edge import EdgeServer
from geokv.edge import client as nc
from geokv.edge import frames as f
from geokv.edge import hpack

pytestmark = pytest.mark.timeout(60)

BIG = 64 * 1024 * 1024
CALL_TIMEOUT_S = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(kind: str, port: int = 0, svc: EdgeTestService | None = None):
    """A test service on grpc.aio or the native EdgeServer, in this event loop."""
    svc = svc or EdgeTestService()
    if kind == "grpcio":
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", BIG),
                                          ("grpc.max_send_message_length", BIG)])
        server.add_generic_rpc_handlers((_handlers(svc),))
        port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    else:
        server = EdgeServer(max_receive_message_bytes=BIG, max_concurrent_rpcs=5000)
        server.add_generic_rpc_handlers((_handlers(svc),))
        port = await server.add_port("127.0.0.1", port)
        await server.start()
    try:
        yield f"127.0.0.1:{port}", svc
    finally:
        await server.stop(0)


def methods(ch: nc.NativeChannel) -> dict:
    return {
        "Echo": ch.unary_unary("/test.Edge/Echo", _registered_method=True),
        "Sleep": ch.unary_unary("/test.Edge/Sleep"),
        "Fail": ch.unary_unary("/test.Edge/Fail"),
        "Metadata": ch.unary_unary("/test.Edge/Metadata"),
        "Blob": ch.unary_stream("/test.Edge/Blob"),
        "Writer": ch.unary_stream("/test.Edge/Writer"),
        "BidiEcho": ch.stream_stream("/test.Edge/BidiEcho"),
        "Sum": ch.stream_unary("/test.Edge/Sum"),
    }


SERVERS = ["grpcio", "edge"]


@pytest.mark.parametrize("kind", SERVERS)
def test_every_call_kind(kind):
    async def main():
        async with serving(kind) as (target, _):
            ch = nc.NativeChannel(target)
            m = methods(ch)
            assert ch.get_state() is grpc.ChannelConnectivity.IDLE
            assert await m["Echo"](b"hello", timeout=CALL_TIMEOUT_S) == b"hello"
            assert ch.get_state() is grpc.ChannelConnectivity.READY
            assert await m["Echo"](b"") == b""
            # many calls at once, over one connection
            outs = await asyncio.gather(*(m["Echo"](b"%d" % i, timeout=CALL_TIMEOUT_S) for i in range(300)))
            assert outs == [b"%d" % i for i in range(300)]
            md = await m["Metadata"](b"", metadata=(("x-a", "b"), ("x-bin", b"\x00\xff")))
            assert b"('x-a', 'b')" in md and b"('x-bin', b'\\x00\\xff')" in md
            # server streaming
            got = [x async for x in m["Blob"](b"3:10")]
            assert [struct.unpack(">I", g[:4])[0] for g in got] == [0, 1, 2] and all(len(g) == 14 for g in got)
            call = m["Writer"](b"2")
            assert await call.read() == b"w0" and await call.read() == b"w1"
            assert await call.read() is grpc.aio.EOF
            assert await call.code() is grpc.StatusCode.OK
            # client streaming, from an iterator and by write()
            assert await m["Sum"](iter([b"ab", b"cde"])) == b"5"
            call = m["Sum"]()
            for chunk in (b"x" * 10, b"y" * 20):
                await call.write(chunk)
            await call.done_writing()
            assert await call == b"30"
            # bidi
            call = m["BidiEcho"]()
            for i in range(3):
                await call.write(b"m%d" % i)
                assert await call.read() == b"m%d" % i
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
            with pytest.raises(asyncio.InvalidStateError):
                await call.write(b"late")
            await ch.close()
            assert ch.get_state() is grpc.ChannelConnectivity.SHUTDOWN

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_status_errors_and_metadata(kind):
    async def main():
        async with serving(kind) as (target, _):
            ch = nc.NativeChannel(target)
            m = methods(ch)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await m["Fail"](b"abort")
            assert isinstance(ei.value, nc.NativeRpcError)
            assert ei.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert ei.value.details() == "etcdserver: 100% sure: ünïcode"
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await m["Fail"](b"boom")
            assert ei.value.code() is grpc.StatusCode.UNKNOWN
            call = m["Fail"](b"trailers")
            assert await call == b"ok"
            assert ("x-geokv", "yes") in list(await call.trailing_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await ch.unary_unary("/test.Edge/Nope")(b"")
            assert ei.value.code() is grpc.StatusCode.UNIMPLEMENTED
            assert await m["Echo"](b"still fine") == b"still fine"
            await ch.close()

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_deadline_and_cancel(kind):
    async def main():
        async with serving(kind) as (target, svc):
            ch = nc.NativeChannel(target)
            m = methods(ch)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await m["Sleep"](b"5000", timeout=0.2)
            assert ei.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            # the server saw the cancellation (RST_STREAM or its own deadline)
            for _ in range(100):
                if svc.cancelled:
                    break
                await asyncio.sleep(0.02)
            assert svc.cancelled == ["5000"]
            # a cancelled stream: read() raises CancelledError, the channel goes on
            call = m["BidiEcho"]()
            await call.write(b"a")
            assert await call.read() == b"a"
            assert call.cancel() and call.cancelled() and call.done()
            with pytest.raises(asyncio.CancelledError):
                await call.read()
            # a task cancelled while it awaits a unary call resets the stream
            t = asyncio.ensure_future(m["Sleep"](b"3000"))
            await asyncio.sleep(0.1)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            conn = ch._conn
            assert conn is not None and not conn.streams
            assert await m["Echo"](b"after") == b"after"
            await ch.close()

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_flow_control_huge_messages_both_ways(kind):
    async def main():
        async with serving(kind) as (target, _):
            ch = nc.NativeChannel(target, max_receive_message_bytes=BIG, max_send_message_bytes=BIG)
            m = methods(ch)
            big = bytes(range(256)) * (24 * 1024 * 1024 // 256)  # 24 MiB: beyond every window
            assert await m["Echo"](big, timeout=30) == big
            got = [x async for x in m["Blob"](b"12:1048576")]  # 12 MiB on one stream
            assert len(got) == 12 and all(len(g) == 1048580 for g in got)
            # (the edge grants a request stream window only for whole messages read, so a
            # streamed request message must fit its 1 MiB stream window there)
            chunk = 3 * 1024 * 1024 if kind == "grpcio" else 768 * 1024
            call = m["Sum"]()
            for _ in range(24):
                await call.write(b"q" * chunk)
            await call.done_writing()
            assert await call == str(24 * chunk).encode()
            # the client's own receive limit: RESOURCE_EXHAUSTED, the connection survives
            small = nc.NativeChannel(target, max_receive_message_bytes=1024 * 1024, max_send_message_bytes=1024)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await small.unary_unary("/test.Edge/Echo")(b"x" * 1000 + b"y" * 100)
            assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in ei.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in small.unary_stream("/test.Edge/Blob")(b"1:2000000"):
                    pass
            assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in ei.value.details()
            assert await small.unary_unary("/test.Edge/Echo")(b"ok") == b"ok"
            await small.close()
            await ch.close()

    run(main())


def test_connect_failure_backoff_and_reconnect():
    async def main():
        port = free_port()
        ch = nc.NativeChannel(f"127.0.0.1:{port}")
        echo = ch.unary_unary("/test.Edge/Echo")
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await echo(b"x", timeout=2)
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "failed to connect to all addresses" in ei.value.details()
        assert ch.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE
        async with serving("grpcio", port) as (target, _):
            await asyncio.wait_for(ch.channel_ready(), 5)  # retries after the back-off
            assert await echo(b"up") == b"up"
            inflight = asyncio.ensure_future(ch.unary_unary("/test.Edge/Sleep")(b"3000", timeout=10))
            await asyncio.sleep(0.2)
        # the server went away under a running call: UNAVAILABLE, and not "not sent"
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await inflight
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE and nc.NOT_SENT_TEXT not in ei.value.details()
        async with serving("edge", port) as (target, _):
            for _ in range(50):  # the next call reconnects (after at most one back-off)
                try:
                    assert await echo(b"again", timeout=2) == b"again"
                    break
                except grpc.aio.AioRpcError as e:
                    assert e.code() is grpc.StatusCode.UNAVAILABLE
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("no reconnect")
        await ch.close()

    run(main())


def test_writes_of_one_loop_iteration_are_coalesced():
    async def main():
        async with serving("edge") as (target, _):
            ch = nc.NativeChannel(target)
            echo = ch.unary_unary("/test.Edge/Echo")
            await echo(b"warm")
            conn = ch._conn
            writes = []
            real = conn.transport.write
            conn.transport.write = lambda data: (writes.append(len(data)), real(data))[1]
            outs = await asyncio.gather(*(echo(b"%d" % i) for i in range(200)))
            assert outs == [b"%d" % i for i in range(200)]
            # 200 calls (HEADERS + DATA each) leave in a handful of writes, not 400
            assert 1 <= len(writes) <= 40, writes
            await ch.close()

    run(main())


# ---- hostile servers ------------------------------------------------------------------------
def _resp_headers() -> bytes:
    return hpack.encode_literal(b":status", b"200") + hpack.encode_literal(b"content-type", b"application/grpc")


def _trailers(code: int = 0, msg: bytes = b"") -> bytes:
    block = hpack.encode_literal(b"grpc-status", str(code).encode())
    return block + (hpack.encode_literal(b"grpc-message", msg) if msg else b"")


def ok_response(sid: int, body: bytes) -> bytes:
    return (f.frame(f.HEADERS, f.END_HEADERS, sid, _resp_headers())
            + f.frame(f.DATA, 0, sid, struct.pack(">BI", 0, len(body)) + body)
            + f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, _trailers()))


class Scripted:
    """A raw HTTP/2 server; ``on_request(conn_state, sid, writer)`` answers each call."""

    def __init__(self, on_request=None, settings: dict | None = None, send_settings: bool = True) -> None:
        self.on_request = on_request
        self.settings = settings or {}
        self.send_settings = send_settings
        self.connections = 0
        self.max_open = 0
        self.pings_acked = 0
        self.server = None
        self.writers = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        self.writers.append(writer)
        state = {"open": set(), "n": self.connections}
        try:
            assert await reader.readexactly(len(f.PREFACE)) == f.PREFACE
            if self.send_settings:
                writer.write(f.settings_frame(self.settings))
            while True:
                hdr = await reader.readexactly(9)
                hi, lo, ftype, flags, sid = f.FRAME_HEADER.unpack(hdr)
                payload = await reader.readexactly((hi << 8) | lo)
                if ftype == f.HEADERS:
                    state["open"].add(sid)
                    self.max_open = max(self.max_open, len(state["open"]))
                    await self.on_request(state, sid, writer)
                elif ftype == f.PING and flags & f.ACK:
                    self.pings_acked += 1
                elif ftype == f.RST_STREAM:
                    state["open"].discard(sid)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_goaway_fails_calls_above_last_stream_as_not_sent_and_moves_on():
    async def on_request(state, sid, writer):
        if state["n"] == 1 and sid == 1:
            return  # held until stream 3 arrives
        if state["n"] == 1 and sid == 3:
            writer.write(f.goaway_frame(1, f.NO_ERROR, b"bye") + ok_response(1, b"one"))
            return
        writer.write(ok_response(sid, b"new%d" % state["n"]))
        state["open"].discard(sid)

    async def main():
        s = Scripted(on_request)
        target = await s.start()
        ch = nc.NativeChannel(target)
        echo = ch.unary_unary("/x/Echo")
        await ch.channel_ready()
        first = asyncio.ensure_future(echo(b"a", timeout=5))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(echo(b"b", timeout=5))
        assert await first == b"one"
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await second
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE and nc.NOT_SENT_TEXT in ei.value.details()
        from geokv.client import errors as cerr
        assert any(mk in ei.value.details() for mk in cerr.NOT_SENT_MARKERS)
        assert await echo(b"c", timeout=5) == b"new2"  # a new connection
        assert s.connections == 2
        await ch.close()
        await s.stop()

    run(main())


def test_refused_stream_is_not_sent_and_reset_stream_is_reported():
    async def on_request(state, sid, writer):
        code = f.REFUSED_STREAM if sid == 1 else f.INTERNAL_ERROR
        writer.write(f.rst_stream_frame(sid, code))

    async def main():
        s = Scripted(on_request)
        target = await s.start()
        ch = nc.NativeChannel(target)
        echo = ch.unary_unary("/x/Echo")
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await echo(b"a", timeout=5)
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE and nc.NOT_SENT_TEXT in ei.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await echo(b"b", timeout=5)
        assert ei.value.code() is grpc.StatusCode.INTERNAL and "RST_STREAM" in ei.value.details()
        await ch.close()
        await s.stop()

    run(main())


def test_server_closing_mid_call_is_unavailable_and_outcome_unknown_for_writes():
    async def on_request(state, sid, writer):
        writer.close()

    async def main():
        from geokv.client import AsyncClient
        from geokv.client import errors as cerr

        s = Scripted(on_request)
        target = await s.start()
        ch = nc.NativeChannel(target)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await ch.unary_unary("/x/Echo")(b"a", timeout=5)
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE and nc.NOT_SENT_TEXT not in ei.value.details()
        await ch.close()
        async with AsyncClient([target], timeout_s=3, transport="native") as c:
            with pytest.raises(cerr.OutcomeUnknown):
                await c.put("k", "v")
            assert c.statistics().outcome_unknown == 1
        await s.stop()

    run(main())


def test_server_that_never_sends_settings_is_not_ready():
    async def main():
        s = Scripted(send_settings=False)
        target = await s.start()
        ch = nc.NativeChannel(target, connect_attempt_s=0.3)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ch.channel_ready(), 0.2)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await ch.unary_unary("/x/Echo")(b"a", timeout=5)
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "failed to connect to all addresses" in ei.value.details()
        assert ch.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE
        await ch.close()
        await s.stop()

    run(main())


def test_max_concurrent_streams_queues_calls_and_pings_are_answered():
    async def on_request(state, sid, writer):
        writer.write(f.frame(f.PING, 0, 0, b"12345678"))
        await asyncio.sleep(0.01)
        state["open"].discard(sid)
        writer.write(ok_response(sid, b"r%d" % sid))

    async def main():
        s = Scripted(on_request, settings={f.SETTINGS_MAX_CONCURRENT_STREAMS: 2})
        target = await s.start()
        ch = nc.NativeChannel(target)
        echo = ch.unary_unary("/x/Echo")
        outs = await asyncio.gather(*(echo(b"", timeout=10) for _ in range(12)))
        assert sorted(outs) == sorted(b"r%d" % sid for sid in range(1, 24, 2))
        assert s.max_open <= 2
        assert s.pings_acked >= 1
        await ch.close()
        await s.stop()

    run(main())


def test_a_write_refused_by_goaway_moves_to_the_next_endpoint():
    """AsyncClient: a put that the first endpoint never processed (GOAWAY below its
    stream) is sent to the next endpoint, once, and succeeds there."""
    from geokv.client import AsyncClient
    from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

    class KV(rpc_pb2_grpc.KVServicer):
        def __init__(self) -> None:
            self.puts = []

        async def Put(self, request, context):
            self.puts.append(request.key)
            return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=7))

    async def on_request(state, sid, writer):
        writer.write(f.goaway_frame(0, f.NO_ERROR, b"shutting down"))

    async def main():
        s = Scripted(on_request)
        bad = await s.start()
        kv = KV()
        server = EdgeServer(max_receive_message_bytes=BIG, max_concurrent_rpcs=100)
        rpc_pb2_grpc.add_KVServicer_to_server(kv, server)
        port = await server.add_port("127.0.0.1", 0)
        await server.start()
        try:
            async with AsyncClient([bad, f"127.0.0.1:{port}"], timeout_s=5, transport="native") as c:
                r = await c.put("k", "v")
                assert r.header.revision == 7
                assert kv.puts == [b"k"]
                assert c.statistics().not_connected >= 1 and c.statistics().outcome_unknown == 0
        finally:
            await server.stop(0)
            await s.stop()

    run(main())


def test_deadlines_of_many_calls_fire_in_their_own_time():
    async def main():
        async with serving("edge") as (target, _):
            ch = nc.NativeChannel(target)
            sleep = ch.unary_unary("/test.Edge/Sleep")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            ended = {}

            async def one(ms_sleep: int, timeout: float):
                try:
                    await sleep(b"%d" % ms_sleep, timeout=timeout)
                    ended[timeout] = ("ok", loop.time() - t0)
                except grpc.aio.AioRpcError as e:
                    ended[timeout] = (e.code().name, loop.time() - t0)

            await asyncio.gather(one(5000, 0.3), one(5000, 0.1), one(50, 5.0), one(5000, 0.6))
            assert ended[5.0][0] == "ok"
            assert [ended[t][0] for t in (0.1, 0.3, 0.6)] == ["DEADLINE_EXCEEDED"] * 3
            assert ended[0.1][1] < ended[0.3][1] < ended[0.6][1]
            assert ended[0.1][1] >= 0.1 and ended[0.6][1] >= 0.6
            # finished calls leave no entries (their empty buckets go when their time comes)
            assert not any(ch._deadlines.buckets.values())
            assert len(ch._deadlines.heap) <= 5.0 / nc.DEADLINE_RESOLUTION_S + 1
            await ch.close()

    run(main())


# ---- property: any split of the server's bytes gives the same call outcome --------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402


def _response_bytes(messages: list[bytes], data_frame_bytes: int, padded: bool) -> bytes:
    body = b"".join(struct.pack(">BI", 0, len(m)) + m for m in messages)
    out = [f.settings_frame({}), f.frame(f.HEADERS, f.END_HEADERS, 1, _resp_headers())]
    for i in range(0, len(body), data_frame_bytes):
        chunk = body[i:i + data_frame_bytes]
        if padded:
            out.append(f.frame(f.DATA, f.PADDED, 1, b"\x02" + chunk + b"\x00\x00"))
        else:
            out.append(f.frame(f.DATA, 0, 1, chunk))
    out.append(f.frame(f.PING, 0, 0, b"abcdefgh"))
    out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, _trailers(9, b"precondition%20failed%3A%20%C3%BC")))
    return b"".join(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=hst.lists(hst.binary(max_size=300), min_size=0, max_size=4),
       data_frame_bytes=hst.integers(1, 400), padded=hst.booleans(),
       cuts=hst.lists(hst.integers(1, 64), min_size=1, max_size=30))
def test_any_split_of_the_response_bytes_gives_the_same_outcome(messages, data_frame_bytes, padded, cuts):
    wire = _response_bytes(messages, data_frame_bytes, padded)

    async def main():
        a, b = socket.socketpair()
        loop = asyncio.get_running_loop()
        ch = nc.NativeChannel("127.0.0.1:1")
        conn: nc._Connection | None = None

        async def server():
            reader, writer = await asyncio.open_connection(sock=b)
            await reader.readexactly(len(f.PREFACE))
            writer.write(wire[:len(f.settings_frame({}))])
            while True:  # read the request up to its END_STREAM
                hi, lo, ftype, flags, sid = f.FRAME_HEADER.unpack(await reader.readexactly(9))
                await reader.readexactly((hi << 8) | lo)
                if ftype == f.DATA and flags & f.END_STREAM:
                    break
            rest = wire[len(f.settings_frame({})):]
            pos, i = 0, 0
            while pos < len(rest):
                n = cuts[i % len(cuts)]
                writer.write(rest[pos:pos + n])
                await writer.drain()
                await asyncio.sleep(0)
                pos, i = pos + n, i + 1
            await reader.read(1 << 16)  # until the client closes
            writer.close()

        srv = asyncio.ensure_future(server())
        _, conn = await loop.create_connection(lambda: nc._Connection(ch), sock=a)
        await asyncio.wait_for(conn.settings_received, 5)
        ch._conn = conn
        call = ch.unary_stream("/x/Stream")(b"req", timeout=5)
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            async for m in call:
                got.append(m)
        assert got == messages
        assert ei.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert ei.value.details() == "precondition failed: ü"
        await ch.close()
        await asyncio.wait_for(srv, 5)

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_a_stream_the_server_does_not_read_blocks_the_writer_within_its_bound(kind):
    async def main():
        async with serving(kind) as (target, _):
            ch = nc.NativeChannel(target, max_send_message_bytes=BIG)
            call = ch.stream_unary("/test.Edge/Hold")(timeout=20)
            chunk = b"h" * (256 * 1024)
            written = 0
            with pytest.raises(asyncio.TimeoutError):
                for _ in range(400):  # 100 MiB if nothing pushed back
                    await asyncio.wait_for(call.write(chunk), 1.0)
                    written += 1
            st = call.stream
            assert st.pending_bytes <= nc.STREAM_SEND_BUFFER_BYTES_MAX + len(chunk) + 5
            assert written * len(chunk) < 64 * 1024 * 1024
            call.cancel()
            # the connection still serves other calls
            assert await ch.unary_unary("/test.Edge/Echo")(b"free", timeout=5) == b"free"
            await ch.close()

    run(main())


def test_a_server_that_closes_before_settings_fails_the_attempt_at_once():
    async def main():
        async def handle(reader, writer):
            await reader.read(10)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        ch = nc.NativeChannel(target)  # connect_attempt_s: the default 20 s
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await ch.unary_unary("/x/Echo")(b"a", timeout=15)
        assert ei.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "failed to connect to all addresses" in ei.value.details()
        assert loop.time() - t0 < 5
        await ch.close()
        server.close()
        await server.wait_closed()

    run(main())
