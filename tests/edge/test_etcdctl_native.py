"""The real etcdctl against a geokv member served by the native edge."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import grpc
import grpc.aio
import pytest

from .conftest import ETCDCTL, etcdctl
from geokv.edge.client import NativeChannel
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc


def _ep(m) -> str:
    return m.endpoints[0].removeprefix("http://")


def test_put_get_del(native_member):
    ep = _ep(native_member)
    assert etcdctl(ep, "put", "k1", "v1").stdout.strip() == "OK"
    etcdctl(ep, "put", "k2", "v2")
    assert etcdctl(ep, "get", "k1").stdout.split() == ["k1", "v1"]
    out = json.loads(etcdctl(ep, "get", "k", "--prefix", "-w", "json").stdout)
    assert out["count"] == 2 and out["header"]["revision"] >= 3
    assert etcdctl(ep, "get", "k", "--prefix", "--limit=1", "--keys-only").stdout.split() == ["k1"]
    assert etcdctl(ep, "del", "k", "--prefix").stdout.strip() == "2"
    assert etcdctl(ep, "get", "k1").stdout == ""


def test_txn(native_member):
    ep = _ep(native_member)
    etcdctl(ep, "put", "tk", "a")
    out = etcdctl(ep, "txn", input='value("tk") = "a"\n\nput tk b\n\nput tk c\n\n').stdout
    assert out.split()[0] == "SUCCESS"
    assert etcdctl(ep, "get", "tk", "--print-value-only").stdout.strip() == "b"


def test_large_value(native_member):
    ep = _ep(native_member)
    big = "x" * (1 << 20)
    path = os.path.join(native_member.base_dir, "big.txt")
    with open(path, "w") as fh:
        fh.write(big)
    with open(path) as fh:
        cp = subprocess.run([ETCDCTL, f"--endpoints={ep}", "put", "big"], stdin=fh, capture_output=True,
                            text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
    assert cp.returncode == 0, cp.stderr
    assert etcdctl(ep, "get", "big", "--print-value-only").stdout.rstrip("\n") == big


def test_too_large_request_is_etcds_error(native_member):
    ep = _ep(native_member)
    cp = etcdctl(ep, "put", "huge", input="y" * (1572864 + 10), check=False)
    assert cp.returncode != 0
    assert "request is too large" in cp.stderr


def test_watch_streams_events(native_member):
    ep = _ep(native_member)
    p = subprocess.Popen([ETCDCTL, f"--endpoints={ep}", "watch", "wk", "--prefix"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, ETCDCTL_API="3"))
    try:
        time.sleep(0.5)
        for i in range(3):
            etcdctl(ep, "put", f"wk{i}", f"v{i}")
        lines = []
        deadline = time.monotonic() + 10
        while len(lines) < 9 and time.monotonic() < deadline:
            lines.append(p.stdout.readline().strip())
        assert lines == ["PUT", "wk0", "v0", "PUT", "wk1", "v1", "PUT", "wk2", "v2"]
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()


def test_watch_from_old_revision(native_member):
    ep = _ep(native_member)
    rev = json.loads(etcdctl(ep, "put", "old", "1", "-w", "json").stdout)["header"]["revision"]
    etcdctl(ep, "put", "old", "2")
    p = subprocess.Popen([ETCDCTL, f"--endpoints={ep}", "watch", "old", f"--rev={rev}"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, ETCDCTL_API="3"))
    try:
        lines = [p.stdout.readline().strip() for _ in range(6)]
        assert lines == ["PUT", "old", "1", "PUT", "old", "2"]
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_lease_grant_keepalive_revoke(native_member):
    ep = _ep(native_member)
    out = etcdctl(ep, "lease", "grant", "30").stdout
    lease = out.split()[1]
    etcdctl(ep, "put", "lk", "v", f"--lease={lease}")
    ka = etcdctl(ep, "lease", "keep-alive", "--once", lease).stdout
    assert "keepalived with TTL" in ka
    assert "remaining" in etcdctl(ep, "lease", "timetolive", lease, "--keys").stdout
    assert lease in etcdctl(ep, "lease", "list").stdout
    etcdctl(ep, "lease", "revoke", lease)
    assert etcdctl(ep, "get", "lk").stdout == ""


def test_lock_and_elect(native_member):
    ep = _ep(native_member)
    out = etcdctl(ep, "lock", "mylock", "echo", "locked-body").stdout
    assert "locked-body" in out
    env = dict(os.environ, ETCDCTL_API="3")
    p = subprocess.Popen([ETCDCTL, f"--endpoints={ep}", "elect", "myelection", "alice"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        first = p.stdout.readline().strip()
        assert first.startswith("myelection/")
        obs = subprocess.Popen([ETCDCTL, f"--endpoints={ep}", "elect", "-l", "myelection"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert obs.stdout.readline().strip().startswith("myelection/")
            assert obs.stdout.readline().strip() == "alice"
        finally:
            obs.kill()
            obs.wait()
            obs.stdout.close()
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()


def test_snapshot_save_and_status(native_member, tmp_path):
    ep = _ep(native_member)
    for i in range(20):
        etcdctl(ep, "put", f"s{i}", "v" * 100)
    path = tmp_path / "snap.db"
    cp = etcdctl(ep, "snapshot", "save", str(path))
    assert "Snapshot saved" in cp.stdout
    assert path.stat().st_size > 0
    st = json.loads(etcdctl(ep, "endpoint", "status", "-w", "json").stdout)
    assert st[0]["Status"]["header"]["member_id"] == native_member.member_id(0)
    assert "is healthy" in etcdctl(ep, "endpoint", "health").stderr + etcdctl(ep, "endpoint", "health").stdout
    assert "started" in etcdctl(ep, "member", "list").stdout


def test_compaction_error_text(native_member):
    ep = _ep(native_member)
    rev = json.loads(etcdctl(ep, "put", "c", "1", "-w", "json").stdout)["header"]["revision"]
    etcdctl(ep, "compaction", str(rev))
    cp = etcdctl(ep, "get", "c", f"--rev={rev - 1}", check=False)
    assert cp.returncode != 0 and "required revision has been compacted" in cp.stderr


def test_watch_create_request_larger_than_the_stream_window(native_member):
    """A 1.4 MiB WatchCreateRequest (more than the edge's 1 MiB stream window, within
    the message bound) is created, on grpcio and on the native channel; one over the
    bound gets the message-size error instead of hanging."""
    ep = _ep(native_member)
    big = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w" * (1400 * 1024)))
    huge = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w" * (3 << 20)))

    def first_response(reqs):
        with grpc.insecure_channel(ep) as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(iter(reqs), timeout=20)
            try:
                return next(call)
            finally:
                call.cancel()

    assert first_response([big]).created
    with pytest.raises(grpc.RpcError) as ei:
        first_response([huge])
    assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in ei.value.details()

    async def native() -> None:
        ch = NativeChannel(ep, max_send_message_bytes=8 << 20)
        try:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=20)
            await call.write(big)
            assert (await call.read()).created
            call.cancel()
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=20)
            with pytest.raises(grpc.aio.AioRpcError) as ei:  # at the write or the read
                await call.write(huge)
                await call.read()
            assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await ch.close()

    asyncio.run(asyncio.wait_for(native(), 45))
