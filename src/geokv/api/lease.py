"""etcd's Lease service over a runtime Member."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from geokv import errors
from geokv.api import convert, validate
from geokv.api.maintenance import maybe_await
from geokv.api.status import abort_with, unary
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.runtime.alarms import LEASE_OVERHEAD_BYTES

log = logging.getLogger("geokv.api.lease")



def _field(obj: Any, name: str, default: Any = 0) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, member: Any) -> None:
        self.member = member

    def _header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return convert.header_pb(self.member.header(), revision)

    @unary("LeaseGrant")
    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest,
                         context: grpc.aio.ServicerContext) -> rpc_pb2.LeaseGrantResponse:
        validate.check_lease_ttl(request.TTL)
        if request.ID < 0:
            raise errors.InvalidArgument("etcdserver: negative lease ID")
        gate = self.member.space_gate(LEASE_OVERHEAD_BYTES)  # etcd's quota check
        if gate is not None:
            await gate
        try:
            res = await self.member.lease_grant(request.TTL, lease_id=request.ID)
        except errors.NoSpace:
            await self.member.raise_nospace_alarm(refuse=True)  # the store's own quota refused it
        if isinstance(res, BaseException):
            raise res
        return rpc_pb2.LeaseGrantResponse(header=self._header(_field(res, "revision", None)),
                                          ID=_field(res, "id"), TTL=_field(res, "ttl"))

    @unary("LeaseRevoke")
    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest,
                          context: grpc.aio.ServicerContext) -> rpc_pb2.LeaseRevokeResponse:
        res = await self.member.lease_revoke(request.ID)
        if isinstance(res, BaseException):
            raise res
        return rpc_pb2.LeaseRevokeResponse(header=self._header(_field(res, "revision", None)))

    async def LeaseKeepAlive(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        """One renewal at a time per stream: gRPC's flow control bounds what a client
        can queue, and each answer goes out before the next request is read."""
        try:
            async for req in request_iterator:
                try:
                    ttl = await self.member.lease_keepalive(req.ID)
                except errors.LeaseNotFound:
                    ttl = 0  # etcd answers an unknown lease with TTL 0, not an error
                yield rpc_pb2.LeaseKeepAliveResponse(header=self._header(), ID=req.ID, TTL=int(ttl))
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001
            await abort_with(context, exc, "LeaseKeepAlive")

    @unary("LeaseTimeToLive")
    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest,
                              context: grpc.aio.ServicerContext) -> rpc_pb2.LeaseTimeToLiveResponse:
        try:
            info = await self.member.lease_ttl(request.ID, request.keys)
        except errors.LeaseNotFound:
            # etcd reports an expired or unknown lease as TTL -1, not as an error.
            return rpc_pb2.LeaseTimeToLiveResponse(header=self._header(), ID=request.ID, TTL=-1)
        if isinstance(info, tuple):
            ttl, granted, keys = (list(info) + [0, 0, []])[:3]
        else:
            ttl, granted, keys = _field(info, "ttl"), _field(info, "granted_ttl"), _field(info, "keys", [])
        return rpc_pb2.LeaseTimeToLiveResponse(header=self._header(), ID=request.ID, TTL=int(ttl),
                                               grantedTTL=int(granted),
                                               keys=list(keys or []) if request.keys else [])

    @unary("LeaseLeases")
    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest,
                          context: grpc.aio.ServicerContext) -> rpc_pb2.LeaseLeasesResponse:
        leases = await maybe_await(self.member.lease_list())
        ids = [x[0] if isinstance(x, (tuple, list)) else _field(x, "id", x) for x in leases]
        return rpc_pb2.LeaseLeasesResponse(header=self._header(),
                                           leases=[rpc_pb2.LeaseStatus(ID=int(i)) for i in ids])
