"""FaultyDisk models power loss: unsynced writes and undurable names vanish, the last
write may be torn, and reads can be made to fail. Then: the storage recovers from
exactly those faults."""

from __future__ import annotations

import random

import pytest

from geokv.ports.faulty_disk import FaultyDisk
from geokv.raft.types import Entry, HardState
from geokv.storage import DiskRaftStorage
from geokv.storage.wal import WAL, WALFailed


def _disk_with_file(synced: bytes, unsynced: list[bytes]) -> FaultyDisk:
    d = FaultyDisk()
    d.makedirs("/d")
    f = d.open_append("/d/f")
    d.fsync_dir("/d")
    f.write(synced)
    f.sync()
    for chunk in unsynced:
        f.write(chunk)
    return d


def _content(d: FaultyDisk, path: str = "/d/f") -> bytes:
    return d.open_read(path).read()


def test_unsynced_writes_are_lost_on_crash():
    d = _disk_with_file(b"durable", [b"-lost", b"-also"])
    assert _content(d) == b"durable-lost-also"
    d.crash()
    assert _content(d) == b"durable"


def test_torn_crash_keeps_a_prefix_of_the_last_write():
    d = _disk_with_file(b"durable", [b"-kept", b"-torn-write"])
    d.crash(torn_keep_bytes=3)
    assert _content(d) == b"durable-kept-to"


def test_random_crash_leaves_a_prefix_of_the_writes_or_zeros():
    for seed in range(50):
        d = _disk_with_file(b"D", [b"aaaa", b"bbbb", b"cccc"])
        d.crash(random.Random(seed))
        got = _content(d)
        full = b"Daaaabbbbcccc"
        zeroed = [full[:i] + bytes(j) for i in range(1, 14) for j in range(0, 5)]
        assert got.startswith(b"D") and (full.startswith(got) or got in zeroed), got


def test_new_file_without_dir_fsync_vanishes():
    d = FaultyDisk()
    d.makedirs("/d")
    f = d.open_append("/d/new")
    f.write(b"x")
    f.sync()
    d.crash()
    assert not d.exists("/d/new")


def test_write_atomic_is_durable_and_rename_needs_dir_fsync():
    d = FaultyDisk()
    d.makedirs("/d")
    d.write_atomic("/d/a", b"content")
    d.rename("/d/a", "/d/b")
    d.crash()
    assert d.listdir("/d") == ["a"]
    d.rename("/d/a", "/d/b")
    d.fsync_dir("/d")
    d.crash()
    assert d.listdir("/d") == ["b"] and _content(d, "/d/b") == b"content"


def test_handles_from_before_a_crash_are_dead():
    d = _disk_with_file(b"x", [])
    f = d.open_read("/d/f")
    d.crash()
    with pytest.raises(OSError):
        f.read()


def test_injected_read_errors():
    d = _disk_with_file(b"x", [])
    d.fail_reads(lambda p: p.endswith("/f"))
    with pytest.raises(OSError):
        d.open_read("/d/f").read()
    d.fail_reads(None)
    assert _content(d) == b"x"


# --- the storage on top of it -------------------------------------------------------------

def _ents(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(term, i, data=f"{term}:{i}".encode() * 5) for i in range(lo, hi)]


def test_storage_loses_only_unsynced_entries():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=2048)
    s.save(HardState(1, 1, 5), _ents(1, 40, 1))
    s.sync()
    s.save(HardState(1, 1, 30), _ents(40, 60, 1))
    d.crash()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=2048)
    assert s.last_index() == 39
    assert s.entries(1, 40) == _ents(1, 40, 1)
    assert s.initial_state()[0] == HardState(1, 1, 5)


def test_storage_recovers_a_torn_last_write_and_keeps_appending():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n")
    s.save(HardState(1, 1, 0), _ents(1, 10, 1))
    s.sync()
    s.save(None, _ents(10, 20, 1))
    s._wal.flush()  # the OS gets the entries record in one write ...
    s.save(HardState(1, 1, 9), [])
    s._wal.flush()  # ... and the hard state record in another, which the crash tears
    d.crash(torn_keep_bytes=5)
    s = DiskRaftStorage.open(d, "/n")
    assert s.torn_tail is not None
    assert s.last_index() == 19 and s.initial_state()[0] == HardState(1, 1, 0)
    s.save(HardState(2, 2, 19), _ents(20, 25, 2))
    s.sync()
    d.crash()
    s = DiskRaftStorage.open(d, "/n")
    assert s.entries(1, 25) == _ents(1, 20, 1) + _ents(20, 25, 2)
    assert s.torn_tail is None


def test_failed_fsync_makes_the_wal_refuse_further_work():
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n")
    s.save(HardState(1, 1, 0), _ents(1, 5, 1))
    d.fail_syncs(lambda p: p.endswith(".wal"))
    with pytest.raises(WALFailed):
        s.sync()
    with pytest.raises(WALFailed):
        s.save(None, _ents(5, 6, 1))


@pytest.mark.parametrize("seed", range(40))
def test_random_crashes_never_lose_synced_or_invent_entries(seed):
    """Random batches (with suffix overwrites), random syncs, random torn crashes.

    After each crash the recovered log must equal the state after some prefix of the
    records written since the last sync, and never anything before the last sync. A
    save writes its entries before its hard state, so "new entries, old hard state"
    is a state too."""
    rng = random.Random(seed)
    d = FaultyDisk()
    s = DiskRaftStorage.open(d, "/n", segment_bytes_max=rng.choice([600, 3000, 1 << 20]),
                             cache_bytes_max=rng.choice([200, 1 << 20]))
    log: list[Entry] = []
    hs = HardState()
    term = 1
    for _ in range(6):
        states = [(list(log), hs)]  # states since the last sync; [0] is durable
        for _ in range(rng.randrange(1, 12)):
            if log and rng.random() < 0.3:  # overwrite a suffix with a new term
                term += 1
                start = rng.randrange(max(1, hs.commit + 1), len(log) + 2)
            else:
                start = len(log) + 1
            new = _ents(start, start + rng.randrange(1, 8), term)
            log = log[:start - 1] + new
            states.append((list(log), hs))
            hs = HardState(term, 1, min(hs.commit + rng.randrange(3), len(log)))
            s.save(hs, new)
            states.append((list(log), hs))
            if rng.random() < 0.3:
                s.sync()
                states = [(list(log), hs)]
        if rng.random() < 0.5:
            s._wal.flush()
        d.crash(rng)
        s = DiskRaftStorage.open(d, "/n", segment_bytes_max=600, cache_bytes_max=rng.choice([200, 1 << 20]))
        got = (s.entries(1, s.last_index() + 1) if s.last_index() else [], s.initial_state()[0])
        assert got in states, (got, states[0])
        log, hs = got
        term = max([term] + [e.term for e in log])
