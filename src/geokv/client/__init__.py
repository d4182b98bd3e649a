"""geokv's Python client: ``AsyncClient`` (grpc.aio) and its blocking twin ``Client``.

Both speak the etcd v3 API, so they work against geokv and against etcd itself.
"""

from __future__ import annotations

from geokv.client.aio import READ_MODES, AsyncClient, parse_endpoint
from geokv.client.errors import (
    BadEndpoint,
    ClientError,
    DeadlineExceeded,
    EndpointsUnavailable,
    LeaseExpired,
    OutcomeUnknown,
    WatchCanceled,
)
from geokv.client.ops import Compare, Op, Txn
from geokv.client.sync import Client
from geokv.client.types import (
    EVENT_DELETE,
    EVENT_PUT,
    DeleteResult,
    Event,
    GetResult,
    Header,
    KeyValue,
    LeaderKey,
    LeaseGrant,
    LeaseTimeToLive,
    Member,
    PutResult,
    Status,
    TxnResult,
)

__all__ = [
    "AsyncClient", "Client", "Compare", "Op", "Txn", "READ_MODES", "parse_endpoint",
    "BadEndpoint", "ClientError", "DeadlineExceeded", "EndpointsUnavailable", "LeaseExpired", "OutcomeUnknown",
    "WatchCanceled", "EVENT_DELETE", "EVENT_PUT", "DeleteResult", "Event", "GetResult", "Header", "KeyValue",
    "LeaderKey", "LeaseGrant", "LeaseTimeToLive", "Member", "PutResult", "Status", "TxnResult",
]
