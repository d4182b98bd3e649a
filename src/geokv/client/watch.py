"""Watch: an async iterator of events that survives endpoint failures.

The watch remembers the revision after the last one it delivered. When its stream breaks
(the server died, the connection dropped) it opens a new stream on the next endpoint
with ``start_revision`` = that revision, so no event is lost and none is repeated. If the
server has compacted past that revision it cannot resume and raises
:class:`geokv.errors.Compacted` carrying the compact revision.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from geokv import errors as _errors
from geokv.client import errors as cerr
from geokv.client.ops import key_range
from geokv.client.types import Event
from geokv.etcdpb import rpc_pb2

if TYPE_CHECKING:
    from geokv.client.aio import AsyncClient

#: etcd's metadata asking the server to cancel the stream if its member has no leader.
REQUIRE_LEADER_METADATA = (("hasleader", "true"),)
#: Consecutive failed (re)connections after which the watch gives up.
WATCH_MAX_RECONNECTS = 10
#: Back-off between reconnections: first wait and ceiling.
WATCH_BACKOFF_S_INITIAL = 0.1
WATCH_BACKOFF_S_MAX = 2.0


class Watch:
    """Iterate with ``async for event in watch``; stop with ``await watch.cancel()``."""

    def __init__(self, client: AsyncClient, key: bytes | str, *, prefix: bool = False,
                 range_end: bytes | str | None = None, from_key: bool = False, start_revision: int = 0,
                 prev_kv: bool = False, no_put: bool = False, no_delete: bool = False,
                 progress_notify: bool = False) -> None:
        self._client = client
        self._key, self._range_end = key_range(key, prefix=prefix, range_end=range_end, from_key=from_key)
        self._prev_kv = prev_kv
        self._filters = [f for f, on in ((0, no_put), (1, no_delete)) if on]
        self._progress_notify = progress_notify
        #: The revision the next (re)created stream starts from; 0 = "from now".
        self.next_revision = start_revision
        self._call: Any = None
        self._watch_id: int | None = None
        # Holds the events of one server response at most: the stream is read only when
        # it is empty, so the server's message size bounds it.
        self._buffer: deque[Event] = deque()
        self._canceled = False
        self.reconnects = 0  # how many times the stream was re-created after a failure
        self.endpoint: str | None = None

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._canceled:
                raise StopAsyncIteration
            await self._fill()
        return self._buffer.popleft()

    async def wait_created(self) -> None:
        """Return once the server has confirmed the watch (events after this are seen)."""
        if self._call is None and not self._canceled:
            await self._open()

    async def cancel(self) -> None:
        """End the watch: tell the server, close the stream; iteration then stops."""
        if self._canceled:
            return
        self._canceled = True
        call, self._call = self._call, None
        if call is not None:
            try:
                if self._watch_id is not None:
                    req = rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=self._watch_id))
                    await asyncio.wait_for(call.write(req), timeout=self._client.timeout_s)
                    await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.TimeoutError, asyncio.InvalidStateError):
                pass
            finally:
                call.cancel()

    async def __aenter__(self) -> Watch:
        await self.wait_created()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    # ---- internals -----------------------------------------------------------------
    async def _open(self) -> None:
        """Create the stream on some endpoint; retries with back-off, bounded."""
        backoff_s = WATCH_BACKOFF_S_INITIAL
        last_error = ""
        for _ in range(WATCH_MAX_RECONNECTS):
            if self._canceled:
                return
            ep = self._client._endpoints[self._client._current]
            if not await self._client._connect(ep, self._client.timeout_s):
                last_error = f"{ep.address}: cannot connect"
                self._client._rotate(ep)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, WATCH_BACKOFF_S_MAX)
                continue
            # "hasleader": the server ends the stream with "no leader" when its member loses
            # the leader (a partition), and the watch then resumes on another endpoint.
            call = self._client._stub(ep, "Watch").Watch(metadata=REQUIRE_LEADER_METADATA)
            create = rpc_pb2.WatchCreateRequest(
                key=self._key, range_end=self._range_end, start_revision=self.next_revision,
                prev_kv=self._prev_kv, filters=self._filters, progress_notify=self._progress_notify)
            try:
                await call.write(rpc_pb2.WatchRequest(create_request=create))
                resp = await asyncio.wait_for(call.read(), timeout=self._client.timeout_s)
            except (grpc.aio.AioRpcError, asyncio.TimeoutError) as e:
                call.cancel()
                if isinstance(e, grpc.aio.AioRpcError) and cerr.is_final_for_reads(e):
                    raise cerr.from_rpc_error(e) from None
                last_error = f"{ep.address}: {e.details() if isinstance(e, grpc.aio.AioRpcError) else 'timeout'}"
                self._client._rotate(ep)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, WATCH_BACKOFF_S_MAX)
                continue
            if resp is grpc.aio.EOF:
                call.cancel()
                last_error = f"{ep.address}: stream closed"
                self._client._rotate(ep)
                continue
            self._check_canceled(resp)
            if not resp.created:
                call.cancel()
                raise cerr.ClientError(f"watch was not created by {ep.address}")
            self._call = call
            self._watch_id = resp.watch_id
            self.endpoint = ep.address
            if self.next_revision == 0:
                self.next_revision = resp.header.revision + 1
            self._take(resp)
            return
        raise cerr.EndpointsUnavailable(f"watch could not be (re)created after {WATCH_MAX_RECONNECTS} tries "
                                        f"(last error: {last_error})")

    def _check_canceled(self, resp: Any) -> None:
        if not resp.canceled:
            return
        self._canceled = True
        if resp.compact_revision:
            raise _errors.Compacted(f"{_errors.Compacted.message} (compact revision {resp.compact_revision}; "
                                    f"watch wanted revision {self.next_revision})")
        raise cerr.WatchCanceled(f"watch canceled by the server: {resp.cancel_reason or 'no reason given'}")

    def _take(self, resp: Any) -> None:
        for ev in resp.events:
            event = Event.from_pb(ev)
            self._buffer.append(event)
            self.next_revision = max(self.next_revision, event.kv.mod_revision + 1)
        if not resp.events and resp.header.revision and not resp.created:
            # a progress notification: everything up to header.revision has been seen
            self.next_revision = max(self.next_revision, resp.header.revision + 1)

    async def _fill(self) -> None:
        if self._call is None:
            await self._open()
            return
        try:
            resp = await self._call.read()
        except grpc.aio.AioRpcError as e:
            if self._canceled:
                return
            if cerr.is_final_for_reads(e):
                raise cerr.from_rpc_error(e) from None
            resp = grpc.aio.EOF
        except asyncio.CancelledError:
            raise
        if resp is grpc.aio.EOF:
            if self._canceled:
                return
            # The stream broke: resume on another endpoint from the next unseen revision.
            old = self._call
            self._call = None
            old.cancel()
            if self.endpoint is not None:
                for ep in self._client._endpoints:
                    if ep.address == self.endpoint:
                        self._client._rotate(ep)
            self.reconnects += 1
            await asyncio.sleep(WATCH_BACKOFF_S_INITIAL)
            await self._open()
            return
        self._check_canceled(resp)
        self._take(resp)

