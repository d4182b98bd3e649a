"""Plain result types returned by the client (decoupled from the protobuf classes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENT_PUT = "PUT"
EVENT_DELETE = "DELETE"


def to_bytes(value: bytes | str, what: str = "key") -> bytes:
    """Accept str (UTF-8) or bytes for keys and values."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def prefix_range_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # every byte is 0xff (or empty prefix): range to the end of the keyspace


@dataclass(slots=True, frozen=True)
class Header:
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int

    @classmethod
    def from_pb(cls, h: Any) -> Header:
        return cls(h.cluster_id, h.member_id, h.revision, h.raft_term)


@dataclass(slots=True, frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@dataclass(slots=True, frozen=True)
class GetResult:
    header: Header
    kvs: list[KeyValue]
    more: bool
    count: int

    @classmethod
    def from_pb(cls, r: Any) -> GetResult:
        return cls(Header.from_pb(r.header), [KeyValue.from_pb(kv) for kv in r.kvs], r.more, r.count)

    @property
    def value(self) -> bytes | None:
        """The value of the first key, or None if nothing matched."""
        return self.kvs[0].value if self.kvs else None


@dataclass(slots=True, frozen=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None

    @classmethod
    def from_pb(cls, r: Any) -> PutResult:
        return cls(Header.from_pb(r.header), KeyValue.from_pb(r.prev_kv) if r.HasField("prev_kv") else None)


@dataclass(slots=True, frozen=True)
class DeleteResult:
    header: Header
    deleted: int
    prev_kvs: list[KeyValue]

    @classmethod
    def from_pb(cls, r: Any) -> DeleteResult:
        return cls(Header.from_pb(r.header), r.deleted, [KeyValue.from_pb(kv) for kv in r.prev_kvs])


@dataclass(slots=True, frozen=True)
class TxnResult:
    header: Header
    succeeded: bool
    responses: list[GetResult | PutResult | DeleteResult | TxnResult]

    @classmethod
    def from_pb(cls, r: Any) -> TxnResult:
        out: list[GetResult | PutResult | DeleteResult | TxnResult] = []
        for op in r.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                out.append(GetResult.from_pb(op.response_range))
            elif kind == "response_put":
                out.append(PutResult.from_pb(op.response_put))
            elif kind == "response_delete_range":
                out.append(DeleteResult.from_pb(op.response_delete_range))
            elif kind == "response_txn":
                out.append(TxnResult.from_pb(op.response_txn))
        return cls(Header.from_pb(r.header), r.succeeded, out)


@dataclass(slots=True, frozen=True)
class Event:
    type: str  # EVENT_PUT or EVENT_DELETE
    kv: KeyValue
    prev_kv: KeyValue | None

    @classmethod
    def from_pb(cls, ev: Any) -> Event:
        return cls(
            EVENT_DELETE if ev.type == 1 else EVENT_PUT,
            KeyValue.from_pb(ev.kv),
            KeyValue.from_pb(ev.prev_kv) if ev.HasField("prev_kv") else None,
        )


@dataclass(slots=True, frozen=True)
class LeaseGrant:
    header: Header
    id: int
    ttl: int


@dataclass(slots=True, frozen=True)
class LeaseTimeToLive:
    header: Header
    id: int
    ttl: int  # remaining seconds; -1 if the lease does not exist (expired or revoked)
    granted_ttl: int
    keys: list[bytes]


@dataclass(slots=True, frozen=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool
    region: str = ""
    zone: str = ""

    @classmethod
    def from_pb(cls, m: Any) -> Member:
        return cls(
            m.ID,
            m.name,
            list(m.peerURLs),
            list(m.clientURLs),
            m.isLearner,
            getattr(m, "region", ""),
            getattr(m, "zone", ""),
        )


@dataclass(slots=True, frozen=True)
class Status:
    endpoint: str
    header: Header
    version: str
    db_size: int
    db_size_in_use: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    is_learner: bool
    errors: list[str] = field(default_factory=list)
    region: str = ""
    zone: str = ""
    leader_region: str = ""

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.header.member_id

    @classmethod
    def from_pb(cls, endpoint: str, r: Any) -> Status:
        return cls(
            endpoint,
            Header.from_pb(r.header),
            r.version,
            r.dbSize,
            r.dbSizeInUse,
            r.leader,
            r.raftIndex,
            r.raftTerm,
            r.raftAppliedIndex,
            r.isLearner,
            list(r.errors),
            getattr(r, "region", ""),
            getattr(r, "zone", ""),
            getattr(r, "leader_region", ""),
        )


@dataclass(slots=True, frozen=True)
class LeaderKey:
    """Ownership of an election, returned by campaign and needed to proclaim or resign."""

    name: bytes
    key: bytes
    rev: int
    lease: int
