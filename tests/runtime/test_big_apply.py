"""A huge apply (one DeleteRange of 100,000 keys, as at the end of ``etcdctl check perf``)
runs in the member's apply thread: the driver keeps heartbeating, so no member starts an
election while it runs, and every put acknowledged meanwhile is there afterwards.

Real server processes (LocalCluster), real sockets, real LMDB. Before the apply thread the
delete took 3-5 s on each member's event loop, longer than the election timeout used here.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.kv.types import DeleteRange, Put, Range
from geokv.testing.cluster import LocalCluster
from geokv.testing.inproc import InProcCluster

from .conftest import run

BIG_KEYS = 100_000
TXN_OPS = 128               # etcd's default --max-txn-ops
LOAD_THREADS = 4
RPC_TIMEOUT_S = 30.0
SMALL_PUT_TIMEOUT_S = 5.0
SMALL_PUT_PAUSE_S = 0.005
TIMING = {"heartbeat_ms": 50, "election_ms": 500}


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _load(stub, start: int, stop: int) -> None:
    for lo in range(start, stop, TXN_OPS):
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"big/%06d" % i, value=b"x" * 16))
               for i in range(lo, min(stop, lo + TXN_OPS))]
        stub.Txn(rpc_pb2.TxnRequest(success=ops), timeout=RPC_TIMEOUT_S)


class SmallPuts(threading.Thread):
    """Small puts to one member, one at a time; remembers what was acknowledged."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.acked: dict[bytes, bytes] = {}
        self.errors: list[str] = []
        self.slowest_s = 0.0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.endpoint.replace("http://", "")) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            n = 0
            while not self.stop_flag.is_set():
                key, val = b"small/%06d" % n, b"v%d" % n
                n += 1
                t0 = time.monotonic()
                try:
                    stub.Put(rpc_pb2.PutRequest(key=key, value=val), timeout=SMALL_PUT_TIMEOUT_S)
                    self.acked[key] = val
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code()}: {exc.details()}")
                self.slowest_s = max(self.slowest_s, time.monotonic() - t0)
                time.sleep(SMALL_PUT_PAUSE_S)


def _terms(c: LocalCluster) -> list[tuple[int, int]]:
    out = []
    for i in range(len(c.specs)):
        st = c.status(i)
        out.append((st.raftTerm, st.leader))
    return out


SLOW_APPLY_S = 0.8          # injected delay of the range delete's store apply
SHORT_TIMEOUT_S = 0.3       # request timeout, shorter than that apply


def test_writes_queued_behind_a_slow_thread_apply_finish_in_log_order(tmp_path):
    """The range delete's apply runs in the apply thread (slowed down here); the driver
    keeps turning meanwhile, a put committed after it waits in the queue and is applied
    after it, and neither times out although both outlast the request timeout."""
    async def main():
        async with InProcCluster(1, str(tmp_path)) as c:
            m = await c.wait_leader()
            for i in range(10):
                await m.propose(Put(b"a/%d" % i, b"x"))
            store = m.store
            real_apply = store.apply_batch
            in_thread: list[bool] = []

            def slow_apply(items, **kw):
                if any(type(cmd) is DeleteRange and cmd.range_end for _, cmd in items):
                    in_thread.append(threading.current_thread() is not threading.main_thread())
                    time.sleep(SLOW_APPLY_S)
                return real_apply(items, **kw)

            store.apply_batch = slow_apply
            m.request_timeout_s = SHORT_TIMEOUT_S
            try:
                turns = m.statistics()["turns"]
                delete = asyncio.ensure_future(m.propose(DeleteRange(b"a/", b"a0")))
                await asyncio.sleep(0.1)
                put = asyncio.ensure_future(m.propose(Put(b"b", b"1")))
                await asyncio.sleep(0.2)
                assert not delete.done() and not put.done()
                d, p = await delete, await put
            finally:
                store.apply_batch = real_apply
            assert in_thread == [True]
            assert d.deleted == 10 and p.revision == d.revision + 1
            st = m.statistics()
            assert st["thread_applies"] >= 1 and st["turns"] > turns + 2
            res = await m.read(Range(b"a/", b"a0"), mode="linearizable")
            assert res.count == 0
    run(main())


def test_a_watcher_that_starts_during_an_apply_without_events_gets_them(tmp_path):
    """With nobody watching, the store builds no events; a watcher subscribed while such
    an apply runs (in the apply thread) still receives that apply's events (from the
    store's change log)."""
    async def main():
        async with InProcCluster(1, str(tmp_path)) as c:
            m = await c.wait_leader()
            for i in range(10):
                await m.propose(Put(b"a/%d" % i, b"x"))
            hub, store = m.watch_hub, m.store
            assert not hub.has_watchers
            real_apply = store.apply_batch
            calls: list[bool] = []

            def slow_apply(items, **kw):
                if any(type(cmd) is DeleteRange and cmd.range_end for _, cmd in items):
                    calls.append(kw.get("events", True))
                    time.sleep(SLOW_APPLY_S)
                return real_apply(items, **kw)

            store.apply_batch = slow_apply
            try:
                delete = asyncio.ensure_future(m.propose(DeleteRange(b"a/", b"a0")))
                await asyncio.sleep(0.2)
                assert not delete.done()
                w = hub.subscribe(b"a/", b"a0")
                d = await delete
            finally:
                store.apply_batch = real_apply
            assert calls == [False]  # nobody watched when the apply started
            got = await w.next_batch(timeout_s=5)
            assert got is not None, "the watcher missed the delete"
            events, rev = got
            assert rev == d.revision
            assert sorted(e.kv.key for e in events) == [b"a/%d" % i for i in range(10)]
            w.close()
    run(main())


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_delete_of_100k_keys_keeps_the_term_and_the_puts(tmp_path):
    with LocalCluster(3, str(tmp_path), **TIMING) as c:
        leader = c.leader_index()
        stub = c.kv_stub(leader)
        per = -(-BIG_KEYS // LOAD_THREADS)
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            for f in [pool.submit(_load, stub, lo, min(BIG_KEYS, lo + per)) for lo in range(0, BIG_KEYS, per)]:
                f.result()
        c.wait_converged(timeout_s=60)
        before = _terms(c)
        assert len({t for t, _ in before}) == 1 and len({ld for _, ld in before}) == 1, before

        writers = [SmallPuts(c.endpoints[i]) for i in range(len(c.specs))]
        for w in writers:
            w.start()
        try:
            time.sleep(0.3)
            res = stub.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=_prefix_end(b"big/")),
                                   timeout=RPC_TIMEOUT_S)
            assert res.deleted == BIG_KEYS
            time.sleep(1.0)  # followers finish their own apply while the puts go on
        finally:
            for w in writers:
                w.stop_flag.set()
            for w in writers:
                w.join(timeout=2 * SMALL_PUT_TIMEOUT_S)
        c.wait_converged(timeout_s=60)
        after = _terms(c)
        assert after == before, f"leader/term changed during the delete: {before} -> {after}"
        for w in writers:
            assert not w.errors, w.errors[:5]
            assert w.acked
        acked = {k: v for w in writers for k, v in w.acked.items()}
        for i in range(len(c.specs)):
            kv = c.kv_stub(i)
            res = kv.Range(rpc_pb2.RangeRequest(key=b"small/", range_end=_prefix_end(b"small/"),
                                                serializable=True), timeout=RPC_TIMEOUT_S)
            have = {x.key: x.value for x in res.kvs}
            missing = [k for k, v in acked.items() if have.get(k) != v]
            assert not missing, f"member {i} lacks {len(missing)} acknowledged puts, e.g. {missing[:3]}"
            left = kv.Range(rpc_pb2.RangeRequest(key=b"big/", range_end=_prefix_end(b"big/"), count_only=True,
                                                 serializable=True), timeout=RPC_TIMEOUT_S)
            assert left.count == 0
        print("slowest small put during the delete: %.3f s" % max(w.slowest_s for w in writers))
