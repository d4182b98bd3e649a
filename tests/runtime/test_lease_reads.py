"""Lease reads (read mode ``lease``): served from the leader's lease without a heartbeat
round, one forward from a follower, and never from a lease that real time has expired
(a stalled leader). Observed through the member's counters, never through wall-clock
speed."""

import asyncio
import signal
import time

import grpc
import pytest

from geokv.etcdpb import rpc_pb2
from geokv.kv.types import Put, Range
from geokv.runtime.member import MAX_CATCHUP_ELECTIONS, Member
from geokv.testing.cluster import LocalCluster
from geokv.testing.inproc import InProcCluster, member_configs

from .conftest import run

LEASE_WAIT_S = 10.0        # bound on waiting for a leader's lease to become valid
RPC_TIMEOUT_S = 5.0
NEW_LEADER_TIMEOUT_S = 15.0
POLL_S = 0.02


def _stats(m: Member) -> dict:
    return m.statistics()


async def _lease_read(m: Member, key: bytes, timeout_s: float = 5.0) -> bytes | None:
    res = await m.read(Range(key), mode="lease", timeout_s=timeout_s)
    return res.kvs[0].value if res.kvs else None


async def _wait_lease_valid(leader: Member) -> None:
    """Until the leader's Raft lease is valid (a quorum acknowledged recent heartbeats)."""
    deadline = time.monotonic() + LEASE_WAIT_S
    while time.monotonic() < deadline:
        if leader._leader_committed_in_term and leader._open_lease_gate():
            try:
                if leader._rn.lease_valid():
                    return
            finally:
                leader._close_lease_gate()
        await asyncio.sleep(POLL_S)
    raise TimeoutError("the leader's lease never became valid")


def test_tick_clock_never_runs_ahead_and_catch_up_is_bounded(tmp_path):
    cfg = member_configs(1, str(tmp_path), heartbeat_ms=100, election_ms=1000)[0]
    m = Member(cfg)
    now = [1000.0]
    m._tick_clock = lambda: now[0]
    m._tick_base, m._tick_slots, m._election_tick = 1000.0, 0, 10
    now[0] = 1000.0999
    assert m._take_owed_ticks() == 0            # no tick before its slot
    now[0] = 1000.1001
    assert m._take_owed_ticks() == 1
    assert m._take_owed_ticks() == 0
    now[0] = 1000.1001 + 100 * 0.1              # a 10 s stall: 100 ticks owed
    cap = MAX_CATCHUP_ELECTIONS * 10 + 1
    assert m._ticks_owed() == 100
    assert m._take_owed_ticks() == cap          # at least an election timeout delivered
    assert cap >= 10
    assert m._ticks_owed() == 0 and m._take_owed_ticks() == 0
    st = m.statistics()
    assert st["ticks_skipped"] == 100 - cap and st["ticks_delivered"] == 1 + cap


def test_lease_reads_on_leader_and_follower(tmp_path):
    async def body():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            follower = next(m for m in c.live() if m is not leader)
            other = next(m for m in c.live() if m is not leader and m is not follower)
            await other.propose(Put(b"k", b"v1"))
            await _wait_lease_valid(leader)

            # Leader: answered from the lease, no ReadIndex round, no driver turn.
            before = _stats(leader)
            assert await _lease_read(leader, b"k") == b"v1"
            after = _stats(leader)
            assert after["lease_reads_local"] == before["lease_reads_local"] + 1
            assert after["lease_read_rounds"] == before["lease_read_rounds"]

            # --linearizable-read quorum: a linearizable read never uses the lease
            # (etcd's ReadOnlySafe) ...
            leader.config.linearizable_read = "quorum"
            before = _stats(leader)
            await leader.wait_linearizable(timeout_s=5.0)
            after = _stats(leader)
            assert after["lease_reads_local"] == before["lease_reads_local"]
            assert after["lease_answers"] == before["lease_answers"]
            # ... and with the default (lease) it is answered from the valid lease.
            leader.config.linearizable_read = "lease"
            await _wait_lease_valid(leader)
            before = _stats(leader)
            await leader.wait_linearizable(timeout_s=5.0)
            after = _stats(leader)
            assert after["lease_reads_local"] == before["lease_reads_local"] + 1
            assert after["lease_read_rounds"] == before["lease_read_rounds"]

            # Follower: one forwarded ReadIndex, answered by the leader from its lease;
            # it sees a write acknowledged by the third member just before.
            await other.propose(Put(b"k", b"v2"))
            deadline = time.monotonic() + LEASE_WAIT_S
            while True:
                await _wait_lease_valid(leader)
                lb, fb = _stats(leader), _stats(follower)
                assert await _lease_read(follower, b"k") == b"v2"
                la, fa = _stats(leader), _stats(follower)
                assert fa["lease_read_rounds"] == fb["lease_read_rounds"] + 1
                assert fa["lease_reads_local"] == fb["lease_reads_local"]
                if la["lease_answers"] == lb["lease_answers"] + 1:
                    break  # answered from the lease (else a heartbeat round: try again)
                assert time.monotonic() < deadline, "the leader never answered a forwarded read from its lease"

    run(body())


def test_leader_with_owed_ticks_never_answers_from_its_lease(tmp_path):
    """The leader's clock jumps (its loop stalled for 1.5 election timeouts while the
    others went on): the lease read must not be answered from the lease before the owed
    ticks are delivered, and after them the old lease is expired."""
    async def body():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            await leader.propose(Put(b"k", b"v1"))
            await _wait_lease_valid(leader)
            real = leader._tick_clock
            offset = 1.5 * leader.election_s
            leader._tick_clock = lambda: real() + offset
            before = _stats(leader)
            assert await _lease_read(leader, b"k") == b"v1"
            after = _stats(leader)
            assert after["lease_reads_local"] == before["lease_reads_local"]
            assert after["lease_refused_ticks_owed"] > before["lease_refused_ticks_owed"]
            assert after["ticks_delivered"] - before["ticks_delivered"] >= leader._election_tick
            # The catch-up turn expired the lease: the read took a heartbeat round.
            assert after["lease_answers"] == before["lease_answers"]

    run(body())


def test_stalled_leader_that_lost_leadership_never_serves_a_stale_lease_read(tmp_path):
    """The leader's loop stalls (its tick clock stops) and it is cut off; the others elect
    a new leader and take a write. When the old leader's clock resumes, before it has
    heard of the new leader, a lease read on it must fail or see the write, never v1."""
    async def body():
        async with InProcCluster(3, str(tmp_path)) as c:
            old = await c.wait_leader()
            await old.propose(Put(b"k", b"v1"))
            await _wait_lease_valid(old)
            others = [m for m in c.live() if m is not old]
            real, on_raft, send = old._tick_clock, old.transport.on_raft, old.transport.send
            frozen = real()
            old._tick_clock = lambda: frozen           # the stall: no tick is owed
            old.transport.on_raft = lambda msgs: None  # and it hears nothing ...
            old.transport.send = lambda msgs: None     # ... and says nothing
            try:
                deadline = time.monotonic() + NEW_LEADER_TIMEOUT_S
                while not any(m.is_leader for m in others):
                    assert time.monotonic() < deadline, "no new leader"
                    await asyncio.sleep(POLL_S)
                new = next(m for m in others if m.is_leader)
                await new.propose(Put(b"k", b"v2"))
                assert old.is_leader                    # it still believes it leads
                old._tick_clock = real                  # resumes: ticks are owed
                try:
                    value = await _lease_read(old, b"k", timeout_s=2.0)
                except Exception:  # noqa: BLE001 - failing is allowed (no quorum reachable)
                    value = None
                assert value in (None, b"v2"), f"stale lease read: {value!r}"
                assert old.statistics()["lease_refused_ticks_owed"] > 0
            finally:
                old._tick_clock = real
                old.transport.on_raft, old.transport.send = on_raft, send
            deadline = time.monotonic() + NEW_LEADER_TIMEOUT_S
            while True:
                try:
                    if await _lease_read(old, b"k") == b"v2":
                        break
                except Exception:  # noqa: BLE001 - while it rejoins
                    pass
                assert time.monotonic() < deadline, "the old leader never caught up"
                await asyncio.sleep(POLL_S)

    run(body())


# --- real processes: SIGSTOP the leader ---------------------------------------------------
def _lease_md():
    return (("geokv-read-mode", "lease"),)


def _get(c: LocalCluster, i: int, key: bytes):
    r = c.kv_stub(i).Range(rpc_pb2.RangeRequest(key=key), metadata=_lease_md(), timeout=RPC_TIMEOUT_S)
    return r.kvs[0].value if r.kvs else None


@pytest.mark.e2e
def test_paused_leader_never_serves_a_stale_lease_read(tmp_path):
    with LocalCluster(3, str(tmp_path)) as c:
        c.wait_ready()
        old = c.leader_index()
        old_id = c.member_id(old)
        c.kv_stub(old).Put(rpc_pb2.PutRequest(key=b"k", value=b"v1"), timeout=RPC_TIMEOUT_S)
        assert _get(c, old, b"k") == b"v1"   # lease reads work; the channel is connected
        others = [i for i in range(3) if i != old]
        c.kill(old, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + NEW_LEADER_TIMEOUT_S
            new = None
            while new is None:
                assert time.monotonic() < deadline, "no new leader while the old one was paused"
                for i in others:
                    try:
                        st = c.status(i, timeout_s=0.5)
                    except grpc.RpcError:
                        continue
                    if st.leader and st.leader != old_id:
                        new = i
                time.sleep(POLL_S)
            c.kv_stub(new).Put(rpc_pb2.PutRequest(key=b"k", value=b"v2"), timeout=RPC_TIMEOUT_S)
            # The read reaches the paused old leader's socket; it runs once it resumes.
            fut = c.kv_stub(old).Range.future(rpc_pb2.RangeRequest(key=b"k"), metadata=_lease_md(),
                                              timeout=RPC_TIMEOUT_S)
            time.sleep(0.3)
        finally:
            c.kill(old, signal.SIGCONT)
        try:
            r = fut.result()
        except grpc.RpcError:
            r = None  # failing is allowed; stale is not
        if r is not None:
            assert [kv.value for kv in r.kvs] == [b"v2"], "stale lease read on a paused leader"
        c.wait_ready()
        assert _get(c, old, b"k") == b"v2"
