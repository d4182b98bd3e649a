"""Request builders: key ranges, comparisons, the txn builder and the CLI's txn text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geokv.cli.txnparse import TxnSyntaxError, parse_txn
from geokv.client import Compare, Op
from geokv.client.ops import MAX_TXN_OPS, Txn, key_range
from geokv.client.types import prefix_range_end


@settings(max_examples=300, deadline=None)
@given(prefix=st.binary(min_size=1, max_size=6), suffix=st.binary(max_size=6), other=st.binary(max_size=8))
def test_prefix_range_holds_exactly_the_keys_with_the_prefix(prefix, suffix, other):
    end = prefix_range_end(prefix)
    inside = prefix + suffix
    assert prefix <= inside and (end == b"\x00" or inside < end)
    in_range = prefix <= other and (end == b"\x00" or other < end)
    assert in_range == other.startswith(prefix)


def test_prefix_of_all_ff_bytes_ranges_to_the_end_of_the_keyspace():
    assert prefix_range_end(b"\xff\xff") == b"\x00"
    assert key_range("a", prefix=True) == (b"a", b"b")
    assert key_range("", prefix=True) == (b"\x00", b"\x00")


def test_choosing_two_range_forms_is_a_user_error():
    with pytest.raises(ValueError):
        key_range("a", prefix=True, range_end="z")


def test_compare_operators_build_etcd_compares():
    c = Compare.mod_revision("k") > 4
    assert (c.key, c.target, c.result, c.mod_revision) == (b"k", 2, 1, 4)
    c = Compare.value("k") != "v"
    assert (c.target, c.result, c.value) == (3, 3, b"v")
    with pytest.raises(TypeError):
        Compare.version("k") == "not an int"


def test_txn_builder_order_and_limits():
    txn = Txn(lambda req: req)
    req = txn.if_(Compare.version("k") == 0).then(Op.put("k", "v")).else_(Op.get("k")).commit()
    assert len(req.compare) == 1 and req.success[0].request_put.key == b"k"
    assert req.failure[0].request_range.key == b"k"
    with pytest.raises(ValueError):
        Txn(lambda r: r).then(Op.get("k")).if_(Compare.version("k") == 0)
    with pytest.raises(ValueError):
        Txn(lambda r: r).then(*[Op.put(f"k{i}", "v") for i in range(MAX_TXN_OPS + 1)]).commit()


@settings(max_examples=100, deadline=None)
@given(key=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\"'\\"),
                   min_size=1, max_size=10),
       value=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="'\\"),
                     max_size=10),
       op=st.sampled_from(["=", "!=", ">", "<"]))
def test_txn_text_compares_round_trip(key, value, op):
    # "--" ends the flags (as in etcdctl), so keys and values may start with "--".
    compares, success, failure = parse_txn(
        f"value(\"{key}\") {op} '{value}'\n\nput -- '{key}' '{value}'\n\ndel -- '{key}'\n")
    assert compares[0].key == key.encode() and compares[0].value == value.encode()
    assert success[0].request_put.value == value.encode()
    assert failure[0].request_delete_range.key == key.encode()


def test_double_dash_ends_the_flags_of_an_op():
    _, success, _ = parse_txn("\nput k -- --v\nput -- --lease=5 v\n\n")
    assert (success[0].request_put.key, success[0].request_put.value) == (b"k", b"--v")
    assert (success[1].request_put.key, success[1].request_put.value) == (b"--lease=5", b"v")
    assert success[1].request_put.lease == 0
    with pytest.raises(TxnSyntaxError, match="put needs KEY VALUE"):
        parse_txn("\n\nput k --\n\n")  # "--" is no value: etcdctl refuses it too


@pytest.mark.parametrize("text", ['value("k") ~ "v"\n', 'mod("k") > "x"\n', '\nfrob k\n', '\nput k\n'])
def test_bad_txn_text_is_a_syntax_error(text):
    with pytest.raises(TxnSyntaxError):
        parse_txn(text)
