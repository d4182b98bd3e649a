"""An in-memory Raft log with the write API of geokv.storage.DiskRaftStorage.

For in-process tests and benchmarks that want a Member without a WAL on disk (a
member using it loses its log on restart, so it is never used by the server).
"""

from __future__ import annotations

from geokv.raft.storage import MemoryStorage
from geokv.raft.types import ConfState, Entry, HardState, Snapshot


class MemoryRaftStorage(MemoryStorage):
    __slots__ = ()

    #: sync() does no I/O, so the driver need not move it to a thread.
    sync_in_thread = False

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None and not snapshot.is_empty():
            self.apply_snapshot(snapshot)
        if entries:
            self.append(entries)
        if hard_state is not None:
            self.set_hard_state(hard_state)

    def sync(self) -> None:
        pass

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        return MemoryStorage.create_snapshot(self, index, conf_state, data)

    def close(self) -> None:
        pass
