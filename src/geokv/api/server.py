"""The gRPC server: every etcd v3 service of one member on its client URLs."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

import grpc

from geokv.api import validate
from geokv.api.auth import AuthService
from geokv.api.cluster import ClusterService
from geokv.api.concurrency import ElectionService, LockService
from geokv.api.kv import KVService
from geokv.api.lease import LeaseService
from geokv.api.maintenance import MaintenanceService
from geokv.api.status import WATCH_STATS
from geokv.api.watch import PROGRESS_NOTIFY_INTERVAL_S, WatchService
from geokv.etcdpb import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc

log = logging.getLogger("geokv.api.server")

GRPC_CONCURRENT_RPCS_MAX = 20_000  # open RPCs (watch and keep-alive streams count) per server
GRPC_KEEPALIVE_TIME_MS = 2 * 60 * 60 * 1000  # etcd's default --grpc-keepalive-interval (2 h)
GRPC_KEEPALIVE_TIMEOUT_MS = 20 * 1000  # etcd's default --grpc-keepalive-timeout
GRPC_KEEPALIVE_MIN_TIME_MS = 5 * 1000  # etcd's default --grpc-keepalive-min-time


class ServeError(RuntimeError):
    """The server cannot listen where it was told to (a user-facing message)."""


def _host_port(url: str) -> str:
    u = urlsplit(url if "://" in url else "http://" + url)
    if u.scheme != "http":
        raise ServeError(f"client URL {url!r}: only http:// is supported (no TLS or unix sockets yet)")
    if not u.hostname or u.port is None:
        raise ServeError(f"invalid client URL {url!r}: expected scheme://host:port")
    host = u.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{u.port}"


def _client_urls(config: Any) -> list[str]:
    if isinstance(config, str):
        return [config]
    urls = getattr(config, "listen_client_urls", None)
    if not urls:
        raise ServeError("no client URL to listen on (--listen-client-urls)")
    return list(urls)


def server_options(max_request_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_request_bytes + validate.GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", GRPC_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", GRPC_KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", GRPC_KEEPALIVE_MIN_TIME_MS),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class _GenericHandlersOnly:
    """Hands the generated ``add_*Servicer_to_server`` functions a server on which only
    generic handlers get registered.

    grpc.aio keeps one pending "request call" task per *registered* method and waits on
    all of them with asyncio.wait for every incoming RPC, so with our ~46 methods each
    RPC paid ~400 extra Python calls (measured with cProfile: 515 Python calls per
    serializable Range with registered methods, 103 with generic handlers only)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        pass  # the generic handler added alongside serves these methods


def add_services(server: grpc.aio.Server, member: Any, limits: validate.Limits,
                 progress_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S) -> None:
    server = _GenericHandlersOnly(server)  # type: ignore[assignment]
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(member, limits), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchService(member, limits.max_request_bytes, progress_interval_s),
                                             server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(member), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(member), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(member), server)
    v3lock_pb2_grpc.add_LockServicer_to_server(LockService(member), server)
    v3election_pb2_grpc.add_ElectionServicer_to_server(ElectionService(member), server)
    rpc_pb2_grpc.add_AuthServicer_to_server(AuthService(), server)


GRPC_EDGES = ("native", "grpcio")
GRPC_EDGE_DEFAULT = "native"  # grpcio stays available: --grpc-edge grpcio
GRPC_EDGE_ENV = "GEOKV_GRPC_EDGE"  # overrides the default (not an explicit --grpc-edge)


async def serve_grpc(member: Any, config: Any) -> Any:
    """Build, bind and start the gRPC server for ``member``.

    ``config`` is a runtime ServerConfig (listen_client_urls, max_request_bytes, and
    optionally max_txn_ops, watch_progress_notify_interval_s and grpc_edge) or a
    "host:port" string. ``grpc_edge`` picks the server: "native" (geokv.edge, an HTTP/2
    + gRPC implementation on an asyncio Protocol) or "grpcio" (grpc.aio). Both expose
    ``stop(grace)`` and the bound ports in ``server.geokv_ports`` (useful with port 0).
    """
    max_request_bytes = int(getattr(config, "max_request_bytes", validate.MAX_REQUEST_BYTES_DEFAULT))
    limits = validate.Limits(max_request_bytes=max_request_bytes,
                             max_txn_ops=int(getattr(config, "max_txn_ops", validate.MAX_TXN_OPS_DEFAULT)))
    progress_s = float(getattr(config, "watch_progress_notify_interval_s", PROGRESS_NOTIFY_INTERVAL_S))
    edge = getattr(config, "grpc_edge", None) or os.environ.get(GRPC_EDGE_ENV) or GRPC_EDGE_DEFAULT
    if edge not in GRPC_EDGES:
        raise ServeError(f"unknown --grpc-edge {edge!r} (want one of {', '.join(GRPC_EDGES)})")
    if edge == "native":
        return await _serve_native(member, config, limits, progress_s)
    server = grpc.aio.server(options=server_options(max_request_bytes),
                             maximum_concurrent_rpcs=GRPC_CONCURRENT_RPCS_MAX)
    add_services(server, member, limits, progress_s)
    WATCH_STATS.track(getattr(member, "watch_hub", None))
    ports = []
    for url in _client_urls(config):
        addr = _host_port(url)
        try:
            port = server.add_insecure_port(addr)
        except RuntimeError as exc:
            raise ServeError(f"cannot listen for clients on {addr}: {exc}") from None
        if not port:
            raise ServeError(f"cannot listen for clients on {addr} (address in use?)")
        ports.append(port)
    await server.start()
    server.geokv_ports = ports  # type: ignore[attr-defined]
    log.info("serving etcd v3 gRPC on %s", ", ".join(_client_urls(config)))
    return server


async def _serve_native(member: Any, config: Any, limits: validate.Limits, progress_s: float) -> Any:
    from geokv.edge import EdgeServer

    server = EdgeServer(max_receive_message_bytes=limits.max_request_bytes + validate.GRPC_OVERHEAD_BYTES,
                        max_concurrent_rpcs=GRPC_CONCURRENT_RPCS_MAX)
    add_services(server, member, limits, progress_s)  # type: ignore[arg-type]
    WATCH_STATS.track(getattr(member, "watch_hub", None))
    try:
        for url in _client_urls(config):
            addr = _host_port(url)
            host, _, port = addr.rpartition(":")
            try:
                await server.add_port(host, int(port))
            except OSError as exc:
                raise ServeError(f"cannot listen for clients on {addr}: {exc.strerror or exc}") from None
    except BaseException:
        await server.stop(0)
        raise
    await server.start()
    log.info("serving etcd v3 gRPC (native edge) on %s", ", ".join(_client_urls(config)))
    return server
