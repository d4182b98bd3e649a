"""etcd's Auth service: geokv has no users or roles yet, so every Auth RPC answers
with one clear error instead of gRPC's bare "Method not found"."""

from __future__ import annotations

from typing import Any

from geokv import errors
from geokv.api.status import unary
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc


class AuthNotSupported(errors.GeoKVError):
    code = "UNIMPLEMENTED"
    message = "geokv: authentication is not supported (no users, roles or tokens)"


def _refuse(method: str):
    @unary(method)
    async def handler(self: Any, request: Any, context: Any) -> Any:
        raise AuthNotSupported()

    handler.__name__ = method
    return handler


AUTH_METHODS = tuple(m.name for m in rpc_pb2.DESCRIPTOR.services_by_name["Auth"].methods)

AuthService = type("AuthService", (rpc_pb2_grpc.AuthServicer,),
                   {name: _refuse(name) for name in AUTH_METHODS} | {"__module__": __name__,
                                                                     "__doc__": __doc__})
