"""etcd's Cluster service (membership) over a runtime Member."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import urlsplit

import grpc

from geokv import errors
from geokv.api import convert
from geokv.api.maintenance import maybe_await
from geokv.api.status import unary
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

PEER_URLS_MAX = 16  # peer URLs one member may advertise


def check_peer_urls(urls: Any) -> list[str]:
    """etcd's rule: at least one URL, each scheme://host:port with http(s)."""
    out = list(urls)
    if not out or len(out) > PEER_URLS_MAX:
        raise errors.MemberBadURLs()
    for u in out:
        try:
            parts = urlsplit(u)
            port = parts.port
        except ValueError:
            raise errors.MemberBadURLs() from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise errors.MemberBadURLs()
    return out


def _params(fn: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, member: Any) -> None:
        self.member = member

    def _header(self) -> rpc_pb2.ResponseHeader:
        return convert.header_pb(self.member.header())

    @staticmethod
    def _members(ms: Any) -> list[rpc_pb2.Member]:
        return [convert.member_to_pb(m) for m in ms]

    @unary("MemberAdd")
    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest,
                        context: grpc.aio.ServicerContext) -> rpc_pb2.MemberAddResponse:
        urls = check_peer_urls(request.peerURLs)
        kwargs = {}
        params = _params(self.member.member_add)
        if request.region and "region" in params:
            kwargs["region"] = request.region
        if request.zone and "zone" in params:
            kwargs["zone"] = request.zone
        m, ms = await self.member.member_add(urls, request.isLearner, **kwargs)
        return rpc_pb2.MemberAddResponse(header=self._header(), member=convert.member_to_pb(m),
                                         members=self._members(ms))

    @unary("MemberRemove")
    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest,
                           context: grpc.aio.ServicerContext) -> rpc_pb2.MemberRemoveResponse:
        ms = await self.member.member_remove(request.ID)
        return rpc_pb2.MemberRemoveResponse(header=self._header(), members=self._members(ms))

    @unary("MemberUpdate")
    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest,
                           context: grpc.aio.ServicerContext) -> rpc_pb2.MemberUpdateResponse:
        urls = check_peer_urls(request.peerURLs)
        ms = await self.member.member_update(request.ID, urls)
        return rpc_pb2.MemberUpdateResponse(header=self._header(), members=self._members(ms))

    @unary("MemberList")
    async def MemberList(self, request: rpc_pb2.MemberListRequest,
                         context: grpc.aio.ServicerContext) -> rpc_pb2.MemberListResponse:
        ms = await maybe_await(self.member.member_list())
        return rpc_pb2.MemberListResponse(header=self._header(), members=self._members(ms))

    @unary("MemberPromote")
    async def MemberPromote(self, request: rpc_pb2.MemberPromoteRequest,
                            context: grpc.aio.ServicerContext) -> rpc_pb2.MemberPromoteResponse:
        ms = await self.member.member_promote(request.ID)
        return rpc_pb2.MemberPromoteResponse(header=self._header(), members=self._members(ms))
