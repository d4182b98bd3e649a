"""MVCCStore agrees with a naive model of etcd's MVCC semantics on random histories."""

from __future__ import annotations

import io
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geokv.kv.store import MVCCStore
from geokv.kv.types import (
    Alarm,
    Compact,
    Compare,
    DeleteRange,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    Noop,
    Put,
    Range,
    Txn,
    decode_command,
    encode_command,
)

from .model import Model

KEYS = [b"a", b"a\x00", b"ab", b"b", b"b\x00x", b"c", b"\x00", b"\xff"]
keys = st.sampled_from(KEYS)
range_ends = st.sampled_from([b"", b"", b"\x00", b"b", b"c", b"ab", b"\xff\xff", b"a"])
values = st.sampled_from([b"", b"x", b"y", b"zz"])
leases = st.sampled_from([0, 0, 0, 7, 8])
revs = st.integers(min_value=0, max_value=25)

plain_puts = st.builds(Put, key=keys, value=values, lease=leases, prev_kv=st.booleans())
flag_puts = st.builds(
    Put,
    key=keys,
    value=st.sampled_from([b"", b"", b"v"]),
    lease=st.sampled_from([0, 0, 7]),
    prev_kv=st.booleans(),
    ignore_value=st.booleans(),
    ignore_lease=st.booleans(),
)
puts = st.one_of(plain_puts, plain_puts, plain_puts, flag_puts)
deletes = st.builds(DeleteRange, key=keys, range_end=range_ends, prev_kv=st.booleans())
ranges = st.builds(
    Range,
    key=keys,
    range_end=range_ends,
    limit=st.sampled_from([0, 0, 1, 2, 3]),
    revision=st.one_of(st.just(0), revs),
    sort_order=st.sampled_from([0, 0, 1, 2]),
    sort_target=st.sampled_from([0, 0, 1, 2, 3, 4]),
    keys_only=st.booleans(),
    count_only=st.sampled_from([False, False, False, True]),
    min_mod_revision=st.sampled_from([0, 0, 0, 3, 6]),
    max_mod_revision=st.sampled_from([0, 0, 0, 4, 9]),
    min_create_revision=st.sampled_from([0, 0, 0, 2, 5]),
    max_create_revision=st.sampled_from([0, 0, 0, 5, 8]),
)
compares = st.builds(
    Compare,
    result=st.integers(0, 3),
    target=st.integers(0, 4),
    key=keys,
    range_end=st.sampled_from([b"", b"", b"", b"\x00", b"c"]),
    value=values,
    version=st.integers(0, 3),
    create_revision=revs,
    mod_revision=revs,
    lease=leases,
)
flat_ops = st.one_of(plain_puts, plain_puts, flag_puts, deletes, ranges)
nested = st.builds(
    Txn,
    compare=st.lists(compares, max_size=2),
    success=st.lists(flat_ops, max_size=3),
    failure=st.lists(flat_ops, max_size=3),
)
txns = st.builds(
    Txn,
    compare=st.lists(compares, max_size=3),
    success=st.lists(st.one_of(flat_ops, nested), max_size=4),
    failure=st.lists(st.one_of(flat_ops, nested), max_size=4),
)
commands = st.one_of(
    puts,
    puts,
    puts,
    deletes,
    txns,
    txns,
    ranges,
    st.builds(Compact, revision=st.integers(0, 12), physical=st.booleans()),
    st.builds(LeaseGrant, id=st.sampled_from([7, 8]), ttl=st.integers(1, 100)),
    st.builds(LeaseRevoke, id=st.sampled_from([7, 8, 8, 9])),
    st.builds(LeaseCheckpoint, id=st.sampled_from([7, 9]), remaining_ttl=st.integers(0, 50)),
    st.just(Noop()),
    alarms := st.builds(
        Alarm,
        action=st.sampled_from([1, 1, 2, 2, 0, 3]),  # 0 (GET) and 3 are refused
        member_id=st.sampled_from([1, 2, 2, (1 << 64) - 1, -1]),  # -1 is refused
        alarm=st.sampled_from([1, 1, 2, 0, 3]),  # NONE and 3 are refused
    ),
    alarms,
)


# Every history starts with some keys and a lease so that most commands find something.
PROLOGUE = [LeaseGrant(7, 10), Put(b"a", b"1"), Put(b"b", b"2", lease=7), Put(b"c", b"3"), Put(b"a", b"4")]


def same(store_res, model_res) -> bool:
    if isinstance(model_res, Exception):
        return type(store_res) is type(model_res)
    return store_res == model_res


def read_both(store: MVCCStore, model: Model, r: Range):
    try:
        want = model.range(r)
    except Exception as e:  # noqa: BLE001 - compare error classes
        want = e
    try:
        got = store.range(r)
    except Exception as e:  # noqa: BLE001
        got = e
    assert same(got, want), (r, got, want)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    cmds=st.lists(commands, min_size=15, max_size=60),
    batch=st.integers(1, 7),
    reads=st.lists(ranges, max_size=6),
    event_starts=st.lists(st.integers(0, 45), max_size=3),
    chunk=st.sampled_from([1, 2, 512]),
    with_events=st.sampled_from([True, True, False]),
)
def test_store_matches_model(cmds, batch, reads, event_starts, chunk, with_events):
    """``with_events=False``: apply_batch(events=False) (an applier nobody watches) gives
    the same results, state and change log, and no events."""
    cmds = PROLOGUE + cmds
    d = tempfile.mkdtemp(prefix="geokv-kv-")
    try:
        # Tiny chunks make one compaction span many commands.
        opts = dict(quota_bytes=1 << 24, compact_chunk_log_rows=chunk, compact_noop_chunk_log_rows=chunk)
        store = MVCCStore(d, **opts)
        model = Model()
        index = 0
        for i in range(0, len(cmds), batch):
            items = []
            for cmd in cmds[i : i + batch]:
                index += 1
                items.append((index, decode_command(encode_command(cmd))))
            got = store.apply_batch(items, events=with_events)
            for (idx, cmd), (res, events) in zip(items, got):
                want_res, want_events = model.apply(cmd)
                assert same(res, want_res), (cmd, res, want_res)
                assert events == (want_events if with_events else []), (cmd, events, want_events)
            assert store.revision == model.rev and store.compact_revision == model.crev
            for r in reads:
                read_both(store, model, r)
        for start in [*event_starts, store.compact_revision, store.compact_revision + 1]:
            try:
                want = model.events(start)
            except Exception as e:  # noqa: BLE001
                want = e
            try:
                got = store.events(start)
            except Exception as e:  # noqa: BLE001
                got = e
            assert same(got, want), (start, got, want)
        assert store.leases() == sorted((i, v[0]) for i, v in model.leases.items())
        assert store.alarms() == tuple(sorted(model.alarms))
        for lid in model.leases:
            want_keys = sorted(k for k, kv in model.states[model.rev].items() if kv.lease == lid)
            assert store.lease_keys(lid) == want_keys
        # A replica built from a snapshot has the same keyspace hash and answers alike.
        buf = io.BytesIO()
        store.snapshot(buf)
        d2 = tempfile.mkdtemp(prefix="geokv-kv-")
        try:
            other = MVCCStore.from_snapshot(d2, io.BytesIO(buf.getvalue()), **opts)
            assert other.hash_kv() == store.hash_kv()
            assert other.applied_index == store.applied_index == index
            assert other.alarms() == store.alarms()
            for r in reads:
                read_both(other, model, r)
            other.close()
        finally:
            shutil.rmtree(d2, ignore_errors=True)
        store.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    cmds=st.lists(commands, min_size=15, max_size=60),
    batch_a=st.integers(1, 9),
    batch_b=st.integers(1, 9),
    chunk=st.sampled_from([1, 2, 5]),
)
def test_replicas_agree_byte_for_byte_whatever_their_batching(cmds, batch_a, batch_b, chunk):
    cmds = PROLOGUE + cmds
    log = list(enumerate(cmds, start=1))
    d = tempfile.mkdtemp(prefix="geokv-kv-")
    stores = []
    try:
        outs = []
        for name, batch in (("a", batch_a), ("b", batch_b)):
            s = MVCCStore(f"{d}/{name}", quota_bytes=1 << 24, compact_chunk_log_rows=chunk,
                          compact_noop_chunk_log_rows=chunk * 3)
            stores.append(s)
            out = []
            for i in range(0, len(log), batch):
                out.extend(s.apply_batch(log[i : i + batch]))
            outs.append(out)
        a, b = stores
        assert [(type(r), r if not isinstance(r, Exception) else None, e) for r, e in outs[0]] == [
            (type(r), r if not isinstance(r, Exception) else None, e) for r, e in outs[1]
        ]
        bufs = [io.BytesIO(), io.BytesIO()]
        a.snapshot(bufs[0])
        b.snapshot(bufs[1])
        assert bufs[0].getvalue() == bufs[1].getvalue()
    finally:
        for s in stores:
            s.close()
        shutil.rmtree(d, ignore_errors=True)
