"""The key encoding of kv/layout sorts like the keys, is prefix-free and round-trips."""

from hypothesis import given, settings, strategies as st

from geokv.kv import layout
from geokv.kv.types import MAX_KEY_BYTES

# Short alphabets make shared prefixes, NUL runs and group-boundary lengths common.
keys = st.one_of(
    st.binary(max_size=80),
    st.binary(max_size=MAX_KEY_BYTES),
    st.lists(st.sampled_from([b"\x00", b"\x01", b"a", b"\xff"]), max_size=70).map(b"".join),
)


@settings(max_examples=600, deadline=None)
@given(keys, keys)
def test_encoding_sorts_like_the_keys_and_is_prefix_free(a, b):
    ea, eb = layout.key_prefix(a), layout.key_prefix(b)
    assert (a < b) == (ea < eb)
    assert (a == b) == (ea == eb)
    if a != b:
        assert not eb.startswith(ea) and not ea.startswith(eb)


@settings(max_examples=300, deadline=None)
@given(keys)
def test_encoding_round_trips_and_has_a_fixed_overhead(k):
    e = layout.key_prefix(k)
    assert layout.user_key(e) == k
    assert len(e) % 17 == 0 and len(e) <= max(17, (len(k) + 15) // 16 * 17)


def test_the_longest_key_fits_lmdb_whatever_its_bytes():
    for fill in (b"\x00", b"\xff", b"a"):
        e = layout.key_prefix(fill * MAX_KEY_BYTES)
        assert len(e) + layout.SUFFIX_BYTES <= 511
    assert len(layout.key_prefix(b"a" * (MAX_KEY_BYTES + 1))) > layout.MAX_PREFIX_BYTES


def test_a_check_perf_key_fits():
    # etcdctl check perf writes its prefix plus 256 bytes that are mostly NULs.
    key = b"/etcdctl-check-perf/" + b"\x02\x81\x01" + bytes(253)
    assert len(layout.key_prefix(key)) <= layout.MAX_PREFIX_BYTES
