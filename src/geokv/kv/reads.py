"""Read algorithms over the kv layout that do not need the store object."""

from __future__ import annotations

import crc32c

from geokv import errors
from geokv.kv import layout
from geokv.kv.layout import HDR, HDR_BYTES, key_prefix, scan_live, user_key
from geokv.kv.types import Event, KeyValue, Range, RangeResult

_hdr_unpack_from = HDR.unpack_from
_PUT, _DELETE = 0, 1  # EventType values, as plain ints

_SORT_ATTR = {1: "version", 2: "create_revision", 3: "mod_revision", 4: "value"}


def kv_from(prefix: bytes, ckey: bytes, rec: bytes, key: bytes | None = None) -> KeyValue:
    create, version, lease = _hdr_unpack_from(rec)
    return KeyValue(
        user_key(prefix) if key is None else key,
        create,
        layout.main_of(ckey),
        version,
        rec[HDR_BYTES:],
        lease,
    )


def range_kvs(cur, r: Range, cur_rev: int, crev: int) -> RangeResult:
    """etcd's Range on a kv-db cursor of a store at ``cur_rev`` compacted at ``crev``."""
    rev = r.revision
    if rev > cur_rev:
        raise errors.FutureRev()
    if rev > 0 and rev < crev:
        raise errors.Compacted()
    at = rev if 0 < rev < cur_rev else 0
    key = r.key
    if not r.range_end and not (r.min_mod_revision or r.max_mod_revision or r.min_create_revision
                                or r.max_create_revision):
        # Single key: at most one result, so limits, sorting and filters are moot.
        for prefix, ckey, rec in scan_live(cur, key, b"", at):
            if r.count_only:
                return RangeResult([], False, 1, cur_rev)
            kv = kv_from(prefix, ckey, rec, key)
            if r.keys_only:
                kv.value = b""
            return RangeResult([kv], False, 1, cur_rev)
        return RangeResult([], False, 0, cur_rev)
    filtered = bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision)
    limit = r.limit if r.limit > 0 else 0
    # etcd fetches everything when it must sort or filter, else limit+1 to learn `more`.
    fetch = 0 if (r.sort_order != 0 or filtered) else (limit + 1 if limit else 0)
    kvs: list[KeyValue] = []
    count = 0
    for prefix, ckey, rec in scan_live(cur, key, r.range_end, at):
        count += 1
        if r.count_only or (fetch and count > fetch):
            continue
        kvs.append(kv_from(prefix, ckey, rec))
    if r.count_only:
        return RangeResult([], False, count, cur_rev)
    if filtered:
        lo_m, hi_m, lo_c, hi_c = r.min_mod_revision, r.max_mod_revision, r.min_create_revision, r.max_create_revision
        kvs = [
            kv
            for kv in kvs
            if not (hi_m and kv.mod_revision > hi_m)
            and not (lo_m and kv.mod_revision < lo_m)
            and not (hi_c and kv.create_revision > hi_c)
            and not (lo_c and kv.create_revision < lo_c)
        ]
    order, target = r.sort_order, r.sort_target
    if target != 0 and order == 0:
        order = 1  # etcd sorts ascending by a non-key target when no order is given
    if order:
        if target == 0:
            if order == 2:
                kvs.reverse()
        else:
            attr = {1: "version", 2: "create_revision", 3: "mod_revision", 4: "value"}.get(target)
            if attr is None:
                raise errors.InvalidArgument("etcdserver: invalid sort target")
            kvs.sort(key=lambda kv: getattr(kv, attr), reverse=(order == 2))
    more = False
    if limit and len(kvs) > limit:
        del kvs[limit:]
        more = True
    if r.keys_only:
        for kv in kvs:
            kv.value = b""
    return RangeResult(kvs, more, count, cur_rev)


def collect_events(logcur, kvcur, rev: int, crev: int, start_rev: int, end_rev: int | None,
                   key: bytes, range_end: bytes, limit: int,
                   scan_rows_max: int | None = None) -> tuple[list[Event], int]:
    """(events, next revision to read) for MVCCStore.events / events_page (see there)."""
    start_rev = max(start_rev, 1)
    out: list[Event] = []
    if start_rev < crev:
        raise errors.Compacted()
    end = rev if end_rev is None else min(end_rev, rev)
    if start_rev > end:
        return out, start_rev
    if key and range_end:
        b = layout.bounds(key, range_end)
        if b is None:
            return out, end + 1
        lo = key
        hi = None if range_end == b"\x00" else range_end
    last_scanned = 0  # revision of the last log row looked at
    scanned = 0
    ok = logcur.set_range(layout.log_key(start_rev, 0))
    while ok:
        lkey, k = logcur.item()
        main, sub = layout.REV.unpack(lkey)
        if main > end:
            break
        if main != last_scanned:
            # Pages end only between revisions, so the caller resumes at `main`.
            if len(out) >= limit or (scan_rows_max is not None and scanned >= scan_rows_max):
                return out, main
            last_scanned = main
        scanned += 1
        ok = logcur.next()
        if key:
            if range_end:
                if k < lo or (hi is not None and k >= hi):
                    continue
            elif k != key:
                continue
        prefix = key_prefix(k)
        ckey = prefix + layout.version_suffix(main, sub)
        if main == crev:
            # At the compact revision only what compaction keeps is an event: the key's
            # newest version there, unless a deletion (as etcd), however far the
            # physical compaction has got.
            if not (kvcur.set_range(prefix + layout.at_suffix(crev)) and kvcur.key() == ckey and kvcur.value()):
                continue
        elif not kvcur.set_key(ckey):
            raise AssertionError(f"change-log row {main}/{sub} has no kv row")
        rec = kvcur.value()
        prev = None
        if main > crev:
            # etcd's prev_kv is the key at revision main - 1 (skipping any earlier
            # change to the same key within the same txn).
            for p, pk, prec in scan_live(kvcur, k, b"", main - 1):
                prev = kv_from(p, pk, prec, k)
        if rec:
            out.append(Event(_PUT, kv_from(prefix, ckey, rec, k), prev))
        else:
            out.append(Event(_DELETE, KeyValue(k, 0, main, 0, b"", 0), prev))
    return out, end + 1


def hash_keyspace(kvcur, upto: int, crev: int) -> int:
    """crc32c of every version visible at some revision in [crev, upto]: the versions
    after crev plus each key's newest version at or before crev unless a deletion (the
    versions compaction keeps).  Rows a pending physical compaction has not removed yet
    are skipped, so all replicas agree."""
    h = 0
    last_prefix = b""
    seen_old = False  # already met this key's newest version at or before crev
    for k, rec in kvcur:
        prefix = k[: -layout.SUFFIX_BYTES]
        if prefix != last_prefix:
            last_prefix, seen_old = prefix, False
        main = layout.main_of(k)
        if main > upto:
            continue
        if main > crev:
            keep = True
        else:
            keep = not seen_old and bool(rec)
            seen_old = True
        if keep:
            h = crc32c.crc32c(rec, crc32c.crc32c(k, h))
    return h
