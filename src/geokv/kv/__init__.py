"""geokv.kv: the deterministic MVCC state machine (etcd v3 keyspace on LMDB).

``geokv.kv.types`` holds the commands, results and events other layers exchange with
it; ``geokv.kv.store.MVCCStore`` is the state machine.
"""

from geokv.kv import types
from geokv.kv.store import MVCCStore
from geokv.kv.types import decode_command, encode_command

__all__ = ["MVCCStore", "types", "encode_command", "decode_command"]
