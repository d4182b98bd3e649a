"""Client-side errors and the mapping from a gRPC status to a geokv exception.

A server answers a user mistake with a gRPC status whose details carry etcd's text
("etcdserver: requested lease not found"). The client turns that text back into the
matching class of :mod:`geokv.errors`, so callers catch the same classes the server
raises. Failures that only the client can see (no endpoint reachable, a write whose
outcome is unknown, a bad endpoint string) get classes of their own here, all
subclasses of :class:`geokv.errors.GeoKVError`.
"""

from __future__ import annotations

import grpc

from geokv import errors as _errors
from geokv.errors import GeoKVError


class ClientError(GeoKVError):
    """Base class for failures detected by the client itself."""

    code = "UNKNOWN"
    message = "geokv client error"


class BadEndpoint(ClientError):
    """An endpoint string the client cannot parse (user mistake)."""

    code = "INVALID_ARGUMENT"
    message = "bad endpoint"


class EndpointsUnavailable(ClientError):
    """No endpoint answered within the retry budget."""

    code = "UNAVAILABLE"
    message = "no endpoint is available"


class DeadlineExceeded(ClientError):
    """A read (or an idempotent call) did not finish before its deadline."""

    code = "DEADLINE_EXCEEDED"
    message = "context deadline exceeded"


class OutcomeUnknown(ClientError):
    """A write was sent, but no answer came back: it may or may not have been applied.

    The client never repeats such a write by itself, because a repeat could apply it
    twice. ``cause`` holds the text of the failure that cut the call short.
    """

    code = "UNKNOWN"
    message = "outcome unknown"

    def __init__(self, operation: str, endpoint: str, cause: str) -> None:
        self.operation = operation
        self.endpoint = endpoint
        self.cause = cause
        super().__init__(
            f"outcome unknown: {operation} was sent to {endpoint} but the call failed "
            f"({cause}); it may or may not have been applied, and was not retried"
        )


class LeaseExpired(ClientError):
    """A keep-alive found that its lease no longer exists on the server."""

    code = "NOT_FOUND"
    message = "lease expired"


class WatchCanceled(ClientError):
    """The server canceled a watch (for example, a compacted start revision)."""

    code = "CANCELLED"
    message = "watch canceled"


def _server_error_table() -> dict[str, type[GeoKVError]]:
    table: dict[str, type[GeoKVError]] = {}
    for value in vars(_errors).values():
        if isinstance(value, type) and issubclass(value, GeoKVError) and value is not GeoKVError:
            table.setdefault(value.message, value)
    return table


#: etcd's error text -> the geokv.errors class that carries it.
SERVER_ERRORS_BY_MESSAGE: dict[str, type[GeoKVError]] = _server_error_table()

#: Server errors returned before a write is executed, so sending it again elsewhere
#: cannot apply it twice (etcd's clientv3 retries mutations on the same set).
WRITE_SAFE_RETRY_CLASSES: tuple[type[GeoKVError], ...] = (
    _errors.NoLeader,
    _errors.TooManyRequests,
    _errors.NotCapable,
    _errors.NotLeader,
    _errors.NotSupportedForLearner,
)
WRITE_SAFE_RETRY_MESSAGES: frozenset[str] = frozenset(c.message for c in WRITE_SAFE_RETRY_CLASSES)

#: Server errors after which a write may still commit later (its outcome is unknown).
WRITE_UNKNOWN_CLASSES: tuple[type[GeoKVError], ...] = (
    _errors.Timeout,
    _errors.TimeoutDueToLeaderFail,
    _errors.TimeoutDueToConnectionLost,
    _errors.LeaderChanged,
    _errors.Stopped,
)

#: Texts of gRPC's own UNAVAILABLE statuses that mean the call never left the client
#: (no connection could be made), so even a write may go to the next endpoint. The
#: native channel (geokv.edge.client) says "request not sent" for calls the server
#: never processed: above a GOAWAY's last stream id, REFUSED_STREAM, or still queued.
NOT_SENT_MARKERS: tuple[str, ...] = ("failed to connect to all addresses", "request not sent")

#: gRPC codes after which a read (which changes nothing) may be sent again elsewhere.
READ_RETRY_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


def _class_for(details: str) -> type[GeoKVError] | None:
    cls = SERVER_ERRORS_BY_MESSAGE.get(details)
    if cls is not None:
        return cls
    # A known text with more detail after it ("etcdserver: request timed out, leader
    # transfer took too long"): the longest known prefix decides.
    best: type[GeoKVError] | None = None
    for message, candidate in SERVER_ERRORS_BY_MESSAGE.items():
        if details.startswith(message) and (best is None or len(message) > len(best.message)):
            best = candidate
    return best


def from_rpc_error(err: grpc.RpcError) -> GeoKVError:
    """The geokv exception for a gRPC error that came from a server."""
    details = err.details() or ""
    code = err.code()
    cls = _class_for(details)
    if cls is None and code == grpc.StatusCode.INVALID_ARGUMENT:
        cls = _errors.InvalidArgument
    if cls is not None:
        return cls(details)
    exc = GeoKVError(details or f"gRPC error {code.name if code else 'UNKNOWN'}")
    exc.code = code.name if code is not None else "UNKNOWN"
    return exc


def is_final_for_reads(err: grpc.RpcError) -> bool:
    """True if a call that changes nothing should not be sent again after ``err``:
    the server itself answered with a user-facing error (not a transient one)."""
    if not is_server_error(err):
        return False
    if isinstance(from_rpc_error(err), WRITE_SAFE_RETRY_CLASSES):
        return False
    return err.code() not in READ_RETRY_CODES


def is_server_error(err: grpc.RpcError) -> bool:
    """True if the status came from the server's own logic, not from the transport."""
    details = err.details() or ""
    return details.startswith(("etcdserver:", "mvcc:", "lease:", "election:", "geokv:", "rpc error"))
