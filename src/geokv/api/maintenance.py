"""etcd's Maintenance service (Status, Snapshot, Hash, HashKV, Alarm, Defragment,
MoveLeader) over a runtime Member."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import struct
import tempfile
from typing import Any

import grpc

from geokv import errors
from geokv.api import convert
from geokv.api.status import stream, unary
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

log = logging.getLogger("geokv.api.maintenance")

SNAPSHOT_CHUNK_BYTES = 32 * 1024  # etcd sends snapshots in 32 KiB pieces
ETCD_VERSION = "3.4.0"  # the API level geokv speaks; etcd clients gate features on it
SNAPSHOT_PAGE_BYTES = 512  # etcdctl expects (file size % 512) == 32: pages plus a sha256
_LEN = struct.Struct(">Q")


def snapshot_trailer(data_len: int, digest_of_padded: bytes | None = None) -> bytes:
    """Padding that ends the body on a 512-byte boundary, its last 8 bytes the length of
    the store snapshot (so the original stream can be cut out again)."""
    pad = (-(data_len + _LEN.size)) % SNAPSHOT_PAGE_BYTES
    return b"\x00" * pad + _LEN.pack(data_len)


def decode_snapshot_file(blob: bytes) -> bytes:
    """The store snapshot inside a file written by ``etcdctl snapshot save`` from geokv.

    Layout: store snapshot | zero padding | 8-byte big-endian snapshot length | sha256 of
    everything before it. Raises ValueError when the checksum or layout is wrong.
    """
    if len(blob) < 32 + _LEN.size or (len(blob) - 32) % SNAPSHOT_PAGE_BYTES:
        raise ValueError("not a geokv snapshot file (bad size)")
    body, digest = blob[:-32], blob[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError("snapshot file checksum mismatch")
    (n,) = _LEN.unpack(body[-_LEN.size:])
    if n > len(body) - _LEN.size:
        raise ValueError("not a geokv snapshot file (bad length)")
    return body[:n]


async def maybe_await(x: Any) -> Any:
    if inspect.isawaitable(x):
        return await x
    return x


def _lag_ms(v: Any) -> int:
    try:
        f = float(v or 0)
    except (TypeError, ValueError):
        return 0
    if f != f or f == float("inf"):
        return -1  # unknown: this replica has not caught up with any leader commit yet
    return int(f)


def _accepts_args(fn: Any) -> bool:
    try:
        return len(inspect.signature(fn).parameters) >= 3
    except (TypeError, ValueError):
        return False


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, member: Any) -> None:
        self.member = member

    def _header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return convert.header_pb(self.member.header(), revision)

    @unary("Status")
    async def Status(self, request: rpc_pb2.StatusRequest,
                     context: grpc.aio.ServicerContext) -> rpc_pb2.StatusResponse:
        st = await maybe_await(self.member.status())
        g = st.get
        leader_region = g("leader_region")
        if leader_region is None and g("leader") and hasattr(self.member, "member_list"):
            for m in await maybe_await(self.member.member_list()) or ():
                if isinstance(m, dict) and m.get("id") == g("leader"):
                    leader_region = m.get("region")
                    break
        errs = [str(e) for e in (g("errors") or [])]
        if not g("leader") and "etcdserver: no leader" not in errs:
            errs.append("etcdserver: no leader")  # as etcd's Status reports it
        alarm_errors = getattr(self.member, "alarm_status_errors", None)
        if alarm_errors is not None:
            errs.extend(e for e in alarm_errors() if e not in errs)
        in_use = g("db_size_in_use")
        store = getattr(self.member, "store", None)
        if hasattr(store, "db_size_in_use"):
            in_use = store.db_size_in_use()
        return rpc_pb2.StatusResponse(
            header=self._header(),
            version=str(g("version") or ETCD_VERSION),
            dbSize=int(g("db_size", 0) or 0),
            leader=int(g("leader", 0) or 0),
            raftIndex=int(g("raft_index", 0) or 0),
            raftTerm=int(g("raft_term", g("term", 0)) or 0),
            raftAppliedIndex=int(g("raft_applied_index", 0) or 0),
            errors=errs,
            dbSizeInUse=int(in_use if in_use is not None else g("db_size", 0) or 0),
            isLearner=bool(g("is_learner", False)),
            region=str(g("region", "") or ""),
            zone=str(g("zone", "") or ""),
            read_mode_default=str(g("read_mode_default", "") or ""),
            applied_lag_ms=_lag_ms(g("applied_lag_ms", g("staleness_ms", 0))),
            leader_region=str(leader_region or ""),
        )

    @unary("Hash")
    async def Hash(self, request: rpc_pb2.HashRequest, context: grpc.aio.ServicerContext) -> rpc_pb2.HashResponse:
        h, rev, _compact = await maybe_await(self.member.hash_kv(0))
        return rpc_pb2.HashResponse(header=self._header(rev), hash=h & 0xFFFFFFFF)

    @unary("HashKV")
    async def HashKV(self, request: rpc_pb2.HashKVRequest,
                     context: grpc.aio.ServicerContext) -> rpc_pb2.HashKVResponse:
        if request.revision < 0:
            raise errors.InvalidArgument("etcdserver: negative revision")
        h, rev, compact = await maybe_await(self.member.hash_kv(request.revision))
        return rpc_pb2.HashKVResponse(header=self._header(rev), hash=h & 0xFFFFFFFF, compact_revision=compact)

    @unary("Alarm")
    async def Alarm(self, request: rpc_pb2.AlarmRequest,
                    context: grpc.aio.ServicerContext) -> rpc_pb2.AlarmResponse:
        fn = self.member.alarms
        if not _accepts_args(fn):
            alarms = await maybe_await(fn())
        else:
            alarms = await maybe_await(fn(request.action, request.memberID, request.alarm))
        out = []
        for a in alarms or ():
            if isinstance(a, dict):
                out.append(rpc_pb2.AlarmMember(memberID=int(a.get("member_id", 0)), alarm=int(a.get("alarm", 0))))
            else:
                mid, kind = a
                out.append(rpc_pb2.AlarmMember(memberID=int(mid), alarm=int(kind)))
        return rpc_pb2.AlarmResponse(header=self._header(), alarms=out)

    @unary("Defragment")
    async def Defragment(self, request: rpc_pb2.DefragmentRequest,
                         context: grpc.aio.ServicerContext) -> rpc_pb2.DefragmentResponse:
        freed = await maybe_await(self.member.defragment())
        if isinstance(freed, dict):
            log.info("defragment: %d -> %d bytes", freed.get("before_bytes", 0), freed.get("after_bytes", 0))
        return rpc_pb2.DefragmentResponse(header=self._header())

    @unary("MoveLeader")
    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest,
                         context: grpc.aio.ServicerContext) -> rpc_pb2.MoveLeaderResponse:
        if request.targetID == 0:
            raise errors.BadLeaderTransferee()
        await self.member.move_leader(request.targetID)
        return rpc_pb2.MoveLeaderResponse(header=self._header())

    @stream("Snapshot")
    async def Snapshot(self, request: rpc_pb2.SnapshotRequest, context: grpc.aio.ServicerContext) -> Any:
        """Stream a point-in-time copy of the store: first spooled to a temp file so the
        total size (``remaining_bytes``) is known and the store is not held open while a
        slow client reads. The stream is laid out as etcdctl checks it (see
        ``decode_snapshot_file``)."""
        header = self._header()
        # Spool next to the data (same filesystem, same space budget), not in /tmp.
        spool_dir = getattr(getattr(self.member, "config", None), "data_dir", None) or None
        if spool_dir is not None and not os.path.isdir(spool_dir):
            spool_dir = None
        fd, path = tempfile.mkstemp(prefix=".geokv-snapshot-", suffix=".tmp", dir=spool_dir)
        try:
            with os.fdopen(fd, "w+b") as f:
                src = self.member.snapshot_stream()
                if hasattr(src, "__aiter__"):
                    async for chunk in src:
                        f.write(chunk)
                else:
                    for chunk in await maybe_await(src) if inspect.isawaitable(src) else src:
                        f.write(chunk)
                f.write(snapshot_trailer(f.tell()))
                total = f.tell() + 32
                f.seek(0)
                digest = hashlib.sha256()
                sent = 0
                while True:
                    blob = f.read(SNAPSHOT_CHUNK_BYTES)
                    if not blob:
                        break
                    digest.update(blob)
                    sent += len(blob)
                    yield rpc_pb2.SnapshotResponse(header=header, remaining_bytes=total - sent, blob=blob)
                    await asyncio.sleep(0)
                yield rpc_pb2.SnapshotResponse(header=header, remaining_bytes=0, blob=digest.digest())
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
