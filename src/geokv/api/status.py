"""Turning exceptions into gRPC statuses, and per-method latency metrics.

``geokv.errors`` classes become the etcd code and text; anything else is an internal
bug: it is logged with its traceback and the client gets INTERNAL, the server lives on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from prometheus_client import Histogram

from geokv.errors import GeoKVError

log = logging.getLogger("geokv.api")

GRPC_LATENCY = Histogram(
    "geokv_grpc_request_duration_seconds",
    "Latency of etcd gRPC requests handled by this member, by method.",
    ["method"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)

_STATUS_CODES = {c.name: c for c in grpc.StatusCode}


def status_code_of(err: GeoKVError) -> grpc.StatusCode:
    return _STATUS_CODES.get(err.code, grpc.StatusCode.UNKNOWN)


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Abort the RPC with the status matching ``exc`` (raises grpc's AbortError)."""
    if isinstance(exc, GeoKVError):
        await context.abort(status_code_of(exc), exc.message)
    log.error("internal error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"geokv: internal error: {type(exc).__name__}")


def unary(method: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Decorate a unary handler: error mapping plus latency histogram."""
    observe = GRPC_LATENCY.labels(method=method).observe
    perf = time.perf_counter

    def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = perf()
            try:
                return await fn(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never kills the server
                await abort_with(context, exc, method)
            finally:
                observe(perf() - t0)

        return handler

    return deco


def stream(method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a response-streaming handler (async generator): error mapping."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001
                await abort_with(context, exc, method)

        return handler

    return deco
