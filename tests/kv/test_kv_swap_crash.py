"""Restore and defragment replace the store's data file crash-safely: a process killed
with SIGKILL at any step of MVCCStore.swap_in, or at a random moment of a run of
restores and defragmentations, leaves a store that reopens to the old or the new
state, never neither (the store directory never goes missing)."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from geokv.kv.store import MVCCStore
from geokv.kv.types import (
    ALARM_ACTION_ACTIVATE as ACTIVATE,
    ALARM_CORRUPT as CORRUPT,
    ALARM_NOSPACE as NOSPACE,
    Alarm,
    DeleteRange,
    Put,
)

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swap_child.py")
CHILD_TIMEOUT_S = 60.0
STEPS = ["synced", "closed", "renamed", "dir_synced", "reopened"]
NEW_FROM = STEPS.index("renamed")  # killed at or after this step: the new file is in place
KEYS = 400
RANDOM_KILLS = 6
RANDOM_KILL_SEED = 20261127
LOOP_ROUNDS_MAX = 100_000


def _fill(path: str, value: bytes, alarm: Alarm, extra_index: int) -> tuple:
    """A store with KEYS keys of ``value`` (and deleted garbage to defragment away)."""
    s = MVCCStore(path)
    index = 0
    items = []
    for i in range(KEYS):
        items.append(Put(b"k%04d" % i, value * 50))
        items.append(Put(b"g%04d" % i, b"x" * 500))
    items.append(DeleteRange(b"g", b"h"))
    items.append(alarm)
    items.extend(Put(b"pad", b"%d" % i) for i in range(extra_index))
    log = []
    for cmd in items:
        index += 1
        log.append((index, cmd))
    for i in range(0, len(log), 100):
        s.apply_batch(log[i:i + 100])
    state = _state(s)
    buf = io.BytesIO()
    s.snapshot(buf)
    s.close()
    return state, buf.getvalue()


def _state(s: MVCCStore) -> tuple:
    return s.applied_index, s.hash_kv()[0], s.alarms()


@pytest.fixture
def two_states(tmp_path):
    """Store directory in state A, and a snapshot file of a different state B."""
    a_state, _ = _fill(str(tmp_path / "store"), b"a", Alarm(ACTIVATE, 1, NOSPACE), 0)
    b_state, b_snap = _fill(str(tmp_path / "other"), b"b", Alarm(ACTIVATE, 2, CORRUPT), 7)
    assert a_state != b_state
    a_snap = tmp_path / "a.snap"
    s = MVCCStore(str(tmp_path / "store"))
    with open(a_snap, "wb") as f:
        s.snapshot(f)
    s.close()
    (tmp_path / "b.snap").write_bytes(b_snap)
    return tmp_path, a_state, b_state


def _run_child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, CHILD, *args], capture_output=True, timeout=CHILD_TIMEOUT_S)


def _reopen_state(path: str, write: bool = True) -> tuple:
    assert os.path.isdir(path), "the store directory is missing"
    s = MVCCStore(path)
    try:
        state = _state(s)
        if write:  # a write works on whatever file is in place
            s.apply_batch([(s.applied_index + 1, Put(b"after", b"crash"))])
        return state
    finally:
        s.close()


@pytest.mark.parametrize("step", STEPS)
def test_restore_killed_at_each_step(two_states, step):
    tmp_path, a_state, b_state = two_states
    store = str(tmp_path / "store")
    done = _run_child(store, "restore", str(tmp_path / "b.snap"), step)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    want = b_state if STEPS.index(step) >= NEW_FROM else a_state
    assert _reopen_state(store) == want
    assert not os.path.exists(store + ".restore"), "the scratch copy is cleaned up at open"


@pytest.mark.parametrize("step", STEPS)
def test_defragment_killed_at_each_step(two_states, step):
    tmp_path, a_state, _ = two_states
    store = str(tmp_path / "store")
    size_before = os.path.getsize(os.path.join(store, "data.mdb"))
    done = _run_child(store, "defrag", "-", step)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    size_after = os.path.getsize(os.path.join(store, "data.mdb"))
    if STEPS.index(step) >= NEW_FROM:
        assert size_after < size_before, "the compacted file is in place"
    else:
        assert size_after == size_before
    assert _reopen_state(store) == a_state


def test_killed_at_random_moments_of_restores_and_defrags(two_states):
    tmp_path, a_state, b_state = two_states
    store = str(tmp_path / "store")
    snaps = f"{tmp_path / 'a.snap'},{tmp_path / 'b.snap'}"
    rng = random.Random(RANDOM_KILL_SEED)
    seen = []
    for _ in range(RANDOM_KILLS):
        child = subprocess.Popen([sys.executable, CHILD, store, "loop", snaps, str(LOOP_ROUNDS_MAX)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"ready\n", child.stderr.read().decode()
            time.sleep(rng.uniform(0.0, 0.3))
            child.send_signal(signal.SIGKILL)
            child.wait(CHILD_TIMEOUT_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(CHILD_TIMEOUT_S)
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL, "the child ended before it was killed"
        state = _reopen_state(store, write=False)
        assert state in (a_state, b_state), state
        seen.append(state == b_state)
    print("killed in state B:", seen)
