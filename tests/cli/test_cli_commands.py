"""The ``geokv`` command against a real server, run as a subprocess like a user would."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from etcdproc import free_port


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, f"exit {r.returncode}: {r.stdout} {r.stderr}"
    stderr = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def test_put_get_del_in_simple_output(cli, prefix):
    assert ok(cli("put", prefix + "k", "hello")) == "OK\n"
    assert ok(cli("get", prefix + "k")) == f"{prefix}k\nhello\n"
    assert ok(cli("get", prefix + "k", "--print-value-only")) == "hello\n"
    assert ok(cli("put", prefix + "k2", input="from stdin")) == "OK\n"
    assert ok(cli("get", prefix, "--prefix", "--keys-only")) == f"{prefix}k\n{prefix}k2\n"
    assert ok(cli("del", prefix, "--prefix")) == "2\n"
    assert ok(cli("get", prefix + "k")) == ""


def test_json_output_matches_etcdctl(cli, prefix):
    ok(cli("put", prefix + "j", "v1"))
    ok(cli("put", prefix + "j", "v2"))
    mine = json.loads(ok(cli("get", prefix + "j", "-w", "json")))  # global flags may follow the command
    kv = mine["kvs"][0]
    assert base64.b64decode(kv["key"]) == (prefix + "j").encode()
    assert base64.b64decode(kv["value"]) == b"v2"
    assert kv["version"] == 2 and mine["count"] == 1 and mine["header"]["revision"] >= kv["mod_revision"]
    etcdctl = shutil.which("etcdctl")
    if etcdctl:
        r = subprocess.run([etcdctl, "--endpoints", ",".join(cli.endpoints), "-w", "json", "get", prefix + "j"],
                           capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
        theirs = json.loads(ok(r))["kvs"][0]
        for field in ("key", "value", "create_revision", "mod_revision", "version"):
            assert kv[field] == theirs[field], field


def test_txn_from_stdin(cli, prefix):
    ok(cli("put", prefix + "t", "v1"))
    text = f'value("{prefix}t") = "v1"\n\nput {prefix}t v2\nget {prefix}t\n\nget {prefix}t\n'
    assert ok(cli("txn", input=text)) == f"SUCCESS\n\nOK\n\n{prefix}t\nv2\n"
    out = json.loads(ok(cli("-w", "json", "txn", input=text)))
    assert out["succeeded"] is False
    assert base64.b64decode(out["responses"][0]["response_range"]["kvs"][0]["value"]) == b"v2"


def test_txn_syntax_error_is_one_line(cli):
    line = one_line_error(cli("txn", input='valu("k") = "v"\n\n\n'))
    assert "bad compare" in line


def test_lease_lifecycle_and_unknown_lease_error(cli, prefix):
    out = ok(cli("lease", "grant", "30"))
    assert out.startswith("lease ") and out.endswith(" granted with TTL(30s)\n")
    lease_hex = out.split()[1]
    ok(cli("put", prefix + "l", "v", "--lease", lease_hex))
    ttl = ok(cli("lease", "timetolive", lease_hex, "--keys"))
    assert f"lease {lease_hex} granted with TTL(30s)" in ttl and prefix + "l" in ttl
    assert lease_hex in ok(cli("lease", "list"))
    assert "keepalived with TTL(30)" in ok(cli("lease", "keep-alive", lease_hex, "--once"))
    assert ok(cli("lease", "revoke", lease_hex)) == f"lease {lease_hex} revoked\n"
    assert one_line_error(cli("lease", "revoke", lease_hex)) == "Error: etcdserver: requested lease not found"
    assert ok(cli("get", prefix + "l")) == ""


@pytest.mark.parametrize("size_kib", [1700, 3 * 1024])
def test_a_too_large_value_is_a_one_line_error(cli, prefix, size_kib):
    line = one_line_error(cli("put", prefix + "big", input=b"x" * (size_kib * 1024)))
    assert line.startswith("Error: etcdserver: request is too large")


def test_bad_and_unreachable_endpoints_are_one_line_errors(cli):
    line = one_line_error(cli("--endpoints", "nonsense", "get", "k", endpoints=False))
    assert line == "Error: bad endpoint 'nonsense': expected host:port (e.g. 127.0.0.1:2379)"
    dead = f"127.0.0.1:{free_port()}"
    line = one_line_error(cli("--endpoints", dead, "--timeout", "1s", "get", "k", endpoints=False))
    assert dead in line and "cannot connect" in line


def test_usage_mistakes_are_one_line_errors(cli):
    assert "invalid choice" in one_line_error(cli("frobnicate", endpoints=False))
    assert "bad id" in one_line_error(cli("lease", "revoke", "xyz", endpoints=False))
    assert "bad timeout" in one_line_error(cli("--timeout", "soon", "get", "k", endpoints=False))


def test_watch_from_a_revision_prints_events(cli, prefix):
    rev = json.loads(ok(cli("-w", "json", "put", prefix + "w", "1")))["header"]["revision"]
    ok(cli("del", prefix + "w"))
    out = ok(cli("watch", prefix + "w", "--rev", str(rev), "--max-events", "2"))
    assert out == f"PUT\n{prefix}w\n1\nDELETE\n{prefix}w\n\n"


def test_endpoint_status_health_and_member_list(cli):
    status = json.loads(ok(cli("-w", "json", "endpoint", "status")))
    assert len(status) == 1 and status[0]["Status"]["leader"] == status[0]["Status"]["header"]["member_id"]
    table = ok(cli("-w", "table", "endpoint", "status"))
    for col in ("ENDPOINT", "REGION", "IS LEADER", "RAFT TERM", "RAFT INDEX", "DB SIZE"):
        assert col in table
    assert "is healthy" in ok(cli("endpoint", "health"))
    members = json.loads(ok(cli("-w", "json", "member", "list")))["members"]
    assert len(members) == 1 and members[0]["clientURLs"]


def test_snapshot_save_and_compaction(cli, prefix, tmp_path):
    path = str(tmp_path / "snap.db")
    out = ok(cli("snapshot", "save", path))
    assert out.startswith(f"Snapshot saved at {path}") and os.path.getsize(path) > 0
    rev = json.loads(ok(cli("-w", "json", "put", prefix + "c", "1")))["header"]["revision"]
    assert ok(cli("compaction", str(rev))) == f"compacted revision {rev}\n"
    assert "compacted" in one_line_error(cli("get", prefix + "c", "--rev", str(rev - 1)))


@pytest.mark.parametrize("argv", [["put"], ["get"], ["lease", "grant"]])
def test_missing_arguments_are_reported(cli, argv):
    one_line_error(cli(*argv))


def test_lock_runs_a_command_while_holding_the_lock(cli, prefix):
    code = "import sys; sys.stdout.write('held\\n')"
    out = ok(cli("lock", prefix + "L", sys.executable, "-c", code))
    key, held = out.splitlines()
    assert key.startswith(prefix + "L/") and held == "held"
    assert ok(cli("get", prefix + "L", "--prefix")) == ""  # released afterwards


def test_elect_campaigns_until_interrupted_then_resigns(cli, prefix):
    name = prefix + "E"
    proc = subprocess.Popen([sys.executable, "-m", "geokv", "--endpoints", ",".join(cli.endpoints), "elect", name,
                             "bob"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        key = proc.stdout.readline().strip()
        assert key.startswith(name + "/"), proc.stderr.read() if proc.poll() is not None else key
        assert proc.stdout.readline().strip() == "bob"
        assert ok(cli("get", name, "--prefix", "--print-value-only")) == "bob\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert ok(cli("get", name, "--prefix")) == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_serve_and_wal_repair_hand_their_flags_to_their_own_parsers(tmp_path):
    from cli_runner import Cli

    run = Cli([])
    serve = run("serve", "--help", endpoints=False)
    assert serve.returncode == 0 and "--initial-cluster" in serve.stdout
    repair = run("wal", "repair", str(tmp_path), endpoints=False)
    assert repair.returncode == 2 and "no geokv storage" in repair.stderr and "Traceback" not in repair.stderr
