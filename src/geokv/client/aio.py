"""AsyncClient: geokv's (and any etcd v3 server's) client, on the native gRPC channel
(geokv.edge.client) by default or on grpc.aio (``transport="grpcio"``).

Failover and retries follow one rule: a request may be sent again only if it surely did
not run. Reads change nothing, so they move to the next endpoint on any transport
failure. A write moves on only when (a) no connection to the endpoint could be made, so
nothing was sent, or (b) the server refused it before executing it ("etcdserver: no
leader", "etcdserver: too many requests", ...). A write that was sent and then lost
(deadline exceeded, connection dropped, "request timed out") raises
:class:`~geokv.client.errors.OutcomeUnknown` and is never repeated by the client.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Sequence

import grpc
import grpc.aio

from geokv import errors as _errors
from geokv.client import errors as cerr
from geokv.edge import client as _native
from geokv.client.ops import Txn, delete_request, put_request, range_request
from geokv.client.types import (
    DeleteResult,
    GetResult,
    Header,
    KeyValue,
    LeaderKey,
    LeaseGrant,
    LeaseTimeToLive,
    Member,
    PutResult,
    Status,
    TxnResult,
    to_bytes,
)
from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc, v3election_pb2, v3election_pb2_grpc, v3lock_pb2, v3lock_pb2_grpc

try:  # the geo layer provides the WAN emulator; until it lands the client runs without it.
    from geokv.geo import wan as _wan
except ImportError:  # pragma: no cover - depends on another layer's progress
    _wan = None

READ_MODES = ("linearizable", "lease", "serializable", "bounded")
#: Read modes that any replica may answer, so the nearest one is asked first.
LOCAL_READ_MODES = ("serializable", "bounded")

#: How long one connection attempt to one endpoint may take before moving on.
CONNECT_TIMEOUT_S_MAX = 1.0
#: Upper bound of attempts of one request, across all endpoints (the request's deadline
#: usually ends it first; this bounds a fast-failing loop).
REQUEST_ATTEMPTS_MAX = 64
#: Back-off between attempts: first wait, growth factor and ceiling.
RETRY_BACKOFF_S_INITIAL = 0.05
RETRY_BACKOFF_S_MAX = 1.0
#: Ceiling of the pause between asking for the leader again while there is none.
LEADER_POLL_S_MAX = 0.25
#: Share of a read's budget that one attempt may use before the next endpoint is asked.
READ_ATTEMPT_FRACTION = 0.5
#: ...but never less than this per attempt.
READ_ATTEMPT_S_MIN = 0.2
#: A snapshot stream gets at least this long, whatever the client's request timeout.
SNAPSHOT_TIMEOUT_S_MIN = 60.0
#: The largest response the client accepts (a big range or a snapshot chunk).
MAX_RECEIVE_MESSAGE_BYTES = 256 * 1024 * 1024
#: The largest request the client sends (etcd's server rejects > 1.5 MiB by default).
MAX_SEND_MESSAGE_BYTES = 64 * 1024 * 1024

#: The transports: "native" (geokv.edge.client, an asyncio HTTP/2 client in Python)
#: or "grpcio" (grpc.aio). GEOKV_CLIENT_TRANSPORT changes the default.
TRANSPORTS = ("native", "grpcio")
DEFAULT_TRANSPORT = "native"
TRANSPORT_ENV = "GEOKV_CLIENT_TRANSPORT"


def default_transport() -> str:
    value = os.environ.get(TRANSPORT_ENV, "").strip().lower() or DEFAULT_TRANSPORT
    if value not in TRANSPORTS:
        raise ValueError(f"{TRANSPORT_ENV} must be one of {', '.join(TRANSPORTS)}, not {value!r}")
    return value


_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_http_proxy", 0),
)


def parse_endpoint(endpoint: str) -> str:
    """``host:port`` from ``host:port``, ``http://host:port`` or ``unix:...``."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise cerr.BadEndpoint(f"bad endpoint {endpoint!r}: expected host:port")
    ep = endpoint.strip()
    for scheme in ("http://", "https://", "grpc://"):
        if ep.startswith(scheme):
            ep = ep[len(scheme):]
            break
    ep = ep.rstrip("/")
    if ep.startswith("unix:"):
        return ep
    host, sep, port = ep.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in ep:
        raise cerr.BadEndpoint(f"bad endpoint {endpoint!r}: expected host:port (e.g. 127.0.0.1:2379)")
    return ep


@dataclass(slots=True)
class ClientStatistics:
    """What the failover logic did: requests sent and why any were sent again."""

    sent: int = 0                      # requests that reached a connected channel
    not_connected: int = 0             # attempts skipped: no connection, nothing sent
    refused_before_execution: int = 0  # "no leader", "too many requests", ...: safe to resend
    read_retries: int = 0              # reads sent again after a transport failure
    outcome_unknown: int = 0           # writes given up as unknown (never resent)


@dataclass(slots=True)
class _Endpoint:
    address: str
    channel: grpc.aio.Channel | None = None
    region: str | None = None  # learned from Status (geokv extension); "" if the server has none
    stubs: dict[str, Any] = field(default_factory=dict)


class AsyncClient:
    """An etcd v3 / geokv client. Use ``async with AsyncClient([...]) as c:``."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout_s: float = 5.0,
        region: str | None = None,
        read_mode: str = "linearizable",
        max_staleness_ms: int | None = None,
        emulate_wan: bool = False,
        connect_timeout_s: float = CONNECT_TIMEOUT_S_MAX,
        transport: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise cerr.BadEndpoint("no endpoints given")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self._check_read_mode(read_mode, max_staleness_ms)
        transport = default_transport() if transport is None else transport
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        self.transport = transport
        self._endpoints = [_Endpoint(parse_endpoint(e)) for e in endpoints]
        self._current = 0
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = min(float(connect_timeout_s), self.timeout_s)
        self.region = region
        self.read_mode = read_mode
        self.max_staleness_ms = max_staleness_ms
        self._wan = None
        if emulate_wan:
            if region is None:
                raise ValueError("WAN emulation needs the client's region (region= or --region)")
            if _wan is None:
                raise RuntimeError("WAN emulation needs geokv.geo.wan, which is not available")
            self._wan = _wan.WanEmulator(_wan.default_rtt_table(), region)
        self._regions_learned = False
        self._closed = False
        self._stats = ClientStatistics()

    def statistics(self) -> ClientStatistics:
        """Counters of attempts and retries since the client was made (a live object)."""
        return self._stats

    # ---- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for ep in self._endpoints:
            if ep.channel is not None:
                await ep.channel.close()
                ep.channel = None
                ep.stubs.clear()

    @property
    def endpoints(self) -> list[str]:
        return [e.address for e in self._endpoints]

    @property
    def current_endpoint(self) -> str:
        return self._endpoints[self._current].address

    # ---- plumbing ------------------------------------------------------------------------
    @staticmethod
    def _check_read_mode(mode: str, max_staleness_ms: int | None) -> None:
        if mode not in READ_MODES:
            raise ValueError(f"read mode must be one of {', '.join(READ_MODES)}, not {mode!r}")
        if max_staleness_ms is not None and max_staleness_ms < 0:
            raise ValueError("max_staleness_ms must be >= 0")

    def _stub(self, ep: _Endpoint, kind: str) -> Any:
        if self._closed:
            raise cerr.ClientError("client is closed")
        if ep.channel is None:
            if self.transport == "native" and not ep.address.startswith("unix:"):
                ep.channel = _native.NativeChannel(ep.address, max_receive_message_bytes=MAX_RECEIVE_MESSAGE_BYTES,
                                                   max_send_message_bytes=MAX_SEND_MESSAGE_BYTES)
            else:
                ep.channel = grpc.aio.insecure_channel(ep.address, options=_CHANNEL_OPTIONS)
        stub = ep.stubs.get(kind)
        if stub is None:
            ctor = {
                "KV": rpc_pb2_grpc.KVStub,
                "Watch": rpc_pb2_grpc.WatchStub,
                "Lease": rpc_pb2_grpc.LeaseStub,
                "Cluster": rpc_pb2_grpc.ClusterStub,
                "Maintenance": rpc_pb2_grpc.MaintenanceStub,
                "Lock": v3lock_pb2_grpc.LockStub,
                "Election": v3election_pb2_grpc.ElectionStub,
            }[kind]
            stub = ep.stubs[kind] = ctor(ep.channel)
        return stub

    def _rotate(self, failed: _Endpoint) -> None:
        if self._endpoints[self._current] is failed:
            self._current = (self._current + 1) % len(self._endpoints)

    async def _connect(self, ep: _Endpoint, budget_s: float) -> bool:
        """True once the endpoint's channel is ready (nothing is sent before that)."""
        self._stub(ep, "KV")
        assert ep.channel is not None
        if ep.channel.get_state() is grpc.ChannelConnectivity.READY:
            return True  # the common case, without a timer
        try:
            await asyncio.wait_for(ep.channel.channel_ready(), timeout=max(0.001, min(budget_s, self.connect_timeout_s)))
            return True
        except (asyncio.TimeoutError, grpc.aio.AioRpcError):
            return False

    async def _wan_delay(self, ep: _Endpoint) -> None:
        if self._wan is None:
            return
        if ep.region is None:
            await self._learn_region(ep)  # leaves it None if the member did not answer
        if ep.region:
            try:
                delay_s = self._wan.one_way_delay_s(ep.region)
            except ValueError:  # a region the RTT table does not know: no emulated delay
                delay_s = 0.0
            await asyncio.sleep(delay_s)

    def _read_metadata(self, mode: str, max_staleness_ms: int | None) -> tuple[tuple[str, str], ...]:
        md = [("geokv-read-mode", mode)]
        if max_staleness_ms is not None:
            md.append(("geokv-max-staleness-ms", str(int(max_staleness_ms))))
        return tuple(md)

    async def _call(
        self,
        kind: str,
        method: str,
        request: Any,
        *,
        idempotent: bool,
        timeout_s: float | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None,
        endpoint: _Endpoint | None = None,
        prefer: _Endpoint | None = None,
    ) -> Any:
        """Send one unary request with failover; see the module docstring for the rule.

        ``endpoint`` pins the request to one endpoint; ``prefer`` only tries it first.
        """
        budget_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget_s
        targets = [endpoint] if endpoint is not None else None
        max_attempts = REQUEST_ATTEMPTS_MAX
        backoff_s = RETRY_BACKOFF_S_INITIAL
        last_error = "no attempt was made"
        last_exc: Exception | None = None
        op_name = f"{kind}.{method}"
        for attempt in range(max_attempts):
            if targets:
                ep = targets[0]
            elif attempt == 0 and prefer is not None:
                ep = prefer
            else:
                ep = self._endpoints[self._current]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not await self._connect(ep, remaining):
                last_error = f"{ep.address}: cannot connect"
                self._stats.not_connected += 1
                self._rotate(ep)
                if not targets and attempt % len(self._endpoints) != len(self._endpoints) - 1:
                    continue  # try the other endpoints at once; back off after a full round
                await asyncio.sleep(min(backoff_s, max(0.0, deadline - time.monotonic())))
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                if self._wan is not None:
                    await self._wan_delay(ep)
                # A read may give up on a hung endpoint early and ask the next one; a write
                # gets the whole remaining budget, since giving up would leave it unknown.
                attempt_s = min(remaining, max(budget_s * READ_ATTEMPT_FRACTION, READ_ATTEMPT_S_MIN)) if idempotent else remaining
                self._stats.sent += 1
                resp = await getattr(self._stub(ep, kind), method)(request, timeout=attempt_s, metadata=metadata)
                if self._wan is not None:
                    await self._wan_delay(ep)
                return resp
            except grpc.aio.AioRpcError as e:
                code, details = e.code(), e.details() or ""
                if cerr.is_server_error(e):
                    server_exc = cerr.from_rpc_error(e)
                    if isinstance(server_exc, cerr.WRITE_SAFE_RETRY_CLASSES):
                        last_exc = server_exc
                        last_error = f"{ep.address}: {details}"
                        self._stats.refused_before_execution += 1
                    elif not idempotent and isinstance(server_exc, cerr.WRITE_UNKNOWN_CLASSES):
                        self._stats.outcome_unknown += 1
                        raise cerr.OutcomeUnknown(op_name, ep.address, details) from None
                    elif idempotent and code in cerr.READ_RETRY_CODES:
                        last_exc = server_exc
                        last_error = f"{ep.address}: {details}"
                        self._stats.read_retries += 1
                    else:
                        raise server_exc from None
                elif code == grpc.StatusCode.UNAVAILABLE and any(m in details for m in cerr.NOT_SENT_MARKERS):
                    # The channel lost its connection before the call went out: nothing was sent.
                    last_error = f"{ep.address}: {details}"
                    last_exc = None
                    self._stats.not_connected += 1
                elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
                    # gRPC's own size check rejected the message before any handler ran.
                    raise _errors.RequestTooLarge(f"{_errors.RequestTooLarge.message} ({details})") from None
                else:
                    cause = f"{code.name}: {details}" if details else code.name
                    if not idempotent:
                        self._stats.outcome_unknown += 1
                        raise cerr.OutcomeUnknown(op_name, ep.address, cause) from None
                    if code not in cerr.READ_RETRY_CODES:
                        raise cerr.from_rpc_error(e) from None
                    last_error = f"{ep.address}: {cause}"
                    last_exc = None
                    self._stats.read_retries += 1
                self._rotate(ep)
                await asyncio.sleep(min(backoff_s, max(0.0, deadline - time.monotonic())))
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)
        if isinstance(last_exc, _errors.GeoKVError):
            raise last_exc
        if time.monotonic() >= deadline:
            raise cerr.DeadlineExceeded(f"context deadline exceeded after {budget_s:g}s ({op_name}; last error: {last_error})")
        raise cerr.EndpointsUnavailable(f"no endpoint is available ({op_name}; last error: {last_error})")

    # ---- KV ------------------------------------------------------------------------------------
    async def get(
        self,
        key: bytes | str,
        *,
        prefix: bool = False,
        range_end: bytes | str | None = None,
        from_key: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: str = "none",
        sort_target: str = "key",
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool | None = None,
        read_mode: str | None = None,
        max_staleness_ms: int | None = None,
        timeout_s: float | None = None,
        **filters: int,
    ) -> GetResult:
        """Read a key, a prefix or a range. ``read_mode`` overrides the client's default."""
        mode = read_mode or ("serializable" if serializable else self.read_mode)
        staleness = max_staleness_ms if max_staleness_ms is not None else self.max_staleness_ms
        self._check_read_mode(mode, staleness)
        req = range_request(
            key, prefix=prefix, range_end=range_end, from_key=from_key, limit=limit, revision=revision,
            sort_order=sort_order, sort_target=sort_target, keys_only=keys_only, count_only=count_only,
            serializable=mode in ("serializable", "bounded"), **filters,
        )
        prefer = await self._nearest_endpoint() if mode in LOCAL_READ_MODES else None
        resp = await self._call("KV", "Range", req, idempotent=True, timeout_s=timeout_s,
                                metadata=self._read_metadata(mode, staleness), prefer=prefer)
        return GetResult.from_pb(resp)

    async def _nearest_endpoint(self) -> _Endpoint | None:
        """The endpoint of a member in (or nearest to) the client's region, for local reads.

        Regions are learned once from each endpoint's Status (a geokv extension; etcd
        answers none, and then no endpoint is preferred).
        """
        if not self.region:
            return None
        if not self._regions_learned:
            self._regions_learned = True
            await asyncio.gather(*(self._learn_region(ep) for ep in self._endpoints))
        known = [ep for ep in self._endpoints if ep.region]
        for ep in known:
            if ep.region == self.region:
                return ep
        if self._wan is not None and known:
            def rtt(ep: _Endpoint) -> float:
                try:
                    return self._wan.rtt_ms(ep.region)
                except ValueError:
                    return float("inf")
            return min(known, key=rtt)
        return None

    async def _learn_region(self, ep: _Endpoint) -> None:
        if ep.region is not None:
            return
        if not await self._connect(ep, self.connect_timeout_s):
            return
        try:
            resp = await self._stub(ep, "Maintenance").Status(rpc_pb2.StatusRequest(), timeout=self.connect_timeout_s)
            ep.region = getattr(resp, "region", "")
        except grpc.aio.AioRpcError:
            pass

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0, prev_kv: bool = False,
                  ignore_value: bool = False, ignore_lease: bool = False, timeout_s: float | None = None) -> PutResult:
        req = put_request(key, value, lease=lease, prev_kv=prev_kv, ignore_value=ignore_value,
                          ignore_lease=ignore_lease)
        return PutResult.from_pb(await self._call("KV", "Put", req, idempotent=False, timeout_s=timeout_s))

    async def delete(self, key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
                     from_key: bool = False, prev_kv: bool = False, timeout_s: float | None = None) -> DeleteResult:
        req = delete_request(key, prefix=prefix, range_end=range_end, from_key=from_key, prev_kv=prev_kv)
        return DeleteResult.from_pb(await self._call("KV", "DeleteRange", req, idempotent=False, timeout_s=timeout_s))

    def txn(self, *, timeout_s: float | None = None) -> Txn:
        """A transaction builder: ``await c.txn().if_(...).then(...).else_(...).commit()``."""

        async def commit(req: rpc_pb2.TxnRequest) -> TxnResult:
            read_only = all(op.WhichOneof("request") == "request_range" for op in [*req.success, *req.failure])
            resp = await self._call("KV", "Txn", req, idempotent=read_only, timeout_s=timeout_s)
            return TxnResult.from_pb(resp)

        return Txn(commit)

    async def compact(self, revision: int, *, physical: bool = False, timeout_s: float | None = None) -> Header:
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        resp = await self._call("KV", "Compact", req, idempotent=False, timeout_s=timeout_s)
        return Header.from_pb(resp.header)

    # ---- watch ------------------------------------------------------------------------------------
    def watch(self, key: bytes | str, *, prefix: bool = False, range_end: bytes | str | None = None,
              from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
              no_put: bool = False, no_delete: bool = False, progress_notify: bool = False) -> Any:
        """An async iterator of :class:`Event`; resumes after a reconnect. ``await w.cancel()`` ends it."""
        from geokv.client.watch import Watch

        return Watch(self, key, prefix=prefix, range_end=range_end, from_key=from_key,
                     start_revision=start_revision, prev_kv=prev_kv, no_put=no_put, no_delete=no_delete,
                     progress_notify=progress_notify)

    # ---- leases -----------------------------------------------------------------------------------
    async def lease_grant(self, ttl_s: int, *, lease_id: int = 0, timeout_s: float | None = None) -> LeaseGrant:
        if ttl_s <= 0:
            raise ValueError("lease TTL must be > 0 seconds")
        resp = await self._call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl_s, ID=lease_id),
                                idempotent=False, timeout_s=timeout_s)
        if resp.error:
            raise _errors.GeoKVError(resp.error)
        return LeaseGrant(Header.from_pb(resp.header), resp.ID, resp.TTL)

    async def lease_revoke(self, lease_id: int, *, timeout_s: float | None = None) -> Header:
        resp = await self._call("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id),
                                idempotent=False, timeout_s=timeout_s)
        return Header.from_pb(resp.header)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False,
                                 timeout_s: float | None = None) -> LeaseTimeToLive:
        resp = await self._call("Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys),
                                idempotent=True, timeout_s=timeout_s)
        return LeaseTimeToLive(Header.from_pb(resp.header), resp.ID, resp.TTL, resp.grantedTTL, list(resp.keys))

    async def leases(self, *, timeout_s: float | None = None) -> list[int]:
        resp = await self._call("Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest(), idempotent=True,
                                timeout_s=timeout_s)
        return [s.ID for s in resp.leases]

    async def lease_keep_alive_once(self, lease_id: int, *, timeout_s: float | None = None) -> int:
        """Renew a lease once; returns the new TTL. Raises LeaseNotFound if it is gone."""
        from geokv.client.lease import keep_alive_once

        return await keep_alive_once(self, lease_id, timeout_s if timeout_s is not None else self.timeout_s)

    def keep_alive(self, lease_id: int, *, interval_s: float | None = None) -> Any:
        """A background renewal: ``async with c.keep_alive(lease_id) as ka: ...``."""
        from geokv.client.lease import KeepAlive

        return KeepAlive(self, lease_id, interval_s=interval_s)

    # ---- lock and election -----------------------------------------------------------------------------
    async def lock(self, name: bytes | str, *, lease: int, timeout_s: float | None = None) -> bytes:
        """Acquire the lock ``name`` held by ``lease``; waits while others hold it. Returns the lock key."""
        resp = await self._call("Lock", "Lock", v3lock_pb2.LockRequest(name=to_bytes(name, "name"), lease=lease),
                                idempotent=False, timeout_s=timeout_s)
        return resp.key

    async def unlock(self, key: bytes | str, *, timeout_s: float | None = None) -> Header:
        resp = await self._call("Lock", "Unlock", v3lock_pb2.UnlockRequest(key=to_bytes(key)),
                                idempotent=True, timeout_s=timeout_s)
        return Header.from_pb(resp.header)

    @asynccontextmanager
    async def locked(self, name: bytes | str, *, ttl_s: int = 10, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        """Hold ``name`` for the body of an ``async with``; the lock's lease is kept alive meanwhile."""
        grant = await self.lease_grant(ttl_s)
        try:
            async with self.keep_alive(grant.id):
                key = await self.lock(name, lease=grant.id, timeout_s=timeout_s)
                try:
                    yield key
                finally:
                    await self.unlock(key)
        finally:
            try:
                await self.lease_revoke(grant.id)
            except _errors.GeoKVError:
                pass  # the lease expires by itself after ttl_s

    async def campaign(self, name: bytes | str, value: bytes | str, *, lease: int,
                       timeout_s: float | None = None) -> LeaderKey:
        req = v3election_pb2.CampaignRequest(name=to_bytes(name, "name"), value=to_bytes(value, "value"), lease=lease)
        resp = await self._call("Election", "Campaign", req, idempotent=False, timeout_s=timeout_s)
        lk = resp.leader
        return LeaderKey(lk.name, lk.key, lk.rev, lk.lease)

    async def proclaim(self, leader: LeaderKey, value: bytes | str, *, timeout_s: float | None = None) -> Header:
        req = v3election_pb2.ProclaimRequest(leader=_leader_pb(leader), value=to_bytes(value, "value"))
        resp = await self._call("Election", "Proclaim", req, idempotent=False, timeout_s=timeout_s)
        return Header.from_pb(resp.header)

    async def leader(self, name: bytes | str, *, timeout_s: float | None = None) -> KeyValue | None:
        try:
            resp = await self._call("Election", "Leader", v3election_pb2.LeaderRequest(name=to_bytes(name, "name")),
                                    idempotent=True, timeout_s=timeout_s)
        except _errors.ElectionNoLeader:
            return None
        return KeyValue.from_pb(resp.kv) if resp.HasField("kv") else None

    async def resign(self, leader: LeaderKey, *, timeout_s: float | None = None) -> Header:
        resp = await self._call("Election", "Resign", v3election_pb2.ResignRequest(leader=_leader_pb(leader)),
                                idempotent=True, timeout_s=timeout_s)
        return Header.from_pb(resp.header)

    async def observe(self, name: bytes | str) -> AsyncIterator[KeyValue]:
        """Each successive leader value of election ``name`` (one server stream; no resume)."""
        ep = self._endpoints[self._current]
        if not await self._connect(ep, self.timeout_s):
            self._rotate(ep)
            raise cerr.EndpointsUnavailable(f"{ep.address}: cannot connect")
        call = self._stub(ep, "Election").Observe(v3election_pb2.LeaderRequest(name=to_bytes(name, "name")))
        try:
            async for resp in call:
                yield KeyValue.from_pb(resp.kv)
        except grpc.aio.AioRpcError as e:
            raise cerr.from_rpc_error(e) from None
        finally:
            call.cancel()

    # ---- cluster ------------------------------------------------------------------------------------------
    async def member_list(self, *, timeout_s: float | None = None) -> list[Member]:
        resp = await self._call("Cluster", "MemberList", rpc_pb2.MemberListRequest(), idempotent=True,
                                timeout_s=timeout_s)
        return [Member.from_pb(m) for m in resp.members]

    async def member_add(self, peer_urls: Sequence[str], *, is_learner: bool = False, region: str = "",
                         zone: str = "", timeout_s: float | None = None) -> tuple[Member, list[Member]]:
        req = rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner)
        if region:
            req.region = region
        if zone:
            req.zone = zone
        resp = await self._call("Cluster", "MemberAdd", req, idempotent=False, timeout_s=timeout_s)
        return Member.from_pb(resp.member), [Member.from_pb(m) for m in resp.members]

    async def member_remove(self, member_id: int, *, timeout_s: float | None = None) -> list[Member]:
        resp = await self._call("Cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=member_id),
                                idempotent=False, timeout_s=timeout_s)
        return [Member.from_pb(m) for m in resp.members]

    async def member_update(self, member_id: int, peer_urls: Sequence[str], *,
                            timeout_s: float | None = None) -> list[Member]:
        req = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls))
        resp = await self._call("Cluster", "MemberUpdate", req, idempotent=False, timeout_s=timeout_s)
        return [Member.from_pb(m) for m in resp.members]

    async def member_promote(self, member_id: int, *, timeout_s: float | None = None) -> list[Member]:
        resp = await self._call("Cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=member_id),
                                idempotent=False, timeout_s=timeout_s)
        return [Member.from_pb(m) for m in resp.members]

    # ---- maintenance ------------------------------------------------------------------------------------------
    def _endpoint_named(self, endpoint: str) -> _Endpoint:
        address = parse_endpoint(endpoint)
        for ep in self._endpoints:
            if ep.address == address:
                return ep
        ep = _Endpoint(address)
        self._endpoints.append(ep)  # a member's client URL that was not in the list
        return ep

    async def status(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> Status:
        """Status of one endpoint (``endpoint``), or of whichever endpoint answers first."""
        ep = self._endpoint_named(endpoint) if endpoint else None
        resp = await self._call("Maintenance", "Status", rpc_pb2.StatusRequest(), idempotent=True,
                                timeout_s=timeout_s, endpoint=ep)
        if ep is None:
            ep = self._endpoints[self._current]
        ep.region = getattr(resp, "region", "")
        return Status.from_pb(ep.address, resp)

    async def statuses(self, *, timeout_s: float | None = None) -> list[Status | Exception]:
        """The status of every endpoint, in order; an endpoint that fails gives its exception."""
        return list(await asyncio.gather(
            *(self.status(ep.address, timeout_s=timeout_s) for ep in list(self._endpoints)), return_exceptions=True))

    async def leader_endpoint(self, *, timeout_s: float | None = None) -> str:
        """The client endpoint of the current Raft leader.

        "No leader" is a passing state (an election, a leader transfer that a member has
        not heard the end of yet), so this asks again, one member after another, until
        a member names a leader and that leader confirms it, or the request's timeout
        ends; only then does it raise :class:`geokv.errors.NoLeader`.
        """
        budget_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget_s
        backoff_s = RETRY_BACKOFF_S_INITIAL
        last_view = "no member named a leader"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            asked = self._endpoints[self._current]
            st = await self.status(timeout_s=remaining)
            if st.leader == 0:
                last_view = f"{st.endpoint} has no leader (term {st.raft_term})"
                self._rotate(asked)  # this member may be the one cut off: ask the next
            else:
                found = await self._confirmed_leader(st.leader, deadline)
                if found is not None:
                    return found
                last_view = f"{st.endpoint} names leader {st.leader:x} (term {st.raft_term}), which did not confirm"
            await asyncio.sleep(min(backoff_s, max(0.0, deadline - time.monotonic())))
            backoff_s = min(backoff_s * 2, LEADER_POLL_S_MAX)
        raise _errors.NoLeader(f"{_errors.NoLeader.message} (after {budget_s:g}s: {last_view})")

    async def _confirmed_leader(self, leader_id: int, deadline: float) -> str | None:
        """The endpoint of member ``leader_id`` if it says it leads; None if it does not (yet).

        Every endpoint is asked at once and the first confirmation wins, so a dead
        endpoint costs nothing. A leader that is not among the endpoints is found by its
        client URL in the member list (nothing to confirm it through).
        """
        remaining = deadline - time.monotonic()
        tasks = [asyncio.ensure_future(self.status(ep.address, timeout_s=remaining)) for ep in list(self._endpoints)]
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    s = await next_done
                except _errors.GeoKVError:
                    continue  # that endpoint is down or refused; another may confirm
                if s.is_leader and s.header.member_id == leader_id:
                    return s.endpoint
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        known = {ep.address for ep in self._endpoints}
        for m in await self.member_list(timeout_s=remaining):
            if m.id == leader_id and m.client_urls:
                url = parse_endpoint(m.client_urls[0])
                # One of our endpoints that did not confirm is a stale view: ask again.
                return None if url in known else url
        return None

    async def move_leader(self, target_id: int, *, timeout_s: float | None = None) -> Header:
        """Transfer Raft leadership to member ``target_id`` (sent to the current leader).

        Returns once the old leader has seen ``target_id`` take over."""
        budget_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget_s
        leader = self._endpoint_named(await self.leader_endpoint(timeout_s=budget_s))
        remaining = max(0.001, deadline - time.monotonic())
        resp = await self._call("Maintenance", "MoveLeader", rpc_pb2.MoveLeaderRequest(targetID=target_id),
                                idempotent=False, timeout_s=remaining, endpoint=leader)
        return Header.from_pb(resp.header)

    async def hash_kv(self, revision: int = 0, *, endpoint: str | None = None,
                      timeout_s: float | None = None) -> tuple[int, int, int]:
        ep = self._endpoint_named(endpoint) if endpoint else None
        resp = await self._call("Maintenance", "HashKV", rpc_pb2.HashKVRequest(revision=revision),
                                idempotent=True, timeout_s=timeout_s, endpoint=ep)
        return resp.hash, resp.header.revision, resp.compact_revision

    async def alarms(self, *, timeout_s: float | None = None) -> list[tuple[int, str]]:
        """The cluster's active alarms as (member id, "NOSPACE" | "CORRUPT") (etcdctl alarm list)."""
        req = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET, memberID=0, alarm=rpc_pb2.NONE)
        resp = await self._call("Maintenance", "Alarm", req, idempotent=True, timeout_s=timeout_s)
        return [(a.memberID, rpc_pb2.AlarmType.Name(a.alarm)) for a in resp.alarms]

    async def alarm_disarm(self, *, timeout_s: float | None = None) -> list[tuple[int, str]]:
        """Disarm every active alarm (etcdctl alarm disarm); returns the alarms disarmed.
        A NOSPACE alarm comes back at the next write while the backend is still over its
        quota: compact and defragment first."""
        disarmed = []
        for member_id, name in await self.alarms(timeout_s=timeout_s):
            req = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id,
                                       alarm=rpc_pb2.AlarmType.Value(name))
            resp = await self._call("Maintenance", "Alarm", req, idempotent=True, timeout_s=timeout_s)
            disarmed.extend((a.memberID, rpc_pb2.AlarmType.Name(a.alarm)) for a in resp.alarms)
        return disarmed

    async def defragment(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> Header:
        """Defragment one member's backend (``endpoint``, else the current one): the file
        shrinks to the data it holds (etcdctl defrag). Members are defragmented one by one."""
        ep = self._endpoint_named(endpoint) if endpoint else self._endpoints[self._current]
        budget_s = timeout_s if timeout_s is not None else max(self.timeout_s, SNAPSHOT_TIMEOUT_S_MIN)
        resp = await self._call("Maintenance", "Defragment", rpc_pb2.DefragmentRequest(), idempotent=True,
                                timeout_s=budget_s, endpoint=ep)
        return Header.from_pb(resp.header)

    async def snapshot_save(self, path: str, *, endpoint: str | None = None,
                            timeout_s: float | None = None) -> int:
        """Stream a snapshot of one member's store into ``path`` (atomically); returns its size in bytes."""
        ep = self._endpoint_named(endpoint) if endpoint else self._endpoints[self._current]
        budget_s = timeout_s if timeout_s is not None else max(self.timeout_s, SNAPSHOT_TIMEOUT_S_MIN)
        if not await self._connect(ep, budget_s):
            raise cerr.EndpointsUnavailable(f"{ep.address}: cannot connect")
        part = f"{path}.part"
        size = 0
        call = self._stub(ep, "Maintenance").Snapshot(rpc_pb2.SnapshotRequest(), timeout=budget_s)
        try:
            with open(part, "wb") as f:
                async for chunk in call:
                    f.write(chunk.blob)
                    size += len(chunk.blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, path)
        except grpc.aio.AioRpcError as e:
            _remove_quietly(part)
            raise cerr.from_rpc_error(e) from None
        except BaseException:
            _remove_quietly(part)
            raise
        return size


def _leader_pb(leader: LeaderKey) -> v3election_pb2.LeaderKey:
    return v3election_pb2.LeaderKey(name=leader.name, key=leader.key, rev=leader.rev, lease=leader.lease)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


AsyncCallable = Callable[..., Any]
