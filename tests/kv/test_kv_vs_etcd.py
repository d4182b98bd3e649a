"""Differential test: MVCCStore answers random command sequences exactly as etcd 3.4 does.

A real etcd server (the reference) runs on loopback; every command goes to it over gRPC
and to the store, and results, errors and revisions must agree, including the corner
cases (sort without order plus limit, compares on missing keys, duplicate keys in
nested txns, reads of compacted revisions).  Watch events from revision 1 are compared
too.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import grpc
import pytest

from geokv import errors
from geokv.kv.store import MVCCStore
from geokv.kv.types import (
    Compact,
    Compare,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Range,
    Txn,
)

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
START_TIMEOUT_S = 30.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 5.0
COMMANDS_PER_SEED = int(os.environ.get("GEOKV_KV_ETCD_COMMANDS", "250"))
WATCH_WAIT_S = 5.0
SEEDS = [int(s) for s in os.environ.get("GEOKV_KV_ETCD_SEEDS", "1,2,3,4").split(",")]

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="etcd binary not installed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """One real etcd member in a temp dir, stopped by PID."""

    def __init__(self, base: str) -> None:
        from geokv.etcdpb import rpc_pb2_grpc

        cport, pport = _free_port(), _free_port()
        self.log = open(os.path.join(base, "etcd.log"), "wb")
        self.proc = subprocess.Popen(
            [ETCD_BIN, "--name", "ref", "--data-dir", os.path.join(base, "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{cport}",
             "--advertise-client-urls", f"http://127.0.0.1:{cport}",
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"ref=http://127.0.0.1:{pport}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{cport}")
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)

    def wait_ready(self) -> None:
        from geokv.etcdpb import rpc_pb2

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.kv.Range(rpc_pb2.RangeRequest(key=b"ready?"), timeout=1.0)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        self.log.close()


def start_etcd(base: str) -> Etcd:
    """A ready etcd; a new pair of ports on each of START_ATTEMPTS tries (a free port
    found by binding port 0 may be taken by someone else before etcd binds it)."""
    for attempt in range(START_ATTEMPTS):
        d = os.path.join(base, f"try{attempt}")
        os.makedirs(d)
        etcd = Etcd(d)
        try:
            etcd.wait_ready()
            return etcd
        except grpc.RpcError:
            etcd.stop()
            if attempt == START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def etcd_and_store():
    base = tempfile.mkdtemp(prefix="geokv-kv-etcd-")
    etcd = None
    store = None
    try:
        etcd = start_etcd(base)
        store = MVCCStore(os.path.join(base, "store"))
        yield etcd, store
    finally:
        if store is not None:
            store.close()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- conversion to etcd's protobuf (the wire facts, not the API layer's code) -----------


def to_pb_op(op):
    from geokv.etcdpb import rpc_pb2

    t = type(op)
    if t is Put:
        return rpc_pb2.RequestOp(request_put=to_pb(op))
    if t is DeleteRange:
        return rpc_pb2.RequestOp(request_delete_range=to_pb(op))
    if t is Range:
        return rpc_pb2.RequestOp(request_range=to_pb(op))
    return rpc_pb2.RequestOp(request_txn=to_pb(op))


def to_pb(cmd):
    from geokv.etcdpb import rpc_pb2

    t = type(cmd)
    if t is Put:
        return rpc_pb2.PutRequest(key=cmd.key, value=cmd.value, lease=cmd.lease, prev_kv=cmd.prev_kv,
                                  ignore_value=cmd.ignore_value, ignore_lease=cmd.ignore_lease)
    if t is DeleteRange:
        return rpc_pb2.DeleteRangeRequest(key=cmd.key, range_end=cmd.range_end, prev_kv=cmd.prev_kv)
    if t is Range:
        return rpc_pb2.RangeRequest(
            key=cmd.key, range_end=cmd.range_end, limit=cmd.limit, revision=cmd.revision,
            sort_order=cmd.sort_order, sort_target=cmd.sort_target, keys_only=cmd.keys_only,
            count_only=cmd.count_only, min_mod_revision=cmd.min_mod_revision,
            max_mod_revision=cmd.max_mod_revision, min_create_revision=cmd.min_create_revision,
            max_create_revision=cmd.max_create_revision)
    if t is Txn:
        cmps = []
        for c in cmd.compare:
            field = ["version", "create_revision", "mod_revision", "value", "lease"][c.target]
            cmps.append(rpc_pb2.Compare(result=c.result, target=c.target, key=c.key, range_end=c.range_end,
                                        **{field: getattr(c, field)}))
        return rpc_pb2.TxnRequest(compare=cmps, success=[to_pb_op(o) for o in cmd.success],
                                  failure=[to_pb_op(o) for o in cmd.failure])
    raise TypeError(t)


def kv_t(kv):
    return (bytes(kv.key), kv.create_revision, kv.mod_revision, kv.version, bytes(kv.value), kv.lease)


def pb_result(resp, cmd, inner=False):
    """A comparable tuple from an etcd response (inner txn headers are not compared)."""
    t = type(cmd)
    rev = None if inner else resp.header.revision
    if t is Put:
        return ("put", rev, kv_t(resp.prev_kv) if resp.HasField("prev_kv") else None)
    if t is DeleteRange:
        return ("del", rev, resp.deleted, [kv_t(k) for k in resp.prev_kvs])
    if t is Range:
        return ("range", rev, [kv_t(k) for k in resp.kvs], resp.more, resp.count)
    if t is Txn:
        branch = cmd.success if resp.succeeded else cmd.failure
        subs = []
        for op, r in zip(branch, resp.responses):
            which = r.WhichOneof("response")
            subs.append(pb_result(getattr(r, which), op, inner=True))
        return ("txn", rev, resp.succeeded, subs)
    if t is Compact:
        return ("compact", rev)
    raise TypeError(t)


def my_result(res, cmd, inner=False):
    t = type(cmd)
    rev = None if inner else res.revision
    if t is Put:
        return ("put", rev, kv_t(res.prev_kv) if res.prev_kv else None)
    if t is DeleteRange:
        return ("del", rev, res.deleted, [kv_t(k) for k in res.prev_kvs])
    if t is Range:
        return ("range", rev, [kv_t(k) for k in res.kvs], res.more, res.count)
    if t is Txn:
        branch = cmd.success if res.succeeded else cmd.failure
        return ("txn", rev, res.succeeded, [my_result(r, op, inner=True) for op, r in zip(branch, res.responses)])
    if t is Compact:
        return ("compact", rev)
    raise TypeError(t)


# --- random commands ------------------------------------------------------------------

KEYS = [b"a", b"a\x00", b"ab", b"b", b"b\x00x", b"c", b"\x00", b"\xff", b"d/1", b"d/2"]
ENDS = [b"", b"", b"", b"\x00", b"b", b"c", b"ab", b"\xff\xff", b"a", b"d0"]
VALUES = [b"", b"x", b"y", b"zz", b"\x00v"]
LEASES = [0, 0, 0, 0, 0x1111, 0x2222]


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.rev = 1

    def put(self, flags=True):
        r = self.r
        iv = flags and r.random() < 0.1
        il = flags and r.random() < 0.1
        return Put(r.choice(KEYS), b"" if iv else r.choice(VALUES), 0 if il else r.choice(LEASES),
                   prev_kv=r.random() < 0.5, ignore_value=iv, ignore_lease=il)

    def delete(self):
        r = self.r
        return DeleteRange(r.choice(KEYS), r.choice(ENDS), prev_kv=r.random() < 0.5)

    def range(self):
        r = self.r
        pick = lambda xs: r.choice(xs)  # noqa: E731
        return Range(
            pick(KEYS), pick(ENDS + [b"\x00", b"\x00"]), limit=pick([0, 0, 1, 2, 3]),
            revision=pick([0, 0, 0, max(1, self.rev - r.randrange(8)), self.rev + 1]),
            sort_order=pick([0, 0, 1, 2]), sort_target=pick([0, 0, 1, 2, 3, 4]),
            keys_only=r.random() < 0.2, count_only=r.random() < 0.1,
            min_mod_revision=pick([0, 0, 0, max(0, self.rev - 5)]), max_mod_revision=pick([0, 0, 0, max(0, self.rev - 2)]),
            min_create_revision=pick([0, 0, 0, max(0, self.rev - 9)]),
            max_create_revision=pick([0, 0, 0, max(0, self.rev - 3)]))

    def compare(self):
        r = self.r
        return Compare(r.randrange(4), r.randrange(5), r.choice(KEYS), r.choice(["", "", "", "\x00", "c"]).encode(),
                       value=r.choice(VALUES), version=r.randrange(4), create_revision=r.randrange(self.rev + 2),
                       mod_revision=r.randrange(self.rev + 2), lease=r.choice(LEASES))

    def op(self, depth):
        x = self.r.random()
        if x < 0.4:
            return self.put()
        if x < 0.6:
            return self.delete()
        if x < 0.85 or depth > 0:
            return self.range()
        return self.txn(depth + 1)

    def txn(self, depth=0):
        r = self.r
        return Txn([self.compare() for _ in range(r.randrange(3))],
                   [self.op(depth) for _ in range(r.randrange(4))],
                   [self.op(depth) for _ in range(r.randrange(4))])

    def command(self):
        x = self.r.random()
        if x < 0.35:
            return self.put()
        if x < 0.45:
            return self.delete()
        if x < 0.6:
            return self.range()
        if x < 0.88:
            return self.txn()
        if x < 0.93:
            return Compact(max(1, self.rev - self.r.randrange(12)))
        if x < 0.97:
            return LeaseGrant(self.r.choice([0x1111, 0x2222]), 1000)
        return LeaseRevoke(self.r.choice([0x1111, 0x2222, 0x3333]))


def etcd_do(etcd, cmd):
    from geokv.etcdpb import rpc_pb2

    t = type(cmd)
    try:
        if t is Put:
            return pb_result(etcd.kv.Put(to_pb(cmd), timeout=10), cmd)
        if t is DeleteRange:
            return pb_result(etcd.kv.DeleteRange(to_pb(cmd), timeout=10), cmd)
        if t is Range:
            return pb_result(etcd.kv.Range(to_pb(cmd), timeout=10), cmd)
        if t is Txn:
            return pb_result(etcd.kv.Txn(to_pb(cmd), timeout=10), cmd)
        if t is Compact:
            return pb_result(etcd.kv.Compact(rpc_pb2.CompactionRequest(revision=cmd.revision), timeout=10), cmd)
        if t is LeaseGrant:
            etcd.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=cmd.id, TTL=cmd.ttl), timeout=10)
            return ("lease",)
        if t is LeaseRevoke:
            etcd.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=cmd.id), timeout=10)
            return ("lease",)
    except grpc.RpcError as e:
        return ("error", e.code().name, e.details())
    raise TypeError(t)


def store_do(store, index, cmd):
    [(res, _)] = store.apply_batch([(index, cmd)])
    if isinstance(res, errors.GeoKVError):
        return ("error", res.code, res.message)
    if type(cmd) in (LeaseGrant, LeaseRevoke):
        return ("lease",)
    return my_result(res, cmd)


def etcd_events(etcd, start_rev: int, want: int) -> list:
    """Events from start_rev with prev_kv, read from a real Watch stream."""
    from geokv.etcdpb import rpc_pb2

    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"\x00", range_end=b"\x00", start_revision=start_rev, prev_kv=True))
    out = []
    # etcd keeps the stream open; stop at `want` events or, if it has fewer, when the
    # deadline ends the stream (then the comparison shows the difference).
    stream = etcd.watch.Watch(iter([req]), timeout=WATCH_WAIT_S)
    try:
        for resp in stream:
            if resp.compact_revision:
                return ["compacted", resp.compact_revision]
            for ev in resp.events:
                out.append((ev.type, kv_t(ev.kv), kv_t(ev.prev_kv) if ev.HasField("prev_kv") else None))
            if len(out) >= want:
                break
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        stream.cancel()
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_store_answers_like_etcd(etcd_and_store, seed):
    etcd, store = etcd_and_store
    # Every seed starts from where the previous one left etcd: bring the store there too.
    gen = Gen(seed)
    index = 0
    for i in range(COMMANDS_PER_SEED):
        cmd = gen.command()
        want = etcd_do(etcd, cmd)
        index += 1
        got = store_do(store, index, cmd)
        assert got == want, (i, cmd)
        gen.rev = store.revision
        assert store.revision == gen.rev
    # Watch catch-up from the compact revision on (etcd's own rule for prev_kv included).
    start = max(store.compact_revision, 1)
    mine = store.events(start)
    want = etcd_events(etcd, start, len(mine))
    got = [(e.type, kv_t(e.kv), kv_t(e.prev_kv) if e.prev_kv else None) for e in mine]
    assert got == want
