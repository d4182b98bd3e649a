"""The real Disk and Clock ports do what the storage layer relies on."""

from __future__ import annotations

import os

import pytest

from geokv.ports import RealClock, RealDisk
from geokv.ports.disk import read_whole
from geokv.ports.faulty_disk import FaultyDisk


@pytest.fixture(params=["real", "faulty"])
def disk_root(request, tmp_path):
    if request.param == "real":
        return RealDisk(), str(tmp_path)
    d = FaultyDisk()
    d.makedirs("/root")
    return d, "/root"


def test_append_read_seek_truncate(disk_root):
    disk, root = disk_root
    disk.makedirs(f"{root}/a/b")
    f = disk.open_append(f"{root}/a/b/f")
    assert f.write(b"hello ") == 6 and f.write(memoryview(b"world")) == 5
    f.sync()
    f.truncate(8)
    f.write(b"!")
    f.close()
    assert read_whole(disk, f"{root}/a/b/f") == b"hello wo!"
    r = disk.open_read(f"{root}/a/b/f")
    r.seek(6)
    assert r.read(2) == b"wo" and r.tell() == 8 and r.read() == b"!"
    r.close()
    assert disk.size(f"{root}/a/b/f") == 9


def test_write_atomic_rename_remove_listdir(disk_root):
    disk, root = disk_root
    disk.write_atomic(f"{root}/x", b"one")
    disk.write_atomic(f"{root}/x", b"two")  # replaces whole
    assert read_whole(disk, f"{root}/x") == b"two"
    disk.rename(f"{root}/x", f"{root}/y")
    disk.fsync_dir(root)
    assert "y" in disk.listdir(root) and not disk.exists(f"{root}/x")
    disk.remove(f"{root}/y")
    assert not disk.exists(f"{root}/y")
    assert not [n for n in disk.listdir(root) if n.endswith(".tmp")]
    with pytest.raises(FileNotFoundError):
        disk.open_read(f"{root}/missing")


def test_real_disk_leaves_no_temp_file(tmp_path):
    RealDisk().write_atomic(str(tmp_path / "f"), b"data")
    assert os.listdir(tmp_path) == ["f"]


def test_real_clock_is_monotonic_and_wall_is_epoch():
    c = RealClock()
    a, b = c.monotonic_s(), c.monotonic_s()
    assert b >= a
    assert c.wall_s() > 1.6e9
