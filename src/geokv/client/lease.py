"""Lease keep-alive: one renewal, or a background task that renews until stopped.

A renewal changes nothing but the lease's deadline, so it is safe to repeat on another
endpoint. The background task renews every ``ttl/3`` seconds; when the server says the
lease is gone (TTL <= 0) it stops and marks itself ``expired``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from geokv import errors as _errors
from geokv.client import errors as cerr
from geokv.etcdpb import rpc_pb2

if TYPE_CHECKING:
    from geokv.client.aio import AsyncClient

#: Renewal period as a share of the lease's TTL (etcd's clients use a third).
KEEPALIVE_TTL_FRACTION = 1 / 3
#: Shortest and longest renewal period.
KEEPALIVE_INTERVAL_S_MIN = 0.2
KEEPALIVE_INTERVAL_S_MAX = 60.0
#: Back-off between failed renewals.
KEEPALIVE_RETRY_S = 0.2


async def keep_alive_once(client: AsyncClient, lease_id: int, timeout_s: float) -> int:
    """Renew ``lease_id`` once via a short LeaseKeepAlive stream; returns the new TTL."""
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt was made"
    for _ in range(len(client._endpoints) * 2):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ep = client._endpoints[client._current]
        if not await client._connect(ep, remaining):
            last_error = f"{ep.address}: cannot connect"
            client._rotate(ep)
            continue
        call = client._stub(ep, "Lease").LeaseKeepAlive(timeout=remaining)
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            resp = await call.read()
            await call.done_writing()
        except grpc.aio.AioRpcError as e:
            if cerr.is_final_for_reads(e):
                raise cerr.from_rpc_error(e) from None
            last_error = f"{ep.address}: {e.details() or e.code().name}"
            client._rotate(ep)
            await asyncio.sleep(min(KEEPALIVE_RETRY_S, max(0.0, deadline - time.monotonic())))
            continue
        finally:
            call.cancel()
        if resp is grpc.aio.EOF:
            last_error = f"{ep.address}: stream closed"
            client._rotate(ep)
            continue
        if resp.TTL <= 0:
            raise _errors.LeaseNotFound()
        return resp.TTL
    if time.monotonic() >= deadline:
        raise cerr.DeadlineExceeded(f"lease keep-alive timed out (last error: {last_error})")
    raise cerr.EndpointsUnavailable(f"lease keep-alive failed on every endpoint (last error: {last_error})")


class KeepAlive:
    """Renew a lease in the background: ``async with client.keep_alive(lease_id) as ka:``."""

    def __init__(self, client: AsyncClient, lease_id: int, *, interval_s: float | None = None) -> None:
        self._client = client
        self.lease_id = lease_id
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.ttl: int | None = None
        self.renewals = 0
        self.expired = False
        self.error: BaseException | None = None
        self._renewed = asyncio.Event()

    async def start(self) -> KeepAlive:
        """Renew once now (raising if the lease is unknown), then keep renewing in a task."""
        self.ttl = await keep_alive_once(self._client, self.lease_id, self._client.timeout_s)
        self.renewals += 1
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"keepalive-{self.lease_id:x}")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> KeepAlive:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def check(self) -> None:
        """Raise LeaseExpired if the lease is known to be gone (call before relying on it)."""
        if self.expired:
            raise self.error if self.error is not None else cerr.LeaseExpired()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_renewed(self, timeout_s: float) -> bool:
        """True once another renewal succeeded within ``timeout_s``."""
        self._renewed.clear()
        try:
            await asyncio.wait_for(self._renewed.wait(), timeout=timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def _period_s(self) -> float:
        if self._interval_s is not None:
            return self._interval_s
        ttl = self.ttl or 1
        return min(max(ttl * KEEPALIVE_TTL_FRACTION, KEEPALIVE_INTERVAL_S_MIN), KEEPALIVE_INTERVAL_S_MAX)

    async def _run(self) -> None:
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self._period_s())
            try:
                self.ttl = await keep_alive_once(self._client, self.lease_id, self._client.timeout_s)
            except _errors.LeaseNotFound:
                self.expired, self.error = True, cerr.LeaseExpired(f"lease {self.lease_id:x} expired or was revoked")
                return
            except _errors.GeoKVError as e:
                # Keep trying until the lease must have run out on the server.
                self.error = e
                if time.monotonic() - last_ok > (self.ttl or 1):
                    self.expired = True
                    self.error = cerr.LeaseExpired(f"lease {self.lease_id:x} could not be renewed within its TTL "
                                                   f"({e})")
                    return
                continue
            last_ok = time.monotonic()
            self.renewals += 1
            self._renewed.set()

