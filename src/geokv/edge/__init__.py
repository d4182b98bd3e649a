"""geokv's native gRPC edge: HTTP/2 (RFC 9113), HPACK (RFC 7541) and gRPC framing on an
asyncio Protocol, serving the same servicer objects as grpc.aio at a fraction of the
CPU cost per request. ``geokv.api.server.serve_grpc`` chooses it with
``--grpc-edge native``."""

from geokv.edge.server import EdgeServer

__all__ = ["EdgeServer"]
