"""Fixtures for the native gRPC edge: a test service on an in-process EdgeServer (its
own event loop in a thread, real TCP on loopback), raw HTTP/2 client helpers, and a
one-member geokv server process on the native edge for etcdctl."""

from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import grpc
import pytest

from geokv.edge import EdgeServer
from geokv.edge import frames as f
from geokv.edge import hpack

SERVER_START_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 5.0
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
MAX_MESSAGE_BYTES = 2 * 1024 * 1024 + 512 * 1024


def _ident(b: bytes) -> bytes:
    return b


CALL_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("CALL_VAR", default="unset")


class EdgeTestService:
    """A bytes-in, bytes-out service (identity serializers) to probe the edge."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.unwound: dict[str, str] = {}  # Unwind tag -> the exception its finally saw
        self.gates: dict[str, asyncio.Event] = {}  # Gated tag -> opened by the test

    def open_gate(self, loop: asyncio.AbstractEventLoop, tag: str) -> None:
        """From the test's thread: let the Gated call ``tag`` start reading."""
        loop.call_soon_threadsafe(lambda: self.gates.setdefault(tag, asyncio.Event()).set())

    async def Echo(self, request: bytes, context) -> bytes:
        return request

    async def ContextVar(self, request: bytes, context) -> bytes:
        """Returns the variable as the call found it, then sets it (must not leak)."""
        seen = CALL_VAR.get()
        CALL_VAR.set(request.decode())
        if request == b"suspend":
            await asyncio.sleep(0.01)
        return seen.encode()

    async def Sleep(self, request: bytes, context) -> bytes:
        """Sleeps int(request) ms; records whether it ran to the end or was cancelled."""
        tag = request.decode()
        try:
            await asyncio.sleep(int(request) / 1000)
        except asyncio.CancelledError:
            self.cancelled.append(tag)
            raise
        self.finished.append(tag)
        return request

    async def Fail(self, request: bytes, context) -> bytes:
        if request == b"abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: 100% sure: ünïcode")
        if request == b"trailers":
            context.set_trailing_metadata((("x-geokv", "yes"),))
            return b"ok"
        raise ValueError("boom")

    async def Metadata(self, request: bytes, context) -> bytes:
        md = dict(context.invocation_metadata())
        return repr(sorted((k, v) for k, v in md.items() if k.startswith("x-"))).encode() + b"|" + \
            context.peer().encode()

    async def Blob(self, request: bytes, context):
        """Streams int(count):int(size) messages."""
        count, size = (int(x) for x in request.split(b":"))
        chunk = b"z" * size
        for i in range(count):
            yield struct.pack(">I", i) + chunk

    async def Writer(self, request: bytes, context) -> None:
        for i in range(int(request)):
            await context.write(b"w%d" % i)

    async def BidiEcho(self, request_iterator, context):
        async for req in request_iterator:
            if req == b"stop":
                return
            yield req

    async def Hold(self, request_iterator, context) -> bytes:
        """Never reads its request stream (for flow-control tests)."""
        await asyncio.sleep(30)
        return b""

    async def Unwind(self, request: bytes, context) -> bytes:
        """Waits; its finally records how it was ended (CancelledError, GeneratorExit)."""
        seen = "none"
        try:
            await asyncio.sleep(30)
        except BaseException as exc:
            seen = type(exc).__name__
            raise
        finally:
            if request.startswith(b"slow-"):  # cleanup that awaits (after the cancellation)
                await asyncio.sleep(0.01)
            self.unwound[request.decode()] = seen
        return request

    async def Unwound(self, request: bytes, context) -> bytes:
        """What the finally of Unwind call ``request`` saw ("not yet" if it has not run)."""
        return self.unwound.get(request.decode(), "not yet").encode()

    async def Gated(self, request_iterator, context) -> bytes:
        """Reads nothing until the test opens the gate named by metadata x-gate; then
        returns the total length of the request messages."""
        tag = dict(context.invocation_metadata()).get("x-gate", "")
        await self.gates.setdefault(tag, asyncio.Event()).wait()
        total = 0
        async for req in request_iterator:
            total += len(req)
        return str(total).encode()

    async def Sum(self, request_iterator, context) -> bytes:
        total = 0
        async for req in request_iterator:
            total += len(req)
        return str(total).encode()


def _handlers(svc: EdgeTestService) -> grpc.GenericRpcHandler:
    u = lambda fn: grpc.unary_unary_rpc_method_handler(fn, _ident, _ident)  # noqa: E731
    return grpc.method_handlers_generic_handler("test.Edge", {
        "Echo": u(svc.Echo), "ContextVar": u(svc.ContextVar), "Sleep": u(svc.Sleep), "Fail": u(svc.Fail), "Metadata": u(svc.Metadata),
        "Blob": grpc.unary_stream_rpc_method_handler(svc.Blob, _ident, _ident),
        "Writer": grpc.unary_stream_rpc_method_handler(svc.Writer, _ident, _ident),
        "BidiEcho": grpc.stream_stream_rpc_method_handler(svc.BidiEcho, _ident, _ident),
        "Sum": grpc.stream_unary_rpc_method_handler(svc.Sum, _ident, _ident),
        "Hold": grpc.stream_unary_rpc_method_handler(svc.Hold, _ident, _ident),
        "Gated": grpc.stream_unary_rpc_method_handler(svc.Gated, _ident, _ident),
        "Unwind": u(svc.Unwind), "Unwound": u(svc.Unwound),
    })


class ThreadedEdge:
    """An EdgeServer on its own event loop thread."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES, max_concurrent_rpcs: int = 5000,
                 inline_first_step: bool = True) -> None:
        self.inline_first_step = inline_first_step
        self.service = EdgeTestService()
        self.loop = asyncio.new_event_loop()
        self.server: EdgeServer | None = None
        self.port = 0
        self._max = max_message_bytes
        self._rpcs = max_concurrent_rpcs
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> "ThreadedEdge":
        self._thread.start()

        async def boot() -> int:
            self.server = EdgeServer(max_receive_message_bytes=self._max, max_concurrent_rpcs=self._rpcs,
                                     inline_first_step=self.inline_first_step)
            self.server.add_generic_rpc_handlers((_handlers(self.service),))
            port = await self.server.add_port("127.0.0.1", 0)
            await self.server.start()
            return port

        self.port = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(SERVER_START_TIMEOUT_S)
        return self

    def call(self, coro, timeout_s: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stats(self) -> dict:
        async def get() -> dict:
            return self.server.statistics()
        return self.call(get())

    def stop(self) -> None:
        try:
            if self.server is not None:
                self.call(self.server.stop(0.5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def edge():
    e = ThreadedEdge().start()
    try:
        yield e
    finally:
        e.stop()


def wait_until(pred, timeout_s: float = 5.0, interval_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval_s)
    return pred()


# --- a raw HTTP/2 client for hostile-input tests -------------------------------------------
class RawH2:
    def __init__(self, port: int, preface: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        if preface:
            self.send(f.PREFACE + f.settings_frame({}))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.send(f.frame(ftype, flags, sid, payload))

    def read_frame(self):
        """(type, flags, sid, payload), or None on EOF."""
        while True:
            if len(self.buf) >= 9:
                hi, lo, ftype, flags, sid = f.FRAME_HEADER.unpack_from(self.buf, 0)
                n = (hi << 8) | lo
                if len(self.buf) >= 9 + n:
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    return ftype, flags, sid & 0x7FFFFFFF, payload
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def frames_until(self, pred, limit: int = 200):
        """Read frames until pred(frame) is true; returns all read (the last matches) or
        raises if EOF or ``limit`` frames came first."""
        seen = []
        for _ in range(limit):
            fr = self.read_frame()
            if fr is None:
                raise AssertionError(f"EOF before the expected frame; got {seen}")
            seen.append(fr)
            if pred(fr):
                return seen
        raise AssertionError(f"no expected frame in {limit} frames: {seen[-5:]}")

    def goaway(self):
        """Read until GOAWAY; returns its error code."""
        fr = self.frames_until(lambda fr: fr[0] == f.GOAWAY, limit=1000)[-1]
        return f.u32(fr[3][4:8])

    def rst(self, sid: int) -> int:
        fr = self.frames_until(lambda fr: fr[0] == f.RST_STREAM and fr[2] == sid)[-1]
        return f.u32(fr[3])

    def eof(self) -> bool:
        while True:
            fr = self.read_frame()
            if fr is None:
                return True

    def close(self) -> None:
        self.sock.close()


def request_headers(path: str = "/test.Edge/Echo", extra: list | None = None) -> bytes:
    hs = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"x"),
          (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    for k, v in extra or []:
        hs.append((k, v))
    return b"".join(hpack.encode_literal(k, v) for k, v in hs)


def grpc_message(body: bytes, compressed: int = 0) -> bytes:
    return struct.pack(">BI", compressed, len(body)) + body


def decode_headers(block: bytes) -> dict:
    return {k.decode(): v.decode() for k, v in hpack.Decoder().decode(block, 1 << 20)}


# --- a geokv member on the native edge, for etcdctl ------------------------------------------
@pytest.fixture(scope="module")
def native_member():
    from geokv.testing.cluster import LocalCluster

    base = tempfile.mkdtemp(prefix="geokv-edge-")
    lc = LocalCluster(1, base, extra_args=["--grpc-edge", "native"])
    try:
        lc.wait_ready(60)
        yield lc
    finally:
        lc.stop()
        shutil.rmtree(base, ignore_errors=True)


def etcdctl(endpoint: str, *args: str, input: str | None = None, timeout_s: float = 30.0,
            check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="3")
    cmd = [ETCDCTL, f"--endpoints={endpoint}", "--command-timeout=10s", *args]
    cp = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout_s, env=env)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    return cp
