"""etcd's v3lock (Lock, Unlock) and v3election (Campaign, Proclaim, Leader, Observe,
Resign) services, built server-side on KV transactions, leases and the watch hub with
the semantics of etcd's concurrency package:

* a lock or election on ``name`` owns the key ``name/<lease id in hex>``;
* the owner is the key under ``name/`` with the smallest create revision;
* a waiter waits until every key with a smaller create revision is deleted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from geokv import errors
from geokv.api import convert
from geokv.api.kv import propose
from geokv.api.status import stream, unary
from geokv.etcdpb import rpc_pb2, v3election_pb2, v3election_pb2_grpc, v3lock_pb2, v3lock_pb2_grpc
from geokv.kv import types as kvt

log = logging.getLogger("geokv.api.concurrency")

WAIT_DELETE_POLL_S = 5.0  # re-check a waited-on key this often even without an event
CLEANUP_TIMEOUT_S = 5.0  # bound on deleting our key after a cancelled wait


class SessionExpired(errors.GeoKVError):
    code = "UNKNOWN"
    message = "session expired"


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's rule)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


class _Primitives:
    def __init__(self, member: Any) -> None:
        self.member = member

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return convert.header_pb(self.member.header(), revision)

    async def get(self, key: bytes) -> kvt.KeyValue | None:
        res = await self.member.read(kvt.Range(key=key))
        return res.kvs[0] if res.kvs else None

    async def first_created(self, pfx: bytes) -> kvt.KeyValue | None:
        res = await self.member.read(kvt.Range(key=pfx, range_end=prefix_end(pfx), limit=1,
                                               sort_order=kvt.SortOrder.ASCEND,
                                               sort_target=kvt.SortTarget.CREATE))
        return res.kvs[0] if res.kvs else None

    async def claim(self, key: bytes, value: bytes, lease: int, pfx: bytes) -> tuple[int, bool, kvt.KeyValue | None]:
        """Create ``key`` unless present. Returns (my create revision, created, owner)."""
        cmp = kvt.Compare(result=kvt.CompareResult.EQUAL, target=kvt.CompareTarget.CREATE, key=key,
                          create_revision=0)
        owner = kvt.Range(key=pfx, range_end=prefix_end(pfx), limit=1, sort_order=kvt.SortOrder.ASCEND,
                          sort_target=kvt.SortTarget.CREATE)
        res = await propose(self.member, kvt.Txn(compare=[cmp],
                                                 success=[kvt.Put(key=key, value=value, lease=lease), owner],
                                                 failure=[kvt.Range(key=key), owner]))
        owner_kvs = res.responses[1].kvs
        if res.succeeded:
            return res.revision, True, owner_kvs[0] if owner_kvs else None
        mine = res.responses[0].kvs[0]
        return mine.create_revision, False, owner_kvs[0] if owner_kvs else None

    async def wait_deleted(self, key: bytes, after_rev: int) -> None:
        """Wait until ``key`` is deleted at a revision > ``after_rev``."""
        w = self.member.watch_hub.subscribe(key, b"", after_rev + 1, False, [0])  # NOPUT
        try:
            while True:
                batch = await w.next_batch(WAIT_DELETE_POLL_S)
                if batch is None:
                    if w.closed:
                        return
                    if await self.get(key) is None:
                        return
                    continue
                if batch[0]:
                    return
        except errors.Compacted:
            return  # the watched history is gone; the caller re-reads the current state
        finally:
            w.close()

    async def wait_smaller_gone(self, pfx: bytes, my_rev: int) -> None:
        """etcd's waitDeletes: wait until no key under ``pfx`` was created before ``my_rev``."""
        end = prefix_end(pfx)
        while True:
            res = await self.member.read(kvt.Range(key=pfx, range_end=end, limit=1,
                                                   sort_order=kvt.SortOrder.DESCEND,
                                                   sort_target=kvt.SortTarget.CREATE,
                                                   max_create_revision=my_rev - 1))
            if not res.kvs:
                return
            await self.wait_deleted(res.kvs[0].key, res.revision)

    async def delete_if_created_at(self, key: bytes, rev: int) -> bool:
        cmp = kvt.Compare(result=kvt.CompareResult.EQUAL, target=kvt.CompareTarget.CREATE, key=key,
                          create_revision=rev)
        res = await propose(self.member, kvt.Txn(compare=[cmp], success=[kvt.DeleteRange(key=key)]))
        return res.succeeded

    def cleanup_later(self, key: bytes) -> None:
        """Delete ``key`` in the background (after a cancelled lock or campaign)."""
        async def run() -> None:
            try:
                await asyncio.wait_for(propose(self.member, kvt.DeleteRange(key=key)), CLEANUP_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the lease will expire it anyway
                log.warning("could not delete abandoned key %r", key)
        asyncio.get_running_loop().create_task(run())


class LockService(v3lock_pb2_grpc.LockServicer):
    def __init__(self, member: Any) -> None:
        self.p = _Primitives(member)

    @unary("Lock")
    async def Lock(self, request: v3lock_pb2.LockRequest, context: grpc.aio.ServicerContext) -> v3lock_pb2.LockResponse:
        if not request.name:
            raise errors.EmptyKey()
        pfx = request.name + b"/"
        key = pfx + b"%x" % request.lease
        my_rev, _created, owner = await self.p.claim(key, b"", request.lease, pfx)
        try:
            if owner is None or owner.create_revision != my_rev:
                await self.p.wait_smaller_gone(pfx, my_rev)
            if await self.p.get(key) is None:
                raise SessionExpired()
        except asyncio.CancelledError:
            self.p.cleanup_later(key)
            raise
        return v3lock_pb2.LockResponse(header=self.p.header(), key=key)

    @unary("Unlock")
    async def Unlock(self, request: v3lock_pb2.UnlockRequest,
                     context: grpc.aio.ServicerContext) -> v3lock_pb2.UnlockResponse:
        if not request.key:
            raise errors.EmptyKey()
        res = await propose(self.p.member, kvt.DeleteRange(key=request.key))
        return v3lock_pb2.UnlockResponse(header=self.p.header(res.revision))


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, member: Any) -> None:
        self.p = _Primitives(member)

    @unary("Campaign")
    async def Campaign(self, request: v3election_pb2.CampaignRequest,
                       context: grpc.aio.ServicerContext) -> v3election_pb2.CampaignResponse:
        if not request.name:
            raise errors.EmptyKey()
        pfx = request.name + b"/"
        key = pfx + b"%x" % request.lease
        my_rev, created, _owner = await self.p.claim(key, request.value, request.lease, pfx)
        try:
            if not created:
                current = await self.p.get(key)
                if current is not None and current.value != request.value:
                    await self._proclaim(key, my_rev, request.lease, request.value)
            await self.p.wait_smaller_gone(pfx, my_rev)
        except asyncio.CancelledError:
            self.p.cleanup_later(key)
            raise
        leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=my_rev, lease=request.lease)
        return v3election_pb2.CampaignResponse(header=self.p.header(), leader=leader)

    async def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> int:
        cmp = kvt.Compare(result=kvt.CompareResult.EQUAL, target=kvt.CompareTarget.CREATE, key=key,
                          create_revision=rev)
        res = await propose(self.p.member, kvt.Txn(compare=[cmp],
                                                   success=[kvt.Put(key=key, value=value, lease=lease)]))
        if not res.succeeded:
            raise errors.ElectionNotLeader()
        return res.revision

    @unary("Proclaim")
    async def Proclaim(self, request: v3election_pb2.ProclaimRequest,
                       context: grpc.aio.ServicerContext) -> v3election_pb2.ProclaimResponse:
        ld = request.leader
        if not ld.key:
            raise errors.ElectionNotLeader()
        rev = await self._proclaim(ld.key, ld.rev, ld.lease, request.value)
        return v3election_pb2.ProclaimResponse(header=self.p.header(rev))

    @unary("Leader")
    async def Leader(self, request: v3election_pb2.LeaderRequest,
                     context: grpc.aio.ServicerContext) -> v3election_pb2.LeaderResponse:
        kv = await self.p.first_created(request.name + b"/")
        if kv is None:
            raise errors.ElectionNoLeader()
        return v3election_pb2.LeaderResponse(header=self.p.header(), kv=convert.kv_to_pb(kv))

    @stream("Observe")
    async def Observe(self, request: v3election_pb2.LeaderRequest, context: grpc.aio.ServicerContext) -> Any:
        """Stream the leader's key-value each time leadership or the proclaimed value changes."""
        pfx = request.name + b"/"
        end = prefix_end(pfx)
        hub = self.p.member.watch_hub
        while True:
            res = await self.p.member.read(kvt.Range(key=pfx, range_end=end, limit=1,
                                                     sort_order=kvt.SortOrder.ASCEND,
                                                     sort_target=kvt.SortTarget.CREATE))
            if not res.kvs:
                # No leader: wait for the first key created under the prefix.
                w = hub.subscribe(pfx, end, res.revision + 1, False, [1])  # NODELETE
                try:
                    while True:
                        batch = await w.next_batch()
                        if batch is None:
                            return
                        if batch[0]:
                            break
                finally:
                    w.close()
                continue
            leader = res.kvs[0]
            yield v3election_pb2.LeaderResponse(header=self.p.header(res.revision), kv=convert.kv_to_pb(leader))
            w = hub.subscribe(leader.key, b"", res.revision + 1, False, [])
            try:
                gone = False
                while not gone:
                    batch = await w.next_batch()
                    if batch is None:
                        return
                    events, rev = batch
                    for ev in events:
                        if ev.type == kvt.EventType.DELETE:
                            gone = True
                            break
                        yield v3election_pb2.LeaderResponse(header=self.p.header(rev), kv=convert.kv_to_pb(ev.kv))
            except errors.Compacted:
                pass  # re-read the current leader
            finally:
                w.close()

    @unary("Resign")
    async def Resign(self, request: v3election_pb2.ResignRequest,
                     context: grpc.aio.ServicerContext) -> v3election_pb2.ResignResponse:
        ld = request.leader
        if ld.key:
            await self.p.delete_if_created_at(ld.key, ld.rev)
        return v3election_pb2.ResignResponse(header=self.p.header())
