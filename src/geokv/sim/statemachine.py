"""The replicated state machine of the simulation: a small key -> register map.

Commands are msgpack ``[write_id, key, value]``. A write id is applied at most once
(a duplicated network message can put the same proposal into the log twice). The
machine keeps a running CRC chain over every applied entry so a snapshot can be checked
against the cluster's applied prefix without replaying it.
"""

from __future__ import annotations

import zlib

import msgpack


def encode_write(write_id: int, key: str, value: int) -> bytes:
    return msgpack.packb([write_id, key, value])


def decode_write(data: bytes) -> tuple[int, str, int]:
    write_id, key, value = msgpack.unpackb(data)
    return write_id, key, value


def chain_crc(prev: int, index: int, term: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(b"%d:%d:" % (index, term), prev))


class KVStateMachine:
    __slots__ = ("kv", "applied_ids", "applied_index", "chain")

    def __init__(self) -> None:
        self.kv: dict[str, int] = {}
        self.applied_ids: set[int] = set()
        self.applied_index = 0
        self.chain = 0

    def apply(self, index: int, term: int, data: bytes, is_command: bool) -> int | None:
        """Apply one log entry; return the write id if it took effect now."""
        assert index == self.applied_index + 1, (index, self.applied_index)
        self.applied_index = index
        self.chain = chain_crc(self.chain, index, term, data)
        if not is_command or not data:
            return None
        write_id, key, value = decode_write(data)
        if write_id in self.applied_ids:
            return None
        self.applied_ids.add(write_id)
        self.kv[key] = value
        return write_id

    def snapshot(self) -> bytes:
        return msgpack.packb([self.applied_index, self.chain, sorted(self.kv.items()),
                              sorted(self.applied_ids)])

    @classmethod
    def restore(cls, data: bytes) -> KVStateMachine:
        sm = cls()
        if data:
            applied_index, chain, items, ids = msgpack.unpackb(data)
            sm.applied_index = applied_index
            sm.chain = chain
            sm.kv = {k: v for k, v in items}
            sm.applied_ids = set(ids)
        return sm
