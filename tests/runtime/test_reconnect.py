"""Real server processes: a member SIGKILLed right after it became leader, then restarted,
must be caught up by the new leader (and able to take leadership back) within a few
election timeouts of serving again. The bounds are liveness bounds derived from the
configured election timeout, not speed assertions.
"""

import asyncio
import signal
import socket
import struct
import time

import grpc
import pytest

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.raft.types import Message, MessageType
from geokv.runtime import transport as tp
from geokv.runtime.transport import Transport, pack_frame
from geokv.testing.cluster import LocalCluster

from .conftest import run


TIMING = {"heartbeat_ms": 100, "election_ms": 1000}
ELECTION_S = TIMING["election_ms"] / 1000.0
ITERATIONS = 3                      # kill/restart rounds per test run
# WAN emulation makes the leader's writer sleep before each frame (the window in which the
# killed peer's reset closes the transport); a short SIGSTOP before the SIGKILL leaves
# unread bytes in the victim's socket, so its kernel answers with a reset, not a FIN.
REGIONS = ["us-east", "eu-west", "ap-south"]
FREEZE_BEFORE_KILL_S = 0.3
CATCH_UP_ELECTIONS = 10             # liveness bound: restarted member caught up
START_BOUND_S = 60.0                # a restarted process serves its API (loaded 2-core box)
RPC_TIMEOUT_S = 5.0
POLL_S = 0.05


def _wait_serving(c: LocalCluster, i: int) -> None:
    deadline = time.monotonic() + START_BOUND_S
    while True:
        try:
            c.status(i, timeout_s=1.0)
            return
        except grpc.RpcError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{c.names[i]} did not serve after restart; log: {c.tail_log(i)}")
            time.sleep(POLL_S)


def _put(c: LocalCluster, key: bytes) -> int:
    resp = c.call_any(lambda ch: rpc_pb2_grpc.KVStub(ch).Put(
        rpc_pb2.PutRequest(key=key, value=b"v"), timeout=RPC_TIMEOUT_S), timeout_s=START_BOUND_S)
    return resp.header.revision


def _move_leader(c: LocalCluster, to: int, deadline: float) -> None:
    last = None
    while time.monotonic() < deadline:
        try:
            ld = c.leader_index(timeout_s=max(0.0, deadline - time.monotonic()))
            if ld == to:
                return
            c.maintenance_stub(ld).MoveLeader(
                rpc_pb2.MoveLeaderRequest(targetID=c.member_id(to)), timeout=RPC_TIMEOUT_S)
            return
        except (grpc.RpcError, TimeoutError) as exc:
            last = exc
            time.sleep(POLL_S)
    raise AssertionError(f"could not move leadership to {c.names[to]}: {last}")


@pytest.mark.e2e
def test_member_killed_right_after_becoming_leader_is_caught_up_after_restart(tmp_path):
    with LocalCluster(3, str(tmp_path), regions=REGIONS, extra_args=["--wan-emulation", "on"], **TIMING) as c:
        c.wait_ready()
        for it in range(ITERATIONS):
            ld = c.leader_index()
            victim = (ld + 1) % 3
            _move_leader(c, victim, time.monotonic() + START_BOUND_S)
            c.kill(victim, signal.SIGSTOP)  # right away: it has just become leader
            time.sleep(FREEZE_BEFORE_KILL_S)
            c.kill(victim, signal.SIGKILL)
            c.restart(victim)
            _wait_serving(c, victim)

            # The catch-up bound starts once the restarted member serves again.
            bound_s = CATCH_UP_ELECTIONS * ELECTION_S
            t0 = time.monotonic()
            rev = _put(c, b"reconnect/%d" % it)
            deadline = t0 + bound_s
            while True:
                try:
                    st = c.status(victim, timeout_s=1.0)
                    if st.header.revision >= rev and st.leader != 0:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() >= deadline:
                    logs = "\n".join(f"--- {c.names[j]}\n{c.tail_log(j, 3000)}" for j in range(3))
                    raise AssertionError(f"round {it}: {c.names[victim]} not caught up to revision {rev} "
                                         f"within {bound_s:.0f} s after restart\n{logs}")
                time.sleep(POLL_S)

            # A transfer needs the leader's progress for the target at match == last index:
            # leadership must be able to return to the restarted member (MoveLeader answers
            # once the target leads; the geo placement may move it on afterwards).
            _move_leader(c, victim, time.monotonic() + bound_s)


HALF_OPEN_HB_S = 0.02
HALF_OPEN_CLUSTER = 0xC2


def test_half_open_link_is_redialled_and_reaches_the_restarted_peer():
    """Peer 2 'dies' without its FIN/RST reaching peer 1 (the accepted socket stays open
    and silent), then a new peer 2 listens on the same port. Peer 1 must notice the
    silence (no pongs) and redial within its silence bound, so its messages get through."""
    silence_s = max(tp.PEER_SILENCE_MIN_S, tp.PEER_SILENCE_HEARTBEATS * HALF_OPEN_HB_S)

    async def main():
        in1, in2 = [], []
        t1 = Transport(cluster_id=HALF_OPEN_CLUSTER, member_id=1, name="m1", region="r", zone="",
                       listen_host="127.0.0.1", listen_port=0, on_raft=in1.extend,
                       heartbeat_interval_s=HALF_OPEN_HB_S)
        await t1.start()
        held: list[asyncio.StreamWriter] = []

        async def silent_peer(reader, writer):
            # Answer the hello as member 2, then never read or write again.
            await reader.readexactly(4)
            writer.write(pack_frame([tp.HELLO, HALF_OPEN_CLUSTER, 2, "m2", "r", ""]))
            await writer.drain()
            held.append(writer)

        old = await asyncio.start_server(silent_peer, "127.0.0.1", 0, reuse_address=True)
        port = old.sockets[0].getsockname()[1]
        t2 = None
        try:
            t1.set_peers({2: f"http://127.0.0.1:{port}"})
            deadline = time.monotonic() + 5.0
            while not (held and t1.connected(2)):
                assert time.monotonic() < deadline, "never connected to the first peer 2"
                await asyncio.sleep(0.01)
            old.close()  # the old process is gone, its half-open connection is not
            await old.wait_closed()
            t2 = Transport(cluster_id=HALF_OPEN_CLUSTER, member_id=2, name="m2", region="r", zone="",
                           listen_host="127.0.0.1", listen_port=port, on_raft=in2.extend,
                           heartbeat_interval_s=HALF_OPEN_HB_S)
            await t2.start()
            bound_s = silence_s + 4 * tp.RECONNECT_BACKOFF_MAX_S + tp.HELLO_TIMEOUT_S
            deadline = time.monotonic() + bound_s
            i = 0
            while not in2:
                assert time.monotonic() < deadline, f"no message reached the new peer 2 within {bound_s} s"
                i += 1
                t1.send([Message(MessageType.HEARTBEAT, to=2, frm=1, term=1, index=i)])
                await asyncio.sleep(0.05)
            assert in2[0].frm == 1
        finally:
            for w in held:
                w.close()
            await t1.stop()
            if t2 is not None:
                await t2.stop()

    run(main(), timeout_s=60.0)


def test_peer_reset_during_wan_delay_under_uvloop_does_not_kill_the_link():
    """The killed-right-after-becoming-leader bug: the peer resets the connection while our
    writer sleeps out the emulated WAN delay of a queued frame; under uvloop the write on the
    closed transport raises RuntimeError, which used to end the peer's link task for good
    (connected() stayed False, Raft progress stuck at match 0). The restarted peer must get
    our messages within a few reconnect back-offs."""
    uvloop = pytest.importorskip("uvloop")
    delay_s = 0.3

    async def main():
        in2 = []
        t1 = Transport(cluster_id=HALF_OPEN_CLUSTER, member_id=1, name="m1", region="r1", zone="",
                       listen_host="127.0.0.1", listen_port=0, on_raft=lambda msgs: None,
                       heartbeat_interval_s=HALF_OPEN_HB_S,
                       outbound_delay_s=lambda region: delay_s if region == "r2" else 0.0)
        await t1.start()
        got_hello = asyncio.Event()
        reset_now = asyncio.Event()

        async def dying_peer(reader, writer):
            # Answer the hello as member 2 (region r2), then die with a reset once told.
            await reader.readexactly(4)
            writer.write(pack_frame([tp.HELLO, HALF_OPEN_CLUSTER, 2, "m2", "r2", ""]))
            await writer.drain()
            got_hello.set()
            await reset_now.wait()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        old = await asyncio.start_server(dying_peer, "127.0.0.1", 0, reuse_address=True)
        port = old.sockets[0].getsockname()[1]
        t2 = None
        try:
            t1.set_peers({2: f"http://127.0.0.1:{port}"})
            await asyncio.wait_for(got_hello.wait(), 5.0)
            deadline = time.monotonic() + 5.0
            while not t1.connected(2):
                assert time.monotonic() < deadline, "never connected to the first peer 2"
                await asyncio.sleep(0.01)
            # A frame is queued, the writer sleeps out its delay, the peer resets meanwhile.
            t1.send([Message(MessageType.HEARTBEAT, to=2, frm=1, term=1, index=0)])
            await asyncio.sleep(delay_s / 3)
            reset_now.set()
            old.close()
            await old.wait_closed()
            await asyncio.sleep(delay_s)
            t2 = Transport(cluster_id=HALF_OPEN_CLUSTER, member_id=2, name="m2", region="r2", zone="",
                           listen_host="127.0.0.1", listen_port=port, on_raft=in2.extend,
                           heartbeat_interval_s=HALF_OPEN_HB_S)
            await t2.start()
            bound_s = 4 * tp.RECONNECT_BACKOFF_MAX_S + tp.HELLO_TIMEOUT_S + 10 * delay_s
            deadline = time.monotonic() + bound_s
            i = 0
            while not in2:
                assert time.monotonic() < deadline, f"no message reached the restarted peer 2 within {bound_s} s"
                i += 1
                t1.send([Message(MessageType.HEARTBEAT, to=2, frm=1, term=1, index=i)])
                await asyncio.sleep(0.05)
            assert in2[0].frm == 1
        finally:
            await t1.stop()
            if t2 is not None:
                await t2.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 60.0))
