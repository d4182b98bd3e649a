"""etcd's Watch service: one bidirectional stream carrying many watchers.

Each stream has a reader task (create / cancel / progress requests), one pump task per
watcher (hub batches -> WatchResponses) and the handler itself, the only writer, which
drains a bounded send queue. A full send queue makes the pumps wait; the hub then moves
their watchers to catch-up mode instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc

from geokv import errors
from geokv.api import convert
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("geokv.api.watch")

SEND_QUEUE_RESPONSES_MAX = 128  # responses waiting to be written on one stream
WATCHERS_PER_STREAM_MAX = 10_000
PROGRESS_NOTIFY_INTERVAL_S = 600.0  # etcd's default progress notification period
FRAGMENT_EVENTS_MIN = 1  # a fragment always carries at least this many events

ERR_EMPTY_RANGE = "mvcc: watcher range is empty"
ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_TOO_MANY = "geokv: too many watchers on this stream"
PROGRESS_WATCH_ID = -1  # etcd: a progress response not tied to one watcher
REQUIRE_LEADER_KEY = "hasleader"
LEADER_CHECK_INTERVAL_S = 1.0  # when the member does not tell its election timeout
NO_LEADER_CHECKS_MAX = 3  # etcd's maxNoLeaderCnt: leaderless checks before streams end
_LEADER_LOST = object()  # queued by the leader monitor: end the stream with "no leader"


@dataclass(slots=True)
class _Sub:
    watch_id: int
    watcher: Any
    prev_kv: bool
    progress_notify: bool
    fragment: bool
    task: asyncio.Task | None = None


class _WatchStream:
    def __init__(self, member: Any, max_response_bytes: int, progress_interval_s: float) -> None:
        self.member = member
        self.hub = member.watch_hub
        self.max_response_bytes = max_response_bytes
        self.progress_interval_s = progress_interval_s
        self.out: asyncio.Queue[Any] = asyncio.Queue(SEND_QUEUE_RESPONSES_MAX)
        self.subs: dict[int, _Sub] = {}
        self.next_id = 0

    def _header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return convert.header_pb(self.member.header(), revision)

    # --- requests ----------------------------------------------------------------------
    async def read_requests(self, request_iterator: Any) -> None:
        try:
            async for req in request_iterator:
                which = req.WhichOneof("request_union")
                if which == "create_request":
                    await self.on_create(req.create_request)
                elif which == "cancel_request":
                    await self.on_cancel(req.cancel_request.watch_id)
                elif which == "progress_request":
                    await self.on_progress()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client went away or sent garbage
            try:
                self.out.put_nowait(None)
            except asyncio.QueueFull:
                pass  # the writer fails on the dead stream and ends anyway
            return
        # The client closed its sending side: as etcd does, keep delivering events to
        # its watchers until it cancels the call or goes away.

    async def on_create(self, c: rpc_pb2.WatchCreateRequest) -> None:
        wid = c.watch_id
        reason = ""
        if c.range_end and c.range_end != b"\x00" and c.key >= c.range_end:
            reason = ERR_EMPTY_RANGE
        elif wid != 0 and wid in self.subs:
            reason = ERR_DUPLICATE_ID
        elif len(self.subs) >= WATCHERS_PER_STREAM_MAX:
            reason = ERR_TOO_MANY
        if reason:
            await self.out.put(rpc_pb2.WatchResponse(header=self._header(), watch_id=-1 if wid == 0 else wid,
                                                     created=True, canceled=True, cancel_reason=reason))
            return
        if wid == 0:
            while self.next_id in self.subs:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        try:
            w = self.hub.subscribe(c.key, c.range_end, max(c.start_revision, 0), c.prev_kv, list(c.filters))
        except errors.GeoKVError as exc:
            await self.out.put(rpc_pb2.WatchResponse(header=self._header(), watch_id=wid, created=True,
                                                     canceled=True, cancel_reason=exc.message))
            return
        sub = _Sub(wid, w, c.prev_kv, c.progress_notify, c.fragment)
        self.subs[wid] = sub
        await self.out.put(rpc_pb2.WatchResponse(header=self._header(), watch_id=wid, created=True))
        sub.task = asyncio.get_running_loop().create_task(self.pump(sub))

    async def on_cancel(self, wid: int) -> None:
        sub = self.subs.pop(wid, None)
        if sub is None:
            return
        self._stop(sub)
        await self.out.put(rpc_pb2.WatchResponse(header=self._header(), watch_id=wid, canceled=True))

    async def on_progress(self) -> None:
        # Only promise what every watcher of this stream has already been sent.
        rev = self.hub.store.revision
        for sub in self.subs.values():
            rev = min(rev, sub.watcher.progress_revision())
        await self.out.put(rpc_pb2.WatchResponse(header=self._header(rev), watch_id=PROGRESS_WATCH_ID))

    def _stop(self, sub: _Sub) -> None:
        sub.watcher.close()
        if sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()

    # --- events --------------------------------------------------------------------------
    async def pump(self, sub: _Sub) -> None:
        w = sub.watcher
        timeout_s = self.progress_interval_s if sub.progress_notify else None
        try:
            while True:
                batch = await w.next_batch(timeout_s)
                if batch is None:
                    if w.closed:
                        return
                    if w.synced:
                        await self.out.put(rpc_pb2.WatchResponse(header=self._header(w.progress_revision()),
                                                                 watch_id=sub.watch_id))
                    continue
                events, revision = batch
                if not events:
                    continue
                for resp in self._responses(sub, events, revision):
                    await self.out.put(resp)
        except errors.Compacted:
            self.subs.pop(sub.watch_id, None)
            w.close()
            await self.out.put(rpc_pb2.WatchResponse(
                header=self._header(), watch_id=sub.watch_id, canceled=True,
                compact_revision=self.hub.store.compact_revision))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one broken watcher must not kill the stream
            log.exception("watch pump failed for watch %d", sub.watch_id)
            self.subs.pop(sub.watch_id, None)
            w.close()
            await self.out.put(rpc_pb2.WatchResponse(header=self._header(), watch_id=sub.watch_id,
                                                     canceled=True, cancel_reason="geokv: internal error"))

    def _responses(self, sub: _Sub, events: list[Any], revision: int) -> list[rpc_pb2.WatchResponse]:
        header = self._header(revision)
        resp = rpc_pb2.WatchResponse(header=header, watch_id=sub.watch_id)
        convert.add_events(resp.events, events, sub.prev_kv)
        if not sub.fragment or resp.ByteSize() <= self.max_response_bytes:
            return [resp]
        pb_events = list(resp.events)
        out: list[rpc_pb2.WatchResponse] = []
        chunk: list[Any] = []
        size = header.ByteSize() + 16
        for ev in pb_events:
            ev_size = ev.ByteSize() + 8
            if len(chunk) >= FRAGMENT_EVENTS_MIN and size + ev_size > self.max_response_bytes:
                out.append(rpc_pb2.WatchResponse(header=header, watch_id=sub.watch_id, events=chunk,
                                                 fragment=True))
                chunk = []
                size = header.ByteSize() + 16
            chunk.append(ev)
            size += ev_size
        out.append(rpc_pb2.WatchResponse(header=header, watch_id=sub.watch_id, events=chunk))
        return out

    def close(self) -> None:
        for sub in list(self.subs.values()):
            self._stop(sub)
        self.subs.clear()


class WatchService(rpc_pb2_grpc.WatchServicer):
    def __init__(self, member: Any, max_response_bytes: int,
                 progress_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S) -> None:
        self.member = member
        self.max_response_bytes = max_response_bytes
        self.progress_interval_s = progress_interval_s

    async def Watch(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        need_leader = requires_leader(context)
        if need_leader and not getattr(self.member, "leader_id", 1):
            await context.abort(grpc.StatusCode.UNAVAILABLE, errors.NoLeader.message)
        stream = _WatchStream(self.member, self.max_response_bytes, self.progress_interval_s)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(stream.read_requests(request_iterator))
        monitor = loop.create_task(self._monitor_leader(stream)) if need_leader else None
        try:
            while True:
                resp = await stream.out.get()
                if resp is None:
                    break
                if resp is _LEADER_LOST:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, errors.NoLeader.message)
                await context.write(resp)
        finally:
            reader.cancel()
            if monitor is not None:
                monitor.cancel()
            stream.close()
            for task in (reader, monitor):
                if task is None:
                    continue
                try:
                    await task
                except BaseException:  # noqa: BLE001 - the stream is over either way
                    pass

    async def _monitor_leader(self, stream: _WatchStream) -> None:
        """etcd's rule for clients that require a leader: once this member has seen no
        leader for NO_LEADER_CHECKS_MAX election timeouts, end the stream with "no
        leader" so the client moves to a member on the majority side."""
        interval_s = float(getattr(self.member, "election_s", LEADER_CHECK_INTERVAL_S) or LEADER_CHECK_INTERVAL_S)
        misses = 0
        while True:
            await asyncio.sleep(interval_s)
            if getattr(self.member, "leader_id", 1):
                misses = 0
                continue
            misses += 1
            if misses >= NO_LEADER_CHECKS_MAX:
                await stream.out.put(_LEADER_LOST)
                return


def requires_leader(context: grpc.aio.ServicerContext) -> bool:
    """etcd clients send ``hasleader: true`` (clientv3.WithRequireLeader) on streams that
    must fail over rather than hang on a member cut off from the leader."""
    md = context.invocation_metadata()
    if not md:
        return False
    for item in md:
        if item[0] == REQUIRE_LEADER_KEY:
            v = item[1] if isinstance(item[1], str) else item[1].decode()
            return v == "true"
    return False
