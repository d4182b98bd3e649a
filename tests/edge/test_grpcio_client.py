"""grpcio clients against the native edge: unary, the three streaming shapes, status
mapping, metadata, deadlines, cancellation, large messages and flow control."""

from __future__ import annotations

import struct
import threading
import time

import grpc
import pytest

from .conftest import MAX_MESSAGE_BYTES, ThreadedEdge, wait_until


def _ident(b: bytes) -> bytes:
    return b


@pytest.fixture(scope="module")
def channel(edge):
    ch = grpc.insecure_channel(edge.target, options=[("grpc.max_receive_message_length", 256 << 20),
                                                     ("grpc.max_send_message_length", 256 << 20)])
    try:
        yield ch
    finally:
        ch.close()


def uu(ch, name):
    return ch.unary_unary(f"/test.Edge/{name}", request_serializer=_ident, response_deserializer=_ident)


def test_unary_echo_many(channel):
    echo = uu(channel, "Echo")
    for i in range(50):
        assert echo(b"hello %d" % i, timeout=5) == b"hello %d" % i
    assert echo(b"", timeout=5) == b""


def test_each_call_has_its_own_context(channel):
    cv = uu(channel, "ContextVar")
    for req in (b"one", b"suspend", b"two", b"suspend", b"three"):
        assert cv(req, timeout=5) == b"unset"


def test_concurrent_unary_futures(channel):
    echo = uu(channel, "Echo")
    futs = [echo.future(b"%d" % i, timeout=10) for i in range(300)]
    assert [fu.result() for fu in futs] == [b"%d" % i for i in range(300)]


def test_large_value_both_ways(channel):
    body = bytes(range(256)) * (6 * 1024)  # 1.5 MiB
    assert uu(channel, "Echo")(body, timeout=20) == body


def test_message_over_limit_is_resource_exhausted(channel):
    with pytest.raises(grpc.RpcError) as ei:
        uu(channel, "Echo")(b"x" * (MAX_MESSAGE_BYTES + 1), timeout=20)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in ei.value.details()
    assert uu(channel, "Echo")(b"still fine", timeout=5) == b"still fine"


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as ei:
        uu(channel, "NoSuchMethod")(b"", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_abort_maps_code_and_percent_encoded_message(channel):
    with pytest.raises(grpc.RpcError) as ei:
        uu(channel, "Fail")(b"abort", timeout=5)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ei.value.details() == "etcdserver: 100% sure: ünïcode"


def test_unexpected_exception_is_unknown(channel):
    with pytest.raises(grpc.RpcError) as ei:
        uu(channel, "Fail")(b"raise", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNKNOWN
    assert "boom" in ei.value.details()


def test_trailing_metadata(channel):
    resp, call = uu(channel, "Fail").with_call(b"trailers", timeout=5)
    assert resp == b"ok"
    assert ("x-geokv", "yes") in tuple(call.trailing_metadata())


def test_invocation_metadata_and_peer(channel):
    out = uu(channel, "Metadata")(b"", timeout=5, metadata=(("x-one", "1"), ("x-two-bin", b"\x00\xff")))
    md, peer = out.split(b"|")
    assert md == repr(sorted([("x-one", "1"), ("x-two-bin", b"\x00\xff")])).encode()
    assert peer.startswith(b"ipv4:127.0.0.1:")


def test_deadline_exceeded_cancels_handler(edge, channel):
    with pytest.raises(grpc.RpcError) as ei:
        uu(channel, "Sleep")(b"3000", timeout=0.3)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: "3000" in edge.service.cancelled)


def test_client_cancel_reaches_handler(edge, channel):
    fut = uu(channel, "Sleep").future(b"4000", timeout=30)
    assert wait_until(lambda: edge.stats()["open_rpcs"] >= 1)
    fut.cancel()
    assert wait_until(lambda: "4000" in edge.service.cancelled)
    assert wait_until(lambda: edge.stats()["open_rpcs"] == 0)


def test_unary_stream_generator(channel):
    blob = channel.unary_stream("/test.Edge/Blob", request_serializer=_ident, response_deserializer=_ident)
    got = list(blob(b"20:100", timeout=10))
    assert [struct.unpack(">I", m[:4])[0] for m in got] == list(range(20))


def test_unary_stream_context_write(channel):
    w = channel.unary_stream("/test.Edge/Writer", request_serializer=_ident, response_deserializer=_ident)
    assert list(w(b"5", timeout=10)) == [b"w0", b"w1", b"w2", b"w3", b"w4"]


def test_big_stream_respects_flow_control(channel):
    """~100 MiB through the default 64 KiB stream window: the edge must wait for the
    client's WINDOW_UPDATEs (a peer would reset us for overrunning its window)."""
    blob = channel.unary_stream("/test.Edge/Blob", request_serializer=_ident, response_deserializer=_ident)
    n = total = 0
    for m in blob(b"100:1048576", timeout=60):
        assert struct.unpack(">I", m[:4])[0] == n
        n += 1
        total += len(m)
    assert n == 100 and total == 100 * (1048576 + 4)


def test_bidi_stream(channel):
    bidi = channel.stream_stream("/test.Edge/BidiEcho", request_serializer=_ident, response_deserializer=_ident)
    reqs = [b"a", b"bb", b"ccc"]
    assert list(bidi(iter(reqs), timeout=10)) == reqs
    # the server ends the call first while the client's half is still open
    ev = threading.Event()

    def gen():
        yield b"x"
        yield b"stop"
        ev.wait(5)  # keep the request half open
    assert list(bidi(gen(), timeout=10)) == [b"x"]
    ev.set()


def test_stream_unary_many_messages(channel):
    sm = channel.stream_unary("/test.Edge/Sum", request_serializer=_ident, response_deserializer=_ident)
    reqs = [b"y" * 1000] * 5000  # 5 MB: more than a stream window of unread requests
    assert sm(iter(reqs), timeout=30) == b"5000000"


def test_grpc_aio_client_gzip(edge):
    import asyncio

    async def go():
        async with grpc.aio.insecure_channel(edge.target, compression=grpc.Compression.Gzip) as ch:
            echo = ch.unary_unary("/test.Edge/Echo", request_serializer=_ident, response_deserializer=_ident)
            return await echo(b"squeeze me " * 1000, timeout=5)
    assert asyncio.run(go()) == b"squeeze me " * 1000


def test_concurrent_rpc_bound():
    e = ThreadedEdge(max_concurrent_rpcs=2).start()
    try:
        with grpc.insecure_channel(e.target) as ch:
            sleep = uu(ch, "Sleep")
            futs = [sleep.future(b"%d" % (1500 + i), timeout=10) for i in range(2)]
            assert wait_until(lambda: e.stats()["open_rpcs"] == 2)
            with pytest.raises(grpc.RpcError) as ei:
                uu(ch, "Echo")(b"x", timeout=5)
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for fu in futs:
                fu.result()
            assert uu(ch, "Echo")(b"x", timeout=5) == b"x"
    finally:
        e.stop()


def test_graceful_stop_finishes_inflight_calls():
    e = ThreadedEdge().start()
    stopped = False
    try:
        with grpc.insecure_channel(e.target) as ch:
            fut = uu(ch, "Sleep").future(b"300", timeout=10)
            assert wait_until(lambda: e.stats()["open_rpcs"] == 1)
            e.call(e.server.stop(5.0))
            stopped = True
            assert fut.result() == b"300"
    finally:
        if not stopped:
            e.stop()
        else:
            e.loop.call_soon_threadsafe(e.loop.stop)
            e._thread.join(5)
            e.loop.close()


def test_task_per_call_mode_behaves_the_same():
    """With the inline first step off (a Task per call), results, errors, deadlines and
    cancellation are the same."""
    e = ThreadedEdge(inline_first_step=False).start()
    try:
        with grpc.insecure_channel(e.target) as ch:
            assert uu(ch, "Echo")(b"t", timeout=5) == b"t"
            with pytest.raises(grpc.RpcError) as ei:
                uu(ch, "Fail")(b"abort", timeout=5)
            assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as ei:
                uu(ch, "Sleep")(b"2500", timeout=0.2)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert wait_until(lambda: "2500" in e.service.cancelled)
            assert uu(ch, "Sleep")(b"10", timeout=5) == b"10"
    finally:
        e.stop()


def test_stop_cancels_calls_that_outlive_the_grace():
    e = ThreadedEdge().start()
    stopped = False
    try:
        with grpc.insecure_channel(e.target) as ch:
            fut = uu(ch, "Sleep").future(b"5000", timeout=20)
            assert wait_until(lambda: e.stats()["open_rpcs"] == 1)
            t0 = time.monotonic()
            e.call(e.server.stop(0.3))
            stopped = True
            with pytest.raises(grpc.RpcError):
                fut.result(timeout=5)
            assert time.monotonic() - t0 < 4.0
            assert wait_until(lambda: "5000" in e.service.cancelled)
    finally:
        if not stopped:
            e.stop()
        else:
            e.loop.call_soon_threadsafe(e.loop.stop)
            e._thread.join(5)
            e.loop.close()
