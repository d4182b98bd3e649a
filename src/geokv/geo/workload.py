"""A per-region client workload over the etcd v3 gRPC API, shared by the demo and bench/geo.

Each region has one client next to its local member (client traffic is not delayed;
only member-to-member traffic crosses the emulated WAN). The same code drives geokv and
the etcd 3.4 reference, because both speak the same wire protocol; geokv's extra read
modes (lease, bounded) travel as gRPC metadata (``geokv-read-mode``) and are only
requested from geokv.

Blocking code on purpose: one thread per region, each with its own gRPC channel, one
request outstanding at a time (closed loop), so a latency sample is one request's time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

from .timeouts import percentile

REQUEST_TIMEOUT_S = 10.0              # one workload request
FAILOVER_ATTEMPT_TIMEOUT_S = 2.0      # one put attempt while the cluster elects a leader
FAILOVER_PROBE_INTERVAL_S = 0.05      # a new put attempt this often while writes fail
FAILOVER_MAX_IN_FLIGHT = 64           # pending attempts per region
FAILOVER_MAX_WAIT_S = 60.0            # give up: "writes never resumed"
LEADER_WAIT_POLL_S = 0.1
STATUS_TIMEOUT_S = 2.0

READ_MODES_ETCD = ("linearizable", "serializable")
READ_MODES_GEOKV = ("linearizable", "lease", "serializable", "bounded")
BOUNDED_MAX_STALENESS_MS = 1000


@dataclass(slots=True, frozen=True)
class RegionEndpoint:
    region: str
    endpoint: str          # host:port of the member in that region


class KVClient:
    """The few etcd calls the workload needs, on one blocking gRPC channel."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)

    def put(self, key: bytes, value: bytes, timeout_s: float = REQUEST_TIMEOUT_S) -> int:
        return self.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=timeout_s).header.revision

    def get(
        self, key: bytes, mode: str = "linearizable", timeout_s: float = REQUEST_TIMEOUT_S,
        max_staleness_ms: int | None = None,
    ) -> tuple[rpc_pb2.RangeResponse, dict[str, str]]:
        """A Range in ``mode``; returns the response and the trailing metadata."""
        md: list[tuple[str, str]] = []
        if mode in ("lease", "bounded"):
            md.append(("geokv-read-mode", mode))
        if mode == "bounded":
            md.append(("geokv-max-staleness-ms", str(max_staleness_ms if max_staleness_ms is not None else BOUNDED_MAX_STALENESS_MS)))
        req = rpc_pb2.RangeRequest(key=key, serializable=(mode == "serializable"))
        resp, call = self.kv.Range.with_call(req, timeout=timeout_s, metadata=md or None)
        trailers = {k: (v if isinstance(v, str) else v.decode()) for k, v in (call.trailing_metadata() or ())}
        return resp, trailers

    def status(self, timeout_s: float = STATUS_TIMEOUT_S) -> rpc_pb2.StatusResponse:
        return self.maintenance.Status(rpc_pb2.StatusRequest(), timeout=timeout_s)

    def move_leader(self, target_id: int, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.maintenance.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=timeout_s)

    def close(self) -> None:
        self.channel.close()


@dataclass
class LatencySamples:
    ms: dict[str, list[float]] = field(default_factory=dict)     # op -> samples
    errors: dict[str, int] = field(default_factory=dict)          # op -> failed requests

    def add(self, op: str, ms: float) -> None:
        self.ms.setdefault(op, []).append(ms)

    def p(self, op: str, q: float) -> float | None:
        s = self.ms.get(op)
        return percentile(s, q) if s else None


def op_name(mode: str) -> str:
    return f"get_{mode}"


def run_mixed_workload(
    endpoints: list[RegionEndpoint],
    rounds: int,
    read_modes: tuple[str, ...] = READ_MODES_ETCD,
    key_prefix: bytes = b"/geo/",
    progress: Callable[[str, int], None] | None = None,
    value_size: int = 64,
    stop: threading.Event | None = None,
) -> dict[str, LatencySamples]:
    """``rounds`` rounds per region, all regions at once: a put, then one get per read mode.

    Returns per-region samples in milliseconds. A failed request counts in ``errors``.
    Setting ``stop`` ends every region's loop after its current round.
    """
    results: dict[str, LatencySamples] = {e.region: LatencySamples() for e in endpoints}
    value = b"v" * value_size

    def one_region(e: RegionEndpoint) -> None:
        c = KVClient(e.endpoint)
        out = results[e.region]
        try:
            for i in range(rounds):
                if stop is not None and stop.is_set():
                    return
                key = key_prefix + f"{e.region}/{i % 16}".encode()
                t0 = time.perf_counter()
                try:
                    c.put(key, value)
                    out.add("put", (time.perf_counter() - t0) * 1000.0)
                except grpc.RpcError:
                    out.errors["put"] = out.errors.get("put", 0) + 1
                for mode in read_modes:
                    t0 = time.perf_counter()
                    try:
                        c.get(key, mode)
                        out.add(op_name(mode), (time.perf_counter() - t0) * 1000.0)
                    except grpc.RpcError:
                        out.errors[op_name(mode)] = out.errors.get(op_name(mode), 0) + 1
                if progress is not None:
                    progress(e.region, i + 1)
        finally:
            c.close()

    threads = [threading.Thread(target=one_region, args=(e,), name=f"workload-{e.region}", daemon=True) for e in endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --- cluster state over the API --------------------------------------------------------------
@dataclass(slots=True)
class ClusterState:
    leader_id: int
    member_ids: dict[str, int]       # region -> member id of the member serving that endpoint
    term: int


def cluster_state(endpoints: list[RegionEndpoint]) -> ClusterState | None:
    """Ask every endpoint for its status; None unless some member reports a leader."""
    member_ids: dict[str, int] = {}
    leaders: dict[int, int] = {}
    term = 0
    for e in endpoints:
        c = KVClient(e.endpoint)
        try:
            st = c.status()
        except grpc.RpcError:
            continue
        finally:
            c.close()
        member_ids[e.region] = st.header.member_id
        term = max(term, st.raftTerm)
        if st.leader:
            leaders[st.leader] = leaders.get(st.leader, 0) + 1
    if not leaders:
        return None
    leader = max(leaders, key=lambda k: leaders[k])
    return ClusterState(leader_id=leader, member_ids=member_ids, term=term)


def leader_region(state: ClusterState) -> str | None:
    for region, mid in state.member_ids.items():
        if mid == state.leader_id:
            return region
    return None


def wait_leader(
    endpoints: list[RegionEndpoint], timeout_s: float, region: str | None = None,
    require_all: bool = True,
) -> ClusterState:
    """Wait until one of ``endpoints`` leads (the one in ``region`` if given).

    With ``require_all`` every endpoint must answer too.
    """
    deadline = time.monotonic() + timeout_s
    last: ClusterState | None = None
    while time.monotonic() < deadline:
        st = cluster_state(endpoints)
        if st is not None:
            last = st
            complete = not require_all or len(st.member_ids) == len(endpoints)
            # The leader must be one of the endpoints asked: right after a leader dies,
            # the survivors still name it until they elect a new one.
            where = leader_region(st)
            if complete and where is not None and (region is None or where == region):
                return st
        time.sleep(LEADER_WAIT_POLL_S)
    where = f" in {region}" if region else ""
    raise TimeoutError(f"no leader{where} after {timeout_s:.0f}s (last seen: {last})")


def move_leader_to(endpoints: list[RegionEndpoint], region: str, timeout_s: float) -> ClusterState:
    """Transfer leadership to the member serving ``region`` (MoveLeader sent to the leader)."""
    st = wait_leader(endpoints, timeout_s)
    if leader_region(st) == region:
        return st
    target = st.member_ids[region]
    leader_ep = next(e for e in endpoints if st.member_ids.get(e.region) == st.leader_id)
    c = KVClient(leader_ep.endpoint)
    try:
        c.move_leader(target)
    finally:
        c.close()
    return wait_leader(endpoints, timeout_s, region=region)


def measure_write_recovery(
    survivors: list[RegionEndpoint], t0: float, max_wait_s: float = FAILOVER_MAX_WAIT_S,
    key: bytes = b"/geo/failover",
) -> dict[str, float | None]:
    """For each region, seconds from ``t0`` (perf_counter) to its first successful put.

    A put sent while there is no leader may hang until its deadline, so a single
    sequential prober would measure its own timeout. Instead a new attempt starts every
    ``FAILOVER_PROBE_INTERVAL_S`` (at most ``FAILOVER_MAX_IN_FLIGHT`` pending, each with
    ``FAILOVER_ATTEMPT_TIMEOUT_S``), and the time recorded is the completion time of the
    first attempt that succeeds: the resolution is the probe interval.
    """
    out: dict[str, float | None] = {e.region: None for e in survivors}

    def probe(e: RegionEndpoint) -> None:
        c = KVClient(e.endpoint)
        done = threading.Event()
        lock = threading.Lock()
        first: list[float] = []
        in_flight: list = []

        def on_done(fut) -> None:
            t = time.perf_counter()
            if fut.exception() is None:
                with lock:
                    first.append(t)
                done.set()

        try:
            k = key + b"/" + e.region.encode()
            while not done.is_set() and time.perf_counter() - t0 < max_wait_s:
                in_flight[:] = [f for f in in_flight if not f.done()]
                if len(in_flight) < FAILOVER_MAX_IN_FLIGHT:
                    fut = c.kv.Put.future(rpc_pb2.PutRequest(key=k, value=b"x"), timeout=FAILOVER_ATTEMPT_TIMEOUT_S)
                    fut.add_done_callback(on_done)
                    in_flight.append(fut)
                done.wait(FAILOVER_PROBE_INTERVAL_S)
            with lock:
                if first:
                    out[e.region] = min(first) - t0
            for f in in_flight:
                f.cancel()
        finally:
            c.close()

    threads = [threading.Thread(target=probe, args=(e,), daemon=True) for e in survivors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
