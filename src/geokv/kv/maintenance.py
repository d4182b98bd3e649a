"""Hashing, snapshots and defragmentation of MVCCStore (a mixin; see store.py)."""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO

import lmdb

from geokv import errors
from geokv.kv.reads import hash_keyspace


class Maintenance:
    """Whole-store operations; call restore/defragment from the applying thread only."""

    def hash_kv(self, revision: int = 0) -> tuple[int, int, int]:
        """(hash, revision, compact_revision): a crc32c of the keyspace visible at
        ``revision`` (0: now), identical on every replica that applied the same log,
        however far each has got with physical compaction."""
        with self.env.begin() as txn:
            rev, crev = self._read_state(txn)
            if revision > rev:
                raise errors.FutureRev()
            if 0 < revision < crev:
                raise errors.Compacted()
            upto = revision or rev
            return hash_keyspace(txn.cursor(self._kv), upto, crev), upto, crev

    def snapshot(self, out: BinaryIO) -> int:
        """Write the whole state machine to ``out``; returns the bytes written."""
        from geokv.kv.snapshot import write_snapshot

        with self.env.begin() as txn:
            return write_snapshot(txn, self._dbs, out)

    def restore(self, inp: BinaryIO) -> None:
        """Replace this store's contents by a snapshot stream (verified before use).

        Raises ValueError if the stream is truncated or corrupt; the store is then
        unchanged.
        """
        from geokv.kv.snapshot import read_snapshot

        tmp = self.path.rstrip("/") + ".restore"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        env = lmdb.open(tmp, map_size=self.map_size, max_dbs=8, sync=False, metasync=False)
        try:
            dbs = {name: env.open_db(name) for name in self._dbs}
            read_snapshot(env, dbs, inp)
            env.sync(True)
        except BaseException:
            env.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        env.close()
        self._swap_in(tmp)

    def defragment(self) -> tuple[int, int]:
        """Rewrite the LMDB file without free pages; returns (bytes before, bytes after).

        Call it from the applying thread between batches (it closes and reopens the
        environment).
        """
        before = self.db_size()
        tmp = self.path.rstrip("/") + ".defrag"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            self.env.copy(tmp, compact=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._swap_in(tmp)
        return before, self.db_size()

    def _swap_in(self, tmp: str) -> None:
        """Replace the store directory by ``tmp`` (a complete LMDB env) and reopen."""
        self._drop_point_reader()
        self.env.close()
        old = self.path.rstrip("/") + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(self.path, old)
        os.rename(tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)
        self._mark_open()
        self.unclean_reboot = False
        self._open_env()

    @classmethod
    def from_snapshot(cls, path: str, inp: BinaryIO, **kwargs) -> Maintenance:
        store = cls(path, **kwargs)
        store.restore(inp)
        return store
