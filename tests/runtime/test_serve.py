"""The server process: clear errors for user mistakes, clean SIGTERM shutdown, restart."""

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.testing.ports import free_ports

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 20.0


def serve(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "geokv.runtime.serve", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def single_node_args(tmp_path, cport, pport):
    return ["--name", "solo", "--data-dir", str(tmp_path / "solo"),
            "--listen-client-urls", f"http://127.0.0.1:{cport}",
            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
            "--heartbeat-interval", "50", "--election-timeout", "500"]


def wait_put(cport, key, value):
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{cport}") as ch:
        while True:
            try:
                return rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=2)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.mark.parametrize("args,needle", [
    (["--initial-cluster-state", "bogus"], "initial-cluster-state"),
    (["--election-timeout", "x"], "integer"),
    (["--what"], "unrecognized"),
])
def test_bad_flags_exit_2_with_one_clear_line(args, needle):
    p = serve(*args)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 2
    text = out.decode()
    assert needle in text and "Traceback" not in text
    assert text.startswith("geokv: error:")


def test_port_in_use_is_a_clear_error(tmp_path):
    cport, pport = free_ports(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", pport))
        s.listen()
        p = serve(*single_node_args(tmp_path, cport, pport))
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 1
    text = out.decode()
    assert "geokv: error:" in text and "Traceback" not in text


def test_sigterm_stops_cleanly_and_data_survives_restart(tmp_path):
    cport, pport = free_ports(2)
    args = single_node_args(tmp_path, cport, pport)
    p = serve(*args)
    try:
        r = wait_put(cport, b"k", b"v1")
        assert r.header.revision >= 2
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
        assert p.returncode == 0, out.decode()[-2000:]
        assert "Traceback" not in out.decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    p = serve(*args)
    try:
        wait_put(cport, b"k2", b"v2")
        with grpc.insecure_channel(f"127.0.0.1:{cport}") as ch:
            res = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
        assert res.kvs[0].value == b"v1"
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_second_server_on_the_same_data_dir_is_refused(tmp_path):
    c1, p1, c2, p2 = free_ports(4)
    first = serve(*single_node_args(tmp_path, c1, p1))
    try:
        wait_put(c1, b"k", b"v")
        second = serve(*single_node_args(tmp_path, c2, p2))
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 1
        assert "in use by another geokv server" in out.decode() and "Traceback" not in out.decode()
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
