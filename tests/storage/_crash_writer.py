"""Writer process for test_crash_process: appends, fsyncs, reports what is durable.

Usage: python _crash_writer.py DIR SEED. After every sync it writes one line
``<last index> <term>`` to stdout: everything up to that entry is durable.
Entry data is a pure function of (term, index), so a reader can tell invented or
damaged entries from real ones. Runs until killed (or MAX_ENTRIES appended).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys

from geokv.ports.disk import RealDisk
from geokv.raft.types import ConfState, Entry, HardState
from geokv.storage import DiskRaftStorage

#: The writer stops on its own after this many entries (the test kills it long before).
MAX_ENTRIES = 2_000_000
SEGMENT_BYTES = 64 << 10
CACHE_BYTES = 32 << 10


def payload(term: int, index: int) -> bytes:
    h = hashlib.blake2b(f"{term}:{index}".encode(), digest_size=8).digest()
    return f"{term}:{index}:".encode() + h * (1 + h[0] % 64)


def snapshot_data(index: int, term: int) -> bytes:
    """The writer's snapshot "state": names the (index, term) it was taken at."""
    return b"snapshot@%d/%d" % (index, term)


def main() -> None:
    d, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    st = DiskRaftStorage.open(RealDisk(), d, segment_bytes_max=SEGMENT_BYTES, cache_bytes_max=CACHE_BYTES)
    hs, _ = st.initial_state()
    last = st.last_index()
    term = max(hs.term, st.term(last), 1)
    written = 0
    while written < MAX_ENTRIES:
        if last >= st.first_index() and rng.random() < 0.1:
            term += 1  # a new leader overwrites a suffix (never shrinking the log here)
            start = rng.randint(max(st.first_index(), last - 8), last)
            end = last + rng.randint(1, 10)
        else:
            start, end = last + 1, last + rng.randint(1, 40)
        ents = [Entry(term, i, data=payload(term, i)) for i in range(start, end + 1)]
        st.save(HardState(term, 1, max(0, start - 1)), ents)
        last = end
        written += len(ents)
        if rng.random() < 0.7:
            st.sync()
            os.write(1, f"{last} {term}\n".encode())
        if rng.random() < 0.02 and last - 20 > st.snapshot().metadata.index and last - 20 >= st.first_index():
            snap_at = last - 20
            # create_snapshot fsyncs the WAL, so entries past the last report become durable
            # unreported; the snapshot may then cover the last reported entry (the test
            # accepts that only if the snapshot's term is high enough).
            st.create_snapshot(snap_at, ConfState((1,)), snapshot_data(snap_at, st.term(snap_at)))
            st.compact(snap_at)


if __name__ == "__main__":
    main()
