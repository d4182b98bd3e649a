"""Real server processes (LocalCluster): crashes, freezes and garbage on the peer port.

Every write the cluster acknowledged must be on every member afterwards; each member's
store is checked with serializable reads (its own replica) after convergence.
"""

import os
import random
import signal
import socket
import struct
import threading
import time

import grpc
import pytest

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.testing.cluster import LocalCluster

pytestmark = pytest.mark.e2e

WRITE_RPC_TIMEOUT_S = 3.0
# etcd's default timing: a loaded shared CI machine must not cause spurious elections
TIMING = {"heartbeat_ms": 100, "election_ms": 1000}


class Writer(threading.Thread):
    """Puts w/<n> keys through rotating endpoints; remembers what was acknowledged."""

    def __init__(self, cluster: LocalCluster, prefix: str, start_index: int = 0):
        super().__init__(daemon=True)
        self.start_index = start_index
        self.cluster = cluster
        self.prefix = prefix
        self.acked: dict[bytes, bytes] = {}
        self.errors = 0
        self.stop_flag = threading.Event()

    def run(self):
        n = 0
        i = self.start_index
        chans = {}
        while not self.stop_flag.is_set():
            idx = i % len(self.cluster.endpoints)
            ch = chans.get(idx)
            if ch is None:
                ch = chans[idx] = grpc.insecure_channel(self.cluster.endpoints[idx].replace("http://", ""))
            key = f"{self.prefix}/{n:06d}".encode()
            val = f"v{n}".encode()
            n += 1
            try:
                rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=val), timeout=WRITE_RPC_TIMEOUT_S)
                self.acked[key] = val
            except grpc.RpcError:
                self.errors += 1
                i += 1  # try another member
                time.sleep(0.02)
        for ch in chans.values():
            ch.close()


def check_all_members_have(c: LocalCluster, acked: dict[bytes, bytes], prefix: str):
    c.wait_converged(timeout_s=30)
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    for i in range(len(c.specs)):
        if not c.is_running(i):
            continue
        res = c.kv_stub(i).Range(rpc_pb2.RangeRequest(key=prefix.encode(), range_end=end.encode(),
                                                      serializable=True), timeout=10)
        have = {kv.key: kv.value for kv in res.kvs}
        missing = [k for k in acked if have.get(k) != acked[k]]
        assert not missing, f"member {i} lacks {len(missing)} acknowledged writes, e.g. {missing[:3]}"


def test_sigkill_leader_during_writes_then_restart(tmp_path):
    # small --snapshot-count: the restarted member recovers from a Raft snapshot + WAL
    with LocalCluster(3, str(tmp_path), extra_args=["--snapshot-count", "100"], **TIMING) as c:
        leader = c.wait_ready()
        w = Writer(c, "w", start_index=leader)  # through the leader, until it dies
        w.start()
        try:
            time.sleep(1.0)
            c.kill(leader, signal.SIGKILL)
            time.sleep(2.5)
            c.restart(leader)
            time.sleep(1.5)
        finally:
            w.stop_flag.set()
            w.join(10)
        print("acked", len(w.acked), "errors", w.errors)
        assert len(w.acked) > 20, f"too few writes acknowledged ({len(w.acked)}, {w.errors} errors)"
        c.wait_ready()
        check_all_members_have(c, w.acked, "w/")
        # the restarted member serves linearizable reads with the latest data
        res = c.kv_stub(leader).Range(rpc_pb2.RangeRequest(key=b"w/", range_end=b"w0"), timeout=10)
        assert res.count >= len(w.acked)


def test_sigstop_member_then_sigcont(tmp_path):
    with LocalCluster(3, str(tmp_path), **TIMING) as c:
        leader = c.wait_ready()
        frozen = leader  # freeze the leader: the others must elect a new one
        w = Writer(c, "s", start_index=leader)
        w.start()
        try:
            time.sleep(0.7)
            c.kill(frozen, signal.SIGSTOP)
            time.sleep(3.0)
            c.kill(frozen, signal.SIGCONT)
            time.sleep(1.0)
        finally:
            w.stop_flag.set()
            w.join(10)
        print("acked", len(w.acked), "errors", w.errors)
        assert len(w.acked) > 20, f"too few writes acknowledged ({len(w.acked)}, {w.errors} errors)"
        c.wait_ready()
        check_all_members_have(c, w.acked, "s/")


def test_garbage_on_the_peer_port_does_not_hurt(tmp_path):
    rng = random.Random(7)
    with LocalCluster(3, str(tmp_path)) as c:
        c.wait_ready()
        target = 0
        port = c.specs[target].peer_port
        payloads = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            struct.pack(">I", 0xFFFFFFFF) + b"junk",
            struct.pack(">I", 0),
            bytes(rng.getrandbits(8) for _ in range(4096)),
            struct.pack(">I", 5) + b"\x93\x00\x01\x02\xc1",
        ]
        for p in payloads:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(p)
                    s.settimeout(5)
                    s.recv(100)
                except OSError:
                    pass
        # a connection that says nothing at all is dropped after the hello timeout; the
        # server keeps serving meanwhile
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            stub = c.kv_stub(target)
            stub.Put(rpc_pb2.PutRequest(key=b"after-garbage", value=b"ok"), timeout=10)
            for i in range(3):
                res = c.kv_stub(i).Range(rpc_pb2.RangeRequest(key=b"after-garbage"), timeout=10)
                assert res.kvs[0].value == b"ok"
            assert c.is_running(target)
            assert "Traceback" not in c.tail_log(target, 20000)
        finally:
            idle.close()


def test_add_member_process_joins_existing_cluster(tmp_path):
    with LocalCluster(3, str(tmp_path)) as c:
        c.wait_ready()
        for i in range(20):
            c.kv_stub(i % 3).Put(rpc_pb2.PutRequest(key=b"j/%02d" % i, value=b"x"), timeout=10)
        new = c.add_member(learner=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                res = c.kv_stub(new).Range(rpc_pb2.RangeRequest(key=b"j/", range_end=b"j0", serializable=True),
                                           timeout=2)
                if res.count == 20:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"new member did not catch up: {c.tail_log(new)}"
            time.sleep(0.1)
        assert c.status(new).isLearner
        promote = lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberPromote(  # noqa: E731
            rpc_pb2.MemberPromoteRequest(ID=c.member_id(new)), timeout=10)
        resp = c.call_any(promote)
        assert not [m for m in resp.members if m.ID == c.member_id(new)][0].isLearner
        # the promoted member takes part in the quorum: writes through it still work
        c.kv_stub(new).Put(rpc_pb2.PutRequest(key=b"j/new", value=b"y"), timeout=10)
        c.wait_converged()
        names = {m.name for m in c.call_any(lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberList(
            rpc_pb2.MemberListRequest(), timeout=5)).members}
        assert names == {"n1", "n2", "n3", "n4"}
