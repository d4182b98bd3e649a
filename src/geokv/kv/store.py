"""MVCCStore: etcd's MVCC keyspace, leases and membership table on LMDB.

Durability rule: after a crash LMDB may lose its last transactions but is never a mix
of two indexes; the runtime replays the WAL from ``applied_index + 1``.

In detail.  LMDB runs with ``sync=False, metasync=False``: a commit reaches the OS page
cache but is not fsynced.  The Raft WAL is the durable record, and the applied Raft
index is written in the same LMDB transaction as the data it produced, so LMDB's state
is always "everything up to ``applied_index``":

* after a process crash (kill -9) nothing committed is lost: the page cache survives;
* after an OS crash or power loss LMDB may come back at an older ``applied_index``,
  with exactly the data of that index, and the runtime replays the WAL from
  ``applied_index + 1``; ``apply_batch`` skips indexes it already has, so replaying
  more than needed is harmless;
* LMDB only promises an intact (uncorrupted) file after an OS crash without fsync on
  filesystems that keep write order, so the store records the boot id while it is
  open: ``unclean_reboot`` is True when the store was last opened during another boot
  and never closed, and the runtime must then rebuild it from its latest Raft snapshot
  (``restore``) plus the WAL instead of trusting the file;
* ``sync()`` makes everything committed so far durable.  The WAL may only be compacted
  up to an index whose LMDB state is durable: read ``applied_index``, call ``sync()``,
  and compact the WAL up to that index at most.

Determinism.  Every replica applies the same commands in the same order with the same
results, byte-identical database contents included.  Compaction is logical at once
(older reads fail from the Compact command on) and physical in bounded chunks: after
each applied command at most ``compact_chunk_log_rows`` change-log rows per key the
command changed are processed (``compact_noop_chunk_log_rows`` after a Noop, and never
more than that), so it keeps up with writes without holding them for long, and its
progress depends only on the log.  The space quota is checked against a
logical byte count kept in the same transaction, not against the file size.

Limits.  Keys are at most ``types.MAX_KEY_BYTES`` (464) bytes (LMDB's key size limit
less the encoding, see layout); longer keys get InvalidArgument.  A Put, a Txn with
puts or a LeaseGrant gets NoSpace when ``data_bytes`` plus its size would pass
``quota_bytes``; deletes and compaction always work, so space can be freed.

Threads.  One thread applies; reads may come from any thread.  Each read sees one
committed snapshot: scans open their own LMDB read transaction; point reads share one
cached read transaction (under a lock) for as long as no batch has started since it
began, which is exactly what a new transaction would see (see _point_reader).  Reads
take revision and compact revision from a cache keyed by the LMDB txn id of the commit
that wrote them (see _read_state).
"""

from __future__ import annotations

import gc
import os
import struct
import threading

import lmdb

from geokv import errors
from geokv.kv import layout
from geokv.kv.compaction import compact_chunk
from geokv.kv.layout import _PAD, HDR, HDR_BYTES, M32, M64, key_prefix, scan_live, user_key
from geokv.kv.maintenance import Maintenance
from geokv.kv.reads import collect_events, kv_from, range_kvs
from geokv.kv.tables import _ID, LeaseMemberTables, alarms_in
from geokv.kv.types import (
    MAX_KEY_BYTES,
    MAX_TXN_OPS_DEFAULT,
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    Alarm,
    Event,
    KeyValue,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    MemberRemove,
    MemberSet,
    Noop,
    NoopResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
    validate_command,
)

QUOTA_BYTES_DEFAULT = 8 << 30
"""Logical bytes (keys + records + change log) above which writes get NoSpace."""
MAP_SIZE_PER_QUOTA = 4
"""LMDB map size is this many times the quota (B-tree pages carry overhead)."""
COMPACT_CHUNK_LOG_ROWS = 2
"""Change-log rows a pending compaction processes after an applied command, per key the
command changed (at least one): twice the rows the command adds, so compaction keeps
up with any write load while adding a bounded amount of work to each command."""
COMPACT_NOOP_CHUNK_LOG_ROWS = 256
"""Rows processed after a Noop, and the most after any command: the runtime may
propose Noops while ``compaction_pending`` and the cluster is idle to finish a large
compaction sooner."""
APPLY_PAUSES_GC = True
"""apply_batch keeps Python's cyclic garbage collector from running while it applies:
a command allocates several container objects per key it changes (KeyValues, events,
results) that all live until the batch returns, so collections in the middle of a
large command only walk them, and the rest of the heap, again and again (measured: a
40,000-key DeleteRange costs about a sixth less CPU; bench/RESULTS.md).  The collector
is re-enabled when the batch returns, or raises."""
LMDB_WRITEMAP = False
"""Open LMDB with MDB_WRITEMAP (see the durability rule in the module docstring)."""
EVENTS_LIMIT_DEFAULT = 10_000
"""Events one events() call returns at most (whole revisions only, see events())."""
EVENTS_SCAN_ROWS_MAX = 100_000
"""Change-log rows one events_page() call looks at, matching or not."""

_STATE_KEY = b"state"
_NO_SNAP = (-1, 1, 0)  # (txn id, revision, compact revision) that matches no txn
_KEY_TOO_LONG = f"etcdserver: key is too long (at most {MAX_KEY_BYTES} bytes)"
_STATE = struct.Struct(">QQQQQ12s")  # applied, revision, compact_rev, compact_todo, data_bytes, compact_pos
_EVENT_PUT = 0
_EVENT_DELETE = 1
_hdr_unpack_from = HDR.unpack_from
_hdr_pack = HDR.pack
_version_suffix = layout.version_suffix
_rev_pack = layout.REV.pack
_inv_main_from = struct.Struct(">Q").unpack_from
_MAX_PREFIX_BYTES = layout.MAX_PREFIX_BYTES  # the encoded key of MAX_KEY_BYTES
_log_key = layout.log_key


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class _Discard(list):
    """An events list that keeps nothing (apply_batch(events=False))."""

    __slots__ = ()

    def append(self, _item) -> None:
        pass

    def extend(self, _items) -> None:
        pass


_DISCARD = _Discard()


class MVCCStore(LeaseMemberTables, Maintenance):
    """The replicated state machine: see the module docstring for the rules it keeps."""

    def __init__(
        self,
        path: str,
        *,
        map_size: int | None = None,
        quota_bytes: int = QUOTA_BYTES_DEFAULT,
        max_txn_ops: int = MAX_TXN_OPS_DEFAULT,
        compact_chunk_log_rows: int = COMPACT_CHUNK_LOG_ROWS,
        compact_noop_chunk_log_rows: int = COMPACT_NOOP_CHUNK_LOG_ROWS,
        writemap: bool = LMDB_WRITEMAP,
    ) -> None:
        """``max_txn_ops``, ``quota_bytes`` and the two compaction chunk sizes must be
        equal on all replicas: they shape what commands do and what the file holds."""
        assert compact_chunk_log_rows >= 1 and compact_noop_chunk_log_rows >= 1
        self.compact_chunk_log_rows = compact_chunk_log_rows
        self.compact_noop_chunk_log_rows = compact_noop_chunk_log_rows
        self.path = path
        self.writemap = writemap
        self.quota_bytes = quota_bytes
        self.max_txn_ops = max_txn_ops
        self.map_size = map_size if map_size is not None else max(quota_bytes * MAP_SIZE_PER_QUOTA, 64 << 20)
        os.makedirs(path, exist_ok=True)
        # Point reads reuse one read txn and cursor while no commit has happened since
        # it began (see _point_reader); the lock gives it to one thread at a time.
        self._point_lock = threading.Lock()
        self._want_events = True  # apply_batch(events=...) of the batch being applied
        self._point = None
        self.unclean_reboot = self._mark_open()
        self._remove_scratch_dirs()  # left by a crash during restore or defragment
        self._open_env()

    # --- lifecycle --------------------------------------------------------------------

    def _open_env(self) -> None:
        # No reader may pair a txn id of the new environment with the old one's state,
        # nor reuse a txn of the old one (closing the environment ended it).
        self._snap = _NO_SNAP
        with self._point_lock:
            self._point = None
        self.env = lmdb.open(
            self.path,
            map_size=self.map_size,
            max_dbs=8,
            sync=False,
            metasync=False,
            writemap=self.writemap,
            readahead=False,
            max_readers=256,
        )
        env = self.env
        self._kv = env.open_db(b"kv")
        self._log = env.open_db(b"log")
        self._lease = env.open_db(b"lease")
        self._lkeys = env.open_db(b"lease_keys")
        self._member = env.open_db(b"member")
        self._meta = env.open_db(b"meta")
        self._alarm = env.open_db(b"alarm")
        self._dbs = {b"kv": self._kv, b"log": self._log, b"lease": self._lease, b"lease_keys": self._lkeys,
                     b"member": self._member, b"meta": self._meta, b"alarm": self._alarm}
        env.reader_check()  # free reader slots left by crashed processes
        self._load_state()

    def _load_state(self) -> None:
        with self.env.begin(db=self._meta) as txn:
            raw = txn.get(_STATE_KEY)
            snap_id = txn.id()
            alarms = alarms_in(txn, self._alarm)
        self._alarms_committed = alarms
        self._alarms_pending = None
        if raw is None:
            # An empty store is at revision 1, as in etcd: the first write makes revision 2.
            self._applied, self._rev, self._crev, self._ctodo, self._data_bytes = 0, 1, 0, 0, 0
            self._cpos = _log_key(0, 0)
        else:
            self._applied, self._rev, self._crev, self._ctodo, self._data_bytes, self._cpos = _STATE.unpack(raw)
        self._snap = (snap_id, self._rev, self._crev)
        self._committed = (self._applied, self._rev, self._crev)

    def _state_bytes(self) -> bytes:
        return _STATE.pack(self._applied, self._rev, self._crev, self._ctodo, self._data_bytes, self._cpos)

    def _marker_path(self) -> str:
        return os.path.join(self.path, "geokv-open")

    def _mark_open(self) -> bool:
        """Record this boot's id; True if the store was left open during another boot."""
        marker = self._marker_path()
        unclean = False
        try:
            with open(marker) as f:
                previous = f.read().strip()
            unclean = previous.startswith("open ") and previous[5:] != _boot_id()
        except FileNotFoundError:
            pass
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            f.write("open " + _boot_id())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)
        return unclean

    def sync(self) -> None:
        """Make every committed transaction durable (fsync data and meta pages)."""
        self.env.sync(True)

    def close(self) -> None:
        if self.env is None:
            return
        self._drop_point_reader()
        self.env.sync(True)
        self.env.close()
        self.env = None
        with open(self._marker_path(), "w") as f:
            f.write("closed")
            f.flush()
            os.fsync(f.fileno())

    def __enter__(self) -> MVCCStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- state ------------------------------------------------------------------------

    # The three below are those of the last commit: a thread that reads them while
    # another one is inside apply_batch never sees an index or revision whose data a
    # read could not see yet.

    @property
    def applied_index(self) -> int:
        return self._committed[0]

    @property
    def revision(self) -> int:
        return self._committed[1]

    @property
    def compact_revision(self) -> int:
        return self._committed[2]

    @property
    def compaction_pending(self) -> bool:
        """True while a logical compaction still has rows to remove physically."""
        return self._ctodo != 0

    @property
    def data_bytes(self) -> int:
        """Logical size the quota applies to (keys, records and change-log rows)."""
        return self._data_bytes

    def db_size(self) -> int:
        """Bytes of the LMDB file in use (pages up to the highest allocated one)."""
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]

    def db_size_in_use(self) -> int:
        """Bytes of the pages that hold data (the rest of db_size() is free pages)."""
        with self.env.begin() as txn:
            stats = [txn.stat(db) for db in self._dbs.values()]
        stats.append(self.env.stat())  # the main database, which names the others
        pages = sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"] for st in stats)
        return (pages + 2) * stats[-1]["psize"]  # + the two LMDB meta pages

    # --- apply ------------------------------------------------------------------------

    def apply_batch(self, items: list[tuple[int, object]], *,
                    events: bool = True) -> list[tuple[object, list[Event]]]:
        """Apply (raft_index, command) pairs in one LMDB write transaction.

        Returns one (result or GeoKVError, events) pair per item, in order; an item whose
        index is <= applied_index was applied before and gets (None, []).  A user error
        leaves the state unchanged except for the applied index.  Any other exception is a
        bug: the whole batch is rolled back and the exception propagates.

        ``events=False``: no Event objects are built (every item gets ``[]``); the state
        and the change log are exactly the same. For an applier with nobody watching:
        whoever wants the history later reads it from the change log (``events()``).
        This is most of a large DeleteRange's memory (an Event and two KeyValues per key).
        """
        out: list[tuple[object, list[Event]]] = []
        handlers = self._handlers
        self._want_events = events
        # Until this batch is published below, no read may take the cached state or
        # reuse the cached point-read txn: one that began after the commit must see
        # it (a thread's reads never go back in time).  Dropping the cached txn also
        # keeps it from pinning the snapshot this batch replaces.
        self._snap = _NO_SNAP
        if self._point is not None:
            self._drop_point_reader()
        gc_paused = APPLY_PAUSES_GC and gc.isenabled()
        if gc_paused:
            gc.disable()
        try:
            with self.env.begin(write=True) as txn:
                self._txn = txn
                self._cur = txn.cursor(self._kv)
                self._logcur = txn.cursor(self._log)
                cur, logcur = self._cur, self._logcur
                for index, cmd in items:
                    if index <= self._applied:
                        out.append((None, []))
                        continue
                    if type(cmd) is Put and not (cmd.lease or cmd.ignore_value or cmd.ignore_lease):
                        # The hot path of the write load, a plain Put, inlined: the same
                        # steps and errors as _apply_put and _put (a lone Put is the
                        # first change of its revision, so its prev_kv is the live
                        # version found by the seek).
                        key, value = cmd.key, cmd.value
                        n = len(key)
                        if not n:
                            result = errors.EmptyKey()
                        elif self._data_bytes + n + len(value) > self.quota_bytes:
                            result = errors.NoSpace()
                        elif n > MAX_KEY_BYTES:
                            result = errors.InvalidArgument(_KEY_TOO_LONG)
                        else:
                            rev = self._rev + 1
                            prefix = key + _PAD[n] if n <= 16 else key_prefix(key)
                            prev = None
                            if cur.set_range(prefix):
                                k, rec = cur.item()
                                if rec and k.startswith(prefix):
                                    create, version, old_lease = _hdr_unpack_from(rec)
                                    prev = KeyValue(key, create, M64 - _inv_main_from(k, len(k) - 12)[0], version,
                                                    rec[HDR_BYTES:], old_lease)
                                    version += 1
                                    if old_lease:
                                        txn.delete(_ID.pack(old_lease) + key, db=self._lkeys)
                            if prev is None:
                                create, version = rev, 1
                            ckey = prefix + _rev_pack(M64 - rev, M32)
                            rec = _hdr_pack(create, version, 0) + value
                            cur.put(ckey, rec)
                            if not logcur.put(_rev_pack(rev, 0), key, append=True):
                                raise AssertionError(f"change-log row {rev}/0 is not after the last one")
                            self._data_bytes += len(ckey) + len(rec) + 12 + n
                            self._rev = rev
                            result = PutResult(rev, prev if cmd.prev_kv else None)
                            self._applied = index
                            if self._ctodo:
                                self._compact_chunk(min(self.compact_noop_chunk_log_rows, self.compact_chunk_log_rows))
                            out.append((result, [Event(_EVENT_PUT, KeyValue(key, create, rev, version, value, 0), prev)]
                                                 if events else []))
                            continue
                        self._applied = index
                        if self._ctodo:
                            self._compact_chunk(min(self.compact_noop_chunk_log_rows, self.compact_chunk_log_rows))
                        out.append((result, []))
                        continue
                    evs: list[Event] = [] if events else _DISCARD
                    self._events = evs
                    self._wrev = self._rev + 1
                    self._sub = 0
                    try:
                        result = handlers[type(cmd)](self, cmd, index)
                    except errors.GeoKVError as e:
                        assert self._sub == 0, "a user error after a write would leave a partial command"
                        result = e
                    changes = self._sub
                    if changes:
                        self._rev = self._wrev
                    self._applied = index
                    if self._ctodo:
                        noop_rows = self.compact_noop_chunk_log_rows
                        if type(cmd) is Noop:
                            self._compact_chunk(noop_rows)
                        else:
                            self._compact_chunk(min(noop_rows, self.compact_chunk_log_rows * (changes or 1)))
                    out.append((result, evs if events else []))
                # Every write txn writes the state row, so each commit gets a txn id of
                # its own and the read snapshot cache below can never pair an id with
                # the state of another commit.
                txn.put(_STATE_KEY, self._state_bytes(), db=self._meta)
                snap_id = txn.id()
            # Published only after the commit: a reader whose snapshot is this commit
            # finds its (revision, compact_revision) here instead of reading the state
            # row; any other reader's txn id differs and it reads the row.
            self._snap = (snap_id, self._rev, self._crev)
            self._committed = (self._applied, self._rev, self._crev)
            if self._alarms_pending is not None:
                self._alarms_committed, self._alarms_pending = self._alarms_pending, None
        except BaseException:
            self._load_state()
            raise
        finally:
            self._txn = self._cur = self._logcur = self._events = None
            if gc_paused:
                gc.enable()
        return out

    # Each handler runs inside apply_batch's write transaction; it raises GeoKVError only
    # before its first write, and records each change by bumping self._sub.

    def _apply_put(self, p: Put, index: int) -> PutResult:
        key = p.key
        if not key:
            raise errors.EmptyKey()
        if p.ignore_value or p.ignore_lease:
            validate_command(p)
        if p.lease and self._txn.get(_ID.pack(p.lease), db=self._lease) is None:
            raise errors.LeaseNotFound()
        if self._data_bytes + len(key) + len(p.value) > self.quota_bytes:
            raise errors.NoSpace()
        prev = self._put(p)
        return PutResult(self._wrev, prev if p.prev_kv else None)

    def _put(self, p: Put) -> KeyValue | None:
        """Write one put at (self._wrev, self._sub); returns the previous live kv.

        The hot path of every write: one seek for the current version, one kv row and
        one appended change-log row, both through the batch's cursors.
        """
        key = p.key
        if len(key) > MAX_KEY_BYTES:
            raise errors.InvalidArgument(_KEY_TOO_LONG)
        prefix = key_prefix(key)
        cur = self._cur
        rev = self._wrev
        prev = event_prev = None
        if cur.set_range(prefix):
            k, rec = cur.item()
            if not k.startswith(prefix):
                k = rec = b""
        else:
            k = rec = b""
        if rec:
            create, version, old_lease = _hdr_unpack_from(rec)
            prev = event_prev = KeyValue(key, create, M64 - _inv_main_from(k, len(k) - 12)[0], version,
                                         rec[HDR_BYTES:], old_lease)
            version += 1
            if prev.mod_revision == rev:
                event_prev = self._prev_before(prefix, key)
        elif p.ignore_value or p.ignore_lease:
            raise errors.KeyNotFound()
        else:
            create, version, old_lease = rev, 1, 0
            if k and M64 - _inv_main_from(k, len(k) - 12)[0] == rev:
                event_prev = self._prev_before(prefix, key)  # deleted earlier in this txn
        value = prev.value if p.ignore_value else p.value
        lease = old_lease if p.ignore_lease else p.lease
        sub = self._sub
        ckey = prefix + _rev_pack(M64 - rev, M32 - sub)  # layout.version_suffix, inlined
        rec = _hdr_pack(create, version, lease) + value
        cur.put(ckey, rec)
        # Log keys only grow, so appending fills pages instead of splitting them.
        if not self._logcur.put(_rev_pack(rev, sub), key, append=True):
            raise AssertionError(f"change-log row {rev}/{sub} is not after the last one")
        self._data_bytes += len(ckey) + len(rec) + 12 + len(key)
        if lease != old_lease:
            txn = self._txn
            if old_lease:
                txn.delete(_ID.pack(old_lease) + key, db=self._lkeys)
            if lease:
                txn.put(_ID.pack(lease) + key, b"", db=self._lkeys)
        self._sub = sub + 1
        self._events.append(Event(_EVENT_PUT, KeyValue(key, create, rev, version, value, lease), event_prev))
        return prev

    def _prev_before(self, prefix: bytes, key: bytes) -> KeyValue | None:
        """The key's live version before the revision being written (etcd's watch prev_kv
        is the state at revision - 1, even when this txn already wrote the key)."""
        for p, ckey, rec in scan_live(self._cur, key, b"", self._wrev - 1):
            return kv_from(p, ckey, rec, key)
        return None

    def _apply_delete(self, d: DeleteRange, index: int) -> DeleteResult:
        validate_command(d)
        deleted, prev_kvs = self._delete(d.key, d.range_end, d.prev_kv)
        return DeleteResult(self._wrev if deleted else self._rev, deleted, prev_kvs)

    def _delete(self, key: bytes, range_end: bytes, want_prev: bool) -> tuple[int, list[KeyValue]]:
        n, prev_kvs = self._tombstones(scan_live(self._cur, key, range_end, 0), key if not range_end else None,
                                       keep=want_prev)
        return n, (prev_kvs if want_prev else [])

    def _tombstones(self, victims, key: bytes | None = None, keep: bool = True) -> tuple[int, list[KeyValue]]:
        """Delete the live versions ``victims`` ((prefix, composite key, record) in key
        order, as scan_live yields them; may be a scan of the batch's kv cursor) at
        (self._wrev, self._sub...); returns their KeyValues.  ``key``: the user key
        when there is a single victim known by name.

        The cost of a large DeleteRange is here, per key: one tombstone row, one
        change-log row and one event.  Nothing is written until the scan is done
        (each record is dropped as soon as its KeyValue is built, so a large delete
        holds one copy of the deleted values, the prev_kvs); then the rows go in with
        one putmulti per database (the log rows appended).  Returns (count, kvs);
        with ``keep=False`` and events off (``apply_batch(events=False)``) no
        KeyValue is built at all and kvs is empty.
        """
        rev, sub = self._wrev, self._sub
        inv_rev = M64 - rev
        want_events = self._want_events
        build = keep or want_events
        events = self._events
        append_event = events.append
        kv_rows: list[tuple[bytes, bytes]] = []
        log_rows: list[tuple[bytes, bytes]] = []
        add_kv_row, add_log_row = kv_rows.append, log_rows.append
        kvs: list[KeyValue] = []
        add_kv = kvs.append
        lease_rows: list[bytes] = []
        added_bytes = 0
        redone: list[int] = []  # victims this txn wrote before (prev_kv needs a lookup)
        for prefix, ckey, rec in victims:
            k = key if key is not None else user_key(prefix)
            if build:
                create, version, lease = _hdr_unpack_from(rec)
                mod = M64 - _inv_main_from(ckey, len(ckey) - 12)[0]
                kv = KeyValue(k, create, mod, version, rec[HDR_BYTES:], lease)
                add_kv(kv)
                if want_events:
                    if mod == rev:
                        redone.append(len(events))
                    append_event(Event(_EVENT_DELETE, KeyValue(k, 0, rev, 0, b"", 0), kv))
            else:
                lease = _hdr_unpack_from(rec)[2]
            tkey = prefix + _rev_pack(inv_rev, M32 - sub)
            add_kv_row((tkey, b""))
            add_log_row((_rev_pack(rev, sub), k))
            added_bytes += len(tkey) + 12 + len(k)
            if lease:
                lease_rows.append(_ID.pack(lease) + k)
            sub += 1
        n = len(kv_rows)
        if not n:
            return 0, kvs
        for i in redone:
            # etcd's prev_kv is the key at revision - 1, before this txn's own writes.
            ev = events[i]
            k = ev.kv.key
            ev.prev_kv = self._prev_before(key_prefix(k), k)
        if self._cur.putmulti(kv_rows, dupdata=False) != (n, n):
            raise AssertionError(f"tombstones of revision {rev} overwrote rows")
        if self._logcur.putmulti(log_rows, dupdata=False, append=True) != (n, n):
            raise AssertionError(f"change-log rows of revision {rev} are not after the last one")
        if lease_rows:
            txn, lkeys = self._txn, self._lkeys
            for row in lease_rows:
                txn.delete(row, db=lkeys)
        self._data_bytes += added_bytes
        self._sub = sub
        return n, kvs

    def _apply_range(self, r: Range, index: int) -> RangeResult:
        validate_command(r)
        return self._range(self._cur, r, self._rev)

    def _apply_txn(self, t: Txn, index: int) -> TxnResult:
        validate_command(t, self.max_txn_ops)
        # As etcd does: every compare on the chosen path, nested ones included, is judged
        # against the state before the txn, and the requests on that path are checked
        # before anything is written, so a failing txn writes nothing.
        path = self._txn_path(t)
        put_bytes = self._check_path(t, path, puts=True)
        self._check_path(t, path, puts=False)
        if put_bytes:
            self._check_quota(put_bytes)
        responses = self._exec_txn(t, path)
        rev = self._wrev if self._sub else self._rev
        return TxnResult(rev, path[0], responses)

    def _txn_path(self, t: Txn) -> tuple[bool, list]:
        ok = all(self._compare(c) for c in t.compare)
        branch = t.success if ok else t.failure
        return ok, [self._txn_path(op) for op in branch if type(op) is Txn]

    def _check_path(self, t: Txn, path: tuple[bool, list], puts: bool) -> int:
        """etcd's pre-apply checks of the ops on the chosen path: puts first (over the
        whole path, nested txns included), then ranges.  Returns the bytes put."""
        nested = iter(path[1])
        put_bytes = 0
        for op in t.success if path[0] else t.failure:
            ot = type(op)
            if ot is Put:
                if not puts:
                    continue
                put_bytes += len(op.key) + len(op.value) + 1
                if len(key_prefix(op.key)) > _MAX_PREFIX_BYTES:
                    raise errors.InvalidArgument(_KEY_TOO_LONG)
                if op.ignore_value or op.ignore_lease:
                    if next(scan_live(self._cur, op.key, b"", 0), None) is None:
                        raise errors.KeyNotFound()
                if op.lease and self._txn.get(_ID.pack(op.lease), db=self._lease) is None:
                    raise errors.LeaseNotFound()
            elif ot is Range:
                if puts:
                    continue
                if op.revision > self._rev:
                    raise errors.FutureRev()
                if 0 < op.revision < self._crev:
                    raise errors.Compacted()
            elif ot is Txn:
                put_bytes += self._check_path(op, next(nested), puts)
        return put_bytes

    def _exec_txn(self, t: Txn, path: tuple[bool, list]) -> list:
        nested = iter(path[1])
        responses = []
        for op in t.success if path[0] else t.failure:
            ot = type(op)
            if ot is Put:
                prev = self._put(op)
                responses.append(PutResult(self._wrev, prev if op.prev_kv else None))
            elif ot is DeleteRange:
                deleted, prev_kvs = self._delete(op.key, op.range_end, op.prev_kv)
                responses.append(DeleteResult(self._wrev if self._sub else self._rev, deleted, prev_kvs))
            elif ot is Range:
                responses.append(self._range(self._cur, op, self._wrev if self._sub else self._rev))
            else:
                sub_path = next(nested)
                inner = self._exec_txn(op, sub_path)
                responses.append(TxnResult(self._wrev if self._sub else self._rev, sub_path[0], inner))
        return responses

    def _compare(self, c: Compare) -> bool:
        kvs = [kv_from(p, k, r) for p, k, r in scan_live(self._cur, c.key, c.range_end, 0)]
        if not kvs:
            if c.target == 3:  # VALUE: a missing key has no value to compare, always false
                return False
            kvs = [KeyValue(c.key)]
        target, result = c.target, c.result
        for kv in kvs:
            if target == 0:
                a, b = kv.version, c.version
            elif target == 1:
                a, b = kv.create_revision, c.create_revision
            elif target == 2:
                a, b = kv.mod_revision, c.mod_revision
            elif target == 3:
                a, b = kv.value, c.value
            elif target == 4:
                a, b = kv.lease, c.lease
            else:
                raise errors.InvalidArgument("etcdserver: invalid compare target")
            if result == 0:
                ok = a == b
            elif result == 1:
                ok = a > b
            elif result == 2:
                ok = a < b
            elif result == 3:
                ok = a != b
            else:
                raise errors.InvalidArgument("etcdserver: invalid compare result")
            if not ok:
                return False
        return True

    def _apply_compact(self, c: Compact, index: int) -> CompactResult:
        if c.revision <= self._crev:
            raise errors.Compacted()
        if c.revision > self._rev:
            raise errors.FutureRev()
        # Logically compacted at once (older reads fail from now on); the rows are
        # removed chunk by chunk after the following commands, or all now if physical.
        self._crev = c.revision
        self._ctodo = c.revision
        if c.physical:
            while self._ctodo:
                self._compact_chunk(self.compact_chunk_log_rows)
        return CompactResult(self._rev)

    def _compact_chunk(self, max_rows: int) -> None:
        done, self._cpos, freed = compact_chunk(self._txn, self._kv, self._log, self._ctodo, self._cpos, max_rows)
        if done:
            self._ctodo = 0
        self._data_bytes -= freed

    def _apply_noop(self, n: Noop, index: int) -> NoopResult:
        return NoopResult(self._rev)

    _handlers = {
        Put: _apply_put,
        DeleteRange: _apply_delete,
        Range: _apply_range,
        Txn: _apply_txn,
        Compact: _apply_compact,
        LeaseGrant: LeaseMemberTables._apply_lease_grant,
        LeaseRevoke: LeaseMemberTables._apply_lease_revoke,
        LeaseCheckpoint: LeaseMemberTables._apply_lease_checkpoint,
        MemberSet: LeaseMemberTables._apply_member_set,
        MemberRemove: LeaseMemberTables._apply_member_remove,
        Alarm: LeaseMemberTables._apply_alarm,
        Noop: _apply_noop,
    }

    def _check_quota(self, cost: int) -> None:
        if self._data_bytes + cost > self.quota_bytes:
            raise errors.NoSpace()

    # --- reads ------------------------------------------------------------------------

    def _read_state(self, txn) -> tuple[int, int]:
        """(revision, compact_revision) as of a read transaction.

        When the txn reads the snapshot of the latest apply_batch commit (the common
        case), the values come from the cache apply_batch published after that commit,
        keyed by LMDB's txn id, without a lookup of the state row.
        """
        snap = self._snap
        if txn.id() == snap[0]:
            return snap[1], snap[2]
        raw = txn.get(_STATE_KEY, db=self._meta)
        if raw is None:
            return 1, 0
        _, rev, crev, _, _, _ = _STATE.unpack(raw)
        return rev, crev

    def _drop_point_reader(self) -> None:
        with self._point_lock:
            point, self._point = self._point, None
            if point is not None:
                point[0].abort()

    def _point_reader(self) -> tuple:
        """(txn, kv cursor, txn id) for a point read; call with _point_lock held.

        The cached read txn is reused while its snapshot is the newest one published
        by apply_batch (same txn id), which is what a new txn would read, so a read
        after apply_batch returned never sees an older state.  Otherwise it is replaced
        by a new txn.  apply_batch drops the cached txn before it writes, so the cache
        never holds on to an old snapshot for longer than one batch.
        """
        point = self._point
        if point is None or point[2] != self._snap[0]:
            if point is not None:
                point[0].abort()
            txn = self.env.begin()
            point = self._point = (txn, txn.cursor(self._kv), txn.id())
        return point

    def range(self, r: Range) -> RangeResult:
        """etcd Range at r.revision (0: now); raises Compacted / FutureRev / EmptyKey."""
        key = r.key
        if not key:
            raise errors.EmptyKey()
        if type(r) is Range and not (r.range_end or r.revision or r.sort_order or r.sort_target
                                     or r.min_mod_revision or r.max_mod_revision
                                     or r.min_create_revision or r.max_create_revision):
            # The common case, a point read now: one seek, and the header revision from
            # the snapshot cache (compaction cannot fail a read now).
            n = len(key)
            if n > MAX_KEY_BYTES:  # longer than any key the store can hold
                with self.env.begin() as txn:
                    return RangeResult([], False, 0, self._read_state(txn)[0])
            prefix = key + _PAD[n] if n <= 16 else key_prefix(key)
            lock = self._point_lock
            if lock.acquire(False):
                try:
                    txn, cur, txn_id = self._point_reader()
                    snap = self._snap
                    rev = snap[1] if txn_id == snap[0] else self._read_state(txn)[0]
                    if cur.set_range(prefix):
                        k, rec = cur.item()
                    else:
                        k = rec = b""
                finally:
                    lock.release()
            else:  # another thread holds the cached txn: use a txn of our own
                with self.env.begin() as txn:
                    rev = self._read_state(txn)[0]
                    cur = txn.cursor(self._kv)
                    if cur.set_range(prefix):
                        k, rec = cur.item()
                    else:
                        k = rec = b""
            if rec and k.startswith(prefix):
                if r.count_only:
                    return RangeResult([], False, 1, rev)
                create, version, lease = _hdr_unpack_from(rec)
                return RangeResult([KeyValue(key, create, M64 - _inv_main_from(k, len(k) - 12)[0], version,
                                             b"" if r.keys_only else rec[HDR_BYTES:], lease)], False, 1, rev)
            return RangeResult([], False, 0, rev)
        if r.sort_order or r.sort_target:
            validate_command(r)
        with self.env.begin() as txn:
            rev, crev = self._read_state(txn)
            return self._range(txn.cursor(self._kv), r, rev, crev)

    def get(self, key: bytes) -> KeyValue | None:
        """The current KeyValue of one key, or None (one LMDB seek)."""
        n = len(key)
        if n > MAX_KEY_BYTES:
            return None
        prefix = key + _PAD[n] if n <= 16 else key_prefix(key)
        lock = self._point_lock
        if lock.acquire(False):
            try:
                cur = self._point_reader()[1]
                if cur.set_range(prefix):
                    k, rec = cur.item()
                else:
                    k = rec = b""
            finally:
                lock.release()
        else:
            with self.env.begin() as txn:
                cur = txn.cursor(self._kv)
                if cur.set_range(prefix):
                    k, rec = cur.item()
                else:
                    k = rec = b""
        if rec and k.startswith(prefix):
            create, version, lease = _hdr_unpack_from(rec)
            return KeyValue(key, create, M64 - _inv_main_from(k, len(k) - 12)[0], version, rec[HDR_BYTES:], lease)
        return None

    def _range(self, cur, r: Range, cur_rev: int, crev: int | None = None) -> RangeResult:
        return range_kvs(cur, r, cur_rev, self._crev if crev is None else crev)

    def events(
        self,
        start_rev: int,
        end_rev: int | None = None,
        key: bytes = b"",
        range_end: bytes = b"",
        limit: int = EVENTS_LIMIT_DEFAULT,
    ) -> list[Event]:
        """Changes with start_rev <= mod_revision <= end_rev (None: now), in revision order.

        ``key`` b"" means every key; otherwise etcd's range rules.  Raises Compacted if
        start_rev < compact_revision.  At most ``limit`` events, cut only between
        revisions (a single revision with more events is returned whole), so a caller
        resumes at the last event's mod_revision + 1.  prev_kv is set for every event
        after the compact revision whose key existed before it.
        """
        with self.env.begin() as txn:
            rev, crev = self._read_state(txn)
            return collect_events(txn.cursor(self._log), txn.cursor(self._kv), rev, crev,
                                  start_rev, end_rev, key, range_end, limit)[0]

    def events_page(
        self,
        start_rev: int,
        end_rev: int | None = None,
        key: bytes = b"",
        range_end: bytes = b"",
        limit: int = EVENTS_LIMIT_DEFAULT,
        scan_rows_max: int = EVENTS_SCAN_ROWS_MAX,
    ) -> tuple[list[Event], int]:
        """Like events(), but also bounds the change-log rows looked at (a narrow filter
        over a long history) and returns (events, next_rev): every event before
        next_rev has been returned, so the caller continues at next_rev; next_rev >
        end_rev (or the current revision) means done."""
        with self.env.begin() as txn:
            rev, crev = self._read_state(txn)
            return collect_events(txn.cursor(self._log), txn.cursor(self._kv), rev, crev,
                                  start_rev, end_rev, key, range_end, limit, scan_rows_max)
