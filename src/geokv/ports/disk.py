"""The Disk port: every byte that storage/ reads or writes goes through it.

Two implementations exist: :class:`RealDisk` (plain ``os`` calls, used in production)
and :class:`geokv.ports.faulty_disk.FaultyDisk` (in memory, for tests and the
simulator, able to lose unsynced writes, tear the last write and fail reads).

Durability rules every implementation follows, and storage/ relies on:

* ``DiskFile.write`` data is *not* durable until ``DiskFile.sync`` returned.
* A newly created file, a rename or a removal is not durable until ``fsync_dir`` of
  its directory returned.
* ``write_atomic`` is durable when it returns: readers see either the old content or
  the whole new content, never a mix, even across a crash.
"""

from __future__ import annotations

import errno
import os
from typing import Protocol

#: How many bytes ``DiskFile.read(-1)`` reads per system call.
READ_CHUNK_BYTES = 1 << 20


class DiskFile(Protocol):
    def write(self, b: bytes | bytearray | memoryview) -> int: ...

    def read(self, n: int = -1) -> bytes: ...

    def seek(self, off: int) -> None: ...

    def tell(self) -> int: ...

    def sync(self) -> None: ...

    def truncate(self, size: int) -> None: ...

    def close(self) -> None: ...


class Disk(Protocol):
    def open_append(self, path: str) -> DiskFile: ...

    def open_read(self, path: str) -> DiskFile: ...

    def write_atomic(self, path: str, data: bytes) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def exists(self, path: str) -> bool: ...

    def remove(self, path: str) -> None: ...

    def makedirs(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...

    def size(self, path: str) -> int: ...


def read_whole(disk: Disk, path: str) -> bytes:
    """The whole content of ``path`` (a helper over ``open_read``)."""
    f = disk.open_read(path)
    try:
        return f.read()
    finally:
        f.close()


class RealFile:
    """A file descriptor with the DiskFile methods.

    Files opened for append always write at the end (O_APPEND); ``seek``/``read``
    are for files opened for reading. Short writes are retried until all bytes are in.
    """

    __slots__ = ("_fd", "path", "_closed")

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path
        self._closed = False

    def write(self, b: bytes | bytearray | memoryview) -> int:
        view = memoryview(b)
        total = len(view)
        done = 0
        while done < total:
            done += os.write(self._fd, view[done:])
        return total

    def read(self, n: int = -1) -> bytes:
        if n >= 0:
            parts = []
            left = n
            while left > 0:
                chunk = os.read(self._fd, left)
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
            return b"".join(parts)
        parts = []
        while True:
            chunk = os.read(self._fd, READ_CHUNK_BYTES)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def seek(self, off: int) -> None:
        os.lseek(self._fd, off, os.SEEK_SET)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def __del__(self) -> None:  # a leaked descriptor is a bug, but never leak the fd itself
        if not getattr(self, "_closed", True):
            self.close()


class RealDisk:
    """The Disk port backed by the operating system."""

    def open_append(self, path: str) -> RealFile:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        return RealFile(fd, path)

    def open_read(self, path: str) -> RealFile:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return RealFile(fd, path)

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        f = RealFile(fd, tmp)
        try:
            f.write(data)
            os.fsync(fd)
        finally:
            f.close()
        os.rename(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def remove(self, path: str) -> None:
        os.remove(path)

    def makedirs(self, path: str) -> None:
        """Create ``path`` and missing parents, durably (each new entry's parent is fsynced)."""
        missing = []
        p = os.path.abspath(path)
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, exist_ok=True)
        for created in reversed(missing):
            self.fsync_dir(os.path.dirname(created))

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:  # some filesystems refuse fsync on directories
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)

    def size(self, path: str) -> int:
        return os.stat(path).st_size
