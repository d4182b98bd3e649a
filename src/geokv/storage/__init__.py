"""Durable storage: the WAL, snapshot files and the Raft storage built on them.

All I/O goes through ``geokv.ports.disk.Disk``. Repairing a damaged WAL is described
in ``geokv.storage.repair``.
"""

from .raft_storage import DiskRaftStorage, SnapshotCorrupt, StorageCorrupt, WALCorrupt, WALFailed

__all__ = ["DiskRaftStorage", "SnapshotCorrupt", "StorageCorrupt", "WALCorrupt", "WALFailed"]
