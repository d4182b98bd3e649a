"""An in-memory Disk that models what a real disk may do on power loss.

Used by the storage tests and by the simulator. Each file keeps two contents: what
readers see now, and what survives a crash (its content at the last ``sync``). Names
(creation, rename, removal) only survive a crash once ``fsync_dir`` of the directory
returned. ``crash`` throws away everything that was not made durable, optionally
keeping a random prefix of the unsynced writes with the last kept write torn, the
way a disk that reorders nothing but stops mid-write would leave it.

Faults on demand: ``fail_reads`` / ``fail_syncs`` make matching calls raise
``OSError(EIO)``.

Simplifications (stated so nobody relies on them by accident): directories exist
durably as soon as ``makedirs`` returns; a crash never reorders unsynced writes of
one file (only a prefix survives), and never mixes content across files.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

_APPEND = 0
_TRUNCATE = 1


@dataclass(slots=True)
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    #: Unsynced operations since the last sync, in order: (_APPEND, bytes) or (_TRUNCATE, size).
    ops: list[tuple[int, object]] = field(default_factory=list)

    def sync(self) -> None:
        self.durable = bytes(self.data)
        self.ops.clear()


class FaultyFile:
    """A handle on an inode; dead after the disk crashed."""

    __slots__ = ("_disk", "_inode", "_pos", "_generation", "_writable", "path", "_closed")

    def __init__(self, disk: FaultyDisk, inode: _Inode, path: str, writable: bool) -> None:
        self._disk = disk
        self._inode = inode
        self._pos = 0
        self._generation = disk.generation
        self._writable = writable
        self.path = path
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"I/O on closed file {self.path}")
        if self._generation != self._disk.generation:
            raise OSError(errno.EIO, "file handle from before the crash", self.path)

    def write(self, b: bytes | bytearray | memoryview) -> int:
        self._check()
        if not self._writable:
            raise OSError(errno.EBADF, "file not open for writing", self.path)
        data = bytes(b)
        self._inode.data += data
        self._inode.ops.append((_APPEND, data))
        self._disk.stats_write_bytes += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        self._check()
        if self._disk.read_fault(self.path):
            raise OSError(errno.EIO, "injected read error", self.path)
        data = self._inode.data
        end = len(data) if n < 0 else min(len(data), self._pos + n)
        out = bytes(data[self._pos:end])
        self._pos = max(self._pos, end)
        return out

    def seek(self, off: int) -> None:
        self._check()
        self._pos = off

    def tell(self) -> int:
        self._check()
        return len(self._inode.data) if self._writable else self._pos

    def sync(self) -> None:
        self._check()
        if self._disk.sync_fault(self.path):
            raise OSError(errno.EIO, "injected fsync error", self.path)
        self._inode.sync()
        self._disk.stats_syncs += 1

    def truncate(self, size: int) -> None:
        self._check()
        if size < len(self._inode.data):
            del self._inode.data[size:]
        else:
            self._inode.data += bytes(size - len(self._inode.data))
        self._inode.ops.append((_TRUNCATE, size))

    def close(self) -> None:
        self._closed = True


def _never(path: str) -> bool:
    return False


class FaultyDisk:
    """The Disk port in memory, with crashes and injected errors (see module docstring)."""

    def __init__(self) -> None:
        self._files: dict[str, _Inode] = {}
        self._durable_files: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/", "."}
        self.generation = 0
        self.read_fault: Callable[[str], bool] = _never
        self.sync_fault: Callable[[str], bool] = _never
        self.stats_syncs = 0
        self.stats_write_bytes = 0

    # --- fault control ---------------------------------------------------------------
    def fail_reads(self, predicate: Callable[[str], bool] | None) -> None:
        """Reads of paths matching ``predicate`` raise OSError(EIO); None stops it."""
        self.read_fault = predicate or _never

    def fail_syncs(self, predicate: Callable[[str], bool] | None) -> None:
        """Syncs of paths matching ``predicate`` raise OSError(EIO); None stops it."""
        self.sync_fault = predicate or _never

    def crash(self, rng: random.Random | None = None, *, torn_keep_bytes: int | None = None) -> None:
        """Lose power. Afterwards only durable names and durable content remain.

        ``rng`` given: for each file a random prefix of its unsynced operations
        survives, and the write after that prefix survives torn (a random prefix of
        its bytes, sometimes zero-filled instead, as an extended-but-unwritten file).
        ``torn_keep_bytes`` given: all unsynced operations survive except the last
        write, of which only the first ``torn_keep_bytes`` bytes survive.
        Neither given: every unsynced write is lost.
        """
        self.generation += 1
        self._files = dict(self._durable_files)
        seen: set[int] = set()
        for inode in self._files.values():
            if id(inode) not in seen:  # one inode may be reachable by two durable names
                seen.add(id(inode))
                self._crash_inode(inode, rng, torn_keep_bytes)
        self.fail_reads(None)
        self.fail_syncs(None)

    @staticmethod
    def _crash_inode(inode: _Inode, rng: random.Random | None, torn_keep_bytes: int | None) -> None:
        ops = inode.ops
        content = bytearray(inode.durable)
        if ops and (rng is not None or torn_keep_bytes is not None):
            if torn_keep_bytes is not None:
                last_write = max((i for i, op in enumerate(ops) if op[0] == _APPEND), default=None)
                kept, torn = (len(ops), None) if last_write is None else (last_write, ops[last_write])
                torn_len = None if torn is None else min(torn_keep_bytes, len(torn[1]))
                zero_fill = False
            else:
                kept = rng.randrange(len(ops) + 1)
                torn = ops[kept] if kept < len(ops) and ops[kept][0] == _APPEND else None
                torn_len = None if torn is None else rng.randrange(len(torn[1]) + 1)
                zero_fill = rng.random() < 0.25
            for kind, arg in ops[:kept]:
                _apply(content, kind, arg)
            if torn is not None and torn_len:
                piece = torn[1][:torn_len]
                content += bytes(len(piece)) if zero_fill else piece
        inode.data = content
        inode.durable = bytes(content)
        inode.ops = []

    # --- the Disk port ---------------------------------------------------------------
    def _norm(self, path: str) -> str:
        return os.path.normpath(path)

    def _parent_must_exist(self, path: str) -> None:
        parent = os.path.dirname(path) or "."
        if parent not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)

    def open_append(self, path: str) -> FaultyFile:
        path = self._norm(path)
        inode = self._files.get(path)
        if inode is None:
            self._parent_must_exist(path)
            inode = self._files[path] = _Inode()
        return FaultyFile(self, inode, path, writable=True)

    def open_read(self, path: str) -> FaultyFile:
        path = self._norm(path)
        inode = self._files.get(path)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return FaultyFile(self, inode, path, writable=False)

    def write_atomic(self, path: str, data: bytes) -> None:
        path = self._norm(path)
        self._parent_must_exist(path)
        if self.sync_fault(path):
            raise OSError(errno.EIO, "injected fsync error", path)
        inode = _Inode(bytearray(data), bytes(data))
        self._files[path] = inode
        self.fsync_dir(os.path.dirname(path) or ".")

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        names = {os.path.basename(p) for p in self._files if (os.path.dirname(p) or ".") == path}
        names |= {os.path.basename(d) for d in self._dirs if d != path and os.path.dirname(d) == path}
        return sorted(names)

    def exists(self, path: str) -> bool:
        path = self._norm(path)
        return path in self._files or path in self._dirs

    def remove(self, path: str) -> None:
        path = self._norm(path)
        if self._files.pop(path, None) is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)

    def makedirs(self, path: str) -> None:
        path = self._norm(path)
        while path not in self._dirs:
            if path in self._files:
                raise FileExistsError(errno.EEXIST, "a file is in the way", path)
            self._dirs.add(path)
            path = os.path.dirname(path) or "."

    def rename(self, src: str, dst: str) -> None:
        src, dst = self._norm(src), self._norm(dst)
        inode = self._files.pop(src, None)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", src)
        self._parent_must_exist(dst)
        self._files[dst] = inode

    def fsync_dir(self, path: str) -> None:
        path = self._norm(path)
        in_dir = lambda p: (os.path.dirname(p) or ".") == path  # noqa: E731
        for p in [p for p in self._durable_files if in_dir(p)]:
            del self._durable_files[p]
        for p, inode in self._files.items():
            if in_dir(p):
                self._durable_files[p] = inode

    def size(self, path: str) -> int:
        path = self._norm(path)
        inode = self._files.get(path)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return len(inode.data)

    # --- test helpers ----------------------------------------------------------------
    def corrupt(self, path: str, offset: int, xor: int = 0xFF) -> None:
        """Flip bits of one byte, durably (bit rot, not a crash effect)."""
        inode = self._files[self._norm(path)]
        inode.data[offset] ^= xor
        durable = bytearray(inode.durable)
        if offset < len(durable):
            durable[offset] ^= xor
            inode.durable = bytes(durable)


def _apply(content: bytearray, kind: int, arg: object) -> None:
    if kind == _APPEND:
        content += arg  # type: ignore[operator]
    else:
        size = arg  # type: ignore[assignment]
        if size < len(content):  # type: ignore[operator]
            del content[size:]
        else:
            content += bytes(size - len(content))  # type: ignore[operator]
