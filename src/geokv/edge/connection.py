"""One HTTP/2 server connection carrying gRPC calls, as an asyncio Protocol.

Reading: every ``data_received`` parses all complete frames in the chunk; a partial
frame waits until its declared length has arrived (no re-parsing). Writing: the frames
produced while handling one chunk, or by all calls that finish in one loop iteration,
go out in a single ``transport.write``.

Flow control (RFC 9113 6.9): we never send DATA past the peer's connection or stream
window; queued response bytes wait per stream and go out on WINDOW_UPDATE. The peer
gets windows back as we take its bytes: the connection window for every DATA frame on
arrival (whatever becomes of it: padding, a reset or finished stream, a refused call),
a unary request's stream window on arrival too (the message size bound and the one
message rule limit what it buffers), a streaming request's as its bytes are buffered
while the stream holds less than its bound of unread data, and as the handler reads
beyond that (``_on_data``; geokv.edge.calls ``release_withheld``). Padding is credited at once.

The calls themselves (handlers, responses, stream ends) are in geokv.edge.calls.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import zlib
from typing import Any

from geokv.edge import frames as f
from geokv.edge import hpack, rpc
from geokv.edge.calls import (STREAM_CREDIT_MESSAGES_MAX, STREAM_REQUEST_MESSAGES_MAX,  # noqa: F401 - bounds
                               STREAM_WINDOW_BYTES, WINDOW_REFILL_FRACTION, CallRunner, Stream)

log = logging.getLogger("geokv.edge")

# Bounds (our side of the connection)
STREAMS_PER_CONNECTION_MAX = 1024         # SETTINGS_MAX_CONCURRENT_STREAMS we advertise
CONNECTION_WINDOW_BYTES = 16 << 20        # connection receive window (granted at start)
FRAME_BYTES_MAX = 1 << 20                 # SETTINGS_MAX_FRAME_SIZE we advertise
HEADER_LIST_BYTES_MAX = 16 << 10          # SETTINGS_MAX_HEADER_LIST_SIZE we advertise
HEADER_BLOCK_BYTES_MAX = 64 << 10         # compressed HEADERS+CONTINUATION bytes per block
PREFACE_TIMEOUT_S = 10.0                  # a connection must send preface + SETTINGS within this
PING_FLOOD_WINDOW_S = 1.0                 # a flood is more than PINGS_PER_WINDOW_MAX PINGs
PINGS_PER_WINDOW_MAX = 200                # in one window with no HEADERS/DATA between

_CONN_REFILL = CONNECTION_WINDOW_BYTES // WINDOW_REFILL_FRACTION
_STREAM_REFILL = STREAM_WINDOW_BYTES // WINDOW_REFILL_FRACTION
_HDR_UNPACK = f.FRAME_HEADER.unpack_from
_FLAGS_EH_ES = f.END_HEADERS | f.END_STREAM


class ConnectionError_(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2Connection(CallRunner, asyncio.Protocol):
    def __init__(self, server: Any) -> None:
        self.server = server
        self.table: rpc.MethodTable = server.table
        self.max_message_bytes: int = server.max_receive_message_bytes
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peer_name = "unknown"
        self.decoder = hpack.Decoder()
        self.streams: dict[int, Stream] = {}
        self.last_sid = 0
        self.preface_ok = False
        self._settings_seen = False  # the client's preface ends with a SETTINGS frame
        self._preface_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.goaway_sent = False
        self.paused = False
        # reading
        self._parts: list[bytes] = []
        self._have = 0
        self._need = len(f.PREFACE)
        self._cont_sid = 0
        self._cont_flags = 0
        self._cont_parts: list[bytes] = []
        self._cont_bytes = 0
        self._pings = 0
        self._pings_since = 0.0
        # flow control
        self.peer_initial_window = f.DEFAULT_WINDOW_BYTES
        self.peer_max_frame = f.DEFAULT_MAX_FRAME_BYTES
        self.send_conn_window = f.DEFAULT_WINDOW_BYTES
        self.recv_conn_window = CONNECTION_WINDOW_BYTES
        self._conn_credit = 0
        self.blocked: dict[int, Stream] = {}
        # writing
        self._out: list[bytes] = []
        self._in_recv = False
        self._flush_scheduled = False

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.peer_name = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self.server.connections.add(self)
        self.emit(f.settings_frame({
            f.SETTINGS_MAX_CONCURRENT_STREAMS: STREAMS_PER_CONNECTION_MAX,
            f.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
            f.SETTINGS_MAX_FRAME_SIZE: FRAME_BYTES_MAX,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: HEADER_LIST_BYTES_MAX,
        }))
        self.emit(f.window_update_frame(0, CONNECTION_WINDOW_BYTES - f.DEFAULT_WINDOW_BYTES))
        self._preface_timer = self.loop.call_later(self.server.preface_timeout_s, self._on_preface_timeout)

    def _on_preface_timeout(self) -> None:
        self._preface_timer = None
        if not self._settings_seen and not self.closed:
            self.connection_error(f.PROTOCOL_ERROR, "no connection preface and SETTINGS in time")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._preface_timer is not None:
            self._preface_timer.cancel()
            self._preface_timer = None
        self.closed = True
        self.server.connections.discard(self)
        for st in list(self.streams.values()):
            self._drop_stream(st)
        self._out.clear()
        self.server.connection_closed(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for st in list(self.streams.values()):
            if st.drain_waiter is not None:
                st.wake()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._parts)
            self._parts = []
        self._in_recv = True
        try:
            pos = self._process(data)
        except ConnectionError_ as exc:
            self.connection_error(exc.code, str(exc))
            return
        finally:
            self._in_recv = False
        if self.closed:
            return
        if pos < len(data):
            rest = data[pos:]
            self._parts = [rest]
            self._have = len(rest)
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # --- output ---------------------------------------------------------------------------
    def emit(self, b: bytes) -> None:
        self._out.append(b)
        if not self._in_recv and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def connection_error(self, code: int, message: str) -> None:
        if self.closed:
            return
        log.info("edge: connection error %d from %s: %s", code, self.peer_name, message)
        self.emit(f.goaway_frame(self.last_sid, code, message.encode()[:256]))
        self.flush()
        self.closed = True
        for st in list(self.streams.values()):
            self._drop_stream(st)
        self.transport.close()

    def send_goaway(self) -> None:
        """Graceful shutdown: streams up to last_sid finish, no new ones start."""
        if not self.goaway_sent and not self.closed:
            self.goaway_sent = True
            self.emit(f.goaway_frame(self.last_sid, f.NO_ERROR))
            if not self.streams:
                self.flush()
                self.closed = True
                self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            for st in list(self.streams.values()):
                self._drop_stream(st)
            self.transport.close()

    # --- frame parsing --------------------------------------------------------------------
    def _process(self, data: bytes) -> int:
        pos = 0
        n = len(data)
        if not self.preface_ok:
            if n < 24:
                if not f.PREFACE.startswith(data):
                    raise ConnectionError_(f.PROTOCOL_ERROR, "bad connection preface")
                self._need = 24
                return 0
            if data[:24] != f.PREFACE:
                raise ConnectionError_(f.PROTOCOL_ERROR, "bad connection preface")
            self.preface_ok = True
            pos = 24
        while True:
            if n - pos < 9:
                self._need = 9
                return pos
            hi, lo, ftype, flags, sid = _HDR_UNPACK(data, pos)
            length = (hi << 8) | lo
            if length > FRAME_BYTES_MAX:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, f"frame of {length} bytes > {FRAME_BYTES_MAX}")
            end = pos + 9 + length
            if end > n:
                self._need = 9 + length
                return pos
            payload = data[pos + 9:end]
            pos = end
            sid &= 0x7FFFFFFF
            if not self._settings_seen:
                if ftype != f.SETTINGS or flags & f.ACK:
                    raise ConnectionError_(f.PROTOCOL_ERROR, "the first frame is not SETTINGS")
                self._settings_seen = True
                if self._preface_timer is not None:
                    self._preface_timer.cancel()
                    self._preface_timer = None
            if self._cont_sid and ftype != f.CONTINUATION:
                raise ConnectionError_(f.PROTOCOL_ERROR, "expected CONTINUATION")
            if ftype == f.DATA:
                self._on_data(flags, sid, payload)
            elif ftype == f.HEADERS:
                self._on_headers(flags, sid, payload)
            elif ftype == f.WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif ftype == f.SETTINGS:
                self._on_settings(flags, sid, payload)
            elif ftype == f.PING:
                self._on_ping(flags, sid, payload)
            elif ftype == f.RST_STREAM:
                self._on_rst_stream(sid, payload)
            elif ftype == f.CONTINUATION:
                self._on_continuation(flags, sid, payload)
            elif ftype == f.PRIORITY:
                if sid == 0:
                    raise ConnectionError_(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    self.reset_stream(sid, f.FRAME_SIZE_ERROR)
            elif ftype == f.GOAWAY:
                if sid != 0:
                    raise ConnectionError_(f.PROTOCOL_ERROR, "GOAWAY on a stream")
                if length < 8:
                    raise ConnectionError_(f.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
                self._on_goaway()
            elif ftype == f.PUSH_PROMISE:
                raise ConnectionError_(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # unknown frame types are ignored (RFC 9113 4.1)
            if self.closed:
                return pos

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        n = len(payload)
        if n > self.recv_conn_window:
            raise ConnectionError_(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_conn_window -= n
        self._pings = 0
        credit = self._conn_credit + n
        if credit >= _CONN_REFILL:
            self.emit(f.window_update_frame(0, credit))
            self.recv_conn_window += credit
            credit = 0
        self._conn_credit = credit
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid:
                raise ConnectionError_(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a stream we already closed or reset: late frames are expected
        if st.remote_closed:
            self.reset_stream(sid, f.STREAM_CLOSED)
            return
        if n > st.recv_window:
            self.reset_stream(sid, f.FLOW_CONTROL_ERROR)
            return
        st.recv_window -= n
        if flags & f.PADDED:
            if n == 0 or payload[0] >= n:
                raise ConnectionError_(f.PROTOCOL_ERROR, "padding longer than the DATA frame")
            body = payload[1:n - payload[0]]
        else:
            body = payload
        if st.method.kind < 2:
            self.credit_stream(st, n)  # unary request: the message bound limits buffering
            if body and not st.finished:
                self._on_message_bytes(st, body)
        else:
            if len(body) != n:
                self.credit_stream(st, n - len(body))  # padding never reaches the handler
            if body and not st.finished:
                self._on_message_bytes(st, body)
                if not st.finished:
                    # credit the buffered bytes while under the stream's bound (see
                    # calls.release_withheld for the same rule when the handler reads)
                    queued = st.queued
                    buf = st.buf
                    if (queued == 0 or queued + (len(buf) if buf else 0) <= STREAM_WINDOW_BYTES) and \
                            len(st.msgs) < STREAM_CREDIT_MESSAGES_MAX:
                        credit = st.recv_credit + len(body) + st.withheld
                        st.withheld = 0
                        if credit >= _STREAM_REFILL:
                            self.emit(f.window_update_frame(sid, credit))
                            st.recv_window += credit
                            credit = 0
                        st.recv_credit = credit
                    else:
                        st.withheld += len(body)
        if flags & f.END_STREAM:
            self._on_remote_end(st)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & f.PADDED:
            if end == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "PADDED HEADERS without a pad length")
            start = 1
            end -= payload[0]
        if flags & f.PRIORITY_FLAG:
            start += 5
        if end < start:
            raise ConnectionError_(f.PROTOCOL_ERROR, "HEADERS padding or priority past the frame")
        block = payload[start:end] if start or end != len(payload) else payload
        self._pings = 0
        if not flags & f.END_HEADERS:
            self._cont_sid = sid
            self._cont_flags = flags
            self._cont_parts = [block]
            self._cont_bytes = len(block)
            return
        self._on_header_block(sid, flags, block)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if not self._cont_sid or sid != self._cont_sid:
            raise ConnectionError_(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        self._cont_parts.append(payload)
        self._cont_bytes += len(payload)
        if self._cont_bytes > HEADER_BLOCK_BYTES_MAX:
            raise ConnectionError_(f.ENHANCE_YOUR_CALM, f"header block over {HEADER_BLOCK_BYTES_MAX} bytes")
        if flags & f.END_HEADERS:
            block = b"".join(self._cont_parts)
            self._cont_sid = 0
            self._cont_parts = []
            self._on_header_block(sid, self._cont_flags, block)

    def _on_header_block(self, sid: int, flags: int, block: bytes) -> None:
        too_large = False
        try:
            headers = self.decoder.decode(block, HEADER_LIST_BYTES_MAX)
        except hpack.HPACKError as exc:
            raise ConnectionError_(f.COMPRESSION_ERROR, str(exc)) from None
        except hpack.HeaderListTooLarge:
            headers, too_large = [], True
        if not sid & 1:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"client stream id {sid} is even")
        st = self.streams.get(sid)
        if st is not None:  # trailers from the client: must end the stream
            if not flags & f.END_STREAM:
                self.reset_stream(sid, f.PROTOCOL_ERROR)
            else:
                self._on_remote_end(st)
            return
        if sid <= self.last_sid:
            raise ConnectionError_(f.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self.last_sid = sid
        if self.goaway_sent:
            self.emit(f.rst_stream_frame(sid, f.REFUSED_STREAM))
            return
        if len(self.streams) >= STREAMS_PER_CONNECTION_MAX:
            self.emit(f.rst_stream_frame(sid, f.REFUSED_STREAM))
            return
        end_stream = flags & f.END_STREAM
        if too_large:
            self._reject(sid, end_stream, rpc.RESOURCE_EXHAUSTED,
                         f"header list larger than {HEADER_LIST_BYTES_MAX} bytes")
            return
        path = ctype = timeout = encoding = None
        method_ok = False
        regular = False
        for name, value in headers:
            if name[:1] == b":":
                if regular:
                    self.reset_stream(sid, f.PROTOCOL_ERROR)
                    return
                if name == b":path":
                    path = value
                elif name == b":method":
                    method_ok = value == b"POST"
                elif name not in (b":scheme", b":authority"):
                    self.reset_stream(sid, f.PROTOCOL_ERROR)
                    return
            else:
                regular = True
                if name == b"content-type":
                    ctype = value
                elif name == b"grpc-timeout":
                    timeout = value
                elif name == b"grpc-encoding":
                    encoding = value
        if path is None:
            self.reset_stream(sid, f.PROTOCOL_ERROR)
            return
        if not method_ok:
            self._reject_http(sid, end_stream, b"405")
            return
        if ctype is None or not ctype.startswith(b"application/grpc"):
            self._reject_http(sid, end_stream, b"415")
            return
        method = self.table.lookup(path)
        if method is None:
            self._reject(sid, end_stream, rpc.UNIMPLEMENTED, "Method not found!")
            return
        if encoding is not None and encoding not in (b"identity", b"gzip", b"deflate"):
            self._reject(sid, end_stream, rpc.UNIMPLEMENTED,
                         f"grpc: Decompressor is not installed for grpc-encoding {encoding.decode('latin-1')!r}")
            return
        server = self.server
        if server.open_rpcs >= server.max_concurrent_rpcs:
            self._reject(sid, end_stream, rpc.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
            return
        server.open_rpcs += 1
        st = Stream(self, sid, method, headers)
        st.encoding = encoding
        self.streams[sid] = st
        if timeout is not None:
            t_s = rpc.parse_timeout_s(timeout)
            if t_s is None:
                self.finish_status(st, rpc.INTERNAL, f"malformed grpc-timeout {timeout.decode('latin-1')!r}")
                return
            st.deadline = time.monotonic() + t_s
        if end_stream:
            st.remote_closed = True
        if method.kind >= rpc.STREAM_UNARY:
            st.msgs = collections.deque()
            self._start_streaming(st)
        elif end_stream:
            self._on_remote_end(st)

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a length other than 4")
        inc = f.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "connection WINDOW_UPDATE of 0")
            self.send_conn_window += inc
            if self.send_conn_window > f.WINDOW_BYTES_LIMIT:
                raise ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            if self.blocked:
                for st in list(self.blocked.values()):
                    self.flush_stream(st)
                    if self.send_conn_window <= 0:
                        break
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid:
                raise ConnectionError_(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if inc == 0:
            self.reset_stream(sid, f.PROTOCOL_ERROR)
            return
        st.send_window += inc
        if st.send_window > f.WINDOW_BYTES_LIMIT:
            self.reset_stream(sid, f.FLOW_CONTROL_ERROR)
            return
        if st.out_pending:
            self.flush_stream(st)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        grew = False
        for i in range(0, len(payload), 6):
            key = (payload[i] << 8) | payload[i + 1]
            value = f.u32(payload[i + 2:i + 6])
            if key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.WINDOW_BYTES_LIMIT:
                    raise ConnectionError_(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > f.WINDOW_BYTES_LIMIT:
                        raise ConnectionError_(f.FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
                grew = grew or delta > 0
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME_BYTES <= value <= f.MAX_FRAME_BYTES_LIMIT:
                    raise ConnectionError_(f.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self.peer_max_frame = value
            elif key == f.SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise ConnectionError_(f.PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
            # HEADER_TABLE_SIZE: we never index, so any size is honoured; others: advisory
        self.emit(f.SETTINGS_ACK_FRAME)
        if grew and self.blocked:
            for st in list(self.blocked.values()):
                self.flush_stream(st)

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "PING of a length other than 8")
        if flags & f.ACK:
            return
        now = time.monotonic()
        if now - self._pings_since > PING_FLOOD_WINDOW_S:
            self._pings_since = now
            self._pings = 0
        self._pings += 1
        if self._pings > PINGS_PER_WINDOW_MAX:
            raise ConnectionError_(f.ENHANCE_YOUR_CALM, "too many pings")
        self.emit(f.frame(f.PING, f.ACK, 0, payload))

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "RST_STREAM of a length other than 4")
        if sid > self.last_sid:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        st = self.streams.get(sid)
        if st is not None:
            self._drop_stream(st)

    def _on_goaway(self) -> None:
        # The client will open no new streams; close once ours are done.
        self.goaway_sent = True
        if not self.streams:
            self.flush()
            self.closed = True
            self.transport.close()

    # --- gRPC message framing -------------------------------------------------------------
    def _on_message_bytes(self, st: Stream, body: bytes) -> None:
        if st.req_payload is not None:  # a unary call already has its message
            self.finish_status(st, rpc.UNIMPLEMENTED, "more than one request message for a unary call")
            return
        buf = st.buf
        if buf is None:
            n = len(body)
            if n >= 5:
                mlen = (body[1] << 24) | (body[2] << 16) | (body[3] << 8) | body[4]
                if n == mlen + 5:  # the common case: exactly one whole message
                    self._on_message(st, body[0], body[5:], mlen)
                    return
            buf = st.buf = bytearray(body)
        else:
            buf += body
        while len(buf) >= 5:
            mlen = (buf[1] << 24) | (buf[2] << 16) | (buf[3] << 8) | buf[4]
            if mlen > self.max_message_bytes:
                self._on_message(st, buf[0], b"", mlen)
                return
            if len(buf) < 5 + mlen:
                return
            flag = buf[0]
            msg = bytes(buf[5:5 + mlen])
            del buf[:5 + mlen]
            self._on_message(st, flag, msg, mlen)
            if st.finished:
                return
            if buf and st.req_payload is not None:
                self.finish_status(st, rpc.UNIMPLEMENTED, "more than one request message for a unary call")
                return

    def _on_message(self, st: Stream, flag: int, msg: bytes, mlen: int) -> None:
        if mlen > self.max_message_bytes:
            self.finish_status(st, rpc.RESOURCE_EXHAUSTED,
                               f"Received message larger than max ({mlen} vs. {self.max_message_bytes})")
            return
        if flag:
            if flag != 1 or st.encoding in (None, b"identity"):
                self.finish_status(st, rpc.INTERNAL, "grpc: compressed flag set with identity or empty encoding")
                return
            try:
                d = zlib.decompressobj(31 if st.encoding == b"gzip" else 15)
                out = d.decompress(msg, self.max_message_bytes + 1)
            except zlib.error as exc:
                self.finish_status(st, rpc.INTERNAL, f"grpc: failed to decompress the message: {exc}")
                return
            if len(out) > self.max_message_bytes:
                self.finish_status(st, rpc.RESOURCE_EXHAUSTED,
                                   f"Received message larger than max (>{self.max_message_bytes} "
                                   f"vs. {self.max_message_bytes})")
                return
            msg = out
        if st.msgs is not None:  # streaming request
            if len(st.msgs) >= STREAM_REQUEST_MESSAGES_MAX:
                self.finish_status(st, rpc.RESOURCE_EXHAUSTED, "too many unread request messages")
                return
            st.msgs.append((msg, mlen + 5))  # the wire size: what the window is credited for
            st.queued += mlen + 5
            if st.waiter is not None:
                st.wake()
        elif st.req_payload is not None:
            self.finish_status(st, rpc.UNIMPLEMENTED, "more than one request message for a unary call")
        else:
            st.req_payload = msg

    def _on_remote_end(self, st: Stream) -> None:
        st.remote_closed = True
        if st.finished:
            self._forget(st)
            return
        if st.buf:
            self.finish_status(st, rpc.INTERNAL, "truncated gRPC message at the end of the stream")
            return
        if st.msgs is not None:
            st.wake()
            return
        if st.req_payload is None:
            self.finish_status(st, rpc.UNIMPLEMENTED, "no request message for a unary call")
            return
        self._start_unary(st)

