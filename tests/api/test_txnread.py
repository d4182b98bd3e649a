"""Read-only txns evaluated as reads give exactly what the store's apply path gives."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geokv.api import txnread
from geokv.kv import types as kvt
from geokv.kv.store import MVCCStore

KEYS = [b"a", b"b", b"c", b"d", b"e"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = MVCCStore(str(tmp_path_factory.mktemp("txnread")))
    idx = itertools.count(1)
    for i, k in enumerate(KEYS[:4]):  # "e" stays missing
        s.apply_batch([(next(idx), kvt.Put(k, b"v%d" % i))])
    s.apply_batch([(next(idx), kvt.Put(b"b", b"v9"))])  # b: version 2
    s._test_index = idx  # the next free raft index for the apply path
    yield s
    s.close()


keys = st.sampled_from(KEYS)
range_ends = st.sampled_from([b"", b"", b"c", b"f", b"\x00"])
compares = st.builds(
    lambda key, end, target, result, n, v: kvt.Compare(result=result, target=target, key=key,
                                                         range_end=end if end == b"" or end > key else b"",
                                                         version=n, create_revision=n, mod_revision=n, lease=0,
                                                         value=v),
    keys, range_ends, st.integers(0, 4), st.integers(0, 3), st.integers(0, 8), st.sampled_from([b"v0", b"v9", b""]))
ranges = st.builds(lambda key, end, limit, order, target, ko: kvt.Range(
    key=key, range_end=end if end == b"" or end > key else b"", limit=limit, sort_order=order,
    sort_target=target, keys_only=ko), keys, range_ends, st.integers(0, 3), st.integers(0, 2), st.integers(0, 4),
    st.booleans())
txns = st.recursive(
    st.builds(kvt.Txn, st.lists(compares, max_size=3), st.lists(ranges, max_size=3), st.lists(ranges, max_size=3)),
    lambda inner: st.builds(kvt.Txn, st.lists(compares, max_size=2), st.lists(st.one_of(ranges, inner), max_size=3),
                            st.lists(st.one_of(ranges, inner), max_size=3)),
    max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=txns)
def test_read_only_txn_matches_the_apply_path(store, t):
    assert txnread.is_read_only(t)
    ours = txnread.evaluate(store, t)
    [(theirs, events)] = store.apply_batch([(next(store._test_index), t)])
    assert events == []
    assert ours == theirs


def test_write_ops_make_a_txn_not_read_only():
    assert not txnread.is_read_only(kvt.Txn(success=[kvt.Range(b"a"), kvt.Put(b"a")]))
    assert not txnread.is_read_only(kvt.Txn(failure=[kvt.Txn(success=[kvt.DeleteRange(b"a")])]))
    assert txnread.all_ranges_serializable(kvt.Txn(success=[kvt.Range(b"a", serializable=True)]))
    assert not txnread.all_ranges_serializable(kvt.Txn(success=[kvt.Range(b"a")], failure=[]))
