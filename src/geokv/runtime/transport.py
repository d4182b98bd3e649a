"""Peer transport: Raft messages, request forwarding and RTT probes over asyncio TCP.

Wire format: every frame is a 4-byte big-endian length followed by one msgpack value, a
list whose first element is the frame kind:

    [HELLO, cluster_id, member_id, name, region, zone]   first frame, both directions
    [RAFT, [encoded Message, ...]]                        a batch of Raft messages
    [PING, seq, t_ns] / [PONG, seq, t_ns]                 RTT probe (echoed as is)
    [CALL, call_id, method, payload]                      forwarded request
    [REPLY, call_id, ok, payload]                         its answer (error: [name, text])

Each member dials every peer once; that outbound connection carries this member's Raft
messages, pings and calls, and the peer answers pongs and replies on the same
connection. Raft messages from the peer to us arrive on the peer's own outbound
connection. Per-connection order is preserved, also under emulated WAN delay: every
frame gets a release time ``max(enqueue time + delay, previous release time)``.

Failure policy: a connection that sends a frame longer than ``max_frame_bytes``, a
frame that does not decode, or a hello with a different cluster id is closed with one
log line; the server keeps running. Outbound queues are bounded: when full the oldest
Raft message is dropped and the peer reported unreachable (Raft retransmits).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import struct
import time
from typing import Any, Awaitable, Callable

import msgpack

from geokv import errors
from geokv.raft.types import Message, MessageType

log = logging.getLogger("geokv.transport")

HELLO, RAFT, PING, PONG, CALL, REPLY = range(6)

MAX_PEER_QUEUE_ITEMS = 8192            # outbound frames waiting per peer
MAX_MSGS_PER_FRAME = 4096              # Raft messages batched into one frame
MAX_FRAME_BYTES_DEFAULT = 512 << 20    # snapshots travel inside a frame
MAX_PENDING_CALLS_PER_PEER = 1024
MAX_INFLIGHT_CALLS_PER_CONN = 256
MAX_REPLY_QUEUE_ITEMS = 1024           # pongs/replies waiting on an inbound connection
RECONNECT_BACKOFF_MIN_S = 0.05
RECONNECT_BACKOFF_MAX_S = 2.0
HELLO_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
STOP_WAIT_S = 2.0
# A peer removed from the cluster keeps its link this long at most, until the messages
# already queued for it are written: the last of them may tell it that it was removed
# (the commit of its own removal), which it learns from nobody else.
REMOVED_PEER_DRAIN_S = 1.0
REMOVED_PEER_DRAIN_POLL_S = 0.01
# A connected peer that answers none of our pings for this long is treated as gone (a
# half-open connection: its FIN/RST never reached us) and redialled. Bound: the larger of
# a floor and a number of heartbeat intervals (pings go out every heartbeat).
PEER_SILENCE_MIN_S = 5.0
PEER_SILENCE_HEARTBEATS = 30
RTT_SAMPLES_MAX = 64
RTT_EWMA_ALPHA = 0.2

_LEN = struct.Struct(">I")
# uvloop raises RuntimeError("... the handler is closed") for a write on a transport the
# peer already reset (plain asyncio only logs): for us that is a lost connection too.
_CLOSED_HANDLE = RuntimeError

try:  # the Raft layer owns the wire form of a Message
    from geokv.raft.codec import decode_message, encode_message
except ImportError:  # pragma: no cover - until geokv.raft.codec lands
    from geokv.runtime._codec import decode_message, encode_message


class FrameError(Exception):
    """A peer sent bytes that are not a valid frame; its connection gets closed."""


class PeerUnavailable(errors.GeoKVError):
    code = "UNAVAILABLE"
    message = "etcdserver: request timed out, possibly due to connection lost"


def pack_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, max_frame_bytes: int) -> list:
    head = await reader.readexactly(4)
    (n,) = _LEN.unpack(head)
    if n == 0 or n > max_frame_bytes:
        raise FrameError(f"frame length {n} outside 1..{max_frame_bytes}")
    body = await reader.readexactly(n)
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise FrameError(f"undecodable frame: {exc!r}") from None
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise FrameError("frame is not a [kind, ...] list")
    return obj


def _error_from_wire(payload) -> Exception:
    try:
        name, text = payload
        cls = getattr(errors, str(name), None)
        if isinstance(cls, type) and issubclass(cls, errors.GeoKVError):
            return cls(str(text))
        return errors.GeoKVError(str(text))
    except (TypeError, ValueError):
        return errors.GeoKVError("etcdserver: malformed error reply")


class _Releaser:
    """Orders release times of one connection: non-decreasing, delay added per frame."""

    __slots__ = ("_last", "_delay")

    def __init__(self, delay_fn: Callable[[], float]) -> None:
        self._last = 0.0
        self._delay = delay_fn

    def release_at(self, enqueued: float) -> float:
        t = enqueued + self._delay()
        if t < self._last:
            t = self._last
        self._last = t
        return t


class _RTT:
    __slots__ = ("samples", "ewma_ms")

    def __init__(self) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=RTT_SAMPLES_MAX)
        self.ewma_ms: float | None = None

    def add(self, ms: float) -> None:
        self.samples.append(ms)
        self.ewma_ms = ms if self.ewma_ms is None else (1 - RTT_EWMA_ALPHA) * self.ewma_ms + RTT_EWMA_ALPHA * ms

    def p50(self) -> float | None:
        if not self.samples:
            return None
        s = sorted(self.samples)
        return s[len(s) // 2]


class _Peer:
    """Our outbound connection to one peer: a bounded queue and one writer task."""

    def __init__(self, t: "Transport", peer_id: int, url: str) -> None:
        self.t = t
        self.id = peer_id
        self.url = url
        self.queue: collections.deque = collections.deque()  # (enqueued_s, kind, obj)
        self.wake = asyncio.Event()
        self.calls: dict[int, asyncio.Future] = {}
        self.region = ""
        self.zone = ""
        self.name = ""
        self.connected = False
        self.last_heard = 0.0  # monotonic time of the last frame the peer sent us
        self.rtt = _RTT()
        self.dropped_msgs = 0
        self.closing = False
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.ping_task: asyncio.Task | None = None
        self._ping_seq = itertools.count(1)
        self._releaser = _Releaser(self._delay)

    def _delay(self) -> float:
        fn = self.t.outbound_delay_s
        if fn is None or not self.region:
            return 0.0
        return max(0.0, float(fn(self.region)))

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"peer-{self.id:x}")
        self.ping_task = asyncio.create_task(self._pinger(), name=f"ping-{self.id:x}")

    async def close(self) -> None:
        self.closing = True
        tasks = [t for t in (self.task, self.ping_task) if t is not None]
        if self.writer is not None:
            self.writer.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        self._fail_calls(errors.Stopped())

    async def drain_and_close(self, timeout_s: float) -> None:
        """Write what is queued (while connected, at most ``timeout_s``), then close."""
        deadline = time.monotonic() + timeout_s
        while self.queue and self.connected and not self.closing and time.monotonic() < deadline:
            await asyncio.sleep(REMOVED_PEER_DRAIN_POLL_S)
        await self.close()

    # --- enqueue (never blocks) ---------------------------------------------------
    def enqueue(self, kind: int, obj: Any) -> None:
        q = self.queue
        if len(q) >= MAX_PEER_QUEUE_ITEMS:
            _, okind, old = q.popleft()
            if okind == RAFT:
                self.dropped_msgs += 1
                self.t._report_unreachable(self.id)
                if old[0] == MessageType.SNAP:
                    self.t._report_snapshot(self.id, False)
            elif okind == CALL:
                fut = self.calls.pop(old[1], None)
                if fut is not None and not fut.done():
                    fut.set_exception(errors.TooManyRequests())
        q.append((time.monotonic(), kind, obj))
        self.wake.set()

    def _fail_calls(self, exc: Exception) -> None:
        calls, self.calls = self.calls, {}
        for fut in calls.values():
            if not fut.done():
                fut.set_exception(exc)

    def _drop_queue(self) -> None:
        """The connection is down: Raft will retransmit; calls fail now."""
        had_raft = False
        for _, kind, obj in self.queue:
            if kind == RAFT:
                had_raft = True
                if obj[0] == MessageType.SNAP:
                    self.t._report_snapshot(self.id, False)
        self.queue.clear()
        if had_raft:
            self.t._report_unreachable(self.id)
        self._fail_calls(PeerUnavailable())

    # --- writer ---------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = RECONNECT_BACKOFF_MIN_S
        while not self.closing:
            writer = None
            try:
                host, port = self.t._resolve(self.url)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
                self.writer = writer
                writer.write(pack_frame(self.t._hello()))
                await writer.drain()
                hello = await asyncio.wait_for(read_frame(reader, self.t.max_frame_bytes), HELLO_TIMEOUT_S)
                self._check_hello(hello)
                self.last_heard = time.monotonic()
                self.connected = True
                backoff = RECONNECT_BACKOFF_MIN_S
                read_task = asyncio.create_task(self._read_replies(reader))
                try:
                    await self._write_loop(writer, read_task)
                finally:
                    read_task.cancel()
                    # asyncio.wait never raises the reader's error, but does raise if
                    # *we* are being cancelled: our own cancellation must not be lost.
                    await asyncio.wait([read_task])
            except asyncio.CancelledError:
                if writer is not None:
                    writer.close()
                task = asyncio.current_task()
                if self.closing or task is None or task.cancelling():
                    raise
                # A CancelledError that is not ours (e.g. re-raised from the reply reader's
                # result): ending this task would leave the link to this peer dead for
                # good, so treat it as a lost connection.
                log.warning("peer %x (%s) connection lost: stray cancellation", self.id, self.url)
                self.connected = False
                self._drop_queue()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, FrameError, ConnectionError,
                    _CLOSED_HANDLE) as exc:
                if self.connected:
                    log.info("peer %x (%s) connection lost: %s", self.id, self.url, exc)
                self.connected = False
                self._drop_queue()
            except Exception:
                # Never let the link task die: Raft only retransmits, it does not redial.
                log.exception("peer %x (%s): unexpected error on the connection; reconnecting", self.id, self.url)
                self.connected = False
                self._drop_queue()
            finally:
                self.connected = False
                if writer is not None:
                    writer.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)

    def _check_hello(self, hello: list) -> None:
        if len(hello) < 6 or hello[0] != HELLO:
            raise FrameError("expected a hello frame")
        _, cluster_id, member_id, name, region, zone = hello[:6]
        if cluster_id != self.t.cluster_id:
            log.warning("peer %s belongs to cluster %x, not ours (%x); not talking to it",
                        self.url, cluster_id, self.t.cluster_id)
            raise FrameError("cluster id mismatch")
        if member_id != self.id:
            log.warning("peer %s says it is member %x, expected %x", self.url, member_id, self.id)
            raise FrameError("member id mismatch")
        self.name, self.region, self.zone = str(name), str(region), str(zone)
        self.t._learn_peer(member_id, self.name, self.region, self.zone)

    async def _write_loop(self, writer: asyncio.StreamWriter, read_task: asyncio.Task) -> None:
        q = self.queue
        while True:
            if not q:
                self.wake.clear()
                waiter = asyncio.create_task(self.wake.wait())
                done, _ = await asyncio.wait({waiter, read_task}, return_when=asyncio.FIRST_COMPLETED)
                if read_task in done:
                    waiter.cancel()
                    read_task.result()  # re-raise the reader's error
                    raise ConnectionError("peer closed the connection")
                continue
            release = self._releaser.release_at(q[0][0])
            now = time.monotonic()
            if release > now:
                await asyncio.sleep(release - now)
            frames: list[bytes] = []
            msgs: list = []
            snaps = 0
            now = time.monotonic()
            while q and len(msgs) < MAX_MSGS_PER_FRAME:
                enq, kind, obj = q[0]
                if enq + self._delay() > now + 1e-4 and (msgs or frames):
                    break
                q.popleft()
                if kind == RAFT:
                    msgs.append(obj)
                    if obj[0] == MessageType.SNAP:
                        snaps += 1
                else:
                    if msgs:
                        frames.append(pack_frame([RAFT, msgs]))
                        msgs = []
                    frames.append(pack_frame(obj))
            if msgs:
                frames.append(pack_frame([RAFT, msgs]))
            writer.write(b"".join(frames))
            await writer.drain()
            for _ in range(snaps):
                self.t._report_snapshot(self.id, True)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        while True:
            f = await read_frame(reader, self.t.max_frame_bytes)
            self.last_heard = time.monotonic()
            kind = f[0]
            if kind == PONG and len(f) >= 3 and isinstance(f[2], int):
                self.rtt.add((time.monotonic_ns() - f[2]) / 1e6)
            elif kind == REPLY and len(f) >= 4:
                fut = self.calls.pop(f[1], None)
                if fut is not None and not fut.done():
                    if f[2]:
                        fut.set_result(f[3])
                    else:
                        fut.set_exception(_error_from_wire(f[3]))
            else:
                raise FrameError(f"unexpected frame kind {kind!r} from peer")

    async def _pinger(self) -> None:
        silence_s = max(PEER_SILENCE_MIN_S, PEER_SILENCE_HEARTBEATS * self.t.heartbeat_interval_s)
        while True:
            await asyncio.sleep(self.t.heartbeat_interval_s)
            if not self.connected:
                continue
            writer = self.writer
            if time.monotonic() - self.last_heard > silence_s and writer is not None:
                # Half-open: writes may still "succeed" into the socket buffer for many
                # minutes; abort so the reader and writer fail and the link redials.
                log.warning("peer %x (%s): no answer for %.1f s; reconnecting", self.id, self.url, silence_s)
                self.connected = False
                writer.transport.abort()
                continue
            self.enqueue(PING, [PING, next(self._ping_seq), time.monotonic_ns()])


class Transport:
    """Peer transport of one member. Callbacks run on the event loop and must not block.

    ``on_raft(msgs)`` receives decoded inbound Raft messages; ``on_unreachable(peer)``
    and ``on_snapshot_status(peer, ok)`` feed RawNode.report_unreachable/report_snapshot;
    ``call_handler(peer_id, method, payload)`` answers forwarded requests (may raise
    geokv.errors.* which travel back to the caller).
    """

    def __init__(
        self,
        *,
        cluster_id: int,
        member_id: int,
        name: str,
        region: str,
        zone: str,
        listen_host: str,
        listen_port: int,
        on_raft: Callable[[list[Message]], None],
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot_status: Callable[[int, bool], None] | None = None,
        call_handler: Callable[[int, str, Any], Awaitable[Any]] | None = None,
        heartbeat_interval_s: float = 0.1,
        outbound_delay_s: Callable[[str], float] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT,
    ) -> None:
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.name = name
        self.region = region
        self.zone = zone
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.on_raft = on_raft
        self.on_unreachable = on_unreachable
        self.on_snapshot_status = on_snapshot_status
        self.call_handler = call_handler
        self.heartbeat_interval_s = heartbeat_interval_s
        self.outbound_delay_s = outbound_delay_s
        self.max_frame_bytes = max_frame_bytes
        self._peers: dict[int, _Peer] = {}
        self._closing_peers: set[_Peer] = set()  # removed peers writing their last messages
        self._peer_info: dict[int, tuple[str, str, str]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._conn_writers: set[asyncio.StreamWriter] = set()
        self._call_ids = itertools.count(1)
        self.bad_frames = 0
        self.frames_in = 0

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_conn, self.listen_host, self.listen_port,
                                                  reuse_address=True)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for p in list(self._peers.values()) + list(self._closing_peers):
            await p.close()
        self._peers.clear()
        self._closing_peers.clear()
        for w in list(self._conn_writers):
            w.close()  # the connection's reader sees EOF even if a cancel gets lost
        conns = list(self._conns)
        for task in conns:
            task.cancel()
        if conns:
            await asyncio.wait(conns, timeout=STOP_WAIT_S)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None

    # --- peers ------------------------------------------------------------------------
    def set_peers(self, peers: dict[int, str]) -> None:
        """Make the peer set exactly ``peers`` (id -> peer URL), excluding ourselves."""
        peers = {i: u for i, u in peers.items() if i != self.member_id}
        for pid in [p for p in self._peers if p not in peers or self._peers[p].url != peers[p]]:
            p = self._peers.pop(pid)
            if pid in peers:  # a new URL: the old link is useless
                asyncio.ensure_future(p.close())
            else:
                self._closing_peers.add(p)
                task = asyncio.ensure_future(p.drain_and_close(REMOVED_PEER_DRAIN_S))
                task.add_done_callback(lambda _t, p=p: self._closing_peers.discard(p))
        for pid, url in peers.items():
            if pid not in self._peers:
                p = _Peer(self, pid, url)
                self._peers[pid] = p
                p.start()

    def peer_ids(self) -> list[int]:
        return list(self._peers)

    def peer_info(self) -> dict[int, dict]:
        return {pid: {"name": n, "region": r, "zone": z} for pid, (n, r, z) in self._peer_info.items()}

    def connected(self, peer_id: int) -> bool:
        p = self._peers.get(peer_id)
        return bool(p and p.connected)

    def _learn_peer(self, pid: int, name: str, region: str, zone: str) -> None:
        self._peer_info[pid] = (name, region, zone)

    @staticmethod
    def _resolve(url: str) -> tuple[str, int]:
        from geokv.runtime.config import url_host_port

        return url_host_port(url)

    def _hello(self) -> list:
        return [HELLO, self.cluster_id, self.member_id, self.name, self.region, self.zone]

    def _report_unreachable(self, pid: int) -> None:
        if self.on_unreachable is not None:
            self.on_unreachable(pid)

    def _report_snapshot(self, pid: int, ok: bool) -> None:
        if self.on_snapshot_status is not None:
            self.on_snapshot_status(pid, ok)

    # --- sending ----------------------------------------------------------------------
    def send(self, msgs: list[Message]) -> None:
        """Queue Raft messages to their peers (never blocks; unknown peers are skipped)."""
        peers = self._peers
        for m in msgs:
            p = peers.get(m.to)
            if p is None:
                self._report_unreachable(m.to)
                continue
            p.enqueue(RAFT, encode_message(m))

    async def call(self, peer_id: int, method: str, payload: Any, timeout_s: float) -> Any:
        p = self._peers.get(peer_id)
        if p is None or not p.connected:
            raise PeerUnavailable()
        if len(p.calls) >= MAX_PENDING_CALLS_PER_PEER:
            raise errors.TooManyRequests()
        cid = next(self._call_ids)
        fut = asyncio.get_running_loop().create_future()
        p.calls[cid] = fut
        p.enqueue(CALL, [CALL, cid, method, payload])
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise errors.Timeout() from None
        finally:
            p.calls.pop(cid, None)

    # --- RTT ----------------------------------------------------------------------------
    def rtt_ms(self) -> dict[int, float]:
        return {pid: p.rtt.ewma_ms for pid, p in self._peers.items() if p.rtt.ewma_ms is not None}

    def rtt_stats(self) -> dict[int, dict]:
        return {pid: {"ewma_ms": p.rtt.ewma_ms, "p50_ms": p.rtt.p50(), "samples": len(p.rtt.samples)}
                for pid, p in self._peers.items()}

    # --- inbound ------------------------------------------------------------------------
    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        self._conn_writers.add(writer)
        peername = writer.get_extra_info("peername")
        out_q: asyncio.Queue = asyncio.Queue(MAX_REPLY_QUEUE_ITEMS)
        wtask: asyncio.Task | None = None
        calls: set[asyncio.Task] = set()
        try:
            hello = await asyncio.wait_for(read_frame(reader, self.max_frame_bytes), HELLO_TIMEOUT_S)
            if len(hello) < 6 or hello[0] != HELLO or type(hello[2]) is not int:
                raise FrameError("expected a hello frame")
            if hello[1] == 0:
                # Cluster id discovery by a member joining an existing cluster: answer
                # with our hello and close.
                writer.write(pack_frame(self._hello()))
                await writer.drain()
                return
            if hello[1] != self.cluster_id:
                raise FrameError(f"hello from cluster {hello[1]!r}, ours is {self.cluster_id:x}")
            peer_id = hello[2]
            region = str(hello[4])
            if peer_id:
                self._learn_peer(peer_id, str(hello[3]), region, str(hello[5]))
            writer.write(pack_frame(self._hello()))
            releaser = _Releaser(lambda: self._delay_to(region))
            wtask = asyncio.create_task(self._reply_writer(writer, out_q))

            def reply(obj: list) -> None:
                try:
                    out_q.put_nowait((releaser.release_at(time.monotonic()), pack_frame(obj)))
                except asyncio.QueueFull:
                    pass  # the caller times out; pongs are only samples

            while True:
                f = await read_frame(reader, self.max_frame_bytes)
                self.frames_in += 1
                kind = f[0]
                if kind == RAFT:
                    if len(f) != 2 or not isinstance(f[1], list):
                        raise FrameError("malformed raft frame")
                    msgs = []
                    for obj in f[1]:
                        try:
                            m = decode_message(obj)
                        except (ValueError, TypeError, IndexError, KeyError) as exc:
                            raise FrameError(f"bad raft message: {exc}") from None
                        if m.frm != peer_id or m.to != self.member_id:
                            raise FrameError(f"message {m.frm:x}->{m.to:x} on connection of {peer_id:x}")
                        msgs.append(m)
                    if msgs:
                        self.on_raft(msgs)
                elif kind == PING:
                    if len(f) >= 3:
                        reply([PONG, f[1], f[2]])
                elif kind == CALL:
                    if len(f) != 4 or not isinstance(f[2], str):
                        raise FrameError("malformed call frame")
                    if len(calls) >= MAX_INFLIGHT_CALLS_PER_CONN or self.call_handler is None:
                        reply([REPLY, f[1], False, ["TooManyRequests", errors.TooManyRequests.message]])
                        continue
                    ct = asyncio.create_task(self._serve_call(peer_id, f[1], f[2], f[3], reply))
                    calls.add(ct)
                    ct.add_done_callback(calls.discard)
                else:
                    raise FrameError(f"unexpected frame kind {kind!r}")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, _CLOSED_HANDLE):
            pass
        except FrameError as exc:
            self.bad_frames += 1
            log.warning("closing peer connection from %s: %s", peername, exc)
        except asyncio.CancelledError:
            pass
        finally:
            for ct in list(calls):
                ct.cancel()
            if wtask is not None:
                wtask.cancel()
            writer.close()
            self._conns.discard(task)
            self._conn_writers.discard(writer)

    def _delay_to(self, region: str) -> float:
        if self.outbound_delay_s is None or not region:
            return 0.0
        return max(0.0, float(self.outbound_delay_s(region)))

    async def _reply_writer(self, writer: asyncio.StreamWriter, q: asyncio.Queue) -> None:
        try:
            while True:
                release, data = await q.get()
                now = time.monotonic()
                if release > now:
                    await asyncio.sleep(release - now)
                chunks = [data]
                while not q.empty() and len(chunks) < MAX_MSGS_PER_FRAME:
                    r2, d2 = q._queue[0]  # peek: only take frames already released
                    if r2 > time.monotonic():
                        break
                    q.get_nowait()
                    chunks.append(d2)
                writer.write(b"".join(chunks))
                await writer.drain()
        except (ConnectionError, OSError, _CLOSED_HANDLE):
            pass

    async def _serve_call(self, peer_id: int, call_id, method: str, payload, reply) -> None:
        try:
            result = await self.call_handler(peer_id, method, payload)
            reply([REPLY, call_id, True, result])
        except errors.GeoKVError as exc:
            reply([REPLY, call_id, False, [type(exc).__name__, exc.message]])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a handler must not kill the connection
            log.exception("forwarded call %r failed", method)
            reply([REPLY, call_id, False, ["GeoKVError", f"etcdserver: internal error: {exc!r}"]])


async def discover_cluster_id(peer_urls: list[str], member_id: int, timeout_s: float) -> int:
    """Ask the members at ``peer_urls`` for their cluster id (a joining member needs it)."""
    from geokv.runtime.config import url_host_port

    deadline = time.monotonic() + timeout_s
    backoff = RECONNECT_BACKOFF_MIN_S
    while True:
        for url in peer_urls:
            writer = None
            try:
                host, port = url_host_port(url)
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
                writer.write(pack_frame([HELLO, 0, member_id, "", "", ""]))
                await writer.drain()
                hello = await asyncio.wait_for(read_frame(reader, 1 << 16), HELLO_TIMEOUT_S)
                if len(hello) >= 6 and hello[0] == HELLO and type(hello[1]) is int and hello[1]:
                    return hello[1]
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, FrameError):
                pass
            finally:
                if writer is not None:
                    writer.close()
        if time.monotonic() + backoff > deadline:
            raise TimeoutError(f"no peer among {peer_urls} told us the cluster id")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)


class PeerClient:
    """A one-connection client of a member's peer port (tools and tests).

    It says hello as member 0 (an observer: it may only make calls).
    """

    def __init__(self, host: str, port: int, cluster_id: int, max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT):
        self.host, self.port, self.cluster_id = host, port, cluster_id
        self.max_frame_bytes = max_frame_bytes
        self._ids = itertools.count(1)
        self.reader = self.writer = None
        self.peer_hello: list | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S)
        self.writer.write(pack_frame([HELLO, self.cluster_id, 0, "client", "", ""]))
        await self.writer.drain()
        self.peer_hello = await asyncio.wait_for(read_frame(self.reader, self.max_frame_bytes), HELLO_TIMEOUT_S)

    async def call(self, method: str, payload: Any, timeout_s: float = 10.0) -> Any:
        cid = next(self._ids)
        self.writer.write(pack_frame([CALL, cid, method, payload]))
        await self.writer.drain()
        while True:
            f = await asyncio.wait_for(read_frame(self.reader, self.max_frame_bytes), timeout_s)
            if f[0] == REPLY and f[1] == cid:
                if f[2]:
                    return f[3]
                raise _error_from_wire(f[3])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
