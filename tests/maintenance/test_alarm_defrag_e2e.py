"""The NOSPACE alarm and defragmentation end to end: three real geokv processes with a
1 MiB --quota-backend-bytes, driven by the real etcdctl, checked against what etcd 3.4
does (same error text, alarm list/disarm output, re-raise while the file is still too
big, reads/deletes/compaction allowed under the alarm)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import grpc

from geokv.client import Client
from geokv.etcdpb import rpc_pb2

from .conftest import QUOTA_BYTES

NOSPACE_TEXT = "etcdserver: mvcc: database space exceeded"
FILL_VALUE = b"v" * 20_000
FILL_PUTS_MAX = 200  # 1 MiB / 20 KB is ~50: far more means the quota is not enforced
RPC_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0


def _status(c, i: int) -> dict:
    out = c.etcdctl("endpoint", "status", "-w", "json", endpoint=i).stdout
    return json.loads(out)[0]["Status"]


def _alarm_lines(c, i: int) -> list[str]:
    return [ln.strip() for ln in c.etcdctl("alarm", "list", endpoint=i).stdout.splitlines() if ln.strip()]


def _assert_nospace(cp) -> None:
    assert cp.returncode != 0, f"write accepted under NOSPACE:\n{cp.stdout}"
    assert NOSPACE_TEXT in cp.stderr, cp.stderr


def _health(c, i: int) -> dict:
    """/health's document; an unhealthy member answers 503, as etcd does."""
    try:
        with urllib.request.urlopen(c.metrics[i] + "/health", timeout=RPC_TIMEOUT_S) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        return json.loads(exc.read())


def _metrics(c, i: int) -> dict[str, float]:
    with urllib.request.urlopen(c.metrics[i] + "/metrics", timeout=RPC_TIMEOUT_S) as r:
        lines = r.read().decode().splitlines()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines if ln and not ln.startswith("#")}


def _db_file_bytes(c, i: int) -> int:
    return os.path.getsize(os.path.join(c.local.data_dir(i), "member", "db", "data.mdb"))


def test_nospace_alarm_refuses_writes_until_compaction_defrag_and_disarm(quota_cluster):
    c = quota_cluster
    lc = c.local
    ids = [lc.member_id(i) for i in range(3)]
    target = 1
    stub = lc.kv_stub(target)

    # 1. Fill through member n2 until the quota refuses a put with etcd's error.
    acked: list[bytes] = []
    refused = None
    for i in range(FILL_PUTS_MAX):
        key = b"fill/%04d" % i
        try:
            stub.Put(rpc_pb2.PutRequest(key=key, value=FILL_VALUE), timeout=RPC_TIMEOUT_S)
            acked.append(key)
        except grpc.RpcError as exc:
            refused = exc
            break
    assert refused is not None, "a 1 MiB quota never refused a put"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details() == NOSPACE_TEXT
    assert 20 < len(acked) < 60

    # 2. The alarm is replicated: every member lists it, raised for n2; Status shows it.
    expected = f"memberID:{ids[target]} alarm:NOSPACE"
    for i in range(3):
        assert _alarm_lines(c, i) == [expected]
        assert f"{expected} " in _status(c, i)["errors"]
        assert _health(c, i)["health"] == "false"  # etcd 3.4: any alarm fails /health
        m = _metrics(c, i)
        assert m['geokv_alarms_active{alarm="NOSPACE"}'] == 1
        assert m["etcd_server_quota_backend_bytes"] == QUOTA_BYTES

    # 3. Every member refuses writes that cost space (etcd's capped applier) ...
    for i in range(3):
        _assert_nospace(c.etcdctl("put", "small", "x", endpoint=i, check=False))
    _assert_nospace(c.etcdctl("txn", endpoint=0, input="\nput small x\n\n\n", check=False))
    lease = c.etcdctl("lease", "grant", "100", endpoint=2, check=False)
    assert lease.returncode != 0 and NOSPACE_TEXT in lease.stderr
    # ... but serves reads, deletes and txns without puts.
    assert c.etcdctl("txn", endpoint=2, input="\ndel fill/0000\n\n\n").stdout.startswith("SUCCESS")
    acked.remove(b"fill/0000")
    for i in range(3):
        keys = c.etcdctl("get", "fill/", "--prefix", "--keys-only", endpoint=i).stdout.split()
        assert keys == [k.decode() for k in acked], f"member {i} lost acknowledged writes"

    # 4. The alarm list survives a crash (kill -9 and restart of n3).
    lc.kill(2, signal.SIGKILL)
    lc.restart(2)
    lc.wait_ready()
    assert _alarm_lines(c, 2) == [expected]
    _assert_nospace(c.etcdctl("put", "small", "x", endpoint=2, check=False))

    # 5. Delete and compact: the file keeps its size, so a disarm alone does not help;
    #    the next write raises the alarm again (as etcd does).
    out = json.loads(c.etcdctl("del", "fill/", "--prefix", "-w", "json", endpoint=0).stdout)
    assert int(out["deleted"]) == len(acked)
    rev = int(out["header"]["revision"])
    c.etcdctl("compact", str(rev), "--physical", endpoint=0)
    before = [_status(c, i)["dbSize"] for i in range(3)]
    # (n2's file is the one its quota check measured; the others may differ by a few pages)
    assert before[target] + len(FILL_VALUE) + 256 >= QUOTA_BYTES, before
    assert c.etcdctl("alarm", "disarm", endpoint=0).stdout.split("\n")[0].strip() == expected
    _assert_nospace(c.etcdctl("put", "big", "x" * len(FILL_VALUE), endpoint=target, check=False))
    assert _alarm_lines(c, 0) == [expected]

    # 6. Defragment every member: the file shrinks, on disk too.
    files_before = [_db_file_bytes(c, i) for i in range(3)]
    out = c.etcdctl("defrag").stdout
    assert out.count("Finished defragmenting etcd member") == 3, out
    after = [_status(c, i) for i in range(3)]
    for i in range(3):
        assert after[i]["dbSize"] * 4 < before[i], (before, after)
        assert after[i]["dbSizeInUse"] <= after[i]["dbSize"]
        assert _db_file_bytes(c, i) * 4 < files_before[i]
        m = _metrics(c, i)
        assert m["etcd_mvcc_db_total_size_in_bytes"] * 4 < before[i]
        assert m["geokv_defrag_freed_bytes_total"] > 0

    # 7. Disarm: the list empties everywhere and writes are accepted again.
    assert c.etcdctl("alarm", "disarm", endpoint=2).stdout.strip() == expected
    assert c.etcdctl("alarm", "disarm", endpoint=2).stdout.strip() == ""
    for i in range(3):
        assert _alarm_lines(c, i) == []
        assert not any("NOSPACE" in e for e in _status(c, i).get("errors", []))
        assert _health(c, i)["health"] == "true"
        assert _metrics(c, i)['geokv_alarms_active{alarm="NOSPACE"}'] == 0
        assert c.etcdctl("put", f"after/{i}", "ok", endpoint=i).stdout.strip() == "OK"
    lease = c.etcdctl("lease", "grant", "100", endpoint=0)
    assert "granted with TTL" in lease.stdout
    for i in range(3):
        got = c.etcdctl("get", "after/", "--prefix", "--print-value-only", endpoint=i).stdout.split()
        assert got == ["ok", "ok", "ok"]
    hashes = json.loads(c.etcdctl("endpoint", "hashkv", "-w", "json").stdout)
    assert len({h["HashKV"]["hash"] for h in hashes}) == 1, hashes


def _geokv(c, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "geokv", "--endpoints", ",".join(c.endpoints), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_geokv_cli_and_client_list_disarm_and_defrag(quota_cluster):
    """The same cycle through geokv's own CLI and Python client (runs after the etcdctl
    test on the same cluster)."""
    c = quota_cluster
    lc = c.local
    stub = lc.kv_stub(0)
    for i in range(FILL_PUTS_MAX):
        try:
            stub.Put(rpc_pb2.PutRequest(key=b"again/%04d" % i, value=FILL_VALUE), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            assert exc.details() == NOSPACE_TEXT
            break
    else:
        raise AssertionError("the quota never refused a put")
    expected = f"memberID:{lc.member_id(0)} alarm:NOSPACE"
    cp = _geokv(c, "alarm", "list")
    assert cp.returncode == 0 and cp.stdout.strip() == expected, cp
    cp = _geokv(c, "-w", "json", "alarm", "list")
    assert json.loads(cp.stdout) == [{"memberID": lc.member_id(0), "alarm": "NOSPACE"}]
    with Client(c.endpoints) as client:
        assert client.alarms() == [(lc.member_id(0), "NOSPACE")]
    cp = _geokv(c, "put", "k", "v")
    assert cp.returncode != 0 and NOSPACE_TEXT in cp.stderr and "Traceback" not in cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1, cp.stderr

    cp = _geokv(c, "del", "--prefix", "again/")
    assert cp.returncode == 0, cp
    with Client(c.endpoints) as client:
        rev = client.status().header.revision
    assert _geokv(c, "compaction", str(rev), "--physical").returncode == 0
    cp = _geokv(c, "defrag", "--cluster")
    assert cp.returncode == 0 and cp.stdout.count("Finished defragmenting etcd member") == 3, cp
    cp = _geokv(c, "alarm", "disarm")
    assert cp.returncode == 0 and cp.stdout.strip() == expected, cp
    assert _geokv(c, "alarm", "list").stdout.strip() == ""
    assert _geokv(c, "put", "k", "v").returncode == 0
