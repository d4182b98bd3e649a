"""etcdctl against a real 3-member geokv cluster: watch, leases, lock, elect,
membership, endpoint status/health, snapshots, metrics/health HTTP."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from geokv.api.maintenance import decode_snapshot_file

pytestmark = pytest.mark.e2e

WAIT_S = 10.0  # bound on waiting for a background etcdctl to print something


_pending: dict[int, bytes] = {}  # pid -> bytes read past the last returned line


def read_lines_until(p: subprocess.Popen, n: int, timeout_s: float = WAIT_S) -> list[str]:
    """The next ``n`` non-empty stdout lines of ``p`` (fails after ``timeout_s``).

    Reads the raw pipe (no Python buffering) so select() sees every byte."""
    import os
    import select

    fd = p.stdout.fileno()
    buf = _pending.pop(p.pid, b"")
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        while b"\n" in buf and len(lines) < n:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                lines.append(line.decode().strip())
        if len(lines) >= n:
            _pending[p.pid] = buf
            return lines
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"only got {lines!r} from {p.args}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"{p.args} exited early after {lines!r}")
        buf += chunk


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    for f in (p.stdout, p.stderr, p.stdin):
        if f:
            f.close()


def revision_of(cluster, *put_args: str) -> int:
    return json.loads(cluster.etcdctl("put", *put_args, "-w", "json").stdout)["header"]["revision"]


def test_watch_live_events_on_another_member(cluster):
    # Start at the next revision, so the test does not depend on when the watch is created.
    now = json.loads(cluster.etcdctl("get", "live/", "-w", "json").stdout)["header"]["revision"]
    w = cluster.spawn_etcdctl("watch", "live/", "--prefix", f"--rev={now + 1}", endpoints=cluster.endpoints[2])
    try:
        cluster.etcdctl("put", "live/a", "1", endpoints=cluster.endpoints[0])
        cluster.etcdctl("del", "live/a", endpoints=cluster.endpoints[1])
        assert read_lines_until(w, 5) == ["PUT", "live/a", "1", "DELETE", "live/a"]
    finally:
        stop(w)


def test_watch_from_an_old_revision_replays_history_with_prev_kv(cluster):
    r1 = revision_of(cluster, "old/k", "v1")
    cluster.etcdctl("put", "old/k", "v2")
    cluster.etcdctl("put", "old/k", "v3")
    w = cluster.spawn_etcdctl("watch", "old/k", f"--rev={r1}", "--prev-kv")
    try:
        assert read_lines_until(w, 3 + 5 + 5) == [
            "PUT", "old/k", "v1",
            "PUT", "old/k", "v1", "old/k", "v2",
            "PUT", "old/k", "v2", "old/k", "v3",
        ]
    finally:
        stop(w)


def test_lease_grant_attach_timetolive_keepalive_list_revoke(cluster):
    out = cluster.etcdctl("lease", "grant", "60").stdout.split()
    assert out[0] == "lease" and out[2:] == ["granted", "with", "TTL(60s)"]
    lease = out[1]
    cluster.etcdctl("put", "leased/k", "v", f"--lease={lease}")
    ttl = cluster.etcdctl("lease", "timetolive", lease, "--keys").stdout
    assert "granted with TTL(60s)" in ttl and "attached keys([leased/k])" in ttl
    ka = cluster.etcdctl("lease", "keep-alive", "--once", lease, endpoints=cluster.endpoints[1]).stdout
    assert ka.strip() == f"lease {lease} keepalived with TTL(60)"
    assert lease in cluster.etcdctl("lease", "list").stdout.split()
    assert cluster.etcdctl("lease", "revoke", lease).stdout.strip() == f"lease {lease} revoked"
    assert cluster.etcdctl("get", "leased/k").stdout.strip() == ""
    assert cluster.etcdctl("lease", "timetolive", lease).stdout.strip() == f"lease {lease} already expired"


def test_lease_expiry_deletes_keys(cluster):
    lease = cluster.etcdctl("lease", "grant", "2").stdout.split()[1]
    cluster.etcdctl("put", "short/k", "v", f"--lease={lease}")
    deadline = time.monotonic() + 15
    while cluster.etcdctl("get", "short/k").stdout.strip():
        assert time.monotonic() < deadline, "leased key outlived its lease"
        time.sleep(0.3)


def test_lock_is_exclusive_and_handed_over(cluster):
    holder = cluster.spawn_etcdctl("lock", "mtx")
    try:
        key1 = read_lines_until(holder, 1)[0]
        assert key1.startswith("mtx/")
        waiter = cluster.spawn_etcdctl("lock", "mtx", endpoints=cluster.endpoints[1])
        try:
            deadline = time.monotonic() + WAIT_S
            while len(keys := cluster.etcdctl("get", "mtx/", "--prefix", "--keys-only").stdout.split()) < 2:
                assert time.monotonic() < deadline, f"the waiter never queued: {keys}"
                time.sleep(0.1)
            assert len(keys) == 2 and keys[0] != keys[1]
            assert waiter.poll() is None
            stop(holder)  # releasing the lock hands it to the waiter
            key2 = read_lines_until(waiter, 1)[0]
            assert key2.startswith("mtx/") and key2 != key1
        finally:
            stop(waiter)
    finally:
        stop(holder)


def test_lock_runs_a_command_while_held(cluster):
    out = cluster.etcdctl("lock", "mtx-cmd", "echo", "inside-the-lock").stdout
    assert "inside-the-lock" in out
    assert cluster.etcdctl("get", "mtx-cmd/", "--prefix").stdout.strip() == ""


def test_elect_campaign_and_observe(cluster):
    observer = cluster.spawn_etcdctl("elect", "-l", "chief", endpoints=cluster.endpoints[2])
    first = cluster.spawn_etcdctl("elect", "chief", "alice")
    try:
        leader = read_lines_until(first, 2)
        assert leader[0].startswith("chief/") and leader[1] == "alice"
        assert read_lines_until(observer, 2) == leader
        second = cluster.spawn_etcdctl("elect", "chief", "bob", endpoints=cluster.endpoints[1])
        try:
            # bob's candidacy key is in, yet he waits behind alice.
            deadline = time.monotonic() + WAIT_S
            while len(keys := cluster.etcdctl("get", "chief/", "--prefix", "--keys-only").stdout.split()) < 2:
                assert time.monotonic() < deadline, f"bob never queued: {keys}"
                assert second.poll() is None, "bob's campaign ended before alice resigned"
                time.sleep(0.1)
            assert second.poll() is None  # waits behind alice
            stop(first)
            nxt = read_lines_until(second, 2)
            assert nxt[1] == "bob"
            assert read_lines_until(observer, 2) == nxt
        finally:
            stop(second)
    finally:
        stop(first)
        stop(observer)


def test_member_list_add_learner_and_remove(cluster):
    doc = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)
    ids = sorted(m["ID"] for m in doc["members"])
    assert ids == sorted(cluster.ids)
    assert all(m["peerURLs"] for m in doc["members"])
    from geokv.testing.ports import free_ports

    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    out = cluster.etcdctl("member", "add", "newbie", f"--peer-urls={url}", "--learner").stdout
    assert "added to cluster" in out
    doc = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)
    added = [m for m in doc["members"] if m["ID"] not in cluster.ids]
    assert len(added) == 1 and added[0]["peerURLs"] == [url] and added[0].get("isLearner") is True
    cp = cluster.etcdctl("member", "add", "again", f"--peer-urls={url}", check=False)
    assert cp.returncode != 0 and "etcdserver: Peer URLs already exists" in cp.stderr
    new_id = "%x" % added[0]["ID"]
    assert "removed from cluster" in cluster.etcdctl("member", "remove", new_id).stdout
    cp = cluster.etcdctl("member", "remove", new_id, check=False)
    assert cp.returncode != 0 and "etcdserver: member not found" in cp.stderr
    cp = cluster.etcdctl("member", "add", "bad", "--peer-urls=notaurl", check=False)
    assert cp.returncode != 0


def test_endpoint_status_and_health(cluster):
    doc = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json").stdout)
    assert len(doc) == 3
    leaders = {d["Status"]["leader"] for d in doc}
    assert len(leaders) == 1 and leaders.pop() in cluster.ids
    assert all(d["Status"]["header"]["member_id"] in cluster.ids for d in doc)
    assert all(d["Status"]["raftTerm"] >= 1 for d in doc)
    cp = cluster.etcdctl("endpoint", "health")
    assert (cp.stdout + cp.stderr).count("is healthy") == 3


def test_snapshot_save_is_checksummed(cluster, tmp_path):
    cluster.etcdctl("put", "snap/k", "v")
    path = tmp_path / "snap.db"
    cp = cluster.etcdctl("snapshot", "save", str(path), endpoints=cluster.endpoints[0])
    assert f"Snapshot saved at {path}" in cp.stdout + cp.stderr
    data = decode_snapshot_file(path.read_bytes())
    assert len(data) > 0


def test_http_health_and_metrics(cluster):
    for url in cluster.metrics:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            assert json.loads(r.read()) == {"health": "true"}
    cluster.etcdctl("get", "anything", endpoints=cluster.endpoints[0])
    with urllib.request.urlopen(cluster.metrics[0] + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'geokv_grpc_request_duration_seconds_count{method="Range"}' in text
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(cluster.metrics[0] + "/nope", timeout=5)
    assert e.value.code == 404


def test_move_leader_defrag_alarm_and_hashkv(cluster):
    doc = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json").stdout)
    leader = doc[0]["Status"]["leader"]
    leader_ep = next(d["Endpoint"] for d in doc if d["Status"]["header"]["member_id"] == leader)
    target = next(i for i in cluster.ids if i != leader)
    out = cluster.etcdctl("move-leader", "%x" % target, endpoints=leader_ep).stdout
    assert "Leadership transferred" in out
    import time as _t

    deadline = _t.monotonic() + 10
    while True:
        doc = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json").stdout)
        if {d["Status"]["leader"] for d in doc} == {target}:
            break
        assert _t.monotonic() < deadline, "leadership did not move"
        _t.sleep(0.2)
    assert "Finished defragmenting etcd member" in cluster.etcdctl("defrag", endpoints=cluster.endpoints[0]).stdout
    assert cluster.etcdctl("alarm", "list").stdout.strip() == ""
    hashes = json.loads(cluster.etcdctl("endpoint", "hashkv", "-w", "json").stdout)
    assert len(hashes) == 3 and all(h["HashKV"]["header"]["revision"] > 0 for h in hashes)
    assert cluster.etcdctl("put", "after-move", "ok").stdout.strip() == "OK"


def test_promoting_a_learner_that_is_not_in_sync_is_refused(cluster):
    from geokv.testing.ports import free_ports

    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    cluster.etcdctl("member", "add", "lagger", f"--peer-urls={url}", "--learner")
    doc = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)
    new_id = "%x" % next(m["ID"] for m in doc["members"] if m["peerURLs"] == [url])
    try:
        cp = cluster.etcdctl("member", "promote", new_id, check=False)
        assert cp.returncode != 0
        assert "etcdserver: can only promote a learner member which is in sync with leader" in cp.stderr
    finally:
        cluster.etcdctl("member", "remove", new_id)
