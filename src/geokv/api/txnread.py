"""Read-only transactions served as reads: no Raft entry, no WAL write.

A txn whose every request (nested txns included) is a Range changes nothing, so after
the read barrier of its read mode it can be evaluated on the local replica. All its
compares and ranges read the store at one pinned revision, so the txn sees one
consistent snapshot exactly as if it had been applied at that point of the log. The
compare rules are etcd's (and the store's): a missing key compares as zero fields,
except that a VALUE compare on a missing key is always false; a compare over a range
must hold for every key in it.
"""

from __future__ import annotations

import dataclasses

from geokv import errors
from geokv.kv import types as kvt


def is_read_only(t: kvt.Txn) -> bool:
    for branch in (t.success, t.failure):
        for op in branch:
            ot = type(op)
            if ot is kvt.Range:
                continue
            if ot is kvt.Txn and is_read_only(op):
                continue
            return False
    return True


def all_ranges_serializable(t: kvt.Txn) -> bool:
    """etcd serves a read-only txn serializably only when every range in it asks for it."""
    for branch in (t.success, t.failure):
        for op in branch:
            if type(op) is kvt.Range:
                if not op.serializable:
                    return False
            elif not all_ranges_serializable(op):
                return False
    return True


def _compare(store, c: kvt.Compare, revision: int) -> bool:
    kvs = store.range(kvt.Range(key=c.key, range_end=c.range_end, revision=revision)).kvs
    if not kvs:
        if c.target == kvt.CompareTarget.VALUE:
            return False
        kvs = [kvt.KeyValue(c.key)]
    target, result = c.target, c.result
    for kv in kvs:
        if target == kvt.CompareTarget.VERSION:
            a, b = kv.version, c.version
        elif target == kvt.CompareTarget.CREATE:
            a, b = kv.create_revision, c.create_revision
        elif target == kvt.CompareTarget.MOD:
            a, b = kv.mod_revision, c.mod_revision
        elif target == kvt.CompareTarget.VALUE:
            a, b = kv.value, c.value
        elif target == kvt.CompareTarget.LEASE:
            a, b = kv.lease, c.lease
        else:
            raise errors.InvalidArgument("etcdserver: invalid compare target")
        if result == kvt.CompareResult.EQUAL:
            ok = a == b
        elif result == kvt.CompareResult.GREATER:
            ok = a > b
        elif result == kvt.CompareResult.LESS:
            ok = a < b
        elif result == kvt.CompareResult.NOT_EQUAL:
            ok = a != b
        else:
            raise errors.InvalidArgument("etcdserver: invalid compare result")
        if not ok:
            return False
    return True


def evaluate(store, t: kvt.Txn, revision: int | None = None) -> kvt.TxnResult:
    """Evaluate read-only ``t`` against ``store`` at ``revision`` (None: the current one)."""
    rev = store.revision if revision is None else revision
    ok = all(_compare(store, c, rev) for c in t.compare)
    responses: list = []
    for op in t.success if ok else t.failure:
        if type(op) is kvt.Range:
            responses.append(store.range(op if op.revision else dataclasses.replace(op, revision=rev)))
        else:
            responses.append(evaluate(store, op, rev))
    return kvt.TxnResult(rev, ok, responses)
