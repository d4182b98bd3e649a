"""A plain Put takes an inlined path in apply_batch; a Put inside a Txn takes the general
one.  Both must give the same results, events and stored state."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geokv.kv.store import MVCCStore
from geokv.kv.types import MAX_KEY_BYTES, DeleteRange, LeaseGrant, Put, PutResult, Range, Txn, TxnResult

# Keys around the 16-byte groups of the encoding, and around the longest key.
KEYS = [b"k", b"k" * 16, b"k" * 17, b"\x00" * 33, b"k" * 256, b"\xff" * MAX_KEY_BYTES, b"k" * 300 + b"\x00"]
ops = st.one_of(
    st.builds(Put, key=st.sampled_from(KEYS), value=st.sampled_from([b"", b"v", b"w" * 1100]),
              lease=st.sampled_from([0, 0, 0, 5]), prev_kv=st.booleans()),
    st.builds(DeleteRange, key=st.sampled_from(KEYS), range_end=st.sampled_from([b"", b"", b"\x00"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=25))
def test_plain_puts_match_puts_inside_a_txn(history):
    d = tempfile.mkdtemp(prefix="geokv-kv-puts-")
    plain = MVCCStore(d + "/plain")
    in_txn = MVCCStore(d + "/txn")
    try:
        for store in (plain, in_txn):
            store.apply_batch([(1, LeaseGrant(5, 60))])
        # One batch per store, so the inlined path also runs between other commands.
        items_plain = [(i, op) for i, op in enumerate(history, start=2)]
        items_txn = [(i, Txn([], [op], []) if type(op) is Put else op) for i, op in enumerate(history, start=2)]
        out_plain = plain.apply_batch(items_plain)
        out_txn = in_txn.apply_batch(items_txn)
        for op, (res_p, ev_p), (res_t, ev_t) in zip(history, out_plain, out_txn):
            if type(op) is Put:
                assert type(res_p) is PutResult and type(res_t) is TxnResult
                assert res_t == TxnResult(res_p.revision, True, [res_p])
            else:
                assert res_p == res_t
            assert ev_p == ev_t
        assert plain.revision == in_txn.revision
        assert plain.hash_kv() == in_txn.hash_kv()
        assert plain.data_bytes == in_txn.data_bytes
        assert plain.lease_keys(5) == in_txn.lease_keys(5)
        assert plain.events(1) == in_txn.events(1)
        everything = Range(b"\x00", b"\x00")
        assert plain.range(everything) == in_txn.range(everything)
        for key in KEYS:
            assert plain.get(key) == in_txn.get(key)
            assert plain.range(Range(key)) == in_txn.range(Range(key))
    finally:
        plain.close()
        in_txn.close()
        shutil.rmtree(d, ignore_errors=True)


def test_a_plain_put_without_a_lease_detaches_the_key_from_its_old_lease(kv):
    kv.ok(LeaseGrant(5, 60))
    kv.ok(Put(b"a", b"1", lease=5))
    assert kv.store.lease_keys(5) == [b"a"]
    res, events = kv.run_events(Put(b"a", b"2", prev_kv=True))
    assert res.prev_kv.lease == 5 and events[0].kv.lease == 0 and events[0].prev_kv.lease == 5
    assert kv.store.lease_keys(5) == []
    assert kv.store.get(b"a").lease == 0


def test_apply_batch_restores_the_garbage_collector_state(kv):
    import gc

    assert gc.isenabled()
    kv.ok(Put(b"a", b"1"))
    assert gc.isenabled()
    try:
        kv.store.apply_batch([(kv.index + 1, object())])  # a bug: rolled back, raised
    except KeyError:
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        kv.ok(Put(b"a", b"2"))
        assert not gc.isenabled()  # a caller's choice is left alone
    finally:
        gc.enable()
