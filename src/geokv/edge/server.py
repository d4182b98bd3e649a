"""The native gRPC server: listeners, the method table and graceful stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Iterable

from geokv.edge.connection import PREFACE_TIMEOUT_S, H2Connection
from geokv.edge.rpc import MethodTable

log = logging.getLogger("geokv.edge")

LISTEN_BACKLOG = 1024
STOP_GRACE_S_DEFAULT = 1.0
CONCURRENT_RPCS_MAX_DEFAULT = 20_000
RECEIVE_MESSAGE_BYTES_MAX_DEFAULT = 4 * 1024 * 1024


class EdgeServer:
    """Serves gRPC methods registered the grpc way (``add_generic_rpc_handlers``; the
    generated ``add_*Servicer_to_server`` functions accept this server) over the native
    HTTP/2 edge. Mirrors the parts of grpc.aio.Server that geokv uses."""

    def __init__(self, *, max_receive_message_bytes: int = RECEIVE_MESSAGE_BYTES_MAX_DEFAULT,
                 max_concurrent_rpcs: int = CONCURRENT_RPCS_MAX_DEFAULT, inline_first_step: bool = True) -> None:
        self.table = MethodTable()
        # Run a unary handler's first step inline and make a Task only if it suspends
        # (False: a Task per call, as grpc.aio does; kept to measure the difference).
        self.inline_first_step = inline_first_step
        self.preface_timeout_s = PREFACE_TIMEOUT_S
        self.max_receive_message_bytes = max_receive_message_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.open_rpcs = 0
        self.connections: set[H2Connection] = set()
        self._listeners: list[asyncio.AbstractServer] = []
        self._pending: list[tuple[str, int]] = []
        self._stopped = asyncio.Event()
        self._idle: asyncio.Event | None = None
        self.geokv_ports: list[int] = []

    # grpc.Server-like registration (what the generated code calls)
    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.table.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        pass

    async def add_port(self, host: str, port: int) -> int:
        """Listen on host:port (port 0 picks one); returns the bound port."""
        loop = asyncio.get_running_loop()
        host = host.strip("[]")
        srv = await loop.create_server(lambda: H2Connection(self), host, port, backlog=LISTEN_BACKLOG,
                                       reuse_address=True)
        for sock in srv.sockets:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._listeners.append(srv)
        bound = srv.sockets[0].getsockname()[1]
        self.geokv_ports.append(bound)
        return bound

    async def start(self) -> None:
        for srv in self._listeners:
            await srv.start_serving()

    def statistics(self) -> dict[str, int]:
        return {"connections": len(self.connections), "open_rpcs": self.open_rpcs,
                "streams": sum(len(c.streams) for c in self.connections)}

    def connection_closed(self, conn: H2Connection) -> None:
        if self._idle is not None and not self.connections:
            self._idle.set()

    async def stop(self, grace: float | None = STOP_GRACE_S_DEFAULT) -> None:
        """Stop listening, send GOAWAY so clients open no new streams, let in-flight
        calls finish for at most ``grace`` seconds, then cancel the rest and close."""
        for srv in self._listeners:
            srv.close()
        self._idle = asyncio.Event()
        for conn in list(self.connections):
            conn.send_goaway()
        if not self.connections:
            self._idle.set()
        if grace:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort()
        for srv in self._listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        await asyncio.sleep(0)  # let cancelled handler tasks run their cleanup
        self._stopped.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
