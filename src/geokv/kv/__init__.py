"""geokv.kv: the deterministic MVCC state machine (etcd v3 keyspace on LMDB)."""

from geokv.kv.store import MVCCStore
from geokv.kv.types import *  # noqa: F401,F403 - the command/result vocabulary
from geokv.kv.types import decode_command, encode_command

__all__ = ["MVCCStore", "encode_command", "decode_command"]
