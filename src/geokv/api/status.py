"""Turning exceptions into gRPC statuses, and per-method latency metrics.

``geokv.errors`` classes become the etcd code and text; anything else is an internal
bug: it is logged with its traceback and the client gets INTERNAL, the server lives on.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import time
import weakref
from typing import Any, Awaitable, Callable, Iterator

import grpc
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from geokv.errors import GeoKVError

log = logging.getLogger("geokv.api")

LATENCY_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class LatencyHistogram:
    """One method's latency histogram. ``observe`` is a bisect and two additions: the
    handlers run on one event loop thread, so no lock is needed (prometheus_client's
    Histogram takes a lock per bucket and costs ~6x more per request)."""

    __slots__ = ("counts", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


class GRPCLatency:
    """Per-method gRPC latency histograms, exported as ``geokv_grpc_request_duration_seconds``."""

    name = "geokv_grpc_request_duration_seconds"
    doc = "Latency of etcd gRPC requests handled by this member, by method."

    def __init__(self) -> None:
        self._by_method: dict[str, LatencyHistogram] = {}

    def child(self, method: str) -> LatencyHistogram:
        h = self._by_method.get(method)
        if h is None:
            h = self._by_method[method] = LatencyHistogram()
        return h

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name.removesuffix("_seconds"), self.doc, labels=["method"], unit="seconds")
        for method, h in sorted(self._by_method.items()):
            cum, buckets = 0, []
            for le, c in zip(LATENCY_BUCKETS_S, h.counts):
                cum += c
                buckets.append((repr(le), cum))
            buckets.append(("+Inf", cum + h.counts[-1]))
            fam.add_metric([method], buckets, h.sum_s)
        yield fam


GRPC_LATENCY = GRPCLatency()
REGISTRY.register(GRPC_LATENCY)


class WatchHubStats:
    """Exports the watch hubs' statistics() (summed over the hubs served in this process)."""

    def __init__(self) -> None:
        self._hubs: weakref.WeakSet = weakref.WeakSet()

    def track(self, hub: Any) -> None:
        if hub is not None:
            self._hubs.add(hub)

    def collect(self) -> Iterator[Any]:
        totals: dict[str, int] = {}
        for hub in list(self._hubs):
            for k, v in hub.statistics().items():
                totals[k] = totals.get(k, 0) + v
        yield GaugeMetricFamily("geokv_watch_watchers", "Watchers registered.", value=totals.get("watchers", 0))
        yield GaugeMetricFamily("geokv_watch_unsynced_watchers", "Watchers catching up from the store.",
                                value=totals.get("unsynced_watchers", 0))
        yield CounterMetricFamily("geokv_watch_slow_watchers", "Watchers moved to catch-up because their queue was full.",
                                  value=totals.get("slow_watchers_total", 0))
        yield CounterMetricFamily("geokv_watch_resyncs", "Store restores that sent every watcher to catch-up.",
                                  value=totals.get("resyncs_total", 0))
        yield CounterMetricFamily("geokv_watch_published_batches", "Applied batches published to watchers.",
                                  value=totals.get("published_batches_total", 0))


WATCH_STATS = WatchHubStats()
REGISTRY.register(WATCH_STATS)

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
    observe = GRPC_LATENCY.child(method).observe
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
