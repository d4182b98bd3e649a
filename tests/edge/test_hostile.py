"""Hostile and broken HTTP/2 input: each gets the GOAWAY or RST_STREAM RFC 9113 asks
for, and the server keeps serving other connections (and, after a stream error, the
same one)."""

from __future__ import annotations

import struct
import time

import grpc
import pytest

from geokv.edge import connection as conn_mod
from geokv.edge import frames as f
from geokv.edge import hpack

from .conftest import RawH2, decode_headers, grpc_message, request_headers


def _ident(b: bytes) -> bytes:
    return b


def assert_serving(edge) -> None:
    with grpc.insecure_channel(edge.target) as ch:
        echo = ch.unary_unary("/test.Edge/Echo", request_serializer=_ident, response_deserializer=_ident)
        assert echo(b"alive", timeout=5) == b"alive"


def echo_on(c: RawH2, sid: int, body: bytes = b"ping") -> dict:
    """A whole unary call on a raw connection: returns the trailers (and checks the echo)."""
    c.send_frame(f.HEADERS, f.END_HEADERS, sid, request_headers())
    c.send_frame(f.DATA, f.END_STREAM, sid, grpc_message(body))
    got = b""
    trailers = None
    for fr in c.frames_until(lambda fr: fr[2] == sid and fr[0] == f.HEADERS and fr[1] & f.END_STREAM):
        if fr[2] == sid and fr[0] == f.DATA:
            got += fr[3]
        if fr[2] == sid and fr[0] == f.HEADERS and fr[1] & f.END_STREAM:
            trailers = decode_headers(fr[3])
    if trailers.get("grpc-status") == "0":
        assert got == grpc_message(body)
    return trailers


U32 = struct.Struct(">L")

# (name, bytes sent after the preface+SETTINGS, expected GOAWAY code)
CONNECTION_ERRORS = [
    ("data_on_stream_0", f.frame(f.DATA, 0, 0, b"x"), f.PROTOCOL_ERROR),
    ("headers_on_stream_0", f.frame(f.HEADERS, f.END_HEADERS, 0, request_headers()), f.PROTOCOL_ERROR),
    ("settings_bad_length", f.frame(f.SETTINGS, 0, 0, b"\x00\x04\x00"), f.FRAME_SIZE_ERROR),
    ("settings_ack_with_payload", f.frame(f.SETTINGS, f.ACK, 0, b"\x00" * 6), f.FRAME_SIZE_ERROR),
    ("settings_on_stream", f.frame(f.SETTINGS, 0, 1, b""), f.PROTOCOL_ERROR),
    ("settings_window_too_big", f.settings_frame({f.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 31}),
     f.FLOW_CONTROL_ERROR),
    ("settings_frame_size_too_small", f.settings_frame({f.SETTINGS_MAX_FRAME_SIZE: 100}), f.PROTOCOL_ERROR),
    ("settings_enable_push_2", f.settings_frame({f.SETTINGS_ENABLE_PUSH: 2}), f.PROTOCOL_ERROR),
    ("ping_bad_length", f.frame(f.PING, 0, 0, b"1234567"), f.FRAME_SIZE_ERROR),
    ("ping_on_stream", f.frame(f.PING, 0, 1, b"12345678"), f.PROTOCOL_ERROR),
    ("window_update_zero", f.window_update_frame(0, 0), f.PROTOCOL_ERROR),
    ("window_update_bad_length", f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), f.FRAME_SIZE_ERROR),
    ("window_overflow", f.window_update_frame(0, (1 << 31) - 1), f.FLOW_CONTROL_ERROR),
    ("even_stream_id", f.frame(f.HEADERS, f.END_HEADERS, 2, request_headers()), f.PROTOCOL_ERROR),
    ("continuation_without_headers", f.frame(f.CONTINUATION, f.END_HEADERS, 1, b""), f.PROTOCOL_ERROR),
    ("interleaved_frame_in_header_block",
     f.frame(f.HEADERS, 0, 1, request_headers()[:10]) + f.frame(f.PING, 0, 0, b"12345678"), f.PROTOCOL_ERROR),
    ("hpack_index_out_of_range", f.frame(f.HEADERS, f.END_HEADERS, 1, b"\xff\x80\x01"), f.COMPRESSION_ERROR),
    ("hpack_truncated_string", f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x00\x7f\x05ab"), f.COMPRESSION_ERROR),
    ("hpack_table_size_over_setting", f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x3f\xe1\x7f"),
     f.COMPRESSION_ERROR),
    ("hpack_size_update_after_field", f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x82\x20"), f.COMPRESSION_ERROR),
    ("hpack_huffman_eos", f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x00\x84\xff\xff\xff\xff\x00"),
     f.COMPRESSION_ERROR),
    ("rst_on_idle_stream", f.rst_stream_frame(7, f.CANCEL), f.PROTOCOL_ERROR),
    ("rst_bad_length", f.frame(f.RST_STREAM, 0, 1, b"\x00"), f.FRAME_SIZE_ERROR),
    ("window_update_idle_stream", f.window_update_frame(9, 10), f.PROTOCOL_ERROR),
    ("data_on_idle_stream", f.frame(f.DATA, 0, 5, b"x"), f.PROTOCOL_ERROR),
    ("push_promise", f.frame(f.PUSH_PROMISE, f.END_HEADERS, 1, b"\x00\x00\x00\x02"), f.PROTOCOL_ERROR),
    ("frame_too_large", f.frame_header(f.DATA, 0, 1, conn_mod.FRAME_BYTES_MAX + 1), f.FRAME_SIZE_ERROR),
    ("headers_padding_too_long", f.frame(f.HEADERS, f.END_HEADERS | f.PADDED, 1, b"\x09abc"), f.PROTOCOL_ERROR),
    ("goaway_on_stream", f.frame(f.GOAWAY, 0, 3, b"\x00" * 8), f.PROTOCOL_ERROR),
]


@pytest.mark.parametrize("name,data,code", CONNECTION_ERRORS, ids=[c[0] for c in CONNECTION_ERRORS])
def test_connection_errors(edge, name, data, code):
    c = RawH2(edge.port)
    try:
        c.send(data)
        assert c.goaway() == code
        assert c.eof()
    finally:
        c.close()
    assert_serving(edge)


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"])
def test_bad_preface(edge, data):
    c = RawH2(edge.port, preface=False)
    try:
        c.send(data)
        assert c.goaway() == f.PROTOCOL_ERROR
        assert c.eof()
    finally:
        c.close()
    assert_serving(edge)


@pytest.mark.parametrize("split", [False, True])
def test_first_frame_must_be_settings(edge, split):
    c = RawH2(edge.port, preface=False)
    try:
        if split:  # the preface alone first, the offending frame in a later read
            c.send(f.PREFACE)
            time.sleep(0.05)
        c.send(f.frame(f.PING, 0, 0, b"12345678") if split else f.PREFACE + f.frame(f.PING, 0, 0, b"12345678"))
        assert c.goaway() == f.PROTOCOL_ERROR
    finally:
        c.close()


def test_ping_is_acked_and_unknown_frames_ignored(edge):
    c = RawH2(edge.port)
    try:
        c.send_frame(0xEE, 0xFF, 0, b"whatever")
        c.send_frame(f.PRIORITY, 0, 11, b"\x00\x00\x00\x00\x10")  # PRIORITY on an idle stream: ignored
        c.send_frame(f.PING, 0, 0, b"abcdefgh")
        fr = c.frames_until(lambda fr: fr[0] == f.PING)[-1]
        assert fr[1] & f.ACK and fr[3] == b"abcdefgh"
        assert echo_on(c, 1)["grpc-status"] == "0"
    finally:
        c.close()


def test_stream_errors_keep_the_connection(edge):
    c = RawH2(edge.port)
    try:
        # WINDOW_UPDATE of 0 on a stream: RST_STREAM PROTOCOL_ERROR
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers("/test.Edge/Sleep"))
        c.send_frame(f.WINDOW_UPDATE, 0, 1, U32.pack(0))
        assert c.rst(1) == f.PROTOCOL_ERROR
        # a stream window pushed past 2^31-1
        c.send_frame(f.HEADERS, f.END_HEADERS, 3, request_headers("/test.Edge/Sleep"))
        c.send_frame(f.WINDOW_UPDATE, 0, 3, U32.pack((1 << 31) - 1))
        assert c.rst(3) == f.FLOW_CONTROL_ERROR
        # the connection still works
        assert echo_on(c, 5)["grpc-status"] == "0"
    finally:
        c.close()


# Stream window overrun (FLOW_CONTROL_ERROR on the stream, the connection lives on):
# tests/edge/test_flow_control.py, against the exact windows the edge grants.


def test_bad_padding_is_protocol_error(edge):
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers())
        c.send_frame(f.DATA, f.PADDED, 1, b"\x05abc")
        assert c.goaway() == f.PROTOCOL_ERROR
    finally:
        c.close()


def test_padded_frames_are_accepted(edge):
    c = RawH2(edge.port)
    try:
        block = request_headers()
        c.send_frame(f.HEADERS, f.END_HEADERS | f.PADDED | f.PRIORITY_FLAG, 1,
                     b"\x03" + b"\x00\x00\x00\x00\x10" + block + b"\x00\x00\x00")
        c.send_frame(f.DATA, f.PADDED | f.END_STREAM, 1, b"\x02" + grpc_message(b"pad") + b"\x00\x00")
        fr = c.frames_until(lambda fr: fr[0] == f.DATA)[-1]
        assert fr[3] == grpc_message(b"pad")
    finally:
        c.close()


def test_continuation_frames(edge):
    c = RawH2(edge.port)
    try:
        block = request_headers(extra=[(b"x-pad", b"p" * 3000)])
        c.send_frame(f.HEADERS, 0, 1, block[:7])
        c.send_frame(f.CONTINUATION, 0, 1, block[7:1000])
        c.send_frame(f.CONTINUATION, f.END_HEADERS, 1, block[1000:])
        c.send_frame(f.DATA, f.END_STREAM, 1, grpc_message(b"cont"))
        fr = c.frames_until(lambda fr: fr[0] == f.DATA)[-1]
        assert fr[3] == grpc_message(b"cont")
    finally:
        c.close()


def test_header_block_flood_is_enhance_your_calm(edge):
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, 0, 1, b"")
        piece = b"\x00" * 16000
        for _ in range(conn_mod.HEADER_BLOCK_BYTES_MAX // len(piece) + 1):
            c.send_frame(f.CONTINUATION, 0, 1, piece)
        assert c.goaway() == f.ENHANCE_YOUR_CALM
    finally:
        c.close()
    assert_serving(edge)


def test_hpack_bomb_is_refused_and_table_stays_in_step(edge):
    """One big dynamic-table entry referenced many times: the decoded list would be
    ~4 MB from ~1 KB on the wire. The stream is refused (RESOURCE_EXHAUSTED) without
    materialising it, and the connection's HPACK state stays usable."""
    c = RawH2(edge.port)
    try:
        insert = b"\x40" + hpack.encode_integer(5, 7) + b"x-big" + hpack.encode_integer(3900, 7) + b"b" * 3900
        bomb = request_headers() + insert + b"\xbe" * 1000  # index 62 = the new entry
        c.send_frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, bomb)
        fr = c.frames_until(lambda fr: fr[2] == 1 and fr[0] == f.HEADERS)[-1]
        assert decode_headers(fr[3])["grpc-status"] == "8"
        # the entry was still added: index 62 now resolves on this connection
        c.send_frame(f.HEADERS, f.END_HEADERS, 3, request_headers() + b"\xbe")
        c.send_frame(f.DATA, f.END_STREAM, 3, grpc_message(b"after"))
        fr = c.frames_until(lambda fr: fr[2] == 3 and fr[0] == f.DATA)[-1]
        assert fr[3] == grpc_message(b"after")
    finally:
        c.close()


def test_too_many_streams_refused(edge):
    c = RawH2(edge.port)
    n = conn_mod.STREAMS_PER_CONNECTION_MAX
    try:
        block = request_headers("/test.Edge/Sleep")
        c.send(b"".join(f.frame(f.HEADERS, f.END_HEADERS, 2 * i + 1, block) for i in range(n + 1)))
        assert c.rst(2 * n + 1) == f.REFUSED_STREAM
        # reset them all, then the connection is usable again
        c.send(b"".join(f.rst_stream_frame(2 * i + 1, f.CANCEL) for i in range(n)))
        assert echo_on(c, 2 * n + 3)["grpc-status"] == "0"
    finally:
        c.close()
    assert_serving(edge)


@pytest.mark.parametrize("headers,status", [
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/test.Edge/Echo"),
      (b"content-type", b"application/grpc")], "405"),
    ([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/test.Edge/Echo"),
      (b"content-type", b"text/plain")], "415"),
])
def test_non_grpc_requests_get_http_status(edge, headers, status):
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1,
                     b"".join(hpack.encode_literal(k, v) for k, v in headers))
        fr = c.frames_until(lambda fr: fr[2] == 1 and fr[0] == f.HEADERS)[-1]
        assert decode_headers(fr[3])[":status"] == status
    finally:
        c.close()


def test_pseudo_header_after_regular_is_malformed(edge):
    c = RawH2(edge.port)
    try:
        block = hpack.encode_literal(b"content-type", b"application/grpc") + request_headers()
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, block)
        assert c.rst(1) == f.PROTOCOL_ERROR
    finally:
        c.close()


@pytest.mark.parametrize("extra,body,code", [
    ([], grpc_message(b"zz", compressed=1), "13"),                   # compressed, no grpc-encoding
    ([(b"grpc-encoding", b"snappy")], grpc_message(b"zz"), "12"),   # unknown encoding
    ([(b"grpc-timeout", b"12X")], grpc_message(b"zz"), "13"),       # malformed timeout
    ([], grpc_message(b"zz")[:4], "13"),                             # truncated message
    ([], b"", "12"),                                                 # no request message
    ([], grpc_message(b"a") + grpc_message(b"b"), "12"),             # two messages, unary call
])
def test_grpc_level_errors(edge, extra, body, code):
    c = RawH2(edge.port)
    try:
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers(extra=extra))
        c.send_frame(f.DATA, f.END_STREAM, 1, body)
        fr = c.frames_until(lambda fr: fr[2] == 1 and fr[0] == f.HEADERS and fr[1] & f.END_STREAM)[-1]
        assert decode_headers(fr[3])["grpc-status"] == code
        assert echo_on(c, 3)["grpc-status"] == "0"
    finally:
        c.close()


def test_respects_peer_max_frame_and_windows(edge):
    """A client with a 16 KiB frame size and a small window gets DATA in pieces no
    larger than either, and only as it grants window."""
    c = RawH2(edge.port, preface=False)
    try:
        c.send(f.PREFACE + f.settings_frame({f.SETTINGS_INITIAL_WINDOW_SIZE: 1000}))
        body = b"q" * 50_000
        c.send_frame(f.HEADERS, f.END_HEADERS, 1, request_headers())
        c.send_frame(f.DATA, f.END_STREAM, 1, grpc_message(body))
        got = b""
        fr = c.frames_until(lambda fr: fr[0] == f.DATA)[-1]
        assert len(fr[3]) == 1000
        got += fr[3]
        while len(got) < len(body) + 5:
            c.send(f.window_update_frame(1, 20_000))
            fr = c.frames_until(lambda fr: fr[0] == f.DATA)[-1]
            assert len(fr[3]) <= min(20_000, f.DEFAULT_MAX_FRAME_BYTES)
            got += fr[3]
            if len(fr[3]) == f.DEFAULT_MAX_FRAME_BYTES:  # the rest of this grant comes next
                fr = c.frames_until(lambda fr: fr[0] == f.DATA)[-1]
                got += fr[3]
        assert got == grpc_message(body)
        fr = c.frames_until(lambda fr: fr[0] == f.HEADERS and fr[1] & f.END_STREAM)[-1]
        assert decode_headers(fr[3])["grpc-status"] == "0"
    finally:
        c.close()


def test_ping_flood_is_enhance_your_calm(edge):
    c = RawH2(edge.port)
    try:
        c.send(f.frame(f.PING, 0, 0, b"flooding") * (conn_mod.PINGS_PER_WINDOW_MAX + 50))
        assert c.goaway() == f.ENHANCE_YOUR_CALM
    finally:
        c.close()
    assert_serving(edge)


def test_silent_connection_is_closed_after_the_preface_timeout(edge):
    edge.server.preface_timeout_s = 0.3
    try:
        c = RawH2(edge.port, preface=False)
        try:
            t0 = time.monotonic()
            assert c.goaway() == f.PROTOCOL_ERROR
            assert c.eof()
            assert time.monotonic() - t0 < 3.0
        finally:
            c.close()
    finally:
        edge.server.preface_timeout_s = conn_mod.PREFACE_TIMEOUT_S
    assert_serving(edge)
