"""Hashing, snapshots and defragmentation of MVCCStore (a mixin; see store.py)."""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO

import lmdb

from geokv import errors
from geokv.kv.reads import hash_keyspace

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
RESTORE_SUFFIX = ".restore"
DEFRAG_SUFFIX = ".defrag"

swap_step_hook = None
"""Tests only: called with the name of each step of ``MVCCStore.swap_in`` as it
completes (the crash tests kill the process there)."""


def _fsync_path(path: str) -> None:
    """fsync a file or a directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        unchanged.  A crash at any point leaves the old or the new contents (see
        ``swap_in``).
        """
        from geokv.kv.snapshot import read_snapshot

        tmp = self._scratch_dir(RESTORE_SUFFIX)
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
        self.swap_in(tmp)

    def defragment(self) -> tuple[int, int]:
        """Rewrite the LMDB file without free pages; returns (bytes before, bytes after).

        Call it from the applying thread between batches (it closes and reopens the
        environment).
        """
        before = self.db_size()
        tmp = self._scratch_dir(DEFRAG_SUFFIX)
        try:
            self.copy_compacted(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.swap_in(tmp)
        return before, self.db_size()

    def copy_compacted(self, env_dir: str) -> None:
        """Write a compacted copy of the environment (one read snapshot) into the empty
        directory ``env_dir`` and fsync it.  Any thread; writes may go on meanwhile."""
        self.env.copy(env_dir, compact=True)
        _fsync_path(os.path.join(env_dir, DATA_FILE))

    def swap_in(self, env_dir: str) -> None:
        """Make the complete LMDB environment in ``env_dir`` (a directory on the store's
        filesystem) this store's data, then reopen; ``env_dir`` is removed.

        Crash-safe: the store directory always exists and holds one complete data file.
        The new file is fsynced, then renamed over the old ``data.mdb`` (one atomic
        rename), then the directory is fsynced: a crash before the rename reopens the
        old state, after it the new one.  Call from the applying thread between batches:
        the environment is closed meanwhile.
        """
        src = os.path.join(env_dir, DATA_FILE)
        if not os.path.isfile(src):
            raise FileNotFoundError(f"{env_dir} holds no LMDB data file")
        _fsync_path(src)
        self._swap_step("synced")
        self._drop_point_reader()
        self.env.close()
        self._swap_step("closed")
        os.replace(src, os.path.join(self.path, DATA_FILE))
        self._swap_step("renamed")
        _fsync_path(self.path)
        self._swap_step("dir_synced")
        try:
            # The reader table of the old file; LMDB builds a new one at open.
            os.unlink(os.path.join(self.path, LOCK_FILE))
        except FileNotFoundError:
            pass
        shutil.rmtree(env_dir, ignore_errors=True)
        self.unclean_reboot = False  # the new file is fsynced whole
        self._open_env()
        self._swap_step("reopened")

    @staticmethod
    def _swap_step(name: str) -> None:
        if swap_step_hook is not None:
            swap_step_hook(name)

    def _scratch_dir(self, suffix: str) -> str:
        """An empty sibling directory of the store (same filesystem, so its data file can
        be renamed into the store); a leftover of a crashed run is removed first."""
        tmp = self.path.rstrip("/") + suffix
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        return tmp

    def _remove_scratch_dirs(self) -> None:
        for suffix in (RESTORE_SUFFIX, DEFRAG_SUFFIX):
            shutil.rmtree(self.path.rstrip("/") + suffix, ignore_errors=True)

    @classmethod
    def from_snapshot(cls, path: str, inp: BinaryIO, **kwargs) -> Maintenance:
        store = cls(path, **kwargs)
        store.restore(inp)
        return store
