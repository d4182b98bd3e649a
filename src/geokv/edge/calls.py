"""The gRPC calls of one HTTP/2 connection: a Stream per call, and the CallRunner mixin
of H2Connection that runs handlers and sends responses within the flow-control windows.

A handler of a unary call first runs inline (``coro.send(None)``); only if it suspends
is a Task made to continue it (``rpc.Resume``), so calls that complete at once cost no
Task, no timer and no extra loop iteration.

Cancellation is deterministic: a call that ends (client reset, deadline, connection
lost, server stop) before its Task has taken its first step has its handler closed at
that moment (a suspended inline handler gets CancelledError thrown in, so its ``except``
and ``finally`` run before the next frame is handled); a started Task is cancelled.

Request flow control (RFC 9113 6.9): a request stream's window is credited as its bytes
are buffered, while the stream holds at most one window (``STREAM_WINDOW_BYTES``) of
unread bytes, or while no whole message is unread (so a single message larger than the
window, up to the receive message bound, always completes); beyond that the credit is
withheld until the handler reads. So one stream buffers at most
max(STREAM_WINDOW_BYTES, max message + 5) + STREAM_WINDOW_BYTES bytes.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
from typing import Any

import grpc

from geokv.edge import frames as f
from geokv.edge import hpack, rpc

log = logging.getLogger("geokv.edge")

STREAM_WINDOW_BYTES = 1 << 20             # SETTINGS_INITIAL_WINDOW_SIZE we advertise
WINDOW_REFILL_FRACTION = 4                # grant back once 1/4 of a window is consumed
STREAM_WRITE_BUFFER_BYTES_MAX = 1 << 20   # queued response bytes before write() waits
STREAM_REQUEST_MESSAGES_MAX = 4096        # queued unread messages of a request stream
STREAM_CREDIT_MESSAGES_MAX = 1024         # unread messages beyond which the window is withheld

_STREAM_REFILL = STREAM_WINDOW_BYTES // WINDOW_REFILL_FRACTION
_HDR_PACK = f.FRAME_HEADER.pack
_MSG_PACK = f.MESSAGE_PREFIX.pack
_RESP_HEADERS = rpc.RESPONSE_HEADERS_BLOCK
_RESP_HEADERS_LEN = len(_RESP_HEADERS)
_TRAILERS_OK = rpc.TRAILERS_OK_BLOCK
_TRAILERS_OK_LEN = len(_TRAILERS_OK)
_FLAGS_EH = f.END_HEADERS
_FLAGS_EH_ES = f.END_HEADERS | f.END_STREAM

class Stream:
    """One client-initiated stream and its gRPC call (it is the Context's ``_call``)."""

    __slots__ = ("conn", "sid", "method", "headers", "ctx", "task", "recv_window", "recv_credit",
                 "send_window", "buf", "req_payload", "msgs", "waiter", "remote_closed", "headers_sent",
                 "finished", "cancelled", "out_pending", "out_offset", "out_bytes", "trailers",
                 "drain_waiter", "deadline", "timer", "deadline_hit", "done_callbacks", "encoding",
                 "queued", "withheld", "unstarted")

    def __init__(self, conn: Any, sid: int, method: rpc.Method, headers: list) -> None:
        self.conn = conn
        self.sid = sid
        self.method = method
        self.headers = headers
        self.ctx: rpc.Context | None = None
        self.task: asyncio.Task | None = None
        self.recv_window = STREAM_WINDOW_BYTES
        self.recv_credit = 0
        self.send_window = conn.peer_initial_window
        self.buf: bytearray | None = None
        self.req_payload: bytes | None = None
        self.msgs: collections.deque | None = None
        self.waiter: asyncio.Future | None = None
        self.remote_closed = False
        self.headers_sent = False
        self.finished = False
        self.cancelled = False
        self.out_pending: collections.deque | None = None
        self.out_offset = 0
        self.out_bytes = 0
        self.trailers: bytes | None = None
        self.drain_waiter: asyncio.Future | None = None
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline_hit = False
        self.done_callbacks: list = []
        self.encoding: bytes | None = None
        # request bytes held: ``queued`` of whole unread messages (wire size), ``withheld``
        # received but not yet credited back to the peer's stream window
        self.queued = 0
        self.withheld = 0
        # (handler, first, context) while ``task`` has not taken its first step: the
        # handler coroutine and what its inline first step suspended on (None: not started)
        self.unstarted: tuple | None = None

    # --- what rpc.Context calls ----------------------------------------------------------
    async def write_message(self, message: Any) -> None:
        conn = self.conn
        if self.finished:
            raise asyncio.CancelledError("the call is over")
        body = self.method.serialize(message)
        if not self.headers_sent:
            self.headers_sent = True
            conn.emit(_HDR_PACK(0, _RESP_HEADERS_LEN, f.HEADERS, _FLAGS_EH, self.sid) + _RESP_HEADERS)
        conn.send_message(self, body)
        while (self.out_bytes > STREAM_WRITE_BUFFER_BYTES_MAX or conn.paused) and not self.finished:
            fut = self.drain_waiter = conn.loop.create_future()
            try:
                await fut
            finally:
                self.drain_waiter = None

    async def read_message(self) -> Any:
        while not self.msgs:
            if self.remote_closed or self.finished:
                return rpc.EOF
            fut = self.waiter = self.conn.loop.create_future()
            try:
                await fut
            finally:
                self.waiter = None
        payload, wire = self.msgs.popleft()
        self.queued -= wire
        if self.withheld:
            self.conn.release_withheld(self)
        return self.method.deserialize(payload)

    def peer(self) -> str:
        return self.conn.peer_name

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)


class CallRunner:
    """Call handling for H2Connection (which provides loop, server, streams, windows,
    emit and the other connection state used here)."""

    # --- running handlers -----------------------------------------------------------------
    def _deadline_passed(self, st: Stream) -> bool:
        if st.deadline is not None and time.monotonic() >= st.deadline:
            st.deadline_hit = True
            self.finish_status(st, rpc.DEADLINE_EXCEEDED, "Deadline Exceeded")
            return True
        return False

    def _arm_deadline(self, st: Stream) -> None:
        if st.deadline is not None and st.timer is None and not st.finished:
            st.timer = self.loop.call_at(self.loop.time() + max(0.0, st.deadline - time.monotonic()),
                                         self._on_deadline, st)

    def _on_deadline(self, st: Stream) -> None:
        st.timer = None
        if st.finished:
            return
        st.deadline_hit = True
        self.finish_status(st, rpc.DEADLINE_EXCEEDED, "Deadline Exceeded")
        self._cancel_handler(st)

    def _start_unary(self, st: Stream) -> None:
        if st.deadline is not None and self._deadline_passed(st):
            return
        method = st.method
        payload = st.req_payload
        st.req_payload = None
        try:
            request = method.deserialize(payload)
        except Exception:  # noqa: BLE001 - the client sent bytes that do not parse
            self.finish_status(st, rpc.INTERNAL, "Exception deserializing request!")
            return
        ctx = st.ctx = rpc.Context(st, st.headers)
        if method.kind == rpc.UNARY_STREAM:
            res = method.fn(request, ctx)
            st.unstarted = (res, None, None)
            st.task = self.loop.create_task(self._run_streaming(st, res))
            self._arm_deadline(st)
            return
        coro = method.fn(request, ctx)
        if not self.server.inline_first_step:
            st.unstarted = (coro, None, None)
            st.task = self.loop.create_task(self._run_unary_rest(st, coro, None))
            self._arm_deadline(st)
            return
        # Like a Task, the call runs in its own copy of the context (contextvars set by a
        # handler never leak into the next call on this connection).
        context = contextvars.copy_context()
        try:
            first = context.run(coro.send, None)
        except StopIteration as stop:
            self.finish_unary(st, stop.value)
            return
        except Exception as exc:  # noqa: BLE001 - becomes the call's status
            self._finish_exception(st, exc)
            return
        except asyncio.CancelledError:
            self.finish_status(st, rpc.CANCELLED, "Cancelled")
            return
        st.unstarted = (coro, first, context)
        st.task = self.loop.create_task(self._run_unary_rest(st, coro, first), context=context)
        self._arm_deadline(st)

    async def _run_unary_rest(self, st: Stream, coro: Any, first: Any) -> None:
        st.unstarted = None
        try:
            response = await (coro if first is None else rpc.Resume(coro, first))
        except asyncio.CancelledError:
            self._on_cancelled(st)
            return
        except Exception as exc:  # noqa: BLE001
            self._finish_exception(st, exc)
            return
        self.finish_unary(st, response)

    def _start_streaming(self, st: Stream) -> None:
        if st.deadline is not None and self._deadline_passed(st):
            return
        ctx = st.ctx = rpc.Context(st, st.headers)
        res = st.method.fn(rpc.RequestIterator(st), ctx)
        st.unstarted = (res, None, None)
        st.task = self.loop.create_task(self._run_streaming(st, res))
        self._arm_deadline(st)

    async def _run_streaming(self, st: Stream, res: Any) -> None:
        st.unstarted = None
        agen = None
        try:
            if rpc.is_async_iterable(res):
                agen = res
                async for msg in agen:
                    await st.write_message(msg)
                result = None
            else:
                result = await res
            if st.method.kind == rpc.STREAM_UNARY:
                self.finish_unary(st, result)
            else:
                self._finish_ok(st)
        except asyncio.CancelledError:
            self._on_cancelled(st)
        except Exception as exc:  # noqa: BLE001
            self._finish_exception(st, exc)
        finally:
            if agen is not None:
                try:
                    await agen.aclose()
                except BaseException:  # noqa: BLE001 - the call is over either way
                    pass

    def _cancel_handler(self, st: Stream) -> None:
        """End the call's handler now. A started Task is cancelled (CancelledError at its
        current await). A Task that has not run yet would be cancelled before its first
        step, which never reaches the handler (a suspended inline handler would only be
        closed when garbage-collected): the handler gets CancelledError here instead."""
        task = st.task
        if task is None or task.done():
            return
        task.cancel()
        unstarted = st.unstarted
        if unstarted is None:
            return
        st.unstarted = None
        handler, first, context = unstarted
        if first is None:  # never ran: nothing to unwind, only close it (no "never awaited")
            close = getattr(handler, "close", None)
            if close is not None and not rpc.is_async_iterable(handler):
                close()
            return
        try:
            nxt = context.run(handler.throw, asyncio.CancelledError())
        except (StopIteration, asyncio.CancelledError):
            return
        except Exception:  # noqa: BLE001 - the call is over; its outcome is already decided
            log.debug("edge: %s raised while being cancelled", st.method.path, exc_info=True)
            return
        # The handler awaits during its cleanup: a Task finishes it (no further cancel).
        self.loop.create_task(self._finish_cancelled(st, handler, nxt), context=context)

    async def _finish_cancelled(self, st: Stream, handler: Any, first: Any) -> None:
        try:
            await rpc.Resume(handler, first)
        except BaseException:  # noqa: BLE001 - the call is over either way
            log.debug("edge: %s ended its cleanup with an error", st.method.path, exc_info=True)

    def _on_cancelled(self, st: Stream) -> None:
        if not st.finished:
            self.finish_status(st, rpc.CANCELLED, "Cancelled")

    def _finish_exception(self, st: Stream, exc: BaseException) -> None:
        if st.finished:
            return
        ctx = st.ctx
        if isinstance(exc, grpc.aio.AbortError) and ctx is not None and ctx.code is not None:
            self.finish_status(st, ctx.code, ctx.details, ctx.trailing_metadata)
            return
        log.error("edge: unexpected error in %s", st.method.path, exc_info=exc)
        self.finish_status(st, rpc.UNKNOWN, f"Unexpected {type(exc)}: {exc}",
                           ctx.trailing_metadata if ctx is not None else None)

    # --- responses ------------------------------------------------------------------------
    def finish_unary(self, st: Stream, response: Any) -> None:
        if st.finished:
            return
        ctx = st.ctx
        if ctx is not None and ctx.code:
            self.finish_status(st, ctx.code, ctx.details, ctx.trailing_metadata)
            return
        try:
            body = st.method.serialize(response)
        except Exception:  # noqa: BLE001 - a handler returned something that is not its message
            log.error("edge: cannot serialize the response of %s: %r", st.method.path, type(response))
            self.finish_status(st, rpc.INTERNAL, "Exception serializing response!")
            return
        sid = st.sid
        dlen = len(body) + 5
        tm = ctx.trailing_metadata if ctx is not None else None
        if (not st.headers_sent and not tm and dlen <= self.send_conn_window and dlen <= st.send_window
                and dlen <= self.peer_max_frame):
            self.send_conn_window -= dlen
            st.send_window -= dlen
            st.headers_sent = True
            self.emit(b"".join((
                _HDR_PACK(0, _RESP_HEADERS_LEN, f.HEADERS, _FLAGS_EH, sid), _RESP_HEADERS,
                _HDR_PACK(dlen >> 8, dlen & 0xFF, f.DATA, 0, sid), _MSG_PACK(0, dlen - 5), body,
                _HDR_PACK(0, _TRAILERS_OK_LEN, f.HEADERS, _FLAGS_EH_ES, sid), _TRAILERS_OK)))
            self._close_local(st)
            return
        if not st.headers_sent:
            st.headers_sent = True
            self.emit(_HDR_PACK(0, _RESP_HEADERS_LEN, f.HEADERS, _FLAGS_EH, sid) + _RESP_HEADERS)
        self.send_message(st, body)
        self._send_trailers(st, rpc.trailers_block(rpc.OK, "", tm) if tm else _TRAILERS_OK)

    def _finish_ok(self, st: Stream) -> None:
        ctx = st.ctx
        if ctx is not None and ctx.code:
            self.finish_status(st, ctx.code, ctx.details, ctx.trailing_metadata)
        else:
            self.finish_status(st, rpc.OK, "", ctx.trailing_metadata if ctx is not None else None)

    def finish_status(self, st: Stream, code: int, message: str, trailing_metadata: Any = None) -> None:
        if st.finished:
            return
        if st.headers_sent:
            self._send_trailers(st, rpc.trailers_block(code, message, trailing_metadata))
        else:
            st.headers_sent = True
            block = rpc.trailers_only_block(code, message, trailing_metadata)
            self._send_trailers(st, block)

    def _send_trailers(self, st: Stream, block: bytes) -> None:
        if st.out_pending:
            st.trailers = block  # after the queued DATA
            st.finished = True
            self._finish_call(st)
            return
        self.emit(self._header_frames(st.sid, block, True))
        self._close_local(st)

    def _header_frames(self, sid: int, block: bytes, end_stream: bool) -> bytes:
        limit = self.peer_max_frame
        es = f.END_STREAM if end_stream else 0
        if len(block) <= limit:
            return f.frame(f.HEADERS, f.END_HEADERS | es, sid, block)
        parts = [f.frame(f.HEADERS, es, sid, block[:limit])]
        for i in range(limit, len(block), limit):
            last = i + limit >= len(block)
            parts.append(f.frame(f.CONTINUATION, f.END_HEADERS if last else 0, sid, block[i:i + limit]))
        return b"".join(parts)

    def send_message(self, st: Stream, body: bytes) -> None:
        dlen = len(body) + 5
        if (not st.out_pending and dlen <= self.send_conn_window and dlen <= st.send_window
                and dlen <= self.peer_max_frame):
            self.send_conn_window -= dlen
            st.send_window -= dlen
            self.emit(b"".join((_HDR_PACK(dlen >> 8, dlen & 0xFF, f.DATA, 0, st.sid), _MSG_PACK(0, dlen - 5), body)))
            return
        if st.out_pending is None:
            st.out_pending = collections.deque()
        st.out_pending.append(_MSG_PACK(0, dlen - 5) + body)
        st.out_bytes += dlen
        self.flush_stream(st)

    def flush_stream(self, st: Stream) -> None:
        """Send as much queued DATA of ``st`` as the windows allow (then its trailers)."""
        pending = st.out_pending
        sid = st.sid
        while pending:
            avail = min(self.send_conn_window, st.send_window, self.peer_max_frame)
            if avail <= 0:
                self.blocked[sid] = st
                return
            chunk = pending[0]
            off = st.out_offset
            n = min(len(chunk) - off, avail)
            if off == 0 and n == len(chunk):
                piece = chunk
                pending.popleft()
            else:
                piece = chunk[off:off + n]
                if off + n == len(chunk):
                    pending.popleft()
                    st.out_offset = 0
                else:
                    st.out_offset = off + n
            self.send_conn_window -= n
            st.send_window -= n
            st.out_bytes -= n
            self.emit(_HDR_PACK(n >> 8, n & 0xFF, f.DATA, 0, sid) + piece)
        self.blocked.pop(sid, None)
        if st.trailers is not None:
            block, st.trailers = st.trailers, None
            self.emit(self._header_frames(sid, block, True))
            self._close_local(st)
        elif st.drain_waiter is not None and st.out_bytes <= STREAM_WRITE_BUFFER_BYTES_MAX:
            st.wake()

    def release_withheld(self, st: Stream) -> None:
        """The handler read a message: give back the credit withheld on arrival (see
        H2Connection._on_data) once the stream is under its bound again: at most one
        stream window of unread bytes, or no whole unread message, and fewer than
        STREAM_CREDIT_MESSAGES_MAX unread messages."""
        if (st.queued == 0 or st.queued + len(st.buf or b"") <= STREAM_WINDOW_BYTES) and \
                len(st.msgs) < STREAM_CREDIT_MESSAGES_MAX:
            withheld, st.withheld = st.withheld, 0
            self.credit_stream(st, withheld)

    def credit_stream(self, st: Stream, n: int) -> None:
        if st.remote_closed or st.finished:
            return
        credit = st.recv_credit + n
        if credit >= _STREAM_REFILL:
            self.emit(f.window_update_frame(st.sid, credit))
            st.recv_window += credit
            credit = 0
        st.recv_credit = credit

    # --- stream ends ----------------------------------------------------------------------
    def _finish_call(self, st: Stream) -> None:
        """The call's outcome is decided: release its slot and run callbacks."""
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        self.server.open_rpcs -= 1
        st.wake()
        if st.done_callbacks:
            cbs, st.done_callbacks = st.done_callbacks, []
            for cb in cbs:
                try:
                    cb(st.ctx)
                except Exception:  # noqa: BLE001
                    log.exception("edge: done callback failed")

    def _close_local(self, st: Stream) -> None:
        """We sent END_STREAM."""
        if not st.finished:
            st.finished = True
            self._finish_call(st)
        if not st.remote_closed:
            # the request half is still open (e.g. a Watch we ended): stop the client's sending
            self.emit(f.rst_stream_frame(st.sid, f.NO_ERROR))
        self._forget(st)

    def _forget(self, st: Stream) -> None:
        if self.streams.pop(st.sid, None) is not None:
            self.blocked.pop(st.sid, None)
            st.out_pending = None
            if self.goaway_sent and not self.streams and not self.closed:
                self.flush()
                self.closed = True
                self.transport.close()

    def _drop_stream(self, st: Stream) -> None:
        """The stream is gone (client reset, connection lost): cancel its handler."""
        st.cancelled = True
        if not st.finished:
            st.finished = True
            self._finish_call(st)
        self._cancel_handler(st)
        self.streams.pop(st.sid, None)
        self.blocked.pop(st.sid, None)
        st.out_pending = None
        st.trailers = None

    def reset_stream(self, sid: int, code: int) -> None:
        self.emit(f.rst_stream_frame(sid, code))
        st = self.streams.get(sid)
        if st is not None:
            self._drop_stream(st)

    def _reject(self, sid: int, end_stream: int, code: int, message: str) -> None:
        """Answer a stream we do not open with a Trailers-Only response."""
        self.emit(f.frame(f.HEADERS, _FLAGS_EH_ES, sid, rpc.trailers_only_block(code, message)))
        if not end_stream:
            self.emit(f.rst_stream_frame(sid, f.NO_ERROR))

    def _reject_http(self, sid: int, end_stream: int, status: bytes) -> None:
        self.emit(f.frame(f.HEADERS, _FLAGS_EH_ES, sid, hpack.encode_literal(b":status", status)))
        if not end_stream:
            self.emit(f.rst_stream_frame(sid, f.NO_ERROR))

