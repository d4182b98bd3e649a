"""Plain data shared by every part of the Raft core and by its callers.

All records are slotted dataclasses: the hot path creates many Entries and Messages,
and slots keep them small and fast to build. Nothing in this module does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import msgpack


class MessageType(IntEnum):
    HUP = 0
    BEAT = 1
    PROP = 2
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10
    SNAP_STATUS = 11
    CHECK_QUORUM = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


#: Messages that only exist inside one node (never cross the network).
LOCAL_MESSAGE_TYPES = frozenset(
    {MessageType.HUP, MessageType.BEAT, MessageType.UNREACHABLE, MessageType.SNAP_STATUS,
     MessageType.CHECK_QUORUM}
)

#: Responses: a node answers these without changing term on a lower-term mismatch.
RESPONSE_MESSAGE_TYPES = frozenset(
    {MessageType.APP_RESP, MessageType.VOTE_RESP, MessageType.HEARTBEAT_RESP,
     MessageType.UNREACHABLE, MessageType.READ_INDEX_RESP, MessageType.PRE_VOTE_RESP}
)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class StateRole(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class ReadOnlyOption(IntEnum):
    """How a linearizable read is confirmed: SAFE = heartbeat round; LEASE_BASED = lease."""

    SAFE = 0
    LEASE_BASED = 1


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size in bytes (used for all byte limits)."""
        return len(self.data) + 16


@dataclass(slots=True)
class HardState:
    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False


@dataclass(slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class Snapshot:
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


class ConfChangeType(IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


class ConfChangeTransition(IntEnum):
    """How a joint configuration is left (etcd's ConfChangeTransition).

    AUTO: simple change if possible, else joint with automatic leave.
    IMPLICIT: always joint, automatic leave. EXPLICIT: always joint, the application
    leaves by proposing an empty ConfChange.
    """

    AUTO = 0
    IMPLICIT = 1
    EXPLICIT = 2


@dataclass(slots=True, frozen=True)
class ConfChangeSingle:
    type: ConfChangeType
    node_id: int


@dataclass(slots=True)
class ConfChange:
    """etcd's ConfChangeV2. An empty ``changes`` tuple means "leave the joint config"."""

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO
    context: bytes = b""

    def encode(self) -> bytes:
        return msgpack.packb(
            [[[int(c.type), c.node_id] for c in self.changes], int(self.transition), self.context],
            use_bin_type=True,
        )

    @staticmethod
    def decode(b: bytes) -> ConfChange:
        """Parse entry data; raises ValueError on anything malformed."""
        try:
            obj = msgpack.unpackb(b, raw=False)
            changes_raw, transition, context = obj
            changes = tuple(
                ConfChangeSingle(ConfChangeType(int(t)), _nonneg(n)) for t, n in changes_raw
            )
            if not isinstance(context, bytes):
                raise ValueError("context must be bytes")
            return ConfChange(changes, ConfChangeTransition(int(transition)), context)
        except ValueError:
            raise
        except Exception as exc:  # any shape error in untrusted bytes
            raise ValueError(f"malformed ConfChange: {exc!r}") from None

    def leave_joint(self) -> bool:
        return not self.changes

    def enter_joint(self) -> tuple[bool, bool]:
        """(use_joint, auto_leave) for this change, as etcd's ConfChangeV2.EnterJoint."""
        if self.transition != ConfChangeTransition.AUTO or len(self.changes) > 1:
            if self.transition in (ConfChangeTransition.AUTO, ConfChangeTransition.IMPLICIT):
                return True, True
            return True, False
        return False, False


def _nonneg(n: object) -> int:
    if type(n) is not int or n < 0:
        raise ValueError(f"expected a non-negative int, got {n!r}")
    return n


@dataclass(slots=True)
class Message:
    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(slots=True)
class ReadState:
    index: int
    request_ctx: bytes


@dataclass(slots=True)
class SoftState:
    leader_id: int
    role: StateRole


@dataclass(slots=True)
class Ready:
    soft_state: SoftState | None
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    committed_entries: list[Entry]
    messages: list[Message]
    persisted_messages: list[Message]
    read_states: list[ReadState]
    must_sync: bool


@dataclass(slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    leader_id: int
    role: StateRole
    lead_transferee: int
    progress: dict[int, tuple[int, int, ProgressState, bool]]
    lease_valid: bool
    config: ConfState
    #: (heartbeat_tick, election_tick) in force on this node (``RawNode.set_timing``).
    timing: tuple[int, int] = (0, 0)
    #: (heartbeat_tick, election_tick) the current leader announced in its last
    #: heartbeat; (0, 0) if none (a leader without lease reads does not announce).
    leader_timing: tuple[int, int] = (0, 0)
