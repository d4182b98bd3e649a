"""LocalCluster: n real geokv server processes on free loopback ports.

    with LocalCluster(3, base_dir) as c:
        c.wait_ready()
        stub = c.kv_stub(c.leader_index())
        c.kill(0, signal.SIGKILL); c.restart(0)

Every process is ``python -m geokv.runtime.serve`` with etcd's flags, its output in
``<base_dir>/<name>.log``. The cluster kills every PID it started in ``stop()``, on
``__exit__`` (also after an exception) and at interpreter exit. State is read through
the real etcd v3 gRPC API (``geokv.etcdpb`` stubs), so the checks see what clients see.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import grpc

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc
from geokv.runtime.config import cluster_id_for, member_id_for
from geokv.testing.ports import free_ports

READY_POLL_SLICE_S = 2.0  # wait_ready checks for exited members this often
READY_TIMEOUT_S = 60.0   # generous: a loaded CI machine starts Python + gRPC slowly
STOP_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05
STATUS_POLL_TIMEOUT_S = 2.0
MAX_MEMBERS = 32

# Strong references on purpose: a cluster its owner forgot to stop is still killed at exit.
_live_clusters: "set[LocalCluster]" = set()


def _kill_all_at_exit() -> None:
    for c in list(_live_clusters):
        try:
            c.stop(timeout_s=2.0)
        except Exception:
            pass


atexit.register(_kill_all_at_exit)


@dataclass
class MemberSpec:
    name: str
    peer_port: int
    client_port: int
    region: str = "local"
    zone: str = ""
    extra_args: list[str] = field(default_factory=list)
    initial_cluster: str = ""
    state: str = "new"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"


class LocalCluster:
    def __init__(self, n: int = 3, base_dir: str | None = None, regions: list[str] | None = None,
                 extra_args: list[str] | tuple = (), *, heartbeat_ms: int = 50, election_ms: int = 500,
                 token: str = "geokv-local", python: str = sys.executable, zones: list[str] | None = None,
                 start: bool = True) -> None:
        if not 1 <= n <= MAX_MEMBERS:
            raise ValueError(f"n must be in 1..{MAX_MEMBERS}")
        if regions is not None and len(regions) != n:
            raise ValueError("regions must name one region per member")
        self._tmp = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="geokv-cluster-")
            base_dir = self._tmp.name
        os.makedirs(base_dir, exist_ok=True)
        self.base_dir = base_dir
        self.token = token
        self.python = python
        self.extra_args = list(extra_args)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        ports = free_ports(2 * n)
        self.specs: list[MemberSpec] = [
            MemberSpec(f"n{i + 1}", ports[2 * i], ports[2 * i + 1],
                       region=(regions[i] if regions else "local"), zone=(zones[i] if zones else ""))
            for i in range(n)
        ]
        initial = ",".join(f"{s.name}={s.peer_url}" for s in self.specs)
        for s in self.specs:
            s.initial_cluster = initial
        self.procs: list[subprocess.Popen | None] = [None] * n
        self._channels: dict[int, grpc.Channel] = {}
        _live_clusters.add(self)
        if start:
            try:
                for i in range(n):
                    self._spawn(i)
            except BaseException:
                self.stop()
                raise

    # --- facts -----------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        return [s.client_url for s in self.specs]

    @property
    def peer_urls(self) -> list[str]:
        return [s.peer_url for s in self.specs]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def member_id(self, i: int) -> int:
        return member_id_for([self.specs[i].peer_url], self.token)

    @property
    def cluster_id(self) -> int:
        initial = [member_id_for([s.peer_url], self.token) for s in self.specs if s.state == "new"]
        return cluster_id_for(initial, self.token)

    def pid(self, i: int) -> int | None:
        p = self.procs[i]
        return p.pid if p is not None else None

    def is_running(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def log_path(self, i: int) -> str:
        return os.path.join(self.base_dir, f"{self.specs[i].name}.log")

    def data_dir(self, i: int) -> str:
        return os.path.join(self.base_dir, f"{self.specs[i].name}.geokv")

    # --- processes -----------------------------------------------------------------
    def args(self, i: int) -> list[str]:
        s = self.specs[i]
        return [
            self.python, "-m", "geokv.runtime.serve",
            "--name", s.name, "--data-dir", self.data_dir(i),
            "--listen-client-urls", s.client_url, "--advertise-client-urls", s.client_url,
            "--listen-peer-urls", s.peer_url, "--initial-advertise-peer-urls", s.peer_url,
            "--initial-cluster", s.initial_cluster, "--initial-cluster-state", s.state,
            "--initial-cluster-token", self.token, "--region", s.region, "--zone", s.zone,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            *self.extra_args, *s.extra_args,
        ]

    def _spawn(self, i: int) -> None:
        assert not self.is_running(i), f"member {i} is already running"
        logf = open(self.log_path(i), "ab")
        try:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.procs[i] = subprocess.Popen(self.args(i), stdout=logf, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env)
        finally:
            logf.close()
        self._drop_channel(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to member i (SIGKILL: crash; SIGSTOP/SIGCONT: freeze/thaw)."""
        p = self.procs[i]
        if p is None or p.poll() is not None:
            return
        os.kill(p.pid, sig)
        if sig == signal.SIGKILL:
            p.wait(STOP_TIMEOUT_S)
            self._drop_channel(i)

    def stop_member(self, i: int, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); returns the exit code."""
        p = self.procs[i]
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout_s)
            except ProcessLookupError:
                pass
        self._drop_channel(i)
        return p.returncode

    def restart(self, i: int) -> None:
        if self.is_running(i):
            self.stop_member(i)
        self._spawn(i)

    def add_member(self, *, region: str = "local", zone: str = "", learner: bool = False,
                   extra_args: list[str] | tuple = (), timeout_s: float = READY_TIMEOUT_S) -> int:
        """MemberAdd through the API, then start the new process with state=existing."""
        (peer_port, client_port) = free_ports(2)
        i = len(self.specs)
        spec = MemberSpec(f"n{i + 1}", peer_port, client_port, region=region, zone=zone,
                          extra_args=list(extra_args), state="existing")
        self.specs.append(spec)
        self.procs.append(None)
        resp = self.call_any(lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=[spec.peer_url], isLearner=learner), timeout=timeout_s))
        names = {self.specs[j].peer_url: self.specs[j].name for j in range(len(self.specs))}
        parts = []
        for m in resp.members:
            for u in m.peerURLs:
                parts.append(f"{names.get(u, m.name or u)}={u}")
        spec.initial_cluster = ",".join(parts)
        self._spawn(i)
        return i

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every process this cluster started (SIGTERM, then SIGKILL)."""
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout_s)
        for i in list(self._channels):
            self._drop_channel(i)
        _live_clusters.discard(self)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- gRPC access ---------------------------------------------------------------
    def channel(self, i: int) -> grpc.Channel:
        ch = self._channels.get(i)
        if ch is None:
            ch = grpc.insecure_channel(f"127.0.0.1:{self.specs[i].client_port}")
            self._channels[i] = ch
        return ch

    def _drop_channel(self, i: int) -> None:
        ch = self._channels.pop(i, None)
        if ch is not None:
            ch.close()

    def kv_stub(self, i: int) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel(i))

    def maintenance_stub(self, i: int) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel(i))

    def status(self, i: int, timeout_s: float = RPC_TIMEOUT_S) -> rpc_pb2.StatusResponse:
        return self.maintenance_stub(i).Status(rpc_pb2.StatusRequest(), timeout=timeout_s)

    def call_any(self, fn, timeout_s: float = READY_TIMEOUT_S):
        """``fn(channel)`` on the first running member that answers (leader first)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            order = list(range(len(self.specs)))
            try:
                ld = self.leader_index(timeout_s=0.0)
                order.remove(ld)
                order.insert(0, ld)
            except TimeoutError:
                pass
            for i in order:
                if not self.is_running(i):
                    continue
                try:
                    return fn(self.channel(i))
                except grpc.RpcError as exc:
                    last = exc
            time.sleep(POLL_INTERVAL_S * 4)
        raise TimeoutError(f"no member answered: {last}")

    def leader_index(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Index of the member that is leader and that every running member agrees on."""
        deadline = time.monotonic() + timeout_s
        while True:
            leaders = set()
            ok = True
            for i in range(len(self.specs)):
                if not self.is_running(i):
                    continue
                try:
                    st = self.status(i, timeout_s=STATUS_POLL_TIMEOUT_S)
                except grpc.RpcError:
                    ok = False
                    break
                leaders.add(st.leader)
            if ok and len(leaders) == 1 and 0 not in leaders:
                lid = leaders.pop()
                for i in range(len(self.specs)):
                    if self.member_id(i) == lid and self.is_running(i):
                        return i
            if time.monotonic() >= deadline:
                raise TimeoutError("no agreed leader among running members")
            time.sleep(POLL_INTERVAL_S)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Wait until every running member serves the API and all agree on a leader.

        A member that was running when the wait began and exits during it fails the wait
        at once (the others may well agree on a leader without it)."""
        expected = [i for i in range(len(self.specs)) if self.procs[i] is not None]

        def check_exits() -> None:
            for i in expected:
                p = self.procs[i]
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"member {self.specs[i].name} exited with {p.returncode}; "
                                       f"log: {self.tail_log(i)}")

        check_exits()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                idx = self.leader_index(min(READY_POLL_SLICE_S, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                check_exits()
                if time.monotonic() >= deadline:
                    dead = [self.specs[i].name for i in range(len(self.specs))
                            if self.procs[i] is not None and not self.is_running(i)]
                    raise TimeoutError(f"cluster not ready after {timeout_s}s (exited: {dead}); "
                                       f"n1 log tail: {self.tail_log(0)}") from None
                continue
            check_exits()
            return idx

    def wait_converged(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until every running member has applied the leader's commit index."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sts = [self.status(i) for i in range(len(self.specs)) if self.is_running(i)]
                target = max(s.raftIndex for s in sts)
                if all(s.raftAppliedIndex >= target for s in sts) and len({s.header.revision for s in sts}) == 1:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError("members did not converge")
            time.sleep(POLL_INTERVAL_S)

    def tail_log(self, i: int, n_bytes: int = 2000) -> str:
        try:
            with open(self.log_path(i), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_bytes))
                return f.read().decode(errors="replace")
        except OSError:
            return ""
