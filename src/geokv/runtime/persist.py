"""The WAL sync thread: one dedicated thread that runs the driver's fsyncs.

The driver encodes and buffers a Ready's entries and hard state on the event loop
(``DiskRaftStorage.save``: msgpack + CRC, no system call), then asks this thread to
make them durable (``DiskRaftStorage.sync``: one write of the buffer and one fsync,
both with the GIL released). The thread runs no other Python work, so it hardly ever
competes with the loop for the GIL; the answer comes back through one
``call_soon_threadsafe`` per request. Compared with ``loop.run_in_executor`` this saves
the executor's per-call work item, its concurrent future and the chained asyncio future.

Invariant: requests are served in the order they were made, one at a time; a request
that fails fails only its own future (the WAL refuses all later work by itself after an
I/O error, see ``geokv.storage.wal``). At most ``SYNC_QUEUE_MAX`` requests wait; the
driver has at most one outstanding, so the bound only guards against misuse.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any, Callable

SYNC_QUEUE_MAX = 64          # sync requests waiting for the thread (the driver keeps one)
STOP_JOIN_TIMEOUT_S = 10.0   # longest wait for an fsync in progress when stopping


class SyncQueueFull(Exception):
    """More than SYNC_QUEUE_MAX sync requests are waiting: a driver bug."""


class SyncThread:
    """Runs ``sync_fn()`` calls on one thread, answering asyncio futures."""

    def __init__(self, sync_fn: Callable[[], Any], *, name: str = "wal-sync",
                 on_synced: Callable[[float], None] | None = None) -> None:
        self._sync_fn = sync_fn
        self._on_synced = on_synced  # called in the thread with the fsync seconds
        self._name = name
        self._cv = threading.Condition(threading.Lock())
        self._queue: collections.deque[asyncio.Future] = collections.deque()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.syncs = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def request(self) -> asyncio.Future:
        """A future that resolves once everything saved before this call is durable."""
        assert self._loop is not None, "SyncThread not started"
        fut = self._loop.create_future()
        with self._cv:
            if self._stopping:
                raise RuntimeError("the WAL sync thread is stopped")
            if len(self._queue) >= SYNC_QUEUE_MAX:
                raise SyncQueueFull(f"{len(self._queue)} sync requests waiting")
            self._queue.append(fut)
            self._cv.notify()
        return fut

    def stop(self) -> None:
        """Finish the requests already made, then end the thread (bounded wait)."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_JOIN_TIMEOUT_S)

    # --- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._queue and not self._stopping:
                    cv.wait()
                if not self._queue:
                    return
                # Every waiting request is served by the same sync: each asked for
                # "everything saved before me", and one fsync covers all of it.
                futs = list(self._queue)
                self._queue.clear()
            err: BaseException | None = None
            t0 = time.perf_counter()
            try:
                self._sync_fn()
            except BaseException as exc:  # handed to the driver, which stops the member
                err = exc
            took = time.perf_counter() - t0
            self.syncs += 1
            if err is None and self._on_synced is not None:
                self._on_synced(took)
            loop = self._loop
            try:
                loop.call_soon_threadsafe(_resolve, futs, err)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


def _resolve(futs: list[asyncio.Future], err: BaseException | None) -> None:
    for fut in futs:
        if fut.done():
            continue
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)
