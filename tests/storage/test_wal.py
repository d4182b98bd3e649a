"""The WAL: replay order, segment rollover, group commit, torn tails vs. damage."""

from __future__ import annotations

import os
import threading

import pytest

from geokv.ports.disk import RealDisk
from geokv.ports.faulty_disk import FaultyDisk
from geokv.storage.framing import HEADER_BYTES, RecordType
from geokv.storage.wal import WAL, WALCorrupt, list_segments


def _open(disk, d, seg=1 << 20):
    got: list[tuple[int, bytes]] = []
    wal = WAL.open(disk, d, lambda t, p, seq, off: got.append((t, p)), segment_bytes_max=seg)
    return wal, got


@pytest.fixture(params=["faulty", "real"])
def disk_dir(request, tmp_path):
    if request.param == "faulty":
        return FaultyDisk(), "/w"
    return RealDisk(), str(tmp_path / "w")


def test_records_replay_in_order(disk_dir):
    disk, d = disk_dir
    wal, _ = _open(disk, d)
    want = [(RecordType.ENTRIES if i % 3 else RecordType.HARD_STATE, f"r{i}".encode()) for i in range(100)]
    for t, p in want:
        wal.append(t, p)
    assert wal.sync() == 100 == wal.durable_lsn
    wal.close()
    _, got = _open(disk, d)
    assert got == want


def test_rollover_makes_many_segments_each_starting_with_the_hard_state(disk_dir):
    disk, d = disk_dir
    wal, _ = _open(disk, d, seg=300)
    wal.append(RecordType.HARD_STATE, b"hs-1")
    for i in range(50):
        wal.append(RecordType.ENTRIES, b"e" * 40 + str(i).encode())
    wal.sync()
    wal.close()
    segs = list_segments(disk, d)
    assert len(segs) > 5 and [s.seq for s in segs] == list(range(len(segs)))
    _, got = _open(disk, d, seg=300)
    entries = [p for t, p in got if t == RecordType.ENTRIES]
    assert entries == [b"e" * 40 + str(i).encode() for i in range(50)]
    # every segment replays the hard state first, so old segments can be dropped
    assert sum(1 for t, p in got if t == RecordType.HARD_STATE) == len(segs)


def test_nothing_is_durable_before_sync_returns():
    disk = FaultyDisk()
    wal, _ = _open(disk, "/w")
    lsn1 = wal.append(RecordType.ENTRIES, b"a")[0]
    assert wal.sync() == lsn1
    lsn2 = wal.append(RecordType.ENTRIES, b"b")[0]
    wal.flush()  # handed to the OS, but not fsynced
    assert wal.durable_lsn == lsn1 < lsn2
    disk.crash()
    _, got = _open(disk, "/w")
    assert got == [(RecordType.ENTRIES, b"a")]


#: Longest a test thread waits for the others at a barrier or to finish.
THREAD_WAIT_S = 120.0


def _run_threads(target, n):
    errors = []

    def run(k):
        try:
            target(k)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(THREAD_WAIT_S)
    assert not any(t.is_alive() for t in ts), "a writer thread hung"
    assert not errors, errors


def test_group_commit_one_fsync_covers_every_record_appended_before_it(tmp_path):
    """Deterministic under any load: in each round every thread appends, then (after a
    barrier) every thread syncs; the first fsync covers all of them, the rest wait."""
    wal, _ = _open(RealDisk(), str(tmp_path / "w"))
    threads_n, rounds = 8, 20
    barrier = threading.Barrier(threads_n, timeout=THREAD_WAIT_S)

    def writer(k):
        for i in range(rounds):
            lsn = wal.append(RecordType.ENTRIES, f"{k}:{i}".encode())[0]
            barrier.wait()
            assert wal.sync(lsn) >= lsn

    _run_threads(writer, threads_n)
    assert wal.durable_lsn == threads_n * rounds
    assert wal.stats_syncs == rounds  # one fsync per round, not one per record
    wal.close()
    _, got = _open(RealDisk(), str(tmp_path / "w"))
    assert sorted(p for _, p in got) == sorted(f"{k}:{i}".encode() for k in range(threads_n) for i in range(rounds))


def test_group_commit_from_many_free_running_threads_loses_nothing(tmp_path):
    wal, _ = _open(RealDisk(), str(tmp_path / "w"))
    threads_n, per_thread = 8, 50

    def writer(k):
        for i in range(per_thread):
            lsn = wal.append(RecordType.ENTRIES, f"{k}:{i}".encode())[0]
            assert wal.sync(lsn) >= lsn

    _run_threads(writer, threads_n)
    assert wal.durable_lsn == threads_n * per_thread
    assert wal.stats_syncs <= threads_n * per_thread  # how many fewer depends on timing
    wal.close()
    _, got = _open(RealDisk(), str(tmp_path / "w"))
    assert sorted(p for _, p in got) == sorted(f"{k}:{i}".encode() for k in range(threads_n) for i in range(per_thread))


def test_torn_tail_is_cut_and_appending_continues(tmp_path):
    d = str(tmp_path / "w")
    wal, _ = _open(RealDisk(), d)
    wal.append(RecordType.ENTRIES, b"first")
    wal.append(RecordType.ENTRIES, b"second-record")
    wal.sync()
    wal.close()
    path = list_segments(RealDisk(), d)[-1].path
    size = os.path.getsize(path)
    os.truncate(path, size - 5)  # the last record lost its last bytes
    wal, got = _open(RealDisk(), d)
    assert got == [(RecordType.ENTRIES, b"first")]
    assert wal.torn_tail is not None and wal.torn_tail.dropped_bytes == HEADER_BYTES + 13 - 5
    wal.append(RecordType.ENTRIES, b"third")
    wal.sync()
    wal.close()
    _, got = _open(RealDisk(), d)
    assert got == [(RecordType.ENTRIES, b"first"), (RecordType.ENTRIES, b"third")]


def test_zero_filled_tail_is_a_torn_tail(tmp_path):
    d = str(tmp_path / "w")
    wal, _ = _open(RealDisk(), d)
    wal.append(RecordType.ENTRIES, b"x")
    wal.sync()
    wal.close()
    path = list_segments(RealDisk(), d)[-1].path
    with open(path, "ab") as f:
        f.write(bytes(4096))
    _, got = _open(RealDisk(), d)
    assert got == [(RecordType.ENTRIES, b"x")]


def _write_records(d, n=40, seg=400):
    wal, _ = _open(RealDisk(), d, seg=seg)
    offsets = [wal.append(RecordType.ENTRIES, f"record-{i:04d}".encode() * 3)[1:] for i in range(n)]
    wal.sync()
    wal.close()
    return offsets


def test_damage_in_the_middle_of_the_last_segment_is_not_truncated(tmp_path):
    d = str(tmp_path / "w")
    _write_records(d, n=20, seg=1 << 20)
    path = list_segments(RealDisk(), d)[-1].path
    off = 200
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x40]))
    with pytest.raises(WALCorrupt) as ei:
        _open(RealDisk(), d)
    err = ei.value
    assert err.path == path and err.offset <= off < err.offset + 100
    assert "valid record follows" in str(err) and "repair" in str(err)
    assert os.path.getsize(path) > off  # nothing was cut


def test_damage_in_an_older_segment_names_file_and_offset(tmp_path):
    d = str(tmp_path / "w")
    _write_records(d)
    segs = list_segments(RealDisk(), d)
    assert len(segs) >= 3
    victim = segs[1].path
    with open(victim, "r+b") as f:
        f.seek(HEADER_BYTES + 40)
        f.write(b"\xff\xff")
    with pytest.raises(WALCorrupt) as ei:
        _open(RealDisk(), d)
    assert ei.value.path == victim and 0 < ei.value.offset <= HEADER_BYTES + 40


def test_damaged_last_record_of_an_older_segment_is_damage_not_a_tail(tmp_path):
    d = str(tmp_path / "w")
    _write_records(d)
    victim = list_segments(RealDisk(), d)[0].path
    os.truncate(victim, os.path.getsize(victim) - 3)
    with pytest.raises(WALCorrupt) as ei:
        _open(RealDisk(), d)
    assert ei.value.path == victim and "not the last segment" in str(ei.value)


def test_missing_segment_is_detected(tmp_path):
    d = str(tmp_path / "w")
    _write_records(d)
    segs = list_segments(RealDisk(), d)
    os.remove(segs[1].path)
    with pytest.raises(WALCorrupt, match="missing"):
        _open(RealDisk(), d)


def test_read_frame_reads_back_any_record_and_detects_damage(tmp_path):
    d = str(tmp_path / "w")
    offsets = _write_records(d)
    wal, _ = _open(RealDisk(), d, seg=400)
    for i in (0, 7, 39):
        seq, off = offsets[i]
        assert wal.read_frame(seq, off) == (RecordType.ENTRIES, f"record-{i:04d}".encode() * 3)
    seq, off = offsets[39]
    lsn, seq2, off2 = wal.append(RecordType.ENTRIES, b"fresh")
    assert wal.read_frame(seq2, off2) == (RecordType.ENTRIES, b"fresh")  # unflushed: flushed first
    wal.close()
