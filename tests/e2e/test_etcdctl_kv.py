"""etcdctl against a real 3-member geokv cluster: keys, txns, compaction, errors."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_put_then_get_from_every_member(cluster):
    assert cluster.etcdctl("put", "greeting", "hello").stdout.strip() == "OK"
    for ep in cluster.endpoints:
        out = cluster.etcdctl("get", "greeting", endpoints=ep).stdout.split()
        assert out == ["greeting", "hello"]


def test_get_prefix_limit_sort_and_keys_only(cluster):
    for i in range(5):
        cluster.etcdctl("put", f"fruit/{i}", f"v{i}")
    out = cluster.etcdctl("get", "fruit/", "--prefix").stdout.split()
    assert out == [x for i in range(5) for x in (f"fruit/{i}", f"v{i}")]
    out = cluster.etcdctl("get", "fruit/", "--prefix", "--limit=2").stdout.split()
    assert out == ["fruit/0", "v0", "fruit/1", "v1"]
    out = cluster.etcdctl("get", "fruit/", "--prefix", "--sort-by=KEY", "--order=DESCEND", "--keys-only").stdout.split()
    assert out == [f"fruit/{i}" for i in reversed(range(5))]
    doc = json.loads(cluster.etcdctl("get", "fruit/", "--prefix", "--limit=1", "-w", "json").stdout)
    assert doc["more"] is True and doc["count"] == 5 and doc["header"]["revision"] > 0
    assert doc["header"]["cluster_id"] and doc["header"]["member_id"] and doc["header"]["raft_term"]


def test_get_at_old_revision_and_from_key(cluster):
    r1 = json.loads(cluster.etcdctl("put", "hist", "one", "-w", "json").stdout)["header"]["revision"]
    cluster.etcdctl("put", "hist", "two")
    assert cluster.etcdctl("get", "hist", f"--rev={r1}", "--print-value-only").stdout.strip() == "one"
    assert cluster.etcdctl("get", "hist", "--print-value-only").stdout.strip() == "two"
    out = cluster.etcdctl("get", "hist", "--from-key", "--keys-only").stdout.split()
    assert out[0] == "hist"


def test_delete_single_and_prefix_with_prev_kv(cluster):
    for k in ("d/a", "d/b", "d/c"):
        cluster.etcdctl("put", k, "x")
    out = cluster.etcdctl("del", "d/a", "--prev-kv").stdout.split()
    assert out == ["1", "d/a", "x"]
    assert cluster.etcdctl("del", "d/", "--prefix").stdout.strip() == "2"
    assert cluster.etcdctl("get", "d/", "--prefix").stdout.strip() == ""
    assert cluster.etcdctl("del", "d/nothing").stdout.strip() == "0"


def test_interactive_txn_success_and_failure_branches(cluster):
    cluster.etcdctl("put", "tx/k", "v1")
    script = 'value("tx/k") = "v1"\n\nput tx/k v2\nput tx/other o\n\nput tx/k failed\n\n'
    out = cluster.etcdctl("txn", input=script).stdout.split()
    assert out == ["SUCCESS", "OK", "OK"]
    assert cluster.etcdctl("get", "tx/k", "--print-value-only").stdout.strip() == "v2"
    out = cluster.etcdctl("txn", input=script).stdout.split()
    assert out == ["FAILURE", "OK"]
    assert cluster.etcdctl("get", "tx/k", "--print-value-only").stdout.strip() == "failed"
    script = 'mod("tx/k") > "0"\n\nget tx/k\n\n\n'
    out = cluster.etcdctl("txn", input=script).stdout.split()
    assert out == ["SUCCESS", "tx/k", "failed"]


def test_compaction_then_old_revision_is_an_error(cluster):
    r1 = json.loads(cluster.etcdctl("put", "cmp", "a", "-w", "json").stdout)["header"]["revision"]
    r2 = json.loads(cluster.etcdctl("put", "cmp", "b", "-w", "json").stdout)["header"]["revision"]
    # compact through the member the watch below uses, so it has applied the compaction
    out = cluster.etcdctl("compact", str(r2), endpoints=cluster.endpoints[0]).stdout
    assert out.strip() == f"compacted revision {r2}"
    cp = cluster.etcdctl("get", "cmp", f"--rev={r1}", check=False)
    assert cp.returncode != 0
    assert "etcdserver: mvcc: required revision has been compacted" in cp.stderr
    assert cluster.etcdctl("get", "cmp", "--print-value-only").stdout.strip() == "b"
    cp = cluster.etcdctl("compact", str(r1), check=False)
    assert cp.returncode != 0 and "required revision has been compacted" in cp.stderr
    # a watch from before the compaction is canceled the way etcd cancels it
    cp = cluster.etcdctl("watch", "cmp", f"--rev={r1}", check=False, endpoints=cluster.endpoints[0])
    assert "etcdserver: mvcc: required revision has been compacted" in cp.stdout + cp.stderr


def test_bad_input_gives_etcd_errors(cluster, tmp_path):
    cp = cluster.etcdctl("get", "x", "--rev=99999999", check=False)
    assert cp.returncode != 0 and "etcdserver: mvcc: required revision is a future revision" in cp.stderr
    cp = cluster.etcdctl("put", "leased", "v", "--lease=1234abcd", check=False)
    assert cp.returncode != 0 and "etcdserver: requested lease not found" in cp.stderr
    cp = cluster.etcdctl("lease", "revoke", "1234abcd", check=False)
    assert cp.returncode != 0 and "etcdserver: requested lease not found" in cp.stderr
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1536 * 1024 + 10))
    with open(big) as f:
        cp = cluster.etcdctl("put", "big", input=f.read(), check=False)
    assert cp.returncode != 0 and "etcdserver: request is too large" in cp.stderr
    cp = cluster.etcdctl("txn", input='value("a") = "b"\n\nput k 1\nput k 2\n\n\n', check=False)
    assert cp.returncode != 0 and "etcdserver: duplicate key given in txn request" in cp.stderr
    cp = cluster.etcdctl("user", "list", check=False)
    assert cp.returncode != 0 and "geokv: authentication is not supported" in cp.stderr
    # the cluster keeps serving after all of that
    assert cluster.etcdctl("put", "after-errors", "ok").stdout.strip() == "OK"
