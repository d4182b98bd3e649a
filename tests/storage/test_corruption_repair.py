"""Bytes flipped in the middle of the log stop the node with WALCorrupt (file and
offset); the repair tool reports the loss and, when asked, gets the node going."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geokv.ports.disk import RealDisk
from geokv.raft.types import Entry, HardState
from geokv.storage import DiskRaftStorage, SnapshotCorrupt, WALCorrupt
from geokv.storage.wal import list_segments

#: Longest one run of the repair CLI may take (a fresh interpreter on a loaded machine).
REPAIR_CLI_TIMEOUT_S = 120


def _ents(lo, hi, term=1):
    return [Entry(term, i, data=b"%d-" % i * 40) for i in range(lo, hi)]


def _make_node(tmp_path, n=300):
    """A node data dir in the runtime's layout (<data dir>/member/wal)."""
    data_dir = str(tmp_path / "node.geokv")
    storage_dir = os.path.join(data_dir, "member", "wal")
    st = DiskRaftStorage.open(RealDisk(), storage_dir, segment_bytes_max=8 << 10)
    for lo in range(1, n + 1, 10):
        st.save(HardState(3, 2, lo - 1), _ents(lo, lo + 10, 3))
    st.sync()
    st.close()
    return data_dir, storage_dir


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x5A]))


def _repair(data_dir, *extra):
    return subprocess.run([sys.executable, "-m", "geokv.storage.repair", "--data-dir", data_dir, *extra],
                          capture_output=True, text=True, timeout=REPAIR_CLI_TIMEOUT_S)


def _tree(d):
    return sorted((os.path.relpath(os.path.join(r, f), d), os.path.getsize(os.path.join(r, f)))
                  for r, _, fs in os.walk(d) for f in fs)


def test_flipped_byte_mid_log_is_reported_and_repaired(tmp_path):
    data_dir, storage_dir = _make_node(tmp_path)
    segs = list_segments(RealDisk(), f"{storage_dir}/wal")
    assert len(segs) >= 5
    victim = segs[len(segs) // 2]
    flip_at = os.path.getsize(victim.path) // 2
    _flip(victim.path, flip_at)

    with pytest.raises(WALCorrupt) as ei:
        DiskRaftStorage.open(RealDisk(), storage_dir)
    assert ei.value.path == victim.path and 0 < ei.value.offset <= flip_at
    assert "geokv.storage.repair" in str(ei.value)

    before = _tree(data_dir)
    r = _repair(data_dir)
    assert r.returncode == 1, r.stderr
    assert f"DAMAGED WAL: {victim.path} at offset {ei.value.offset}" in r.stdout
    assert "entry indexes lost:" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert _tree(data_dir) == before  # looking changes nothing

    r = _repair(data_dir, "--truncate-at-corruption")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired: the storage opens" in r.stdout
    aside = [n for n in os.listdir(storage_dir) if n.startswith("wal-damaged-")]
    assert len(aside) == 1
    moved = sorted(os.listdir(os.path.join(storage_dir, aside[0])))
    assert moved == sorted(os.path.basename(s.path) for s in segs[len(segs) // 2:])  # kept, not deleted

    st = DiskRaftStorage.open(RealDisk(), storage_dir)
    last = st.last_index()
    assert 0 < last < 300
    assert f"keeps the log up to index {last}" in r.stdout
    assert st.entries(1, last + 1) == _ents(1, last + 1, 3)
    hs = st.initial_state()[0]
    assert (hs.term, hs.vote) == (3, 2) and hs.commit <= last  # no second vote in term 3
    st.save(HardState(4, 1, last), _ents(last + 1, last + 5, 4))  # the node goes on
    st.sync()
    st.close()


def test_damaged_segment_header_is_repaired_by_dropping_that_segment(tmp_path):
    data_dir, storage_dir = _make_node(tmp_path)
    segs = list_segments(RealDisk(), f"{storage_dir}/wal")
    _flip(segs[2].path, 3)
    r = _repair(data_dir, "--truncate-at-corruption")
    assert r.returncode == 0, r.stdout + r.stderr
    st = DiskRaftStorage.open(RealDisk(), storage_dir)
    assert st.entries(1, st.last_index() + 1) == _ents(1, st.last_index() + 1, 3)
    st.close()


def test_healthy_store_and_bad_usage(tmp_path):
    data_dir, storage_dir = _make_node(tmp_path, n=20)
    r = _repair(data_dir)
    assert r.returncode == 0 and "no damage" in r.stdout
    r = _repair(str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no geokv storage" in r.stderr and "Traceback" not in r.stderr


def test_damaged_snapshot_file_is_named(tmp_path):
    data_dir, storage_dir = _make_node(tmp_path, n=50)
    st = DiskRaftStorage.open(RealDisk(), storage_dir)
    st.create_snapshot(40, None, b"state" * 100)
    st.close()
    snap = os.path.join(storage_dir, "snap", os.listdir(os.path.join(storage_dir, "snap"))[0])
    _flip(snap, os.path.getsize(snap) - 10)
    with pytest.raises(SnapshotCorrupt) as ei:
        DiskRaftStorage.open(RealDisk(), storage_dir)
    assert ei.value.path == snap
    r = _repair(data_dir)
    assert r.returncode == 1 and f"DAMAGED snapshot file {snap}" in r.stdout


def test_data_dir_may_be_given_positionally_once(tmp_path):
    data_dir, _ = _make_node(tmp_path, n=20)
    r = subprocess.run([sys.executable, "-m", "geokv.storage.repair", data_dir],
                       capture_output=True, text=True, timeout=REPAIR_CLI_TIMEOUT_S)
    assert r.returncode == 0 and "no damage" in r.stdout
    r = subprocess.run([sys.executable, "-m", "geokv.storage.repair"], capture_output=True, text=True, timeout=REPAIR_CLI_TIMEOUT_S)
    assert r.returncode == 2 and "give the data directory" in r.stderr and "Traceback" not in r.stderr
