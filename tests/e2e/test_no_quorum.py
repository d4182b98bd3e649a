"""Without a quorum the member says so: /health turns 503, writes fail with a clear
etcd error instead of hanging, serializable reads still answer; with the quorum back
everything recovers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.e2e

RECOVER_S = 30.0


def health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(pred, what: str, timeout_s: float = RECOVER_S):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_losing_and_regaining_quorum(cluster):
    ep0, m0 = cluster.endpoints[0], cluster.metrics[0]
    cluster.etcdctl("put", "q/k", "before")
    assert health(m0) == (200, {"health": "true"})
    # etcdctl watch requires a leader (hasleader metadata): it must be told, not left hanging
    watcher = cluster.spawn_etcdctl("watch", "q/", "--prefix", endpoints=ep0, stderr=True)
    cluster.local.stop_member(1)
    cluster.local.stop_member(2)
    try:
        code, doc = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(health(m0)), "unhealthy /health")
        assert doc["health"] == "false" and doc["reason"]
        cp = cluster.etcdctl("put", "q/k", "during", endpoints=ep0, check=False, timeout_s=60)
        assert cp.returncode != 0
        assert "etcdserver:" in cp.stderr or "context deadline exceeded" in cp.stderr
        out = cluster.etcdctl("get", "q/k", "--consistency=s", "--print-value-only", endpoints=ep0).stdout
        assert out.strip() == "before"
        try:
            watcher.wait(RECOVER_S)
        except Exception:
            watcher.kill()
            raise AssertionError("a leader-requiring watch stayed open without a leader") from None
        assert watcher.returncode != 0
        assert "etcdserver: no leader" in watcher.stdout.read().decode() + watcher.stderr.read().decode()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        watcher.stdout.close()
        watcher.stderr.close()
        cluster.local.restart(1)
        cluster.local.restart(2)
    cluster.local.wait_ready()
    wait_for(lambda: health(m0)[0] == 200, "healthy /health again")
    assert cluster.etcdctl("put", "q/k", "after").stdout.strip() == "OK"
    assert cluster.etcdctl("get", "q/k", "--print-value-only").stdout.strip() == "after"
