"""Crash, replay and snapshot rules of the store (see the store module docstring)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from geokv.kv.store import MVCCStore
from geokv.kv.types import Compact, DeleteRange, LeaseGrant, LeaseRevoke, MemberSet, Noop, Put, Range, Txn

from .conftest import Applier


def command_log(n: int) -> list:
    """A deterministic log of n mixed commands (Raft indexes 1..n)."""
    cmds = []
    for i in range(n):
        if i % 17 == 3:
            cmds.append(LeaseGrant(1000 + i, 30))
        elif i % 17 == 9:
            cmds.append(Put(b"leased/%d" % i, b"v", lease=1000 + (i - 6)))
        elif i % 17 == 12:
            cmds.append(LeaseRevoke(1000 + (i - 9)))
        elif i % 13 == 5:
            cmds.append(DeleteRange(b"k/%03d" % (i % 50), b"k/%03d" % (i % 50 + 3)))
        elif i % 31 == 30:
            cmds.append(Compact(max(1, i // 2)))
        elif i % 11 == 4:
            cmds.append(Txn([], [Put(b"t/%d" % (i % 7), b"%d" % i), DeleteRange(b"k/%03d" % (i % 50))], []))
        elif i % 29 == 0:
            cmds.append(MemberSet({"id": i % 3 + 1, "name": "m%d" % i}))
        else:
            cmds.append(Put(b"k/%03d" % (i % 50), b"value-%d" % i))
    return list(enumerate(cmds, start=1))


def state_of(store: MVCCStore):
    return (
        store.applied_index,
        store.revision,
        store.compact_revision,
        store.hash_kv(),
        store.leases(),
        store.members(),
        store.events(store.compact_revision),
    )


def apply_in_batches(store: MVCCStore, log: list, batch: int) -> list:
    results = []
    for i in range(0, len(log), batch):
        results.extend(store.apply_batch(log[i : i + batch]))
    return results


def snapshot_bytes(store: MVCCStore) -> bytes:
    buf = io.BytesIO()
    store.snapshot(buf)
    return buf.getvalue()


def test_replicas_with_different_batching_end_byte_identical(tmp_dir):
    """Apply is deterministic down to the bytes, compaction progress included."""
    log = command_log(300)
    a = MVCCStore(tmp_dir + "/a", compact_chunk_log_rows=3, compact_noop_chunk_log_rows=3)
    b = MVCCStore(tmp_dir + "/b", compact_chunk_log_rows=3, compact_noop_chunk_log_rows=3)
    try:
        ra = apply_in_batches(a, log, 1)
        rb = apply_in_batches(b, log, 37)
        assert ra == rb
        assert snapshot_bytes(a) == snapshot_bytes(b)
        assert state_of(a) == state_of(b)
    finally:
        a.close()
        b.close()


def test_replay_after_losing_the_last_transactions_is_idempotent(tmp_dir):
    """LMDB may come back older than the WAL; replaying the whole log converges."""
    log = command_log(250)
    full = MVCCStore(tmp_dir + "/full")
    full_results = apply_in_batches(full, log, 10)
    # A replica whose LMDB lost everything after index 120: a copy taken at that point.
    lost = MVCCStore(tmp_dir + "/lost")
    apply_in_batches(lost, log[:120], 10)
    os.makedirs(tmp_dir + "/copy")
    lost.env.copy(tmp_dir + "/copy")
    apply_in_batches(lost, log[120:], 10)
    lost.close()
    shutil.rmtree(tmp_dir + "/lost")
    os.rename(tmp_dir + "/copy", tmp_dir + "/lost")
    back = MVCCStore(tmp_dir + "/lost")
    try:
        assert back.applied_index == 120
        replay = apply_in_batches(back, log, 25)  # the runtime may replay more than needed
        assert all(res is None and ev == [] for res, ev in replay[:120])
        assert replay[120:] == full_results[120:]
        assert state_of(back) == state_of(full)
        # and a second full replay is a no-op
        again = apply_in_batches(back, log, 50)
        assert all(res is None for res, _ in again)
        assert state_of(back) == state_of(full)
    finally:
        back.close()
        full.close()


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from geokv.kv.store import MVCCStore
    from geokv.kv.types import Put
    store = MVCCStore(sys.argv[1])
    index = store.applied_index
    for b in range(int(sys.argv[2])):
        items = []
        for _ in range(50):
            index += 1
            items.append((index, Put(b"key/%05d" % (index % 700), b"value at %d" % index)))
        store.apply_batch(items)
        if b == int(sys.argv[3]):
            print(store.applied_index, flush=True)
    # never synced, never closed: killed like a crashing process
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_after_unsynced_commits_keeps_applied_index_and_data_consistent(tmp_dir):
    path = tmp_dir + "/crash"
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, path, "40", "39"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    committed = int(proc.stdout.split()[0])
    store = MVCCStore(path)
    try:
        # A process crash loses nothing LMDB committed, even unsynced (the page cache has it).
        assert store.applied_index == committed == 2000
        assert store.revision == committed + 1
        assert not store.unclean_reboot  # same boot: the file is trustworthy
        # the data is exactly that of the applied index
        for i in range(committed - 699, committed + 1):
            kv = store.get(b"key/%05d" % (i % 700))
            assert kv.value == b"value at %d" % i and kv.mod_revision == i + 1
        # replaying the tail of the WAL changes nothing
        tail = [(i, Put(b"key/%05d" % (i % 700), b"value at %d" % i)) for i in range(committed - 99, committed + 1)]
        h = store.hash_kv()
        assert all(res is None for res, _ in store.apply_batch(tail))
        assert store.hash_kv() == h
    finally:
        store.close()


def test_unclean_reboot_is_detected_from_the_boot_marker(tmp_dir):
    path = tmp_dir + "/reboot"
    s = MVCCStore(path)
    Applier(s).ok(Put(b"a", b"1"))
    s.sync()
    s.env.close()  # "crash" without close(): the marker still says open
    with open(os.path.join(path, "geokv-open"), "w") as f:
        f.write("open 00000000-another-boot")
    s2 = MVCCStore(path)
    assert s2.unclean_reboot
    assert s2.get(b"a").value == b"1"
    s2.close()
    s3 = MVCCStore(path)
    assert not s3.unclean_reboot
    s3.close()


def test_snapshot_restore_round_trip_and_refuses_damage(tmp_dir):
    log = command_log(200)
    src = MVCCStore(tmp_dir + "/src")
    apply_in_batches(src, log, 20)
    data = snapshot_bytes(src)
    dst = MVCCStore(tmp_dir + "/dst")
    Applier(dst).ok(Put(b"only-here", b"x"))
    before = state_of(dst)
    try:
        for damaged in (
            data[:-1],  # truncated trailer
            data[: len(data) // 2],  # truncated frames
            data[:40] + bytes([data[40] ^ 1]) + data[41:],  # a flipped bit
            b"not a snapshot at all, clearly",
        ):
            with pytest.raises(ValueError):
                dst.restore(io.BytesIO(damaged))
            assert state_of(dst) == before
        dst.restore(io.BytesIO(data))
        assert state_of(dst) == state_of(src)
        assert dst.get(b"only-here") is None
        # the restored store keeps applying the log where the snapshot ended
        more = [(i, Noop() if i % 2 else Put(b"after", b"%d" % i)) for i in range(201, 221)]
        assert src.apply_batch(more) == dst.apply_batch(more)
        assert state_of(dst) == state_of(src)
    finally:
        src.close()
        dst.close()


def test_hash_is_the_same_before_and_after_physical_compaction(tmp_dir):
    s = MVCCStore(tmp_dir + "/h", compact_chunk_log_rows=1, compact_noop_chunk_log_rows=1)
    kv = Applier(s)
    try:
        for i in range(60):
            kv.ok(Put(b"k%d" % (i % 6), b"v%d" % i))
        kv.ok(DeleteRange(b"k0"))
        kv.ok(Compact(s.revision - 5))
        assert s.compaction_pending
        h_pending = s.hash_kv()
        ev_pending = s.events(s.compact_revision)
        read_pending = s.range(Range(b"k", b"l", revision=s.compact_revision))
        while s.compaction_pending:
            kv.ok(Noop())
        assert s.hash_kv()[0] == h_pending[0]
        assert s.events(s.compact_revision) == ev_pending
        assert s.range(Range(b"k", b"l", revision=s.compact_revision)) == read_pending
        assert ev_pending[0].kv.mod_revision == s.compact_revision
        assert all(e.prev_kv is None for e in ev_pending if e.kv.mod_revision == s.compact_revision)
        assert all(e.prev_kv is not None for e in ev_pending if e.kv.mod_revision > s.compact_revision)
    finally:
        s.close()


def test_readers_in_other_threads_see_whole_commands(tmp_dir):
    """Reads run in their own LMDB snapshot: never half a txn, never data ahead of the
    revision they report, while another thread applies."""
    import threading

    s = MVCCStore(tmp_dir + "/threads")
    stop = threading.Event()
    problems: list = []

    def reader() -> None:
        while not stop.is_set():
            res = s.range(Range(b"counter", b"mirror\x00"))
            if res.kvs:
                values = {kv.key: kv.value for kv in res.kvs}
                if values.get(b"counter") != values.get(b"mirror"):
                    problems.append(values)
                if max(kv.mod_revision for kv in res.kvs) > res.revision:
                    problems.append(("ahead", res))
            evs = s.events(max(1, res.revision - 3))
            if evs and evs[-1].kv.mod_revision > s.range(Range(b"counter")).revision:
                problems.append(("events ahead", evs[-1]))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        index = 0
        for i in range(300):
            index += 1
            v = b"%d" % i
            s.apply_batch([(index, Txn([], [Put(b"counter", v), Put(b"mirror", v)], []))])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        s.close()
    assert problems == []
