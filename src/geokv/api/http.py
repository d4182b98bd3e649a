"""A small HTTP/1.1 server (asyncio streams, no framework) for /health and /metrics.

GET /health  -> 200 {"health":"true"} when a leader is known and this member has
                applied recently; else 503 {"health":"false","reason":...}.
GET /metrics -> Prometheus text format: the default registry (runtime metrics and the
                API's per-method gRPC latency histograms) plus ``member.metrics_registry``
                if the member has its own.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from geokv.api import status as _api_metrics  # noqa: F401 - registers the API's collectors

log = logging.getLogger("geokv.api.http")

REQUEST_HEAD_BYTES_MAX = 8192  # longest request line + headers we accept
REQUEST_READ_TIMEOUT_S = 5.0  # a client must send its request head within this
HEALTH_APPLIED_LAG_MS_MAX = 5000  # applied-lag above this reports unhealthy


async def health_of(member: Any) -> tuple[bool, str]:
    """(healthy, reason) for /health."""
    check = getattr(member, "health", None)
    if callable(check):
        res = check()
        if inspect.isawaitable(res):
            res = await res
        if isinstance(res, tuple):
            return bool(res[0]), str(res[1])
        return bool(res), "" if res else "unhealthy"
    st = member.status()
    if inspect.isawaitable(st):
        st = await st
    if not st.get("leader"):
        return False, "no leader"
    lag = st.get("applied_lag_ms", st.get("staleness_ms"))
    if lag is not None and not lag <= HEALTH_APPLIED_LAG_MS_MAX:
        return False, f"applied state lags the leader by {lag} ms"
    if st.get("errors"):
        return False, "; ".join(str(e) for e in st["errors"])
    alarms = getattr(member, "alarm_status_errors", None)
    if alarms is not None and alarms():  # etcd 3.4: any active alarm makes /health false
        return False, "alarm: " + "; ".join(a.strip() for a in alarms())
    return True, ""


def metrics_text(member: Any) -> bytes:
    body = generate_latest(REGISTRY)
    extra = getattr(member, "metrics_registry", None)
    if extra is not None and extra is not REGISTRY:
        body += generate_latest(extra)
    return body


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n")
    return head.encode() + body


class HTTPServer:
    def __init__(self, member: Any) -> None:
        self.member = member
        self.servers: list[asyncio.base_events.Server] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            if len(parts) < 2:
                writer.write(_response("400 Bad Request", "text/plain", b"bad request\n"))
                return
            method, target = parts[0], parts[1].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                writer.write(_response("405 Method Not Allowed", "text/plain", b"method not allowed\n"))
                return
            if target == "/health":
                ok, reason = await health_of(self.member)
                doc = {"health": "true"} if ok else {"health": "false", "reason": reason}
                body = json.dumps(doc).encode()
                writer.write(_response("200 OK" if ok else "503 Service Unavailable", "application/json", body))
            elif target == "/metrics":
                writer.write(_response("200 OK", CONTENT_TYPE_LATEST, metrics_text(self.member)))
            else:
                writer.write(_response("404 Not Found", "text/plain", b"not found\n"))
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("http handler failed")
            try:
                writer.write(_response("500 Internal Server Error", "text/plain", b"internal error\n"))
            except Exception:  # noqa: BLE001
                pass
        finally:
            try:
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            except Exception:  # noqa: BLE001 - client already gone
                pass

    async def start(self, urls: list[str]) -> list[int]:
        ports = []
        for url in urls:
            u = urlsplit(url if "://" in url else "http://" + url)
            srv = await asyncio.start_server(self.handle, u.hostname, u.port, limit=REQUEST_HEAD_BYTES_MAX)
            self.servers.append(srv)
            ports.append(srv.sockets[0].getsockname()[1])
        return ports

    async def close(self) -> None:
        for srv in self.servers:
            srv.close()
            await srv.wait_closed()
        self.servers.clear()


async def serve_http(member: Any, config: Any) -> HTTPServer:
    """Start the /health and /metrics server on ``config.listen_metrics_urls``
    (nothing is started when the list is empty)."""
    srv = HTTPServer(member)
    urls = list(getattr(config, "listen_metrics_urls", None) or [])
    if urls:
        srv.ports = await srv.start(urls)  # type: ignore[attr-defined]
    return srv
