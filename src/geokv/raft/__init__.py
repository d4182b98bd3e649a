"""Sans-I/O Raft (etcd-io/raft's RawNode shape): no clocks, sockets, threads or randomness.

Time arrives as ``RawNode.tick()`` calls; randomness comes from ``Config.rng``.
"""

from .config import Config, ConfigError, ProposalDropped
from .rawnode import RawNode
from .storage import Compacted, MemoryStorage, Storage, Unavailable, bootstrap_entries
from .types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProgressState,
    ReadOnlyOption,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
    Status,
)

__all__ = [
    "Compacted", "ConfChange", "ConfChangeSingle", "ConfChangeTransition", "ConfChangeType",
    "ConfState", "Config", "ConfigError", "Entry", "EntryType", "HardState", "MemoryStorage",
    "Message", "MessageType", "ProgressState", "ProposalDropped", "RawNode", "ReadOnlyOption",
    "ReadState", "Ready", "Snapshot", "SnapshotMetadata", "SoftState", "StateRole", "Status",
    "Storage", "Unavailable", "bootstrap_entries",
]
