"""Leader crash under load: a watch on a surviving member sees every acknowledged write,
once, in revision order, and the API keeps answering with etcd errors meanwhile."""

from __future__ import annotations

import queue
import signal
import threading
import time

import grpc
import pytest

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

pytestmark = pytest.mark.e2e

WRITES = 120
KILL_AT = 40
RPC_TIMEOUT_S = 5.0
#: Elections (of the cluster's configured election timeout) a write may wait out after
#: the crash: a new leader needs one or two; the rest is room for a CPU-starved machine.
NEW_LEADER_ELECTIONS_MAX = 40
#: Pause between attempts of one write while there is no leader.
WRITE_RETRY_PAUSE_S = 0.1
STREAM_WAIT_S = 30.0


def test_watch_sees_every_acknowledged_write_across_a_leader_crash(cluster):
    lc = cluster.local
    leader = lc.leader_index()
    others = [i for i in range(3) if i != leader]
    watch_i, write_i = others
    wch = grpc.insecure_channel(cluster.endpoints[watch_i])
    pch = grpc.insecure_channel(cluster.endpoints[write_i])
    kv = rpc_pb2_grpc.KVStub(pch)
    start = kv.Range(rpc_pb2.RangeRequest(key=b"fo/"), timeout=RPC_TIMEOUT_S).header.revision + 1
    requests: queue.Queue = queue.Queue()
    requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"fo/", range_end=b"fo0", start_revision=start)))
    call = rpc_pb2_grpc.WatchStub(wch).Watch(iter(requests.get, None))
    seen: list[tuple[bytes, int]] = []
    done = threading.Event()

    def pump():
        try:
            for r in call:
                seen.extend((e.kv.key, e.kv.mod_revision) for e in r.events)
                if done.is_set() and len(seen) >= len(acked):
                    return
        except grpc.RpcError:
            pass

    acked: dict[bytes, int] = {}
    errors_seen: set[str] = set()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        for i in range(WRITES):
            if i == KILL_AT:
                lc.kill(leader, signal.SIGKILL)
            key = b"fo/%04d" % i
            give_up = time.monotonic() + NEW_LEADER_ELECTIONS_MAX * lc.election_ms / 1000 + RPC_TIMEOUT_S
            while True:
                try:
                    acked[key] = kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=RPC_TIMEOUT_S).header.revision
                    break
                except grpc.RpcError as e:
                    errors_seen.add(e.code().name)
                    assert time.monotonic() < give_up, f"no write accepted after the crash; errors {errors_seen}"
                    time.sleep(WRITE_RETRY_PAUSE_S)
        lc.restart(leader)
        lc.wait_ready()
        done.set()
        deadline = time.monotonic() + STREAM_WAIT_S
        while time.monotonic() < deadline and not set(acked.items()) <= set(seen):
            time.sleep(0.1)
        missing = set(acked.items()) - set(seen)
        assert not missing, f"acknowledged writes never watched: {sorted(missing)[:5]}"
        revs = [r for _, r in seen]
        assert revs == sorted(revs) and len(revs) == len(set(revs))  # in order, each once
        assert errors_seen <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "FAILED_PRECONDITION"}, errors_seen
    finally:
        done.set()
        requests.put(None)
        call.cancel()
        t.join(5)
        wch.close()
        pch.close()
        if not lc.is_running(leader):
            lc.restart(leader)
