"""Real processes killed with SIGKILL at random moments: every entry reported durable
survives, torn tails are cut, and no entry is ever invented."""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time

import pytest

from geokv.ports.disk import RealDisk
from geokv.storage import DiskRaftStorage
from geokv.storage.framing import RecordType, encode_frame
from geokv.storage.wal import list_segments

from ._crash_writer import payload, snapshot_data

WRITER = os.path.join(os.path.dirname(__file__), "_crash_writer.py")
#: Kill/reopen rounds on one data directory.
ROUNDS = 12
#: Longest a round waits for the writer's first report before giving up.
FIRST_REPORT_WAIT_S = 30.0


def _run_and_kill(d: str, seed: int, run_s: float) -> list[tuple[int, int]]:
    """Start a writer, SIGKILL it after ~run_s, return every durable report it made."""
    proc = subprocess.Popen([sys.executable, WRITER, d, str(seed)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    reports: list[tuple[int, int]] = []
    buf = b""
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = None
        hard_deadline = time.monotonic() + FIRST_REPORT_WAIT_S
        while time.monotonic() < (deadline or hard_deadline):
            if sel.select(timeout=0.01):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                if deadline is None:  # start the clock once the writer is really writing
                    deadline = time.monotonic() + run_s
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
        buf += rest  # lines written before the kill are still in the pipe: durable too
        assert proc.returncode == -signal.SIGKILL, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in buf.decode().splitlines():
        idx, term = line.split()
        reports.append((int(idx), int(term)))
    return reports


def _tear_tail(d: str, rng: random.Random) -> None:
    """Append the start of a record to the last segment, as a write cut by power loss."""
    seg = list_segments(RealDisk(), f"{d}/wal")[-1]
    frame = encode_frame(RecordType.ENTRIES, b"x" * rng.randint(1, 400))
    with open(seg.path, "ab") as f:
        f.write(frame[:rng.randint(1, len(frame) - 1)])


def _check(d: str, last_report: tuple[int, int] | None) -> int:
    """Reopen ``d``: nothing invented or damaged, the last durable report is kept.

    An entry reported durable is kept either in the log with a term at least the
    reported one (a later leader may have overwritten it), or, once compacted, by the
    snapshot: the writer's snapshots are taken after entries that were never reported
    (``create_snapshot`` fsyncs them), so a snapshot may cover the last report. Log
    terms never go down, so then the snapshot's term must be at least the reported
    term, and the snapshot must be the one the writer took at that (index, term).
    """
    st = DiskRaftStorage.open(RealDisk(), d)
    try:
        first, last = st.first_index(), st.last_index()
        snap = st.snapshot()
        md = snap.metadata
        assert first == md.index + 1, f"log starts at {first}, not right after the snapshot at {md.index}"
        if md.index > 0:
            assert snap.data == snapshot_data(md.index, md.term), (
                f"snapshot {md.index}/{md.term} was invented or damaged: {snap.data[:40]!r}")
        ents = st.entries(first, last + 1) if last >= first else []
        prev_term = st.term(first - 1) if first > 1 else 0
        for e in ents:
            assert e.data == payload(e.term, e.index), f"entry {e.index} was invented or damaged"
            assert e.term >= prev_term, f"terms go down at {e.index}"
            prev_term = e.term
        if last_report is not None:
            ri, rt = last_report
            assert last >= ri, f"durable entry {ri} lost (log ends at {last})"
            if ri < first:
                assert md.term >= rt, (f"durable entry {ri} of term {rt} lost: compacted into "
                                       f"snapshot {md.index} of term {md.term}")
            else:
                assert st.term(ri) >= rt, f"durable entry {ri} of term {rt} lost"
            assert st.initial_state()[0].term >= rt
        return last
    finally:
        st.close()


@pytest.mark.slow
def test_sigkill_never_loses_durable_entries_nor_invents_any(tmp_path):
    rng = random.Random(20261127)
    d = str(tmp_path / "node")
    last_report = None
    lasts = []
    for round_ in range(ROUNDS):
        reports = _run_and_kill(d, seed=round_, run_s=rng.uniform(0.02, 0.3))
        if reports:
            last_report = reports[-1]
        if rng.random() < 0.4:
            _tear_tail(d, rng)
        lasts.append(_check(d, last_report))
    assert lasts[-1] > 100  # the writers did real work across the rounds


def test_the_check_fails_on_lost_entries_in_the_log_or_under_a_snapshot(tmp_path):
    """_check is not a free pass: a report the reopened store does not cover fails it,
    whether the reported entry is still in the log or compacted into the snapshot."""
    from geokv.raft.types import ConfState, Entry, HardState

    d = str(tmp_path / "node")
    st = DiskRaftStorage.open(RealDisk(), d)
    try:
        ents = [Entry(1 if i <= 50 else 2, i, data=payload(1 if i <= 50 else 2, i)) for i in range(1, 101)]
        st.save(HardState(2, 1, 0), ents)
        st.sync()
        st.create_snapshot(80, ConfState((1,)), snapshot_data(80, 2))
        st.compact(80)
    finally:
        st.close()
    assert _check(d, (70, 2)) == 100  # compacted, but the snapshot (term 2) covers it
    assert _check(d, (90, 2)) == 100
    for report, why in [((70, 3), "compacted into snapshot 80 of term 2"),
                        ((90, 3), "durable entry 90 of term 3 lost"),
                        ((101, 2), "durable entry 101 lost")]:
        with pytest.raises(AssertionError, match=why):
            _check(d, report)
