"""The native gRPC client: an asyncio HTTP/2 (RFC 9113) client connection speaking gRPC.

:class:`NativeChannel` stands in for ``grpc.aio.Channel`` where geokv's client and the
generated stubs use one: ``unary_unary`` / ``unary_stream`` / ``stream_unary`` /
``stream_stream`` multicallables, per-call ``timeout`` (sent as ``grpc-timeout``) and
``metadata``, ``get_state()`` / ``channel_ready()`` / ``close()``. A failed call raises
:class:`NativeRpcError`, a ``grpc.aio.AioRpcError``, so the code that maps gRPC errors
keeps working.

One channel holds at most one live connection. It connects on the first call (or
``channel_ready()``), counts as READY once the server's SETTINGS arrived, and after a
lost connection connects again on the next call. A failed connection attempt puts the
channel in TRANSIENT_FAILURE for a back-off (grpc's: 100 ms growing by 1.6 up to 1 s);
calls made meanwhile fail at once with UNAVAILABLE "failed to connect to all
addresses", which the client knows means "nothing was sent". After a GOAWAY the old
connection finishes its calls at or below the server's last stream id, new calls go to
a new connection, and calls above it fail with UNAVAILABLE "request not sent (...)".

Everything written during one event-loop iteration leaves in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import heapq
import random
import struct
import time
import zlib
from typing import Any, AsyncIterator, Callable, Iterable
from urllib.parse import unquote

import grpc
import grpc.aio

from geokv.edge import frames as f
from geokv.edge import hpack

# ---- bounds ---------------------------------------------------------------------------
#: One connection attempt (TCP connect + the server's SETTINGS) may take this long.
CONNECT_ATTEMPT_S_MAX = 20.0
#: Back-off after a failed connection attempt (grpc's defaults with aio.py's options).
RECONNECT_BACKOFF_S_INITIAL = 0.1
RECONNECT_BACKOFF_S_MAX = 1.0
RECONNECT_BACKOFF_MULTIPLIER = 1.6
RECONNECT_BACKOFF_JITTER = 0.2
#: Stream window we advertise, and what the connection window is raised to.
STREAM_WINDOW_BYTES = 4 * 1024 * 1024
CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024
#: Largest frame we accept from the server (SETTINGS_MAX_FRAME_SIZE we advertise).
MAX_FRAME_BYTES = 1024 * 1024
#: Largest decoded header list (response headers or trailers) we accept.
HEADER_LIST_BYTES_MAX = 64 * 1024
#: Largest header block (HEADERS + CONTINUATION) on the wire.
HEADER_BLOCK_BYTES_MAX = 256 * 1024
#: Received but unread messages of one streaming call: beyond this many bytes the
#: stream's window is not given back until the reader catches up.
STREAM_UNREAD_BYTES_MAX = 4 * 1024 * 1024
#: Unsent request bytes of one streaming call before ``write()`` waits.
STREAM_SEND_BUFFER_BYTES_MAX = 1024 * 1024
#: Calls waiting for a stream slot (beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS).
PENDING_CALLS_MAX = 100_000
#: Bytes in the socket's send buffer above which streaming writes wait.
TRANSPORT_HIGH_WATER_BYTES = 4 * 1024 * 1024
#: Default message size limits (the client overrides them).
MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024
#: Stream ids are 31-bit; a connection that runs out is drained and replaced.
STREAM_ID_MAX = (1 << 31) - 1
#: Granularity of client-side deadlines (a deadline fires at most this late).
DEADLINE_RESOLUTION_S = 0.005
#: Trailer blocks whose status is remembered per connection.
STATUS_CACHE_ENTRIES_MAX = 64
#: PINGs from the server answered per connection per second (more are dropped).
PING_REPLIES_PER_S_MAX = 100

USER_AGENT = b"geokv-native-client/1"

NOT_SENT_TEXT = "request not sent"  # geokv.client.errors.NOT_SENT_MARKERS holds it
CONNECT_FAILED_TEXT = "failed to connect to all addresses"

_STATUS_BY_NUMBER = {sc.value[0]: sc for sc in grpc.StatusCode}
_HTTP_TO_GRPC = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
                 403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                 429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
                 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}
_FRAME_HEADER = f.FRAME_HEADER
_PREFIX = f.MESSAGE_PREFIX
_U32 = struct.Struct(">L")


class NativeRpcError(grpc.aio.AioRpcError):
    """A failed call on the native channel (a grpc.aio.AioRpcError)."""

    def __init__(self, code: grpc.StatusCode, details: str, initial_metadata: Any = None,
                 trailing_metadata: Any = None) -> None:
        super().__init__(code, initial_metadata if initial_metadata is not None else grpc.aio.Metadata(),
                         trailing_metadata if trailing_metadata is not None else grpc.aio.Metadata(),
                         details=details, debug_error_string=f"native channel: {code.name}: {details}")


# ---- header encoding ----------------------------------------------------------------------
def _literal_indexed_name(index: int, value: bytes) -> bytes:
    """Literal without indexing, name from the static table (RFC 7541 6.2.2)."""
    return hpack.encode_integer(index, 4) + hpack.encode_integer(len(value), 7) + value


def encode_timeout(timeout_s: float) -> bytes:
    """grpc-timeout, rounded up coarsely (at most ~5% longer) so that the header block,
    and with it the server's decode cache, changes rarely; the client keeps the exact
    deadline itself."""
    ms = timeout_s * 1000.0
    if ms <= 0:
        return b"1n"
    if ms < 200:
        us = int(ms * 1000) + 1
        return b"%du" % us
    if ms < 2000:
        return b"%dm" % (-(-int(ms) // 10) * 10)
    if ms < 99_999_999:
        return b"%dm" % (-(-int(ms) // 100) * 100)
    return b"%dS" % min(99_999_999, int(timeout_s) + 1)


def _encode_metadata(metadata: Any) -> bytes:
    if not metadata:
        return b""
    out = []
    for key, value in metadata:
        k = key.lower().encode("ascii") if isinstance(key, str) else bytes(key).lower()
        if k.endswith(b"-bin"):
            v = base64.b64encode(value if isinstance(value, (bytes, bytearray)) else str(value).encode()).rstrip(b"=")
        else:
            v = value.encode("ascii") if isinstance(value, str) else bytes(value)
        out.append(hpack.encode_literal(k, v))
    return b"".join(out)


def _metadata_of(headers: list[tuple[bytes, bytes]]) -> grpc.aio.Metadata:
    md = []
    for name, value in headers:
        if name[:1] == b":" or name in (b"grpc-status", b"grpc-message", b"content-type", b"grpc-encoding"):
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                md.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except ValueError:  # not base64: kept as sent
                md.append((key, bytes(value)))
        else:
            md.append((key, value.decode("latin-1")))
    return grpc.aio.Metadata(*md)


# ---- one call's stream ---------------------------------------------------------------
_EMPTY: collections.deque = collections.deque(maxlen=0)  # shared "nothing pending"; never appended to


class _Stream:
    __slots__ = ("sid", "conn", "call", "send_window", "pending", "pending_bytes",
                 "recv_buf", "recv_unacked", "msgs", "unread_bytes", "headers", "trailers", "done",
                 "local_closed", "sent_headers", "encoding", "max_receive")

    def __init__(self, call: _Call, max_receive: int) -> None:
        self.sid = 0
        self.conn: _Connection | None = None
        self.call = call
        self.send_window = 0
        self.pending: collections.deque = _EMPTY  # (bytes, end_stream) not yet sent; a deque once used
        self.pending_bytes = 0
        self.recv_buf = b""
        self.recv_unacked = 0
        self.msgs: collections.deque = collections.deque()
        self.unread_bytes = 0
        self.headers: list | None = None
        self.trailers: list | None = None
        self.done = False
        self.local_closed = False
        self.sent_headers = False
        self.encoding = b""
        self.max_receive = max_receive


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection to the server (client side)."""

    def __init__(self, channel: NativeChannel) -> None:
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.wbuf: list[bytes] = []
        self.flush_scheduled = False
        self.streams: dict[int, _Stream] = {}
        self.next_sid = 1
        self.send_window = f.DEFAULT_WINDOW_BYTES
        self.peer_initial_window = f.DEFAULT_WINDOW_BYTES
        self.peer_max_frame = f.DEFAULT_MAX_FRAME_BYTES
        self.peer_max_streams = 1 << 31
        self.recv_unacked = 0
        self.settings_received: asyncio.Future = self.loop.create_future()
        self.closed = False
        self.draining = False   # GOAWAY received (or ids ran out): no new streams
        self.close_error: str = "connection lost"
        self.blocked: dict[int, _Stream] = {}   # streams with data waiting for window
        self.waiting: collections.deque = collections.deque()  # futures waiting for a stream slot
        self.paused = False
        self.drain_waiters: list[asyncio.Future] = []
        self.header_sid = 0          # a HEADERS block waiting for CONTINUATION
        self.header_end_stream = 0
        self.header_frags: list[bytes] = []
        self.header_bytes = 0
        self.ping_window_start = 0.0
        self.pings = 0
        self.status_cache: dict[int, tuple] = {}  # id(trailer list) -> (list, code, message)

    # ---- transport -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER_BYTES)  # type: ignore[attr-defined]
        self.write(f.PREFACE + f.settings_frame({
            f.SETTINGS_ENABLE_PUSH: 0,
            f.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
            f.SETTINGS_MAX_FRAME_SIZE: MAX_FRAME_BYTES,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: HEADER_LIST_BYTES_MAX,
        }) + f.window_update_frame(0, CONNECTION_WINDOW_BYTES - f.DEFAULT_WINDOW_BYTES))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(self.close_error if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self.drain_waiters = self.drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def write(self, data: bytes) -> None:
        self.wbuf.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.wbuf and self.transport is not None and not self.closed:
            data = b"".join(self.wbuf) if len(self.wbuf) > 1 else self.wbuf[0]
            self.wbuf.clear()
            self.transport.write(data)
        else:
            self.wbuf.clear()

    def close(self, reason: str = "channel closed") -> None:
        if self.closed:
            return
        self.close_error = reason
        if self.transport is not None:
            try:
                self._flush()
                self.transport.write(f.goaway_frame(0, f.NO_ERROR))
            except Exception:  # noqa: BLE001 - the socket may already be gone
                pass
            self.transport.close()
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        if not self.settings_received.done():  # the connection attempt fails now, not at its timeout
            self.settings_received.set_exception(ConnectionResetError(f"closed before the server's SETTINGS ({reason})"))
            self.settings_received.exception()  # retrieved: nobody may be waiting any more
        self.channel._connection_gone(self)
        streams = list(self.streams.values())
        self.streams.clear()
        self.blocked.clear()
        for st in streams:
            if st.sent_headers:
                self._finish(st, grpc.StatusCode.UNAVAILABLE, reason, remove=False)
            else:
                self._finish(st, grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT_TEXT} ({reason})", remove=False)
        waiting, self.waiting = self.waiting, collections.deque()
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)  # the caller sees the closed connection and goes elsewhere
        self.resume_writing()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining

    # ---- streams ---------------------------------------------------------------------
    async def open_stream(self, st: _Stream, deadline: float | None) -> bool:
        """Give ``st`` a stream id; waits (bounded) for a slot. False if this connection
        can take no more calls (the caller tries a new one)."""
        while len(self.streams) >= self.peer_max_streams:
            if not self.usable:
                return False
            if len(self.waiting) >= PENDING_CALLS_MAX:
                raise NativeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                     f"{NOT_SENT_TEXT}: more than {PENDING_CALLS_MAX} calls wait for a stream")
            fut = self.loop.create_future()
            self.waiting.append(fut)
            try:
                if deadline is None:
                    await fut
                else:
                    await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise NativeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            finally:
                if not fut.done():
                    fut.cancel()
                    try:
                        self.waiting.remove(fut)
                    except ValueError:
                        pass
        if not self.usable:
            return False
        sid = self.next_sid
        if sid > STREAM_ID_MAX:
            self.draining = True
            self.channel._connection_gone(self)
            return False
        self.next_sid = sid + 2
        st.sid = sid
        st.conn = self
        st.send_window = self.peer_initial_window
        self.streams[sid] = st
        return True

    def _release_slot(self) -> None:
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def send_headers(self, st: _Stream, block: bytes, end_stream: bool) -> None:
        flags = f.END_HEADERS | (f.END_STREAM if end_stream else 0)
        n = len(block)
        limit = self.peer_max_frame
        if n <= limit:
            self.write(_FRAME_HEADER.pack(n >> 8, n & 0xFF, f.HEADERS, flags, st.sid) + block)
        else:
            first = block[:limit]
            parts = [f.frame(f.HEADERS, flags & ~f.END_HEADERS, st.sid, first)]
            pos = limit
            while pos < n:
                chunk = block[pos:pos + limit]
                pos += limit
                parts.append(f.frame(f.CONTINUATION, f.END_HEADERS if pos >= n else 0, st.sid, chunk))
            self.write(b"".join(parts))
        st.sent_headers = True
        if end_stream:
            st.local_closed = True

    def send_data(self, st: _Stream, data: bytes, end_stream: bool) -> None:
        """Queue one gRPC-framed message (or b"" with end_stream) within the windows."""
        if st.pending:
            st.pending.append((data, end_stream))
            st.pending_bytes += len(data)
            return
        n = len(data)
        if n <= self.send_window and n <= st.send_window and n <= self.peer_max_frame:
            self.send_window -= n
            st.send_window -= n
            self.write(_FRAME_HEADER.pack(n >> 8, n & 0xFF, f.DATA, f.END_STREAM if end_stream else 0, st.sid) + data)
            if end_stream:
                st.local_closed = True
            return
        if st.pending is _EMPTY:
            st.pending = collections.deque()
        st.pending.append((data, end_stream))
        st.pending_bytes += n
        self._drain_stream(st)

    def _drain_stream(self, st: _Stream) -> None:
        while st.pending:
            data, end = st.pending[0]
            n = len(data)
            room = min(self.send_window, st.send_window, self.peer_max_frame)
            if n > room:
                if room <= 0:
                    self.blocked[st.sid] = st
                    return
                chunk = data[:room]
                st.pending[0] = (data[room:], end)
                st.pending_bytes -= room
                self.send_window -= room
                st.send_window -= room
                self.write(_FRAME_HEADER.pack(room >> 8, room & 0xFF, f.DATA, 0, st.sid) + chunk)
                continue
            st.pending.popleft()
            st.pending_bytes -= n
            self.send_window -= n
            st.send_window -= n
            self.write(_FRAME_HEADER.pack(n >> 8, n & 0xFF, f.DATA, f.END_STREAM if end else 0, st.sid) + data)
            if end:
                st.local_closed = True
        self.blocked.pop(st.sid, None)
        st.call._wake_writer()

    def reset(self, st: _Stream, code: int = f.CANCEL) -> None:
        if self.streams.pop(st.sid, None) is not None:
            self.blocked.pop(st.sid, None)
            if not self.closed:
                self.write(f.rst_stream_frame(st.sid, code))
            self._release_slot()
            self._maybe_close_drained()

    # ---- receiving -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = len(buf)
        pos = 0
        try:
            while n - pos >= 9:
                hi, lo, ftype, flags, sid = _FRAME_HEADER.unpack_from(buf, pos)
                length = (hi << 8) | lo
                sid &= 0x7FFFFFFF
                if length > MAX_FRAME_BYTES:
                    self._connection_error(f.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                    return
                end = pos + 9 + length
                if end > n:
                    break
                payload = buf[pos + 9:end]
                pos = end
                if self.header_sid and ftype != f.CONTINUATION:
                    self._connection_error(f.PROTOCOL_ERROR, "expected CONTINUATION")
                    return
                if ftype == f.DATA:
                    self._on_data(sid, flags, payload)
                elif ftype == f.HEADERS:
                    self._on_headers(sid, flags, payload)
                elif ftype == f.CONTINUATION:
                    self._on_continuation(sid, flags, payload)
                elif ftype == f.SETTINGS:
                    self._on_settings(flags, payload)
                elif ftype == f.WINDOW_UPDATE:
                    self._on_window_update(sid, payload)
                elif ftype == f.PING:
                    self._on_ping(flags, payload)
                elif ftype == f.RST_STREAM:
                    self._on_rst(sid, payload)
                elif ftype == f.GOAWAY:
                    self._on_goaway(payload)
                elif ftype == f.PUSH_PROMISE:
                    self._connection_error(f.PROTOCOL_ERROR, "PUSH_PROMISE although push is disabled")
                    return
                # PRIORITY and unknown frame types are ignored
                if self.closed:
                    return
        except (hpack.HPACKError, IndexError, struct.error, ValueError) as exc:
            self._connection_error(f.COMPRESSION_ERROR if isinstance(exc, hpack.HPACKError) else f.PROTOCOL_ERROR,
                                   f"bad frame from server: {exc}")
            return
        self.buf = buf[pos:] if pos < n else b""

    def _connection_error(self, code: int, reason: str) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.write(f.goaway_frame(0, code))
            self.transport.close()
        self._fail_all(f"connection error: {reason}")

    def _credit(self, st: _Stream | None, n: int) -> None:
        self.recv_unacked += n
        if self.recv_unacked >= CONNECTION_WINDOW_BYTES // 4:
            self.write(f.window_update_frame(0, self.recv_unacked))
            self.recv_unacked = 0
        if st is not None and not st.done:
            st.recv_unacked += n
            if st.recv_unacked >= STREAM_WINDOW_BYTES // 4 and st.unread_bytes <= STREAM_UNREAD_BYTES_MAX:
                self.write(f.window_update_frame(st.sid, st.recv_unacked))
                st.recv_unacked = 0

    def reader_took(self, st: _Stream, n: int) -> None:
        st.unread_bytes -= n
        if (st.recv_unacked >= STREAM_WINDOW_BYTES // 4 and st.unread_bytes <= STREAM_UNREAD_BYTES_MAX
                and not st.done and not self.closed):
            self.write(f.window_update_frame(st.sid, st.recv_unacked))
            st.recv_unacked = 0

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        st = self.streams.get(sid)
        n = len(payload)
        if flags & f.PADDED and n:
            pad = payload[0]
            payload = payload[1:n - pad] if pad else payload[1:]
        if st is None:
            if sid == 0 or sid >= self.next_sid:
                self._connection_error(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
                return
            self._credit(None, n)  # a stream we reset: only the connection window
            return
        if st.headers is None:
            self._stream_error(st, grpc.StatusCode.INTERNAL, "DATA before response headers")
            self._credit(None, n)
            return
        buf = st.recv_buf + payload if st.recv_buf else payload
        pos = 0
        blen = len(buf)
        while blen - pos >= 5:
            compressed, mlen = _PREFIX.unpack_from(buf, pos)
            if mlen > st.max_receive:
                self._credit(None, n)
                self._stream_error(st, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"Received message larger than max ({mlen} vs. {st.max_receive})")
                return
            if blen - pos - 5 < mlen:
                break
            body = buf[pos + 5:pos + 5 + mlen]
            pos += 5 + mlen
            if compressed:
                try:
                    body = self._decompress(st, body)
                except (zlib.error, ValueError) as exc:
                    self._credit(None, n)
                    self._stream_error(st, grpc.StatusCode.INTERNAL, f"cannot decompress response: {exc}")
                    return
            st.msgs.append(body)
            st.unread_bytes += len(body)
        st.recv_buf = buf[pos:] if pos < blen else b""
        self._credit(st, n)
        if st.msgs:
            st.call._on_message()
        if flags & f.END_STREAM:
            # No trailers: a broken response (gRPC always ends with trailers).
            self._remote_end(st, None)

    @staticmethod
    def _decompress(st: _Stream, body: bytes) -> bytes:
        if st.encoding == b"gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS, st.max_receive + 1)[: st.max_receive + 1]
        if st.encoding == b"deflate":
            return zlib.decompress(body)
        raise ValueError(f"compressed message with grpc-encoding {st.encoding!r}")

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        pos = 0
        end = len(payload)
        if flags & f.PADDED:
            pad = payload[0]
            pos = 1
            end -= pad
        if flags & f.PRIORITY_FLAG:
            pos += 5
        block = payload[pos:end]
        if not flags & f.END_HEADERS:
            self.header_sid = sid
            self.header_end_stream = flags & f.END_STREAM
            self.header_frags = [block]
            self.header_bytes = len(block)
            return
        self._header_block(sid, flags & f.END_STREAM, block)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != self.header_sid or not sid:
            self._connection_error(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
            return
        self.header_frags.append(payload)
        self.header_bytes += len(payload)
        if self.header_bytes > HEADER_BLOCK_BYTES_MAX:
            self._connection_error(f.ENHANCE_YOUR_CALM, "header block too large")
            return
        if flags & f.END_HEADERS:
            block = b"".join(self.header_frags)
            self.header_sid = 0
            self.header_frags = []
            self._header_block(sid, self.header_end_stream, block)

    def _header_block(self, sid: int, end_stream: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block, HEADER_LIST_BYTES_MAX)
        except hpack.HeaderListTooLarge:
            st = self.streams.get(sid)
            if st is not None:
                self._stream_error(st, grpc.StatusCode.RESOURCE_EXHAUSTED, "response header list too large")
            return
        st = self.streams.get(sid)
        if st is None:
            return
        if st.headers is None:
            st.headers = headers
            for name, value in headers:
                if name == b"grpc-encoding":
                    st.encoding = value
            if end_stream:  # trailers-only response
                self._remote_end(st, headers)
            else:
                st.call._on_headers()
            return
        if not end_stream:
            self._stream_error(st, grpc.StatusCode.INTERNAL, "second header block without END_STREAM")
            return
        self._remote_end(st, headers)

    def _remote_end(self, st: _Stream, trailers: list | None) -> None:
        # The decoder hands out the same list for a repeated header block (its cache):
        # the status of such a block is worked out once.
        if trailers is not None and st.headers is not trailers:
            hit = self.status_cache.get(id(trailers))
            if hit is not None and hit[0] is trailers and not st.recv_buf:
                st.trailers = trailers
                if not st.local_closed:
                    self.reset(st, f.NO_ERROR)
                self._finish(st, hit[1], hit[2])
                return
        status = None
        message = ""
        http_status = None
        if trailers is not None:
            for name, value in trailers:
                if name == b"grpc-status":
                    status = value
                elif name == b"grpc-message":
                    message = unquote(value.decode("utf-8", "replace"))
                elif name == b":status":
                    http_status = value
        if status is not None:
            try:
                code = _STATUS_BY_NUMBER.get(int(status), grpc.StatusCode.UNKNOWN)
            except ValueError:
                code, message = grpc.StatusCode.UNKNOWN, f"malformed grpc-status {status!r}"
        else:
            if http_status is None and st.headers is not None:
                for name, value in st.headers:
                    if name == b":status":
                        http_status = value
            try:
                hs = int(http_status) if http_status is not None else 200
            except ValueError:
                hs = 0
            if hs != 200:
                code = _HTTP_TO_GRPC.get(hs, grpc.StatusCode.UNKNOWN)
                message = f"Received http2 header with status: {hs}"
            else:
                code = grpc.StatusCode.INTERNAL if trailers is not None else grpc.StatusCode.UNKNOWN
                message = "missing grpc-status" if trailers is not None else "stream ended without trailers"
        if code is grpc.StatusCode.OK and st.recv_buf:
            code, message = grpc.StatusCode.INTERNAL, "stream ended inside a message"
        elif status is not None and trailers is not None and st.headers is not trailers:
            if len(self.status_cache) >= STATUS_CACHE_ENTRIES_MAX:
                self.status_cache.clear()
            self.status_cache[id(trailers)] = (trailers, code, message)
        st.trailers = trailers
        # The server is done; if we still send, close our side with RST (NO_ERROR).
        if not st.local_closed:
            self.reset(st, f.NO_ERROR)
        self._finish(st, code, message)

    def _stream_error(self, st: _Stream, code: grpc.StatusCode, message: str) -> None:
        self.reset(st, f.CANCEL)
        self._finish(st, code, message)

    def _finish(self, st: _Stream, code: grpc.StatusCode, message: str, remove: bool = True) -> None:
        if remove and self.streams.pop(st.sid, None) is not None:
            self.blocked.pop(st.sid, None)
            self._release_slot()
            self._maybe_close_drained()
        if st.done:
            return
        st.done = True
        st.call._on_status(code, message)

    def _maybe_close_drained(self) -> None:
        if self.draining and not self.streams and not self.closed:
            self.close(self.close_error)

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & f.ACK:
            return
        if len(payload) % 6:
            self._connection_error(f.FRAME_SIZE_ERROR, "SETTINGS length")
            return
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HL", payload, i)
            if ident == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.WINDOW_BYTES_LIMIT:
                    self._connection_error(f.FLOW_CONTROL_ERROR, "initial window too large")
                    return
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
            elif ident == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME_BYTES <= value <= f.MAX_FRAME_BYTES_LIMIT:
                    self._connection_error(f.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                    return
                self.peer_max_frame = value
            elif ident == f.SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
                while self.waiting and len(self.streams) < value:
                    self._release_slot()
        self.write(f.SETTINGS_ACK_FRAME)
        if not self.settings_received.done():
            self.settings_received.set_result(None)
        self._drain_blocked()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._connection_error(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
            return
        inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                self._connection_error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                return
            self.send_window += inc
            if self.send_window > f.WINDOW_BYTES_LIMIT:
                self._connection_error(f.FLOW_CONTROL_ERROR, "connection window overflow")
                return
            self._drain_blocked()
            return
        st = self.streams.get(sid)
        if st is None:
            return
        st.send_window += inc
        if st.send_window > f.WINDOW_BYTES_LIMIT:
            self._stream_error(st, grpc.StatusCode.INTERNAL, "stream window overflow")
            return
        if st.pending:
            self._drain_stream(st)

    def _drain_blocked(self) -> None:
        for st in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._drain_stream(st)

    def _on_ping(self, flags: int, payload: bytes) -> None:
        if flags & f.ACK or len(payload) != 8:
            return
        now = time.monotonic()
        if now - self.ping_window_start >= 1.0:
            self.ping_window_start = now
            self.pings = 0
        self.pings += 1
        if self.pings <= PING_REPLIES_PER_S_MAX:
            self.write(f.frame(f.PING, f.ACK, 0, payload))

    def _on_rst(self, sid: int, payload: bytes) -> None:
        st = self.streams.get(sid)
        if st is None or len(payload) != 4:
            return
        code = _U32.unpack(payload)[0]
        if code == f.REFUSED_STREAM:
            status, text = grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT_TEXT} (stream refused by the server)"
        elif code == f.CANCEL:
            status, text = grpc.StatusCode.CANCELLED, "Received RST_STREAM with error code 8"
        elif code == f.ENHANCE_YOUR_CALM:
            status, text = grpc.StatusCode.RESOURCE_EXHAUSTED, "Received RST_STREAM with error code 11"
        else:
            status, text = grpc.StatusCode.INTERNAL, f"Received RST_STREAM with error code {code}"
        st.local_closed = True
        self._finish(st, status, text)

    def _on_goaway(self, payload: bytes) -> None:
        if len(payload) < 8:
            self._connection_error(f.FRAME_SIZE_ERROR, "GOAWAY length")
            return
        last_sid, code = struct.unpack_from(">LL", payload)
        last_sid &= 0x7FFFFFFF
        debug = payload[8:].decode("utf-8", "replace")[:200]
        self.draining = True
        self.close_error = f"server sent GOAWAY (code {code}{': ' + debug if debug else ''})"
        self.channel._connection_gone(self)
        for st in [s for sid, s in self.streams.items() if sid > last_sid]:
            st.sent_headers = False  # never processed
            self._finish(st, grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT_TEXT} ({self.close_error}, "
                                                          f"stream {st.sid} > last stream {last_sid})")
        waiting, self.waiting = self.waiting, collections.deque()
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)
        self._maybe_close_drained()


# ---- deadlines -------------------------------------------------------------------------------
class _Deadlines:
    """Call deadlines in buckets of DEADLINE_RESOLUTION_S with one loop timer for the
    earliest bucket: cheaper than a TimerHandle per call; a deadline fires at most one
    resolution late."""

    __slots__ = ("loop", "buckets", "heap", "timer", "timer_tick")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, set] = {}
        self.heap: list[int] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_tick = 0

    def add(self, call: _Call, deadline: float) -> None:
        tick = int(deadline / DEADLINE_RESOLUTION_S) + 1
        b = self.buckets.get(tick)
        if b is None:
            b = self.buckets[tick] = set()
            heapq.heappush(self.heap, tick)
            if self.timer is None or tick < self.timer_tick:
                self._schedule(tick)
        b.add(call)
        call.deadline_tick = tick

    def remove(self, call: _Call) -> None:
        b = self.buckets.get(call.deadline_tick)
        if b is not None:
            b.discard(call)
        call.deadline_tick = 0

    def _schedule(self, tick: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_tick = tick
        self.timer = self.loop.call_at(self.loop.time() + max(0.0, tick * DEADLINE_RESOLUTION_S - time.monotonic()),
                                       self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = time.monotonic()
        heap = self.heap
        while heap and heap[0] * DEADLINE_RESOLUTION_S <= now:
            for call in self.buckets.pop(heapq.heappop(heap), ()):
                call._on_deadline()
        while heap and not self.buckets.get(heap[0]):  # buckets emptied by finished calls
            self.buckets.pop(heapq.heappop(heap), None)
        if heap:
            self._schedule(heap[0])


# ---- calls -------------------------------------------------------------------------------
class _Call:
    """What every call has: its stream, status, metadata and deadline."""

    response_streaming = False
    request_streaming = False

    def __init__(self, mc: _MultiCallable, timeout: float | None, metadata: Any) -> None:
        self.channel = mc.channel
        self.mc = mc
        self.loop = asyncio.get_running_loop()
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.metadata = metadata
        self.stream = _Stream(self, mc.channel.max_receive_message_bytes)
        self.code_: grpc.StatusCode | None = None
        self.details_ = ""
        self.status_fut: asyncio.Future | None = None
        self.msg_waiter: asyncio.Future | None = None
        self.write_waiter: asyncio.Future | None = None
        self.headers_waiter: asyncio.Future | None = None
        self.deadline_tick = 0  # its bucket in the channel's _Deadlines, 0 if none
        self.callbacks: list[Callable] = []
        self.cancelled_ = False

    # ---- the connection calls these ----------------------------------------------------
    def _on_headers(self) -> None:
        w = self.headers_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _on_message(self) -> None:
        w = self.msg_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_writer(self) -> None:
        w = self.write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _on_status(self, code: grpc.StatusCode, details: str) -> None:
        if self.code_ is not None:
            return
        self.code_ = code
        self.details_ = details
        if self.deadline_tick:
            self.channel._deadlines.remove(self)
        for w in (self.status_fut, self.msg_waiter, self.write_waiter, self.headers_waiter):
            if w is not None and not w.done():
                w.set_result(None)
        for cb in self.callbacks:
            self.loop.call_soon(cb, self)
        self.callbacks = []

    def _on_deadline(self) -> None:
        self.deadline_tick = 0
        if self.code_ is None:
            conn = self.stream.conn
            if conn is not None:
                conn.reset(self.stream, f.CANCEL)
            self._on_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    # ---- starting ----------------------------------------------------------------------------
    async def _start(self, first: bytes | None, end: bool) -> None:
        """Open the stream and send the headers (and ``first`` message, ending our side if ``end``)."""
        deadline = self.deadline
        if deadline is not None:
            dl = self.channel._deadlines
            if dl is None or dl.loop is not self.loop:
                dl = self.channel._deadlines = _Deadlines(self.loop)
            dl.add(self, deadline)
        if first is not None and len(first) - 5 > self.channel.max_send_message_bytes:
            self._on_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Sent message larger than max ({len(first) - 5} vs. {self.channel.max_send_message_bytes})")
            return
        for _ in range(3):  # a connection that drains meanwhile: the next one
            conn = self.channel._conn
            if conn is None or not conn.usable or not conn.settings_received.done():
                try:
                    conn = await self.channel._get_connection(deadline)
                except NativeRpcError as e:
                    self._on_status(e.code(), e.details())
                    return
            if self.code_ is not None:
                return
            st = self.stream
            if len(conn.streams) < conn.peer_max_streams and conn.usable and conn.next_sid <= STREAM_ID_MAX:
                # fast path: no await
                sid = conn.next_sid
                conn.next_sid = sid + 2
                st.sid = sid
                st.conn = conn
                st.send_window = conn.peer_initial_window
                conn.streams[sid] = st
            else:
                try:
                    ok = await conn.open_stream(st, deadline)
                except NativeRpcError as e:
                    self._on_status(e.code(), e.details())
                    return
                if self.code_ is not None:
                    if st.conn is not None:
                        conn.reset(st)
                    return
                if not ok:
                    continue
            timeout_block = b""
            if deadline is not None:
                timeout_block = _literal_indexed_name_cached(
                    encode_timeout(max(0.0, deadline - time.monotonic())))
            block = self.mc.header_block + timeout_block + (_encode_metadata(self.metadata) if self.metadata else b"")
            if first is None:
                conn.send_headers(st, block, False)
            else:
                conn.send_headers(st, block, False)
                conn.send_data(st, first, end)
            return
        self._on_status(grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT_TEXT} (no connection took the call)")

    def _raise_if_failed(self) -> None:
        code = self.code_
        if code is not None and code is not grpc.StatusCode.OK:
            if code is grpc.StatusCode.CANCELLED and self.cancelled_:
                raise asyncio.CancelledError()
            raise NativeRpcError(code, self.details_, self._initial_md(), self._trailing_md())

    def _initial_md(self) -> grpc.aio.Metadata:
        return _metadata_of(self.stream.headers) if self.stream.headers else grpc.aio.Metadata()

    def _trailing_md(self) -> grpc.aio.Metadata:
        return _metadata_of(self.stream.trailers) if self.stream.trailers else grpc.aio.Metadata()

    async def _wait_status(self) -> None:
        if self.code_ is None:
            fut = self.status_fut
            if fut is None:
                fut = self.status_fut = self.loop.create_future()
            try:
                await fut
            except asyncio.CancelledError:
                self.cancel()
                raise

    # ---- grpc.aio.Call interface ------------------------------------------------------------
    def cancel(self) -> bool:
        if self.code_ is not None:
            return False
        self.cancelled_ = True
        conn = self.stream.conn
        if conn is not None:
            conn.reset(self.stream, f.CANCEL)
        self._on_status(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return True

    def cancelled(self) -> bool:
        return self.cancelled_

    def done(self) -> bool:
        return self.code_ is not None

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def add_done_callback(self, callback: Callable) -> None:
        if self.code_ is not None:
            self.loop.call_soon(callback, self)
        else:
            self.callbacks.append(callback)

    async def code(self) -> grpc.StatusCode:
        await self._wait_status()
        return self.code_

    async def details(self) -> str:
        await self._wait_status()
        return self.details_

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self.stream.headers is None and self.code_ is None:
            self.headers_waiter = self.loop.create_future()
            await self.headers_waiter
        return self._initial_md()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._wait_status()
        return self._trailing_md()

    async def wait_for_connection(self) -> None:
        await self._started()

    async def _started(self) -> None:
        pass

    def _take(self) -> bytes | None:
        st = self.stream
        if st.msgs:
            body = st.msgs.popleft()
            if st.conn is not None:
                st.conn.reader_took(st, len(body))
            else:
                st.unread_bytes -= len(body)
            return body
        return None

    def _deserialize(self, body: bytes) -> Any:
        des = self.mc.deserializer
        if des is None:
            return body
        try:
            return des(body)
        except Exception as exc:  # noqa: BLE001 - a garbled response is the server's fault
            raise NativeRpcError(grpc.StatusCode.INTERNAL, f"cannot parse response: {exc}") from None


def _frame_message(serializer: Callable | None, request: Any) -> bytes:
    body = serializer(request) if serializer is not None else request
    return _PREFIX.pack(0, len(body)) + body


_TIMEOUT_BLOCKS: dict[bytes, bytes] = {}
_TIMEOUT_BLOCKS_MAX = 4096


def _literal_indexed_name_cached(value: bytes) -> bytes:
    b = _TIMEOUT_BLOCKS.get(value)
    if b is None:
        if len(_TIMEOUT_BLOCKS) >= _TIMEOUT_BLOCKS_MAX:
            _TIMEOUT_BLOCKS.clear()
        b = _TIMEOUT_BLOCKS[value] = hpack.encode_literal(b"grpc-timeout", value)
    return b


class UnaryUnaryCall(_Call):
    """``await call`` gives the response."""

    def __init__(self, mc: _MultiCallable, request: Any, timeout: float | None, metadata: Any) -> None:
        super().__init__(mc, timeout, metadata)
        self.request = request
        self.result_: Any = None

    async def _run(self) -> Any:
        if self.code_ is None and self.stream.conn is None:
            try:
                first = _frame_message(self.mc.serializer, self.request)
            except Exception as exc:  # noqa: BLE001 - a request the serializer refuses
                raise NativeRpcError(grpc.StatusCode.INTERNAL, f"cannot serialize request: {exc}") from None
            self.request = None
            await self._start(first, True)
        await self._wait_status()
        if self.code_ is grpc.StatusCode.OK:
            if self.result_ is None:
                body = self._take()
                if body is None:
                    raise NativeRpcError(grpc.StatusCode.INTERNAL, "OK status without a response message",
                                         self._initial_md(), self._trailing_md())
                self.result_ = self._deserialize(body)
            return self.result_
        self._raise_if_failed()

    def __await__(self):
        # The coroutine runs in the awaiting task: no Task of its own per call.
        return self._run().__await__()


class _StreamCall(_Call):
    """Unary-stream, stream-unary and stream-stream calls."""

    def __init__(self, mc: _MultiCallable, request: Any, request_iterator: Any, timeout: float | None,
                 metadata: Any) -> None:
        super().__init__(mc, timeout, metadata)
        self.writing_done = not self.request_streaming
        first = None
        if not self.request_streaming:
            first = _frame_message(mc.serializer, request)
        self.start_task = self.loop.create_task(self._start(first, first is not None))
        self.feeder: asyncio.Task | None = None
        if self.request_streaming and request_iterator is not None:
            self.feeder = self.loop.create_task(self._feed(request_iterator))

    async def _started(self) -> None:
        if not self.start_task.done():
            try:
                await asyncio.shield(self.start_task)
            except asyncio.CancelledError:
                if not self.start_task.done():
                    raise

    async def _feed(self, it: Any) -> None:
        try:
            if hasattr(it, "__aiter__"):
                async for req in it:
                    await self.write(req)
            else:
                for req in it:
                    await self.write(req)
            await self.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass

    def cancel(self) -> bool:
        if self.feeder is not None and not self.feeder.done():
            self.feeder.cancel()
        return super().cancel()

    async def write(self, request: Any) -> None:
        await self._started()
        if self.code_ is not None:
            self._raise_if_failed()
            raise asyncio.InvalidStateError("the call has already finished")
        if self.writing_done:
            raise asyncio.InvalidStateError("write after done_writing")
        data = _frame_message(self.mc.serializer, request)
        if len(data) - 5 > self.channel.max_send_message_bytes:
            raise NativeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"Sent message larger than max ({len(data) - 5} vs. {self.channel.max_send_message_bytes})")
        st = self.stream
        conn = st.conn
        conn.send_data(st, data, False)
        while (st.pending_bytes > STREAM_SEND_BUFFER_BYTES_MAX or conn.paused) and self.code_ is None:
            if conn.paused:
                w = self.loop.create_future()
                conn.drain_waiters.append(w)
            else:
                w = self.write_waiter = self.loop.create_future()
            await w
        self._raise_if_failed()

    async def done_writing(self) -> None:
        await self._started()
        if self.writing_done or self.code_ is not None:
            return
        self.writing_done = True
        st = self.stream
        st.conn.send_data(st, b"", True)

    async def read(self) -> Any:
        await self._started()
        while True:
            body = self._take()
            if body is not None:
                return self._deserialize(body)
            if self.code_ is not None:
                if self.code_ is grpc.StatusCode.OK:
                    return grpc.aio.EOF
                self._raise_if_failed()
            w = self.msg_waiter = self.loop.create_future()
            try:
                await w
            except asyncio.CancelledError:
                if self.code_ is None and not w.cancelled():
                    pass
                raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.read()
            if msg is grpc.aio.EOF:
                return
            yield msg

    def __await__(self):  # stream-unary: the single response
        return self._single().__await__()

    async def _single(self) -> Any:
        await self._started()
        await self._wait_status()
        if self.code_ is grpc.StatusCode.OK:
            body = self._take()
            if body is None:
                raise NativeRpcError(grpc.StatusCode.INTERNAL, "OK status without a response message")
            return self._deserialize(body)
        self._raise_if_failed()


class UnaryStreamCall(_StreamCall):
    response_streaming = True


class StreamUnaryCall(_StreamCall):
    request_streaming = True


class StreamStreamCall(_StreamCall):
    request_streaming = True
    response_streaming = True


# ---- multicallables -------------------------------------------------------------------------
class _MultiCallable:
    def __init__(self, channel: NativeChannel, method: str, serializer: Callable | None,
                 deserializer: Callable | None) -> None:
        self.channel = channel
        self.method = method
        self.serializer = serializer
        self.deserializer = deserializer
        self.header_block = channel._base_block(method)


class UnaryUnaryMultiCallable(_MultiCallable):
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> UnaryUnaryCall:
        return UnaryUnaryCall(self, request, timeout, metadata)


class UnaryStreamMultiCallable(_MultiCallable):
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> UnaryStreamCall:
        return UnaryStreamCall(self, request, None, timeout, metadata)


class StreamUnaryMultiCallable(_MultiCallable):
    def __call__(self, request_iterator: Any = None, *, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> StreamUnaryCall:
        return StreamUnaryCall(self, None, request_iterator, timeout, metadata)


class StreamStreamMultiCallable(_MultiCallable):
    def __call__(self, request_iterator: Any = None, *, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> StreamStreamCall:
        return StreamStreamCall(self, None, request_iterator, timeout, metadata)


# ---- the channel ------------------------------------------------------------------------------
class NativeChannel:
    """A grpc.aio.Channel look-alike over one native HTTP/2 connection at a time."""

    def __init__(self, target: str, *, max_receive_message_bytes: int = MAX_RECEIVE_MESSAGE_BYTES,
                 max_send_message_bytes: int = MAX_SEND_MESSAGE_BYTES,
                 connect_attempt_s: float = CONNECT_ATTEMPT_S_MAX) -> None:
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"native channel target must be host:port, not {target!r}")
        self.target = target
        self.host = host.strip("[]")
        self.port = int(port)
        self.max_receive_message_bytes = max_receive_message_bytes
        self.max_send_message_bytes = max_send_message_bytes
        self.connect_attempt_s = connect_attempt_s
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future | None = None
        self._retry_at = 0.0
        self._backoff_s = RECONNECT_BACKOFF_S_INITIAL
        self._last_connect_error = ""
        self._closed = False
        self._old: set[_Connection] = set()  # draining connections, closed on close()
        self._authority = target.encode("ascii")
        self._deadlines: _Deadlines | None = None

    # ---- multicallables ------------------------------------------------------------------------
    def _base_block(self, method: str) -> bytes:
        return b"".join((
            b"\x83",  # :method POST
            b"\x86",  # :scheme http
            _literal_indexed_name(4, method.encode("ascii")),     # :path
            _literal_indexed_name(1, self._authority),            # :authority
            _literal_indexed_name(31, b"application/grpc"),       # content-type
            hpack.encode_literal(b"te", b"trailers"),
            _literal_indexed_name(58, USER_AGENT),                # user-agent
        ))

    def unary_unary(self, method: str, request_serializer: Callable | None = None,
                    response_deserializer: Callable | None = None, _registered_method: Any = False,
                    **_: Any) -> UnaryUnaryMultiCallable:
        return UnaryUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Callable | None = None,
                     response_deserializer: Callable | None = None, _registered_method: Any = False,
                     **_: Any) -> UnaryStreamMultiCallable:
        return UnaryStreamMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Callable | None = None,
                     response_deserializer: Callable | None = None, _registered_method: Any = False,
                     **_: Any) -> StreamUnaryMultiCallable:
        return StreamUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Callable | None = None,
                      response_deserializer: Callable | None = None, _registered_method: Any = False,
                      **_: Any) -> StreamStreamMultiCallable:
        return StreamStreamMultiCallable(self, method, request_serializer, response_deserializer)

    # ---- connectivity ---------------------------------------------------------------------------
    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        conn = self._conn
        if conn is not None and conn.usable and conn.settings_received.done():
            return grpc.ChannelConnectivity.READY
        if self._connecting is not None:
            return grpc.ChannelConnectivity.CONNECTING
        if self._retry_at > time.monotonic():
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        if try_to_connect:
            self._ensure_connecting()
            return grpc.ChannelConnectivity.CONNECTING
        return grpc.ChannelConnectivity.IDLE

    async def channel_ready(self) -> None:
        """Wait until connected, retrying with the back-off (callers bound the wait)."""
        while True:
            if self._closed:
                raise NativeRpcError(grpc.StatusCode.CANCELLED, "channel closed")
            conn = self._conn
            if conn is not None and conn.usable and conn.settings_received.done():
                return
            wait = self._retry_at - time.monotonic()
            if wait > 0 and self._connecting is None:
                await asyncio.sleep(wait)
                continue
            fut = self._ensure_connecting()
            await asyncio.shield(fut)

    def _ensure_connecting(self) -> asyncio.Future:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect_once())
        return self._connecting

    async def _connect_once(self) -> None:
        """One attempt; never raises (the outcome is in the channel's state)."""
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_attempt_s):
                _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
                await conn.settings_received
            self._conn = conn
            self._backoff_s = RECONNECT_BACKOFF_S_INITIAL
            self._retry_at = 0.0
        except asyncio.CancelledError:
            if conn is not None:
                conn.close("channel closed")
            raise
        except (OSError, asyncio.TimeoutError) as exc:
            if conn is not None:
                conn.close("no SETTINGS from the server")
            self._last_connect_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            jitter = 1 + random.uniform(-RECONNECT_BACKOFF_JITTER, RECONNECT_BACKOFF_JITTER)
            self._retry_at = time.monotonic() + self._backoff_s * jitter
            self._backoff_s = min(self._backoff_s * RECONNECT_BACKOFF_MULTIPLIER, RECONNECT_BACKOFF_S_MAX)
        finally:
            self._connecting = None
            if self._closed and self._conn is not None:
                self._conn.close()

    async def _get_connection(self, deadline: float | None) -> _Connection:
        """A ready connection, or NativeRpcError: UNAVAILABLE (nothing sent) / DEADLINE_EXCEEDED."""
        if self._closed:
            raise NativeRpcError(grpc.StatusCode.CANCELLED, "channel closed")
        for _ in range(2):
            conn = self._conn
            if conn is not None and conn.usable and conn.settings_received.done():
                return conn
            if self._connecting is None and self._retry_at > time.monotonic():
                break  # TRANSIENT_FAILURE: fail fast, as grpc does without wait_for_ready
            fut = self._ensure_connecting()
            try:
                if deadline is None:
                    await asyncio.shield(fut)
                else:
                    await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise NativeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        conn = self._conn
        if conn is not None and conn.usable and conn.settings_received.done():
            return conn
        raise NativeRpcError(grpc.StatusCode.UNAVAILABLE,
                             f"{CONNECT_FAILED_TEXT} ({self.target}: {self._last_connect_error or 'not connected'})")

    def _connection_gone(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None
            if not conn.closed:
                self._old.add(conn)
        if conn.closed:
            self._old.discard(conn)

    async def close(self, grace: float | None = None) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            try:
                await self._connecting
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for conn in [self._conn, *self._old]:
            if conn is not None:
                conn.close("channel closed")
        self._conn = None
        self._old.clear()

    async def __aenter__(self) -> NativeChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def insecure_channel(target: str, **kwargs: Any) -> NativeChannel:
    return NativeChannel(target, **kwargs)
