"""etcd's KV service (Range, Put, DeleteRange, Txn, Compact) over a runtime Member."""

from __future__ import annotations

from typing import Any

import grpc

from geokv import errors
from geokv.api import convert, txnread, validate
from geokv.api.status import unary
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.kv import types as kvt
from geokv.runtime.alarms import put_cost, txn_cost

READ_MODE_KEY = "geokv-read-mode"
MAX_STALENESS_KEY = "geokv-max-staleness-ms"
STALENESS_TRAILER_KEY = "geokv-staleness-ms"
READ_MODES = ("linearizable", "lease", "serializable", "bounded")
_BARRIER_RANGE = kvt.Range(key=b"\x00")  # a one-key read that only serves as a read barrier


def read_mode_of(md: Any, serializable: bool) -> tuple[str | None, int | None]:
    """The read mode asked for in gRPC metadata ``md``, else by etcd's flag; None means
    the member's default (--read-mode-default)."""
    mode: str | None = "serializable" if serializable else None
    max_staleness_ms: int | None = None
    for item in md:
        k = item[0]
        if k == READ_MODE_KEY:
            mode = item[1] if isinstance(item[1], str) else item[1].decode()
            if mode not in READ_MODES:
                raise errors.InvalidArgument(
                    f"geokv: unknown read mode {mode!r} (want one of {', '.join(READ_MODES)})")
        elif k == MAX_STALENESS_KEY:
            raw = item[1] if isinstance(item[1], str) else item[1].decode()
            try:
                max_staleness_ms = int(raw)
            except ValueError:
                raise errors.InvalidArgument(f"geokv: bad {MAX_STALENESS_KEY} {raw!r}") from None
            if max_staleness_ms < 0:
                raise errors.InvalidArgument(f"geokv: negative {MAX_STALENESS_KEY}")
    return mode, max_staleness_ms


async def propose(member: Any, cmd: Any) -> Any:
    """Propose ``cmd`` and return its result, raising it if the store refused it."""
    res = await member.propose(cmd)
    if isinstance(res, BaseException):
        raise res
    return res


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, member: Any, limits: validate.Limits) -> None:
        self.member = member
        self.limits = limits

    async def _read_with_mode(self, r: kvt.Range, context: grpc.aio.ServicerContext, md: Any,
                              serializable: bool) -> Any:
        mode, max_staleness_ms = read_mode_of(md, serializable)
        if mode is None:
            return await self.member.read(r)
        if mode == "bounded":
            if r.revision > self.member.store.revision:
                # The client has seen a revision this replica has not applied yet: a bound
                # on staleness must not answer "future revision" for it -- catch up first.
                await self.member.wait_linearizable()
            res, staleness = await self.member.read_bounded(r, float(max_staleness_ms or 0))
            context.set_trailing_metadata(((STALENESS_TRAILER_KEY, str(int(staleness))),))
            return res
        return await self.member.read(r, mode=mode)

    @unary("Range")
    async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext) -> rpc_pb2.RangeResponse:
        validate.check_range(request)
        r = convert.range_from_pb(request)
        limit = r.limit
        if limit < 0 or r.revision < 0:
            limit = r.limit = max(limit, 0)
            r.revision = max(r.revision, 0)
        if limit:
            # Fetch one extra key to learn ``more`` independently of the store's own flag.
            r.limit = limit + 1
        md = context.invocation_metadata()
        if md and any(item[0].startswith("geokv-") for item in md):
            res = await self._read_with_mode(r, context, md, request.serializable)
        else:
            # The common case: etcd's own flag; r.serializable tells the member.
            res = await self.member.read(r)
        if limit and len(res.kvs) > limit:
            res = kvt.RangeResult(kvs=res.kvs[:limit], more=True, count=res.count, revision=res.revision)
        return convert.range_result_to_pb(res, self.member.header(), request.keys_only)

    @unary("Put")
    async def Put(self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext) -> rpc_pb2.PutResponse:
        validate.check_put(request, self.limits)
        gate = self.member.space_gate(put_cost(request.key, request.value))  # etcd's quota check
        if gate is not None:
            await gate
        try:
            res = await self.member.propose(convert.put_from_pb(request))
        except errors.NoSpace:
            await self.member.raise_nospace_alarm(refuse=True)  # the store's own quota refused it
        if isinstance(res, BaseException):
            raise res
        return convert.put_result_to_pb(res, self.member.header())

    @unary("DeleteRange")
    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest,
                          context: grpc.aio.ServicerContext) -> rpc_pb2.DeleteRangeResponse:
        validate.check_delete(request)
        res = await self.member.propose(convert.delete_from_pb(request))
        if isinstance(res, BaseException):
            raise res
        return convert.delete_result_to_pb(res, self.member.header())

    async def _read_only_txn(self, txn: kvt.Txn, context: grpc.aio.ServicerContext) -> kvt.TxnResult:
        """Serve a txn without writes as a read: the read mode's barrier, then a local
        evaluation at one revision (see geokv.api.txnread)."""
        md = context.invocation_metadata() or ()
        mode, max_staleness_ms = read_mode_of(md, txnread.all_ranges_serializable(txn))
        if mode is None:
            mode = getattr(getattr(self.member, "config", None), "read_mode_default", "linearizable")
        if mode == "linearizable":
            await self.member.wait_linearizable()
        elif mode == "lease":
            await self.member.read(_BARRIER_RANGE, mode="lease")
        elif mode == "bounded":
            _res, staleness = await self.member.read_bounded(_BARRIER_RANGE, float(max_staleness_ms or 0))
            context.set_trailing_metadata(((STALENESS_TRAILER_KEY, str(int(staleness))),))
        return txnread.evaluate(self.member.store, txn)

    @unary("Txn")
    async def Txn(self, request: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext) -> rpc_pb2.TxnResponse:
        validate.check_txn(request, self.limits)
        txn = convert.txn_from_pb(request)
        if txnread.is_read_only(txn):
            res = await self._read_only_txn(txn, context)
        else:
            gate = self.member.space_gate(txn_cost(txn))  # etcd's quota check
            if gate is not None:
                await gate
            try:
                res = await propose(self.member, txn)
            except errors.NoSpace:
                await self.member.raise_nospace_alarm(refuse=True)  # the store's own quota refused it
        ops = txn.success if res.succeeded else txn.failure
        return convert.txn_result_to_pb(res, self.member.header(), ops)

    @unary("Compact")
    async def Compact(self, request: rpc_pb2.CompactionRequest,
                      context: grpc.aio.ServicerContext) -> rpc_pb2.CompactionResponse:
        res = await propose(self.member, kvt.Compact(revision=request.revision, physical=request.physical))
        return rpc_pb2.CompactionResponse(header=convert.header_pb(self.member.header(), res.revision))
