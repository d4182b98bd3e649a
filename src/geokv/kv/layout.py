"""The byte layout of the MVCC keyspace inside LMDB, and the scans over it.

One LMDB database ``kv`` holds every stored version of every key::

    enc(key) + be64(M64 - main_rev) + be32(M32 - sub_rev)  ->  record

``enc`` (the key's *prefix*) cuts the key into groups of 16 bytes, pads the last one
with NULs and follows every group with a marker byte: 17 when another group follows,
else the number of real bytes in the group (0..16). It sorts exactly like ``key``, no
prefix is a prefix of another key's prefix, and it costs a fixed 1/16 whatever the
bytes are (an escape of NUL bytes would double keys made mostly of NULs, such as the
ones ``etcdctl check perf`` writes). LMDB's 511-byte key limit less the 12-byte
suffix leaves room for 29 groups: keys of at most ``MAX_KEY_BYTES`` = 464 bytes.
The revision is stored inverted, so the versions of one key are adjacent and ordered
newest first:

* the current version of a key is the first entry >= its prefix (one B-tree descent);
* the version visible at revision R is the first entry >= prefix + inv(R, max sub);
* a range scan walks prefixes in key order and skips older versions with one seek.

A record is ``be64 create_revision, be64 version, be64s lease`` followed by the value;
a deletion (tombstone) is the empty record.  The ``log`` database maps
``be64 main_rev + be32 sub_rev -> key`` (one row per change, in revision order) and is
what watch catch-up and compaction walk.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

SUFFIX_BYTES = 12  # inverted (main_rev, sub_rev)
GROUP_BYTES = 16
_GROUP_STRIDE = GROUP_BYTES + 1
_MORE = bytes((_GROUP_STRIDE,))  # marker of a group that another group follows
MAX_LMDB_KEY_BYTES = 511
MAX_PREFIX_BYTES = (MAX_LMDB_KEY_BYTES - SUFFIX_BYTES) // _GROUP_STRIDE * _GROUP_STRIDE
MAX_KEY_BYTES = MAX_PREFIX_BYTES // _GROUP_STRIDE * GROUP_BYTES

REV = struct.Struct(">QI")  # (main, sub), plain in the log, inverted in kv suffixes
HDR = struct.Struct(">QQq")  # create_revision, version, lease
HDR_BYTES = HDR.size
SKIP_SUFFIX = b"\xff" * SUFFIX_BYTES  # sorts after every real suffix of a prefix
SKIP_NEXT_MAX = 3
"""Cursor steps a range scan takes over a key's older versions before it seeks past
them: a step is much cheaper than a seek from the root, a seek is bounded."""

_rev_pack = REV.pack
_rev_unpack = REV.unpack
_rev_unpack_from = REV.unpack_from


# _PAD[u]: the padding and final marker of a last group holding u real bytes.
_PAD = tuple(bytes(GROUP_BYTES - u) + bytes((u,)) for u in range(GROUP_BYTES + 1))


def _split_struct(n: int) -> tuple:
    """(unpack, padding) that cut a key of n > GROUP_BYTES bytes into its groups."""
    groups, last = divmod(n, GROUP_BYTES)
    if last == 0:
        groups, last = groups - 1, GROUP_BYTES
    return struct.Struct("%ds" % GROUP_BYTES * groups + "%ds" % last).unpack, _PAD[last]


def _join_struct(groups: int, used: int):
    """unpack that takes the real bytes out of an encoded key of ``groups`` groups whose
    last group holds ``used`` bytes."""
    return struct.Struct("%dsx" % GROUP_BYTES * (groups - 1) + "%ds" % used).unpack_from


# One cached Struct per key length (per encoded length and last-group fill for the
# inverse): splitting a key with one unpack and one join is about twice as fast as
# slicing it group by group, and both run on every put and point read.
_SPLIT = [None] * (GROUP_BYTES + 1) + [_split_struct(n) for n in range(GROUP_BYTES + 1, MAX_KEY_BYTES + 1)]
_JOIN = {
    (g * _GROUP_STRIDE, used): _join_struct(g, used)
    for g in range(2, MAX_PREFIX_BYTES // _GROUP_STRIDE + 1)
    for used in range(GROUP_BYTES + 1)
}


def key_prefix(key: bytes) -> bytes:
    """The order-preserving, prefix-free encoding of a user key (see the module doc).

    A key of at most MAX_KEY_BYTES takes one Struct unpack and one join (about half a
    microsecond for 256 bytes); longer keys, which only occur as range bounds, take
    the general path.
    """
    n = len(key)
    if n <= GROUP_BYTES:
        return key + _PAD[n]
    if n <= MAX_KEY_BYTES:
        unpack, pad = _SPLIT[n]
        return _MORE.join(unpack(key)) + pad
    cut = ((n - 1) // GROUP_BYTES) * GROUP_BYTES  # bytes in the groups before the last
    return (
        _MORE.join([key[i : i + GROUP_BYTES] for i in range(0, cut, GROUP_BYTES)])
        + _MORE
        + key[cut:]
        + _PAD[n - cut]
    )


def user_key(prefix: bytes) -> bytes:
    """The inverse of key_prefix."""
    last = len(prefix) - _GROUP_STRIDE  # where the last group starts
    used = prefix[-1]
    if last == 0:
        return prefix[:used]
    unpack = _JOIN.get((len(prefix), used))
    if unpack is not None:
        return b"".join(unpack(prefix))
    return b"".join([prefix[i : i + GROUP_BYTES] for i in range(0, last, _GROUP_STRIDE)]) + prefix[last : last + used]


def version_suffix(main: int, sub: int) -> bytes:
    return _rev_pack(M64 - main, M32 - sub)


def at_suffix(rev: int) -> bytes:
    """Seek target suffix: the newest version with main_rev <= rev sorts at or after it."""
    return _rev_pack(M64 - rev, 0)


def split_suffix(ckey: bytes) -> tuple[int, int]:
    """(main_rev, sub_rev) of a composite kv key."""
    inv_main, inv_sub = _rev_unpack_from(ckey, len(ckey) - SUFFIX_BYTES)
    return M64 - inv_main, M32 - inv_sub


def main_of(ckey: bytes) -> int:
    return M64 - _rev_unpack_from(ckey, len(ckey) - SUFFIX_BYTES)[0]


def log_key(main: int, sub: int) -> bytes:
    return _rev_pack(main, sub)


def bounds(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None] | None:
    """Encoded [lo, hi) of an etcd range (hi None: unbounded); None when it is empty.

    Only for real ranges (range_end non-empty); a single key is looked up directly.
    """
    if range_end == b"\x00":
        return key_prefix(key), None
    if range_end <= key:
        return None
    return key_prefix(key), key_prefix(range_end)


def scan_live(cur, key: bytes, range_end: bytes, at_rev: int) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Yield (prefix, composite key, record) of every key live at ``at_rev`` in the range.

    ``cur`` is a cursor on the kv database; ``at_rev`` 0 means the newest state.  Keys
    come in ascending order.  The cursor must not be used elsewhere until the generator
    is exhausted or dropped.  Older versions of a key are stepped over with up to
    ``SKIP_NEXT_MAX`` cursor steps (they are adjacent), then with one seek.
    """
    if not range_end:
        prefix = key_prefix(key)
        if len(prefix) > MAX_PREFIX_BYTES:
            return  # longer than any key the store can hold
        if cur.set_range(prefix + at_suffix(at_rev) if at_rev else prefix):
            k = cur.key()
            if k.startswith(prefix):
                rec = cur.value()
                if rec:
                    yield prefix, k, rec
        return
    b = bounds(key, range_end)
    if b is None:
        return
    lo, hi = b
    long_lo = len(lo) > MAX_PREFIX_BYTES
    if not cur.set_range(lo[:MAX_PREFIX_BYTES] if long_lo else lo):
        return
    k = cur.key()
    while True:
        if hi is not None and k >= hi:
            return
        if long_lo and k < lo:
            if not cur.next():
                return
            k = cur.key()
            continue
        prefix = k[:-SUFFIX_BYTES]
        if at_rev and main_of(k) > at_rev:
            if not cur.set_range(prefix + at_suffix(at_rev)):
                return
            k = cur.key()
            if not k.startswith(prefix):
                continue  # no version at or before at_rev: now on the next key's newest
        rec = cur.value()
        if rec:
            yield prefix, k, rec
        # Step to the next key: its first row is its newest version.
        steps = 0
        while True:
            if not cur.next():
                return
            k = cur.key()
            if not k.startswith(prefix):
                break
            steps += 1
            if steps == SKIP_NEXT_MAX:
                if not cur.set_range(prefix + SKIP_SUFFIX):
                    return
                k = cur.key()
                break
