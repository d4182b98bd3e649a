"""gRPC over the native HTTP/2 edge: the method table, the servicer context and the
status trailers.

Handlers are the same servicer methods grpc.aio calls: ``fn(request, context)`` for
unary requests, ``fn(request_iterator, context)`` for streaming ones; a unary response is
the coroutine's result, a streamed one is yielded by an async generator or written with
``await context.write(msg)``. ``context.abort`` raises grpc.aio.AbortError, exactly the
class the servicers already let through.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Callable, Iterable

import grpc

from geokv.edge import hpack

# gRPC status codes (numbers fixed by the gRPC spec)
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

GRPC_MESSAGE_BYTES_MAX = 4096   # longer status messages are cut (they ride in a header block)
TRAILING_METADATA_BYTES_MAX = 8192

UNARY_UNARY, UNARY_STREAM, STREAM_UNARY, STREAM_STREAM = range(4)

_TIMEOUT_UNITS_S = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6,
                    ord("n"): 1e-9}


def parse_timeout_s(value: bytes) -> float | None:
    """grpc-timeout: 1-8 ASCII digits and a unit; None when malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS_S.get(value[-1])
    if unit is None:
        return None
    return int(value[:-1]) * unit


def status_code_number(code: Any) -> int:
    """A grpc.StatusCode (or an int) as its number."""
    if isinstance(code, int):
        return code
    return int(code.value[0])


def percent_encode(msg: str) -> bytes:
    """grpc-message encoding: bytes outside printable ASCII and '%' become %XX."""
    raw = msg.encode("utf-8", "replace")[:GRPC_MESSAGE_BYTES_MAX]
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def _metadata_bytes(md: Iterable[tuple[str, Any]]) -> bytes:
    out = []
    total = 0
    for k, v in md or ():
        name = k.lower().encode() if isinstance(k, str) else bytes(k).lower()
        if name.endswith(b"-bin"):
            val = base64.b64encode(v if isinstance(v, (bytes, bytearray)) else str(v).encode()).rstrip(b"=")
        else:
            val = v.encode() if isinstance(v, str) else bytes(v)
        total += len(name) + len(val)
        if total > TRAILING_METADATA_BYTES_MAX:
            break
        out.append(hpack.encode_literal(name, val))
    return b"".join(out)


# Fixed header blocks (literals without indexing; :status 200 is static index 8).
RESPONSE_HEADERS_BLOCK = b"\x88" + hpack.encode_literal(b"content-type", b"application/grpc")
TRAILERS_OK_BLOCK = hpack.encode_literal(b"grpc-status", b"0")


def trailers_block(code: int, message: str, trailing_metadata: Any = None) -> bytes:
    parts = [hpack.encode_literal(b"grpc-status", str(code).encode())]
    if message:
        parts.append(hpack.encode_literal(b"grpc-message", percent_encode(message)))
    if trailing_metadata:
        parts.append(_metadata_bytes(trailing_metadata))
    return b"".join(parts)


def trailers_only_block(code: int, message: str, trailing_metadata: Any = None) -> bytes:
    """A Trailers-Only response: :status, content-type and the status in one block."""
    return RESPONSE_HEADERS_BLOCK + trailers_block(code, message, trailing_metadata)


class Method:
    """One RPC: the servicer function, its (de)serializers and its shape."""

    __slots__ = ("path", "name", "fn", "deserialize", "serialize", "kind")

    def __init__(self, path: str, handler: Any) -> None:
        self.path = path
        self.name = path.rsplit("/", 1)[-1]
        req_stream, resp_stream = handler.request_streaming, handler.response_streaming
        self.kind = (2 if req_stream else 0) + (1 if resp_stream else 0)
        self.fn = (handler.unary_unary, handler.unary_stream, handler.stream_unary, handler.stream_stream)[self.kind]
        self.deserialize: Callable[[bytes], Any] = handler.request_deserializer or (lambda b: b)
        self.serialize: Callable[[Any], bytes] = handler.response_serializer or (lambda m: m)


class _CallDetails:
    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class MethodTable:
    """Collects the generic handlers the generated ``add_*Servicer_to_server`` functions
    register, and resolves ``:path`` to a Method (memoised)."""

    def __init__(self) -> None:
        self._handlers: list[Any] = []
        self._by_path: dict[bytes, Method | None] = {}

    # the two methods the generated code calls on a "server":
    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self._handlers.extend(handlers)
        self._by_path.clear()

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        pass  # the generic handlers cover the same methods

    def lookup(self, path: bytes) -> Method | None:
        try:
            return self._by_path[path]
        except KeyError:
            pass
        found = None
        try:
            spath = path.decode("ascii")
        except UnicodeDecodeError:
            spath = None
        if spath is not None:
            details = _CallDetails(spath)
            for h in self._handlers:
                mh = h.service(details)
                if mh is not None:
                    found = Method(spath, mh)
                    break
        if len(self._by_path) < 4096:  # bound: unknown paths are not remembered forever
            self._by_path[path] = found
        return found


_RESERVED_HEADERS = frozenset((b"content-type", b"te", b"grpc-timeout", b"grpc-encoding",
                               b"grpc-accept-encoding"))


class Context:
    """What servicers use of grpc.aio.ServicerContext, for one call on the native edge."""

    __slots__ = ("_call", "_headers", "_metadata", "code", "details", "trailing_metadata")

    def __init__(self, call: Any, headers: list[tuple[bytes, bytes]]) -> None:
        self._call = call
        self._headers = headers
        self._metadata: tuple | None = None
        self.code: int | None = None
        self.details = ""
        self.trailing_metadata: Any = None

    def invocation_metadata(self) -> tuple:
        md = self._metadata
        if md is None:
            items = []
            for name, value in self._headers:
                if name[:1] == b":" or name in _RESERVED_HEADERS:
                    continue
                key = name.decode("latin-1")
                if key.endswith("-bin"):
                    try:
                        items.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
                    except ValueError:
                        continue
                else:
                    items.append((key, value.decode("latin-1")))
            md = self._metadata = tuple(items)
        return md

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        self.code = status_code_number(code)
        self.details = details
        if trailing_metadata:
            self.trailing_metadata = trailing_metadata
        raise grpc.aio.AbortError(details)

    def set_code(self, code: Any) -> None:
        self.code = status_code_number(code)

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self.trailing_metadata = trailing_metadata

    async def write(self, message: Any) -> None:
        await self._call.write_message(message)

    async def read(self) -> Any:
        return await self._call.read_message()

    def peer(self) -> str:
        return self._call.peer()

    def cancelled(self) -> bool:
        return self._call.cancelled

    def done(self) -> bool:
        return self._call.finished

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def add_done_callback(self, cb: Callable[[Any], None]) -> None:
        self._call.done_callbacks.append(cb)


class RequestIterator:
    """The request stream of a streaming RPC: a bounded async iterator (the stream's
    flow-control window bounds what the peer can queue: window is credited as bytes are
    buffered up to the stream's bound, then as the handler consumes messages; see
    geokv.edge.calls)."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> RequestIterator:
        return self

    async def __anext__(self) -> Any:
        msg = await self._call.read_message()
        if msg is EOF:
            raise StopAsyncIteration
        return msg


class _Eof:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EOF"


EOF = _Eof()  # grpc.aio.EOF's counterpart for context.read()


class Resume:
    """Continues a handler coroutine that already ran its first step inline and
    suspended on ``first`` (what it yielded). Awaited inside a Task, it hands the
    Task each future the coroutine waits on, and forwards sends and throws (so
    cancellation reaches the handler exactly as if the Task had run it from the start).
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Any:
        coro, fut = self.coro, self.first
        self.first = None
        while True:
            try:
                yield fut
            except BaseException as exc:  # noqa: BLE001 - forwarded into the handler
                try:
                    fut = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    fut = coro.send(None)
                except StopIteration as stop:
                    return stop.value


async def resume(coro: Any, first: Any) -> Any:
    return await Resume(coro, first)


def is_async_iterable(obj: Any) -> bool:
    return hasattr(obj, "__aiter__")


CancelledError = asyncio.CancelledError
