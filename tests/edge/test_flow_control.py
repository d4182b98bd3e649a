"""Request flow control and call cancellation on the native edge: a request message
larger than the stream window completes (grpcio, the native channel, a raw client
following the windows); a slow reader still pushes back (the window is credited only up
to the buffering bound, then as the handler reads); padding and the data of reset
streams are credited; a reset reaches a handler that has just suspended before the
next call on the connection is served."""

from __future__ import annotations

import asyncio
import struct
import time

import grpc
import grpc.aio
import pytest

from .conftest import RawH2, decode_headers, grpc_message, request_headers, wait_until
from geokv.edge import calls
from geokv.edge import client as nc
from geokv.edge import connection as conn_mod
from geokv.edge import frames as f

pytestmark = pytest.mark.timeout(60)

W = calls.STREAM_WINDOW_BYTES
REFILL = W // calls.WINDOW_REFILL_FRACTION
BIG = 1400 * 1024  # one request message larger than the 1 MiB stream window
MSG = 64 * 1024  # wire size of the messages of the fill tests
U32 = struct.Struct(">I")
SYNC_ROUNDS_MAX = 200


def sync_updates(c: RawH2, sid: int) -> int:
    """PING and read up to its ACK (the edge answers frames in order): the sum of the
    WINDOW_UPDATE increments for ``sid`` the edge sent meanwhile."""
    c.send_frame(f.PING, 0, 0, b"flowsync")
    got = 0
    while True:
        fr = c.read_frame()
        assert fr is not None, "EOF"
        if fr[0] == f.WINDOW_UPDATE and fr[2] == sid:
            got += f.u32(fr[3])
        elif fr[0] == f.PING and fr[1] & f.ACK:
            return got
        elif fr[0] == f.GOAWAY or (fr[0] == f.RST_STREAM and fr[2] == sid):
            raise AssertionError(f"unexpected {fr}")


def fill(c: RawH2, sid: int, frame_bytes: int = MSG, padding: int = 0) -> tuple[int, int]:
    """Send whole messages (each one DATA frame of ``frame_bytes``, ``padding`` of it
    padding) as long as the stream window the edge granted allows; returns
    (bytes sent, bytes credited) once the edge grants no more."""
    body = grpc_message(b"m" * (frame_bytes - 5 - (padding + 1 if padding else 0)))
    payload = bytes((padding,)) + body + b"\x00" * padding if padding else body
    flags = f.PADDED if padding else 0
    sent = credited = 0
    for _ in range(SYNC_ROUNDS_MAX):
        k = (W + credited - sent) // frame_bytes
        if k == 0:
            return sent, credited
        c.send(f.frame(f.DATA, flags, sid, payload) * k)
        sent += k * frame_bytes
        credited += sync_updates(c, sid)
    raise AssertionError("the edge kept granting window")


def response(c: RawH2, sid: int) -> tuple[bytes, dict]:
    frames = c.frames_until(lambda fr: fr[0] == f.HEADERS and fr[2] == sid and fr[1] & f.END_STREAM)
    data = b"".join(fr[3] for fr in frames if fr[0] == f.DATA and fr[2] == sid)
    return data[5:], decode_headers(frames[-1][3])


# --- a message larger than the stream window ----------------------------------------------------
def test_grpcio_client_sends_a_message_larger_than_the_window(edge):
    with grpc.insecure_channel(edge.target) as ch:
        bidi = ch.stream_stream("/test.Edge/BidiEcho")
        big = [bytes([i]) * (BIG + i) for i in range(3)]
        assert list(bidi(iter(big), timeout=20)) == big
        total = ch.stream_unary("/test.Edge/Sum")(iter([b"s" * BIG, b"t" * 10, b"u" * BIG]), timeout=20)
        assert total == str(2 * BIG + 10).encode()
        assert ch.unary_unary("/test.Edge/Echo")(b"e" * BIG, timeout=20) == b"e" * BIG


def test_native_client_sends_a_message_larger_than_the_window(edge):
    async def main():
        ch = nc.NativeChannel(edge.target)
        try:
            call = ch.stream_stream("/test.Edge/BidiEcho")(timeout=20)
            for i in range(3):
                msg = bytes([i]) * (BIG + i)
                await call.write(msg)
                assert await call.read() == msg
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
            call = ch.stream_unary("/test.Edge/Sum")(timeout=20)
            await call.write(b"s" * BIG)
            await call.write(b"t" * BIG)
            await call.done_writing()
            assert await call == str(2 * BIG).encode()
        finally:
            await ch.close()

    asyncio.run(asyncio.wait_for(main(), 45))


def test_a_message_over_the_bound_on_a_stream_is_resource_exhausted(edge):
    with grpc.insecure_channel(edge.target) as ch:
        bidi = ch.stream_stream("/test.Edge/BidiEcho")
        with pytest.raises(grpc.RpcError) as ei:
            list(bidi(iter([b"x" * (edge.server.max_receive_message_bytes + 1)]), timeout=20))
        assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Received message larger than max" in ei.value.details()


def test_raw_client_following_the_window_completes_a_big_message(edge):
    """Exactly the windows the edge grants (no slack): a 1.4 MiB message to a handler
    that is not reading yet is credited as it is buffered."""
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Gated", [(b"x-gate", b"big")]))
        msg = grpc_message(b"b" * BIG)
        sent = credited = 0
        for _ in range(SYNC_ROUNDS_MAX):
            n = min(W + credited - sent, len(msg) - sent, MSG)
            assert n > 0, f"stalled at {sent} of {len(msg)} bytes, {credited} credited"
            c.send_frame(f.DATA, 0, 1, msg[sent:sent + n])
            sent += n
            credited += sync_updates(c, 1)
            if sent == len(msg):
                break
        edge.service.open_gate(edge.loop, "big")
        c.send_frame(f.DATA, f.END_STREAM, 1, b"")
        body, trailers = response(c, 1)
        assert trailers["grpc-status"] == "0"
        assert body == str(BIG).encode()
    finally:
        c.close()


# --- a slow reader still pushes back -------------------------------------------------------------
def test_a_reader_that_never_reads_gets_one_window_credited_then_overrun_is_an_error(edge):
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Hold"))
        sent, credited = fill(c, 1)
        # the bound: one stream window of unread messages is credited, no more
        assert W - REFILL < credited <= W
        assert sent <= W + credited
        # a byte beyond what was granted is a stream error; the connection lives on
        c.send_frame(f.DATA, 0, 1, b"\x00" * (W + credited - sent + 1))
        assert c.rst(1) == f.FLOW_CONTROL_ERROR
        c.send_frame(f.HEADERS, f.END_HEADERS, 3, request_headers())
        c.send_frame(f.DATA, f.END_STREAM, 3, grpc_message(b"alive"))
        assert response(c, 3) == (b"alive", {"grpc-status": "0"})
    finally:
        c.close()


def test_withheld_window_comes_back_as_the_handler_reads(edge):
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Gated", [(b"x-gate", b"slow")]))
        sent, credited = fill(c, 1)
        assert credited <= W
        assert sync_updates(c, 1) == 0  # nothing read, nothing more granted
        edge.service.open_gate(edge.loop, "slow")
        more = []
        assert wait_until(lambda: more.append(sync_updates(c, 1)) or sum(more) > 0, 5.0)
        # everything read: all received bytes are credited (the last partial refill
        # may still be held back, under a quarter window)
        assert sent - REFILL < credited + sum(more) <= sent
        c.send_frame(f.DATA, f.END_STREAM, 1, grpc_message(b"last"))
        body, trailers = response(c, 1)
        assert trailers["grpc-status"] == "0"
        assert int(body) == (sent // MSG) * (MSG - 5) + 4
    finally:
        c.close()


def test_padding_is_credited_at_once(edge):
    """Frames of padding only, to a handler that reads nothing: padding never counts as
    unread data, so the window keeps coming back (three windows' worth here)."""
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Hold"))
        pad = f.frame(f.DATA, f.PADDED, 1, b"\xff" + b"\x00" * 255)  # 256 bytes of window
        sent = credited = 0
        for _ in range(SYNC_ROUNDS_MAX):
            if sent >= 3 * W:
                break
            k = (W + credited - sent) // 256
            assert k > 0, f"stalled: {sent} sent, {credited} credited"
            c.send(pad * k)
            sent += 256 * k
            credited += sync_updates(c, 1)
        assert sent - REFILL < credited <= sent
        # the stream still takes a message and a handler-free end
        c.send_frame(f.DATA, f.PADDED, 1, b"\x02" + grpc_message(b"m") + b"\x00\x00")
        assert sync_updates(c, 1) <= 9
    finally:
        c.close()


def test_data_of_reset_streams_is_credited_to_the_connection(edge):
    """More than the 16 MiB connection window, on streams that are reset with their
    data unread: the connection window keeps being credited."""
    c = RawH2(edge.port)
    try:
        rounds = conn_mod.CONNECTION_WINDOW_BYTES // W + 2
        for i in range(rounds):
            sid = 1 + 2 * i
            c.send_frame(f.HEADERS, f.END_HEADERS, sid, request_headers("/test.Edge/Hold"))
            chunk = grpc_message(b"r" * (MSG - 5))
            c.send(f.frame(f.DATA, 0, sid, chunk) * (W // MSG))  # exactly one stream window
            c.send_frame(f.RST_STREAM, 0, sid, U32.pack(f.CANCEL))
        sid = 1 + 2 * rounds
        c.send_frame(f.HEADERS, f.END_HEADERS, sid, request_headers())
        c.send_frame(f.DATA, f.END_STREAM, sid, grpc_message(b"after"))
        frames = c.frames_until(lambda fr: fr[0] == f.HEADERS and fr[2] == sid and fr[1] & f.END_STREAM,
                                limit=10_000)
        assert not [fr for fr in frames if fr[0] == f.GOAWAY]
        conn_credit = sum(f.u32(fr[3]) for fr in frames if fr[0] == f.WINDOW_UPDATE and fr[2] == 0)
        assert conn_credit >= rounds * W - conn_mod.CONNECTION_WINDOW_BYTES // calls.WINDOW_REFILL_FRACTION
        assert wait_until(lambda: edge.stats()["streams"] == 0)
    finally:
        c.close()


# --- cancellation is deterministic ----------------------------------------------------------------
@pytest.mark.parametrize("separate_reads", [False, True])
def test_a_reset_reaches_a_suspended_handler_before_the_next_call(edge, separate_reads):
    """Call 1 runs inline and suspends; the client resets it in the same read (or in a
    later one); the handler's finally has seen CancelledError (not a late GeneratorExit
    from garbage collection) before the next call on the connection is handled."""
    tag = b"u-%d" % separate_reads
    c = RawH2(edge.port)
    try:
        call = (f.frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Unwind"))
                + f.frame(f.DATA, f.END_STREAM, 1, grpc_message(tag)))
        reset = f.frame(f.RST_STREAM, 0, 1, U32.pack(f.CANCEL))
        probe = (f.frame(f.HEADERS, f.END_HEADERS, 3, request_headers("/test.Edge/Unwound"))
                 + f.frame(f.DATA, f.END_STREAM, 3, grpc_message(tag)))
        if separate_reads:  # a started Task: cancelled at the reset, unwinds at its next step
            c.send(call)
            assert sync_updates(c, 1) == 0
            c.send(reset)
            assert sync_updates(c, 1) == 0
            c.send(probe)
        else:  # the inline handler, whose Task has not run yet, unwinds at the reset
            c.send(call + reset + probe)
        assert response(c, 3) == (b"CancelledError", {"grpc-status": "0"})
        assert wait_until(lambda: edge.stats()["streams"] == 0)
    finally:
        c.close()


def test_a_reset_handler_whose_cleanup_awaits_still_finishes_it(edge):
    c = RawH2(edge.port)
    try:
        c.send(f.frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Unwind"))
               + f.frame(f.DATA, f.END_STREAM, 1, grpc_message(b"slow-1"))
               + f.frame(f.RST_STREAM, 0, 1, U32.pack(f.CANCEL)))

        def unwound() -> bytes:
            sid = unwound.sid = getattr(unwound, "sid", 1) + 2
            c.send(f.frame(f.HEADERS, f.END_HEADERS, sid, request_headers("/test.Edge/Unwound"))
                   + f.frame(f.DATA, f.END_STREAM, sid, grpc_message(b"slow-1")))
            return response(c, sid)[0]

        assert wait_until(lambda: unwound() == b"CancelledError", 5.0)
        assert wait_until(lambda: edge.stats()["streams"] == 0)
    finally:
        c.close()


def test_a_stream_reset_before_its_handler_ran_leaves_nothing_behind(edge):
    c = RawH2(edge.port)
    try:
        before = edge.stats()["open_rpcs"]
        c.send(f.frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/BidiEcho"))
               + f.frame(f.DATA, 0, 1, grpc_message(b"never read"))
               + f.frame(f.RST_STREAM, 0, 1, U32.pack(f.CANCEL))
               + f.frame(f.HEADERS, f.END_HEADERS, 3, request_headers("/test.Edge/Blob"))
               + f.frame(f.DATA, f.END_STREAM, 3, grpc_message(b"1:1"))
               + f.frame(f.RST_STREAM, 0, 3, U32.pack(f.CANCEL))
               + f.frame(f.HEADERS, f.END_HEADERS, 5, request_headers())
               + f.frame(f.DATA, f.END_STREAM, 5, grpc_message(b"ok")))
        assert response(c, 5) == (b"ok", {"grpc-status": "0"})
        assert wait_until(lambda: edge.stats()["open_rpcs"] <= before and edge.stats()["streams"] == 0)
    finally:
        c.close()


def test_compressed_request_messages_are_credited_by_their_wire_size(edge):
    """gzip messages that inflate 1000x: the window comes back for the bytes sent, not
    for the decompressed size (which would let a client queue unbounded data)."""
    import gzip

    c = RawH2(edge.port)
    try:
        edge.service.open_gate(edge.loop, "gz")
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers(
            "/test.Edge/Gated", [(b"x-gate", b"gz"), (b"grpc-encoding", b"gzip")]))
        wire = grpc_message(gzip.compress(b"\x00" * 100_000), compressed=1)
        count = 2000  # ~260 KB on the wire (more than one refill), 200 MB inflated
        c.send(f.frame(f.DATA, 0, 1, wire) * count)
        sent = count * len(wire)
        assert sent > REFILL
        credited = []
        assert wait_until(lambda: credited.append(sync_updates(c, 1)) or sum(credited) >= sent - REFILL, 5.0)
        time.sleep(0.2)  # the handler reads the rest meanwhile
        credited.append(sync_updates(c, 1))
        assert sum(credited) <= sent
        c.send_frame(f.DATA, f.END_STREAM, 1, b"")
        body, trailers = response(c, 1)
        assert trailers["grpc-status"] == "0"
        assert body == str(count * 100_000).encode()
    finally:
        c.close()
