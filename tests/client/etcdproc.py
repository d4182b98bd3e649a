"""Real etcd 3.4 servers on loopback for the client's tests (the reference server).

Each cluster lives in a temp dir, binds free loopback ports and is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

import grpc

from geokv.etcdpb import rpc_pb2, rpc_pb2_grpc

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
#: How long a fresh cluster may take to elect a leader and answer.
START_TIMEOUT_S = 30.0
#: How long a killed server may take to exit.
STOP_TIMEOUT_S = 5.0


def client_backends() -> list[str]:
    """Back-ends the client's tests run against (env GEOKV_CLIENT_BACKENDS=etcd or =geokv narrows it)."""
    return os.environ.get("GEOKV_CLIENT_BACKENDS", "etcd,geokv").split(",")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    base_dir: str
    size: int = 1
    members: list[EtcdMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        from geokv.testing.ports import free_ports

        ports = free_ports(2 * self.size)  # distinct, unlike separate free_port() calls
        for i in range(self.size):
            d = os.path.join(self.base_dir, f"etcd{i}")
            self.members.append(EtcdMember(f"etcd{i}", ports[2 * i], ports[2 * i + 1], d, d + ".log"))

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> EtcdCluster:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            self._spawn(m, initial, "new")
        self.wait_ready()
        return self

    def _spawn(self, m: EtcdMember, initial: str, state: str) -> None:
        args = [
            ETCD_BIN, "--name", m.name, "--data-dir", m.data_dir,
            "--listen-client-urls", f"http://{m.endpoint}", "--advertise-client-urls", f"http://{m.endpoint}",
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"tok-{os.getpid()}-{self.members[0].client_port}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--snapshot-count", "10000", "--log-level", "error",
        ]
        log = open(m.log_path, "ab")
        try:
            m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def wait_ready(self, members: list[EtcdMember] | None = None) -> None:
        """Every member answers a linearizable read (so a leader exists)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for m in members or self.members:
            while True:
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited: {open(m.log_path).read()[-2000:]}")
                try:
                    with grpc.insecure_channel(m.endpoint) as ch:
                        rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"ready"), timeout=1.0)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"etcd {m.name} not ready after {START_TIMEOUT_S}s") from None
                    time.sleep(0.1)

    def kill(self, index: int) -> None:
        m = self.members[index]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(STOP_TIMEOUT_S)

    def pause(self, index: int) -> None:
        proc = self.members[index].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        proc = self.members[index].proc
        assert proc is not None
        proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill every member by PID (the data lives in a temp dir, nothing to flush)."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()
        for m in self.members:
            if m.proc is not None:
                m.proc.wait(STOP_TIMEOUT_S)


#: Tries to start a geokv test cluster: ports picked by bind(0) and released can be taken
#: by another process on this shared machine before a member binds them, so a start that
#: fails is retried once on fresh ports (in a fresh directory).
LOCAL_CLUSTER_START_ATTEMPTS_MAX = 2


def start_local_cluster(n: int, base_dir: str, **kwargs):
    """A ready ``geokv.testing.cluster.LocalCluster`` of ``n`` members (see the retry note above)."""
    from geokv.testing.cluster import LocalCluster

    last: BaseException | None = None
    for attempt in range(LOCAL_CLUSTER_START_ATTEMPTS_MAX):
        cluster = LocalCluster(n, os.path.join(base_dir, f"try{attempt}"), **kwargs)  # spawns
        try:
            cluster.wait_ready()
            return cluster
        except (RuntimeError, TimeoutError) as exc:  # a member exited or no leader came up
            cluster.stop()
            last = exc
            print(f"geokv cluster did not start (attempt {attempt + 1}): {str(exc)[:2000]}")
    assert last is not None
    raise last
