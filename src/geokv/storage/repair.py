"""Repairing a damaged WAL: the documented way back from ``WALCorrupt``.

A node refuses to start when a WAL record fails its checksum anywhere but in a torn
tail (the last, partly written record of the last segment, which recovery cuts off
by itself). It does not guess: records after the damage may be acknowledged writes.

1. Look first (changes nothing)::

       python -m geokv.storage.repair --data-dir DATA_DIR        # or: geokv wal repair

   prints every damaged segment and snapshot file, the file and offset where the log
   stops being readable, and what would be lost: the bytes, whole segments, and the
   entry index ranges and hard states found in the damaged region (by scanning for
   intact records past the damage). Exit status 1 means damage was found.

2. Cut the log at the damage::

       python -m geokv.storage.repair --data-dir DATA_DIR --truncate-at-corruption

   moves the damaged segment and every later segment (and any damaged snapshot file)
   into ``<storage dir>/wal-damaged-<UTC time>/`` (nothing is ever deleted), writes a
   copy of the damaged segment cut at the damage, appends the newest hard state
   found anywhere in the old log (so the node never votes twice in a term; its commit
   index is clamped to the shortened log) and checks that the storage now opens.

After a cut the node has lost the listed entries. If they were committed, the other
replicas still hold them and the leader sends them again; if this node's log was
needed for a quorum, prefer removing the member and adding it back empty.

``DATA_DIR`` may be the node's data directory (the storage is ``<data dir>/member/wal``)
or the storage directory itself (the one holding ``wal/`` and ``snap/``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

from geokv.ports.disk import Disk, RealDisk, read_whole
from geokv.raft.types import HardState

from . import records
from .framing import HEADER_BYTES, BadFrame, RecordType, check_frame, encode_frame, find_valid_frame, iter_frames
from .snapshot import decode_snapshot
from .wal import SegmentInfo, StorageCorrupt, list_segments

#: Most salvaged-record lines printed in a report (the totals are always printed).
REPORT_LINES_MAX = 40


@dataclass(slots=True)
class Damage:
    path: str
    offset: int
    reason: str


@dataclass(slots=True)
class Report:
    storage_dir: str
    segments: list[SegmentInfo]
    damage: Damage | None = None
    torn_tail: Damage | None = None
    damaged_snapshots: list[Damage] = field(default_factory=list)
    #: Index of the first damaged segment in ``segments`` (None: no damage).
    damaged_segment_pos: int | None = None
    lost_bytes: int = 0
    lost_segments: list[str] = field(default_factory=list)
    #: (first, last, term of first) of every intact entries record found past the damage.
    lost_entry_ranges: list[tuple[int, int, int]] = field(default_factory=list)
    lost_records: int = 0
    #: Newest hard state anywhere in the log, before or after the damage.
    newest_hard_state: tuple[int, int, int] | None = None
    kept_last_index: int = 0

    @property
    def healthy(self) -> bool:
        return self.damage is None and not self.damaged_snapshots


def find_storage_dir(disk: Disk, data_dir: str) -> str | None:
    for cand in (data_dir, os.path.join(data_dir, "member", "wal")):
        if disk.exists(os.path.join(cand, "wal")):
            return cand
    return None


def inspect(disk: Disk, storage_dir: str) -> Report:
    """Read every segment and snapshot file; describe any damage. Changes nothing."""
    wal_dir = f"{storage_dir}/wal"
    segs = list_segments(disk, wal_dir)
    rep = Report(storage_dir, segs)
    snap_dir = f"{storage_dir}/snap"
    if disk.exists(snap_dir):
        for f in _snapshot_files(disk, snap_dir):
            try:
                decode_snapshot(read_whole(disk, f), f)
            except StorageCorrupt as exc:
                rep.damaged_snapshots.append(Damage(exc.path, exc.offset, exc.reason))

    best_hs: tuple[int, int, int] | None = None

    def note_hs(payload: bytes) -> None:
        nonlocal best_hs
        try:
            hs = records.decode_hard_state(payload)
        except ValueError:
            return
        t = (hs.term, hs.vote, hs.commit)
        if best_hs is None or t[0] >= best_hs[0]:
            best_hs = t

    last_index = 0
    for pos, seg in enumerate(segs):
        if pos > 0 and seg.seq != segs[pos - 1].seq + 1 and rep.damage is None:
            rep.damage = Damage(seg.path, 0, f"segment seq {segs[pos - 1].seq + 1} is missing before this one")
            rep.damaged_segment_pos = pos
        data = read_whole(disk, seg.path)
        if rep.damage is not None:  # wholly past the damage: all of it is lost
            rep.lost_segments.append(seg.path)
            rep.lost_bytes += len(data)
            _salvage(data, 0, rep, note_hs)
            continue
        for item in iter_frames(data):
            if isinstance(item, BadFrame):
                is_last = pos == len(segs) - 1
                if is_last and find_valid_frame(data, item.offset + 1) is None:
                    rep.torn_tail = Damage(seg.path, item.offset, item.reason)
                else:
                    rep.damage = Damage(seg.path, item.offset, item.reason)
                    rep.damaged_segment_pos = pos
                    rep.lost_bytes += len(data) - item.offset
                    _salvage(data, item.offset + 1, rep, note_hs)
                break
            off, rtype, payload = item
            if rtype == RecordType.ENTRIES:
                try:
                    first, terms = records.decode_entries_terms(payload)
                    last_index = first + len(terms) - 1
                except ValueError as exc:
                    rep.damage = Damage(seg.path, off, str(exc))
                    rep.damaged_segment_pos = pos
                    rep.lost_bytes += len(data) - off
                    break
            elif rtype == RecordType.SNAPSHOT:
                try:
                    last_index = records.decode_snapshot_marker(payload)[0]
                except ValueError:
                    pass
            elif rtype == RecordType.HARD_STATE:
                note_hs(payload)
    rep.kept_last_index = last_index
    rep.newest_hard_state = best_hs
    return rep


def _snapshot_files(disk: Disk, snap_dir: str) -> list[str]:
    return [f"{snap_dir}/{n}" for n in disk.listdir(snap_dir) if n.endswith(".snap")]


def _salvage(data: bytes, start: int, rep: Report, note_hs) -> None:
    """Record the intact frames found at or after ``start`` (they are what a cut loses)."""
    pos = find_valid_frame(data, start)
    while pos is not None:
        r = check_frame(memoryview(data), pos)
        assert not isinstance(r, BadFrame)
        rtype, n = r
        payload = data[pos + HEADER_BYTES:pos + HEADER_BYTES + n]
        if rtype != RecordType.SEGMENT_HEADER:
            rep.lost_records += 1
        if rtype == RecordType.ENTRIES:
            try:
                first, terms = records.decode_entries_terms(payload)
                rep.lost_entry_ranges.append((first, first + len(terms) - 1, terms[0]))
            except ValueError:
                pass
        elif rtype == RecordType.HARD_STATE:
            note_hs(payload)
        end = pos + HEADER_BYTES + n
        nxt = check_frame(memoryview(data), end) if end < len(data) else None
        pos = end if nxt is not None and not isinstance(nxt, BadFrame) else find_valid_frame(data, end)


def describe(rep: Report) -> list[str]:
    lines = [f"storage: {rep.storage_dir} ({len(rep.segments)} WAL segments)"]
    for d in rep.damaged_snapshots:
        lines.append(f"DAMAGED snapshot file {d.path} at offset {d.offset}: {d.reason}")
    if rep.torn_tail is not None:
        t = rep.torn_tail
        lines.append(f"torn tail (normal after a crash, cut automatically when the node starts): "
                     f"{t.path} from offset {t.offset}: {t.reason}")
    if rep.damage is None:
        lines.append("WAL: no damage found" if not rep.damaged_snapshots else "WAL: no damage found in the WAL")
        return lines
    d = rep.damage
    lines.append(f"DAMAGED WAL: {d.path} at offset {d.offset}: {d.reason}")
    lines.append(f"a cut at the damage keeps the log up to index {rep.kept_last_index} and loses:")
    lines.append(f"  {rep.lost_bytes} bytes: {d.path} from offset {d.offset}"
                 + (f", and {len(rep.lost_segments)} later segment(s)" if rep.lost_segments else ""))
    for p in rep.lost_segments[:REPORT_LINES_MAX]:
        lines.append(f"    whole segment {p}")
    lines.append(f"  {rep.lost_records} intact record(s) found past the damage, with entries:")
    for first, last, term in rep.lost_entry_ranges[:REPORT_LINES_MAX]:
        lines.append(f"    indexes {first}..{last} (term {term})")
    if len(rep.lost_entry_ranges) > REPORT_LINES_MAX:
        lines.append(f"    ... {len(rep.lost_entry_ranges) - REPORT_LINES_MAX} more entry records")
    if rep.lost_entry_ranges:
        lo = min(r[0] for r in rep.lost_entry_ranges)
        hi = max(r[1] for r in rep.lost_entry_ranges)
        lo = min(lo, rep.kept_last_index + 1)
        lines.append(f"  entry indexes lost: {lo}..{hi} ({hi - lo + 1} entries; the log will end at "
                     f"{rep.kept_last_index})")
    else:
        lines.append("  no intact entry records past the damage (any there were too damaged to read)")
    if rep.newest_hard_state is not None:
        term, vote, commit = rep.newest_hard_state
        lines.append(f"  kept: newest hard state term={term} vote={vote} (commit clamped to the shortened log)")
    return lines


def truncate_at_corruption(disk: Disk, rep: Report, stamp: str | None = None) -> list[str]:
    """Move damaged files aside, cut the log at the damage; returns lines describing it."""
    assert not rep.healthy
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{rep.storage_dir}/wal-damaged-{stamp}"
    disk.makedirs(aside)
    out = [f"moving damaged files to {aside}"]
    wal_dir = f"{rep.storage_dir}/wal"
    for d in rep.damaged_snapshots:
        dst = f"{aside}/{os.path.basename(d.path)}"
        disk.rename(d.path, dst)
        out.append(f"  moved {d.path} -> {dst}")
    if rep.damage is not None:
        pos = rep.damaged_segment_pos
        assert pos is not None
        damaged = rep.segments[pos]
        prefix = b""
        if rep.damage.path == damaged.path and rep.damage.offset > 0:
            prefix = read_whole(disk, damaged.path)[:rep.damage.offset]
        for seg in rep.segments[pos:]:
            dst = f"{aside}/{os.path.basename(seg.path)}"
            disk.rename(seg.path, dst)
            out.append(f"  moved {seg.path} -> {dst}")
        tail = damaged if prefix else (rep.segments[pos - 1] if pos > 0 else None)
        if tail is not None and not prefix:
            prefix = read_whole(disk, tail.path)
        if tail is not None:
            if rep.newest_hard_state is not None:
                term, vote, commit = rep.newest_hard_state
                hs = HardState(term, vote, min(commit, rep.kept_last_index))
                prefix += encode_frame(RecordType.HARD_STATE, records.encode_hard_state(hs))
            disk.write_atomic(tail.path, prefix)
            out.append(f"  wrote {tail.path}: the log cut at offset {rep.damage.offset if tail is damaged else 'end'}"
                       f", ending at index {rep.kept_last_index}")
        disk.fsync_dir(wal_dir)
    disk.fsync_dir(rep.storage_dir)
    disk.fsync_dir(aside)
    return out


def main(argv: list[str] | None = None, disk: Disk | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m geokv.storage.repair",
                                 description="Inspect (and optionally cut) a damaged geokv WAL.")
    ap.add_argument("--data-dir", help="the node's data directory (or its storage directory)")
    ap.add_argument("data_dir_arg", nargs="?", metavar="DATA_DIR", help="same as --data-dir")
    ap.add_argument("--truncate-at-corruption", action="store_true",
                    help="move damaged files aside and cut the log at the damage")
    args = ap.parse_args(argv)
    if (args.data_dir is None) == (args.data_dir_arg is None):
        ap.error("give the data directory once: --data-dir DATA_DIR (or DATA_DIR)")
    args.data_dir = args.data_dir or args.data_dir_arg
    disk = disk or RealDisk()
    storage_dir = find_storage_dir(disk, args.data_dir)
    if storage_dir is None:
        print(f"error: no geokv storage under {args.data_dir!r} (looked for wal/ and member/wal/wal/)",
              file=sys.stderr)
        return 2
    try:
        rep = inspect(disk, storage_dir)
    except OSError as exc:
        print(f"error: cannot read {storage_dir}: {exc}", file=sys.stderr)
        return 2
    for line in describe(rep):
        print(line)
    if rep.healthy:
        return 0
    if not args.truncate_at_corruption:
        print("nothing changed; rerun with --truncate-at-corruption to cut the log there")
        return 1
    try:
        for line in truncate_at_corruption(disk, rep):
            print(line)
    except OSError as exc:
        print(f"error: the repair stopped half-way, nothing was deleted: {exc}", file=sys.stderr)
        return 2
    from .raft_storage import DiskRaftStorage

    try:
        st = DiskRaftStorage.open(disk, storage_dir)
    except StorageCorrupt as exc:
        print(f"the storage still does not open: {exc}")
        return 1
    hs, _ = st.initial_state()
    print(f"repaired: the storage opens; log {st.first_index()}..{st.last_index()}, "
          f"snapshot {st.snapshot().metadata.index}, term {hs.term}, vote {hs.vote}, commit {hs.commit}")
    st.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
