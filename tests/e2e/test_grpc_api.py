"""The etcd v3 gRPC API of a real 3-member cluster, through generated stubs: watch
protocol details, v3lock, v3election, read modes, headers and geokv extensions."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest

from geokv.api.watch import SEND_QUEUE_RESPONSES_MAX
from geokv.runtime.watch import WATCHER_QUEUE_BATCHES_MAX
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc, v3election_pb2, v3election_pb2_grpc, v3lock_pb2, v3lock_pb2_grpc

pytestmark = pytest.mark.e2e

RPC_TIMEOUT_S = 10.0
STREAM_WAIT_S = 10.0
#: Events (64 KiB each) beyond the server's own queues, for what the transport buffers.
STALL_MARGIN_EVENTS = 100


@pytest.fixture(scope="module")
def chans(cluster):
    chs = [grpc.insecure_channel(ep) for ep in cluster.endpoints]
    yield chs
    for ch in chs:
        ch.close()


def kv(ch) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(ch)


class WatchStream:
    """A Watch RPC driven from the test thread: send requests, read responses with a bound."""

    def __init__(self, ch, reading: bool = True) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        self.call = rpc_pb2_grpc.WatchStub(ch).Watch(iter(self.requests.get, None))
        self.thread = threading.Thread(target=self._pump, daemon=True)
        if reading:
            self.thread.start()

    def start_reading(self) -> None:
        self.thread.start()

    def _pump(self) -> None:
        try:
            for r in self.call:
                self.responses.put(r)
        except grpc.RpcError:
            pass

    def send(self, **kw) -> None:
        self.requests.put(rpc_pb2.WatchRequest(**kw))

    def recv(self) -> rpc_pb2.WatchResponse:
        return self.responses.get(timeout=STREAM_WAIT_S)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()
        if self.thread.is_alive():
            self.thread.join(STREAM_WAIT_S)


def put(ch, key: bytes, value: bytes, **kw) -> int:
    return kv(ch).Put(rpc_pb2.PutRequest(key=key, value=value, **kw), timeout=RPC_TIMEOUT_S).header.revision


def test_headers_carry_cluster_member_revision_and_term(cluster, chans):
    rev = put(chans[0], b"h/k", b"v")
    for ch, mid in zip(chans, cluster.ids):
        h = kv(ch).Range(rpc_pb2.RangeRequest(key=b"h/k", serializable=False), timeout=RPC_TIMEOUT_S).header
        assert h.member_id == mid and h.cluster_id != 0 and h.raft_term >= 1 and h.revision >= rev


def test_watch_ids_filters_cancel_and_progress(chans):
    ws = WatchStream(chans[1])
    try:
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"wp/", range_end=b"wp0", watch_id=7))
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"wp/", range_end=b"wp0",
                                                          filters=[rpc_pb2.WatchCreateRequest.NOPUT]))
        r1, r2 = ws.recv(), ws.recv()
        assert (r1.created, r1.watch_id) == (True, 7)
        assert r2.created and r2.watch_id not in (7, -1)
        auto_id = r2.watch_id
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"x", watch_id=7))
        dup = ws.recv()
        assert dup.created and dup.canceled and "duplicate watch ID" in dup.cancel_reason
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"b", range_end=b"a"))
        empty = ws.recv()
        assert empty.created and empty.canceled and "watcher range is empty" in empty.cancel_reason

        rev = put(chans[0], b"wp/a", b"1")
        kv(chans[0]).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"wp/a"), timeout=RPC_TIMEOUT_S)
        got = {}
        while len(got) < 2 or sum(len(v) for v in got.values()) < 3:
            r = ws.recv()
            got.setdefault(r.watch_id, []).extend((e.type, e.kv.key, e.kv.mod_revision) for e in r.events)
        assert got[7] == [(0, b"wp/a", rev), (1, b"wp/a", rev + 1)]
        assert got[auto_id] == [(1, b"wp/a", rev + 1)]

        ws.send(progress_request=rpc_pb2.WatchProgressRequest())
        prog = ws.recv()
        assert prog.watch_id == -1 and not prog.events and prog.header.revision >= rev + 1

        ws.send(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=7))
        c = ws.recv()
        assert c.canceled and c.watch_id == 7
        put(chans[0], b"wp/b", b"2")
        kv(chans[0]).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"wp/b"), timeout=RPC_TIMEOUT_S)
        r = ws.recv()
        assert r.watch_id == auto_id and [e.kv.key for e in r.events] == [b"wp/b"]
    finally:
        ws.close()


def test_watch_from_compacted_revision_is_canceled_with_compact_revision(chans):
    r1 = put(chans[0], b"wc/k", b"1")
    r2 = put(chans[0], b"wc/k", b"2")
    kv(chans[0]).Compact(rpc_pb2.CompactionRequest(revision=r2), timeout=RPC_TIMEOUT_S)
    ws = WatchStream(chans[0])  # the member that answered Compact has applied it
    try:
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"wc/k", start_revision=r1))
        created = ws.recv()
        assert created.created
        r = ws.recv()
        assert r.canceled and r.compact_revision >= r2 and r.watch_id == created.watch_id
    finally:
        ws.close()


def test_watch_prev_kv_and_txn_events_share_a_response(chans):
    put(chans[0], b"wt/a", b"old")
    ws = WatchStream(chans[0])
    try:
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"wt/", range_end=b"wt0", prev_kv=True))
        assert ws.recv().created
        txn = rpc_pb2.TxnRequest(success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"wt/a", value=b"new")),
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"wt/b", value=b"b"))])
        rev = kv(chans[1]).Txn(txn, timeout=RPC_TIMEOUT_S).header.revision
        r = ws.recv()
        assert [(e.kv.key, e.kv.mod_revision) for e in r.events] == [(b"wt/a", rev), (b"wt/b", rev)]
        assert r.events[0].prev_kv.value == b"old" and not r.events[1].HasField("prev_kv")
    finally:
        ws.close()


def test_txn_compare_branches_and_nested_responses(chans):
    k = kv(chans[2])
    put(chans[0], b"tx/a", b"1")
    cmp = rpc_pb2.Compare(key=b"tx/a", target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=b"1")
    inner = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"tx/a"))])
    req = rpc_pb2.TxnRequest(compare=[cmp], success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"tx/b", value=b"2", prev_kv=True)),
        rpc_pb2.RequestOp(request_txn=inner)],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"tx/a"))])
    r = k.Txn(req, timeout=RPC_TIMEOUT_S)
    assert r.succeeded and r.responses[1].response_txn.responses[0].response_range.kvs[0].value == b"1"
    r = k.Txn(req, timeout=RPC_TIMEOUT_S)  # tx/b exists now but the compare is on tx/a: still true
    assert r.succeeded and r.responses[0].response_put.prev_kv.value == b"2"
    put(chans[0], b"tx/a", b"changed")
    r = k.Txn(req, timeout=RPC_TIMEOUT_S)
    assert not r.succeeded and r.responses[0].response_range.kvs[0].value == b"changed"


def test_read_modes_via_metadata(chans):
    rev = put(chans[0], b"rm/k", b"v")
    k = kv(chans[1])
    for mode in ("linearizable", "lease", "serializable"):
        resp = k.Range(rpc_pb2.RangeRequest(key=b"rm/k"), metadata=[("geokv-read-mode", mode)],
                       timeout=RPC_TIMEOUT_S)
        if mode != "serializable":
            assert resp.kvs[0].value == b"v" and resp.header.revision >= rev
    resp, call = k.Range.with_call(rpc_pb2.RangeRequest(key=b"rm/k"),
                                   metadata=[("geokv-read-mode", "bounded"), ("geokv-max-staleness-ms", "60000")],
                                   timeout=RPC_TIMEOUT_S)
    trailers = dict(call.trailing_metadata())
    assert "geokv-staleness-ms" in trailers and int(trailers["geokv-staleness-ms"]) <= 60000
    with pytest.raises(grpc.RpcError) as e:
        k.Range(rpc_pb2.RangeRequest(key=b"rm/k"), metadata=[("geokv-read-mode", "sloppy")], timeout=RPC_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown read mode" in e.value.details()


def test_status_has_geokv_extensions(cluster, chans):
    m = rpc_pb2_grpc.MaintenanceStub(chans[0])
    st = m.Status(rpc_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S)
    assert st.version.startswith("3.4") and st.leader in cluster.ids and st.region == "local"
    import time

    deadline = time.monotonic() + STREAM_WAIT_S  # members publish their region just after start
    while m.Status(rpc_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S).leader_region != "local":
        assert time.monotonic() < deadline, "the leader's region never showed up"
        time.sleep(0.1)
    assert st.raftAppliedIndex > 0 and st.dbSize > 0
    h = m.HashKV(rpc_pb2.HashKVRequest(), timeout=RPC_TIMEOUT_S)
    assert h.header.revision > 0


def test_lock_service_orders_holders(chans):
    lease = rpc_pb2_grpc.LeaseStub(chans[0])
    l1 = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=RPC_TIMEOUT_S).ID
    l2 = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=RPC_TIMEOUT_S).ID
    locks = [v3lock_pb2_grpc.LockStub(ch) for ch in chans]
    first = locks[0].Lock(v3lock_pb2.LockRequest(name=b"glock", lease=l1), timeout=RPC_TIMEOUT_S)
    assert first.key == b"glock/%x" % l1
    second = locks[1].Lock.future(v3lock_pb2.LockRequest(name=b"glock", lease=l2), timeout=RPC_TIMEOUT_S)
    with pytest.raises(grpc.FutureTimeoutError):
        second.result(timeout=0.5)
    locks[2].Unlock(v3lock_pb2.UnlockRequest(key=first.key), timeout=RPC_TIMEOUT_S)
    assert second.result(timeout=RPC_TIMEOUT_S).key == b"glock/%x" % l2
    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=l2), timeout=RPC_TIMEOUT_S)  # releases the lock too
    assert not kv(chans[0]).Range(rpc_pb2.RangeRequest(key=b"glock/", range_end=b"glock0"),
                                  timeout=RPC_TIMEOUT_S).kvs
    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=l1), timeout=RPC_TIMEOUT_S)


def test_election_service_campaign_proclaim_observe_resign(chans):
    lease = rpc_pb2_grpc.LeaseStub(chans[0])
    el = [v3election_pb2_grpc.ElectionStub(ch) for ch in chans]
    with pytest.raises(grpc.RpcError) as e:
        el[0].Leader(v3election_pb2.LeaderRequest(name=b"gel"), timeout=RPC_TIMEOUT_S)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "election: no leader"
    l1 = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=RPC_TIMEOUT_S).ID
    l2 = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=RPC_TIMEOUT_S).ID
    c1 = el[0].Campaign(v3election_pb2.CampaignRequest(name=b"gel", lease=l1, value=b"a"), timeout=RPC_TIMEOUT_S)
    ld = c1.leader
    assert ld.name == b"gel" and ld.key == b"gel/%x" % l1 and ld.lease == l1 and ld.rev > 0
    observed: queue.Queue = queue.Queue()
    obs = el[2].Observe(v3election_pb2.LeaderRequest(name=b"gel"))

    def pump():
        try:
            for r in obs:
                observed.put(r.kv.value)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        assert observed.get(timeout=STREAM_WAIT_S) == b"a"
        el[1].Proclaim(v3election_pb2.ProclaimRequest(leader=ld, value=b"a2"), timeout=RPC_TIMEOUT_S)
        assert observed.get(timeout=STREAM_WAIT_S) == b"a2"
        stale = v3election_pb2.LeaderKey(name=ld.name, key=ld.key, rev=ld.rev + 1000, lease=ld.lease)
        with pytest.raises(grpc.RpcError) as e:
            el[1].Proclaim(v3election_pb2.ProclaimRequest(leader=stale, value=b"x"), timeout=RPC_TIMEOUT_S)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and e.value.details() == "election: not leader"
        c2 = el[1].Campaign.future(v3election_pb2.CampaignRequest(name=b"gel", lease=l2, value=b"b"),
                                   timeout=RPC_TIMEOUT_S)
        with pytest.raises(grpc.FutureTimeoutError):
            c2.result(timeout=0.5)
        el[0].Resign(v3election_pb2.ResignRequest(leader=ld), timeout=RPC_TIMEOUT_S)
        assert c2.result(timeout=RPC_TIMEOUT_S).leader.lease == l2
        assert observed.get(timeout=STREAM_WAIT_S) == b"b"
        now = el[0].Leader(v3election_pb2.LeaderRequest(name=b"gel"), timeout=RPC_TIMEOUT_S)
        assert now.kv.value == b"b"
    finally:
        obs.cancel()
        t.join(STREAM_WAIT_S)
        for lid in (l1, l2):
            lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=RPC_TIMEOUT_S)


def test_read_only_txn_is_served_without_a_new_raft_entry(cluster, chans):
    put(chans[0], b"ro/a", b"1")
    put(chans[0], b"ro/b", b"2")
    m = rpc_pb2_grpc.MaintenanceStub(chans[1])
    cmp = rpc_pb2.Compare(key=b"ro/a", target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=b"1")
    req = rpc_pb2.TxnRequest(compare=[cmp], success=[
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"ro/", range_end=b"ro0"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"ro/b"))])
    before = m.Status(rpc_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S).raftIndex
    for _ in range(5):
        r = kv(chans[1]).Txn(req, timeout=RPC_TIMEOUT_S)
        assert r.succeeded and [x.value for x in r.responses[0].response_range.kvs] == [b"1", b"2"]
    after = m.Status(rpc_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S).raftIndex
    assert after - before < 5  # five proposed txns would have added five log entries
    # and it is linearizable: a write acknowledged by another member is seen at once
    put(chans[2], b"ro/a", b"changed")
    r = kv(chans[1]).Txn(req, timeout=RPC_TIMEOUT_S)
    assert not r.succeeded and r.responses[0].response_range.kvs[0].value == b"2"


def metric(url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_a_client_that_stops_reading_still_gets_every_event_in_order(cluster, chans):
    """The server never buffers without bound: the stalled stream's watcher falls back to
    reading the store's history and delivers everything once the client reads again."""
    # More events than the watcher's queue, the stream's send queue and the transport
    # (a 64 KiB window without BDP probing holds about one) can hold together.
    n = WATCHER_QUEUE_BATCHES_MAX + SEND_QUEUE_RESPONSES_MAX + STALL_MARGIN_EVENTS
    value = b"x" * 65536
    slow_before = metric(cluster.metrics[0], "geokv_watch_slow_watchers_total")
    start = kv(chans[0]).Range(rpc_pb2.RangeRequest(key=b"slow/"), timeout=RPC_TIMEOUT_S).header.revision + 1
    # No BDP probing: the stream's flow-control window stays small, so the server
    # really is stalled while the client does not read.
    slow_ch = grpc.insecure_channel(cluster.endpoints[0], options=[("grpc.http2.bdp_probe", 0)])
    ws = WatchStream(slow_ch, reading=False)
    try:
        ws.send(create_request=rpc_pb2.WatchCreateRequest(key=b"slow/", range_end=b"slow0", start_revision=start))
        first = None
        for i in range(n):
            rev = put(chans[1], b"slow/%04d" % i, value)
            first = first or rev
        ws.start_reading()
        assert ws.recv().created
        got = []
        while len(got) < n:
            got.extend((e.kv.key, e.kv.mod_revision) for e in ws.recv().events)
        assert got == [(b"slow/%04d" % i, first + i) for i in range(n)]
        assert metric(cluster.metrics[0], "geokv_watch_slow_watchers_total") > slow_before
    finally:
        ws.close()
        slow_ch.close()


def test_watch_stream_keeps_delivering_after_the_client_half_closes(chans):
    start = kv(chans[0]).Range(rpc_pb2.RangeRequest(key=b"hc/"), timeout=RPC_TIMEOUT_S).header.revision + 1
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"hc/", range_end=b"hc0", start_revision=start))
    call = rpc_pb2_grpc.WatchStub(chans[2]).Watch(iter([create]), timeout=STREAM_WAIT_S)
    try:
        assert next(call).created
        put(chans[0], b"hc/a", b"1")
        r = next(call)
        assert [e.kv.key for e in r.events] == [b"hc/a"]
    finally:
        call.cancel()


def test_negative_limit_and_revision_read_as_etcd_does(chans):
    put(chans[0], b"neg/a", b"1")
    put(chans[0], b"neg/b", b"2")
    r = kv(chans[0]).Range(rpc_pb2.RangeRequest(key=b"neg/", range_end=b"neg0", limit=-3, revision=-7),
                           timeout=RPC_TIMEOUT_S)
    assert [x.key for x in r.kvs] == [b"neg/a", b"neg/b"] and not r.more
