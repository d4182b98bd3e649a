"""Errors a user can cause, each carrying the etcd gRPC status code and message.

Every layer below the API (kv, runtime) raises these; the API layer turns them into a
gRPC status with ``grpc.StatusCode[err.code]`` and ``err.message`` so etcd clients see
exactly the code and text they would see from etcd and retry (or not) the same way.
The module imports nothing from grpc so that kv/ and storage/ stay free of it.

Internal bugs are never expressed with these classes: they crash loudly.
"""

from __future__ import annotations


class GeoKVError(Exception):
    """Base class: ``code`` is a grpc.StatusCode name, ``message`` the etcd text."""

    code: str = "UNKNOWN"
    message: str = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


def _make(name: str, code: str, message: str) -> type[GeoKVError]:
    return type(name, (GeoKVError,), {"code": code, "message": message, "__module__": __name__})


# --- request validation (InvalidArgument) -------------------------------------------
EmptyKey = _make("EmptyKey", "INVALID_ARGUMENT", "etcdserver: key is not provided")
KeyNotFound = _make("KeyNotFound", "INVALID_ARGUMENT", "etcdserver: key not found")
ValueProvided = _make("ValueProvided", "INVALID_ARGUMENT", "etcdserver: value is provided")
LeaseProvided = _make("LeaseProvided", "INVALID_ARGUMENT", "etcdserver: lease is provided")
TooManyOps = _make("TooManyOps", "INVALID_ARGUMENT", "etcdserver: too many operations in txn request")
DuplicateKey = _make("DuplicateKey", "INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request")
RequestTooLarge = _make("RequestTooLarge", "INVALID_ARGUMENT", "etcdserver: request is too large")
MemberBadURLs = _make("MemberBadURLs", "INVALID_ARGUMENT", "etcdserver: given member URLs are invalid")
InvalidArgument = _make("InvalidArgument", "INVALID_ARGUMENT", "etcdserver: invalid argument")

# --- MVCC ------------------------------------------------------------------------------
Compacted = _make("Compacted", "OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted")
FutureRev = _make("FutureRev", "OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")
NoSpace = _make("NoSpace", "RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded")

# --- leases ----------------------------------------------------------------------------
LeaseNotFound = _make("LeaseNotFound", "NOT_FOUND", "etcdserver: requested lease not found")
LeaseExist = _make("LeaseExist", "FAILED_PRECONDITION", "etcdserver: lease already exists")
LeaseTTLTooLarge = _make("LeaseTTLTooLarge", "OUT_OF_RANGE", "etcdserver: too large lease TTL")

# --- membership ------------------------------------------------------------------------
MemberExist = _make("MemberExist", "FAILED_PRECONDITION", "etcdserver: member ID already exist")
PeerURLExist = _make("PeerURLExist", "FAILED_PRECONDITION", "etcdserver: Peer URLs already exists")
MemberNotEnoughStarted = _make(
    "MemberNotEnoughStarted",
    "FAILED_PRECONDITION",
    "etcdserver: re-configuration failed due to not enough started members",
)
MemberNotFound = _make("MemberNotFound", "NOT_FOUND", "etcdserver: member not found")
MemberNotLearner = _make("MemberNotLearner", "FAILED_PRECONDITION", "etcdserver: can only promote a learner member")
LearnerNotReady = _make(
    "LearnerNotReady",
    "FAILED_PRECONDITION",
    "etcdserver: can only promote a learner member which is in sync with leader",
)
TooManyLearners = _make("TooManyLearners", "FAILED_PRECONDITION", "etcdserver: too many learner members in cluster")

# --- cluster state (Unavailable: clients retry elsewhere) ------------------------------
NoLeader = _make("NoLeader", "UNAVAILABLE", "etcdserver: no leader")
NotLeader = _make("NotLeader", "FAILED_PRECONDITION", "etcdserver: not leader")
LeaderChanged = _make("LeaderChanged", "UNAVAILABLE", "etcdserver: leader changed")
NotCapable = _make("NotCapable", "UNAVAILABLE", "etcdserver: not capable")
Stopped = _make("Stopped", "UNAVAILABLE", "etcdserver: server stopped")
Timeout = _make("Timeout", "UNAVAILABLE", "etcdserver: request timed out")
TimeoutDueToLeaderFail = _make(
    "TimeoutDueToLeaderFail", "UNAVAILABLE", "etcdserver: request timed out, possibly due to previous leader failure"
)
TimeoutDueToConnectionLost = _make(
    "TimeoutDueToConnectionLost", "UNAVAILABLE", "etcdserver: request timed out, possibly due to connection lost"
)
Unhealthy = _make("Unhealthy", "UNAVAILABLE", "etcdserver: unhealthy cluster")
NotSupportedForLearner = _make("NotSupportedForLearner", "UNAVAILABLE", "etcdserver: rpc not supported for learner")
BadLeaderTransferee = _make("BadLeaderTransferee", "FAILED_PRECONDITION", "etcdserver: bad leader transferee")
TooManyRequests = _make("TooManyRequests", "RESOURCE_EXHAUSTED", "etcdserver: too many requests")
Corrupt = _make("Corrupt", "DATA_LOSS", "etcdserver: corrupt cluster")

# --- election service (etcd's concurrency package texts) -------------------------------
ElectionNotLeader = _make("ElectionNotLeader", "FAILED_PRECONDITION", "election: not leader")
ElectionNoLeader = _make("ElectionNoLeader", "NOT_FOUND", "election: no leader")
