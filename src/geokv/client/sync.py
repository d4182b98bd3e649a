"""Client: the blocking twin of AsyncClient, same methods, same errors.

It runs an AsyncClient on a private event loop in a daemon thread and waits for each
call. Iterators (watch, observe) and context managers (keep_alive, locked) are wrapped so
they block too.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from contextlib import contextmanager
from typing import Any, Awaitable, Iterator, Sequence

from geokv.client.aio import AsyncClient
from geokv.client.ops import Txn
from geokv.client.types import Event, KeyValue

#: Extra time the calling thread waits beyond a call's own deadline before giving up on
#: the loop thread (the call itself is bounded by its timeout; this catches a wedged loop).
SYNC_GRACE_S = 5.0
#: How long close() waits for the loop thread to finish.
CLOSE_WAIT_S = 5.0


class Client:
    """``with Client(["127.0.0.1:2379"]) as c: c.put("k", "v"); c.get("k").value``."""

    def __init__(self, endpoints: Sequence[str] | str, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="geokv-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(endpoints, **kwargs)

        try:
            self._aio: AsyncClient = self._run(make(), wait_s=SYNC_GRACE_S)
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    # ---- plumbing ------------------------------------------------------------------------
    def _run(self, coro: Awaitable[Any], wait_s: float | None = None) -> Any:
        """Run ``coro`` on the loop thread and wait for it (bounded unless wait_s is None)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout=wait_s)
        except KeyboardInterrupt:
            fut.cancel()
            raise

    def _wait_s(self, kwargs: dict[str, Any]) -> float:
        t = kwargs.get("timeout_s")
        return (t if t is not None else self._aio.timeout_s) + SYNC_GRACE_S

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_WAIT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._run(self._aio.close(), wait_s=CLOSE_WAIT_S)
        finally:
            self._stop_loop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def async_client(self) -> AsyncClient:
        return self._aio

    @property
    def endpoints(self) -> list[str]:
        return self._aio.endpoints

    @property
    def current_endpoint(self) -> str:
        return self._aio.current_endpoint

    @property
    def timeout_s(self) -> float:
        return self._aio.timeout_s

    def statistics(self) -> Any:
        return self._aio.statistics()

    # ---- methods with a shape of their own -------------------------------------------------
    def txn(self, *, timeout_s: float | None = None) -> Txn:
        inner = self._aio.txn(timeout_s=timeout_s)
        wait_s = self._wait_s({"timeout_s": timeout_s})
        return Txn(lambda req: self._run(inner._commit(req), wait_s=wait_s))

    def lock(self, name: bytes | str, *, lease: int, timeout_s: float | None = None) -> bytes:
        # Waiting for a lock may take long; it is bounded by timeout_s on the loop side.
        return self._run(self._aio.lock(name, lease=lease, timeout_s=timeout_s), wait_s=self._wait_s({"timeout_s": timeout_s}))

    def watch(self, key: bytes | str, **kwargs: Any) -> SyncWatch:
        return SyncWatch(self, self._aio.watch(key, **kwargs))

    def observe(self, name: bytes | str) -> Iterator[KeyValue]:
        agen = self._aio.observe(name)
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose(), wait_s=CLOSE_WAIT_S)

    @contextmanager
    def keep_alive(self, lease_id: int, *, interval_s: float | None = None) -> Iterator[Any]:
        ka = self._aio.keep_alive(lease_id, interval_s=interval_s)
        self._run(ka.start(), wait_s=self._wait_s({}))
        try:
            yield ka
        finally:
            self._run(ka.stop(), wait_s=CLOSE_WAIT_S)

    @contextmanager
    def locked(self, name: bytes | str, *, ttl_s: int = 10, timeout_s: float | None = None) -> Iterator[bytes]:
        cm = self._aio.locked(name, ttl_s=ttl_s, timeout_s=timeout_s)
        key = self._run(cm.__aenter__(), wait_s=self._wait_s({"timeout_s": timeout_s}) + self._aio.timeout_s)
        try:
            yield key
        except BaseException as e:
            self._run(cm.__aexit__(type(e), e, e.__traceback__), wait_s=self._wait_s({}))
            raise
        else:
            self._run(cm.__aexit__(None, None, None), wait_s=self._wait_s({}))


class SyncWatch:
    """A blocking iterator of events; ``cancel()`` (or leaving ``with``) ends it."""

    def __init__(self, client: Client, watch: Any) -> None:
        self._client = client
        self._watch = watch
        self._task: asyncio.Future[Event] | None = None

    def __iter__(self) -> SyncWatch:
        return self

    def __next__(self) -> Event:
        try:
            return self._client._run(self._pending())
        except StopAsyncIteration:
            raise StopIteration from None

    def next(self, timeout_s: float) -> Event | None:
        """The next event, or None if none arrives within ``timeout_s``."""

        async def bounded() -> Event | None:
            try:
                return await asyncio.wait_for(asyncio.shield(self._pending()), timeout=timeout_s)
            except asyncio.TimeoutError:
                return None

        try:
            return self._client._run(bounded())
        except StopAsyncIteration:
            return None

    async def _pending(self) -> Event:
        # One outstanding read at a time, kept across timed-out next() calls.
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch.__anext__())
        task = self._task
        try:
            return await task
        finally:
            if task.done():
                self._task = None

    def wait_created(self) -> None:
        self._client._run(self._watch.wait_created(), wait_s=self._client._wait_s({}) * 3)

    @property
    def next_revision(self) -> int:
        return self._watch.next_revision

    @property
    def reconnects(self) -> int:
        return self._watch.reconnects

    def cancel(self) -> None:
        self._client._run(self._watch.cancel(), wait_s=CLOSE_WAIT_S)

    def __enter__(self) -> SyncWatch:
        self.wait_created()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _make_sync(name: str) -> Any:
    target = getattr(AsyncClient, name)

    @functools.wraps(target)
    def method(self: Client, *args: Any, **kwargs: Any) -> Any:
        wait_s = None if name in _SELF_BOUNDED else self._wait_s(kwargs) * 2
        return self._run(getattr(self._aio, name)(*args, **kwargs), wait_s=wait_s)

    return method


#: Methods that bound their own duration (a snapshot can take longer than one request).
_SELF_BOUNDED = frozenset({"snapshot_save", "defragment"})
_PLAIN_METHODS = (
    "get", "put", "delete", "compact", "lease_grant", "lease_revoke", "lease_time_to_live", "leases",
    "lease_keep_alive_once", "unlock", "campaign", "proclaim", "leader", "resign", "member_list",
    "member_add", "member_remove", "member_update", "member_promote", "status", "statuses",
    "leader_endpoint", "move_leader", "hash_kv", "snapshot_save", "alarms", "alarm_disarm", "defragment",
)
for _name in _PLAIN_METHODS:
    setattr(Client, _name, _make_sync(_name))
del _name
