"""NetnsCluster: real geokv members in Linux network namespaces, partitioned by iptables.

    with NetnsCluster(3, base_dir) as c:
        c.wait_ready()
        c.isolate(c.leader_index())     # member <-> member traffic of the leader dropped
        ...
        c.heal()

Topology (every name carries a random per-run tag, so parallel runs never collide)::

    root ns (the test) --veth-- [ bridge ns: br0 ] --veth-- member ns 0 (10.a.b.1)
     10.a.b.254                                    --veth-- member ns 1 (10.a.b.2) ...

The subnet ``10.a.b.0/24`` is picked at random among those not routed in the root
namespace, and exists only on our veths and bridge. Each member is ``ip netns exec
<ns> python -m geokv.runtime.serve`` listening on its namespace address (peer port 2380,
client port 2379 — every namespace has its own port space). The test process reaches
the members over the root-side veth with ordinary gRPC channels, and partitions only
ever cut member <-> member traffic: a client can still talk to an isolated member.

Partitions are iptables DROP rules inside the member namespaces (their own netfilter
tables, so nothing outside our namespaces is touched): ``isolate(i)``, ``partition(
[[0], [1, 2]])``, ``one_way(i, j)`` and ``heal()``. Dropped packets look like a dead
network (timeouts), not like a refused connection.

Cleanup (``stop()``, ``__exit__``, interpreter exit): processes by PID, then the
namespaces (which takes their veths, bridge and iptables rules with them) and the
root-side veth. Requires root, ``ip netns`` and ``iptables`` (``require_netns()`` tells
why not).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time

import grpc

from geokv.testing.cluster import LocalCluster, MemberSpec

PEER_PORT = 2380
CLIENT_PORT = 2379
HOST_OCTET = 254            # the root namespace's address on the bridge
MAX_NETNS_MEMBERS = 64
IP_CMD_TIMEOUT_S = 10.0
SUBNET_PICK_TRIES = 64
APT_INSTALL_TIMEOUT_S = 300.0
GRPC_OPTIONS = [
    ("grpc.enable_http_proxy", 0),              # our subnet must never go to a proxy
    ("grpc.initial_reconnect_backoff_ms", 100),  # members start after the channel is made:
    ("grpc.min_reconnect_backoff_ms", 100),      # do not wait out gRPC's 1 s..120 s back-off
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class NetnsUnavailable(RuntimeError):
    """Namespaces/iptables cannot be used here; the message says why."""


def _run(args: list[str], check: bool = True, timeout_s: float = IP_CMD_TIMEOUT_S) -> subprocess.CompletedProcess:
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout_s)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


_probe_result: list = []


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (probed once:
    a namespace, ``ip netns exec``, a veth pair and a bridge inside it)."""
    if _probe_result:
        return _probe_result[0]
    reason = _probe()
    _probe_result.append(reason)
    return reason


def _probe() -> str | None:
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns, veth, iptables)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"gkvprobe{os.getpid() % 100000}{random.randrange(1000)}"
    steps = [
        (["ip", "netns", "add", name], "`ip netns add`"),
        (["ip", "netns", "exec", name, "true"], "`ip netns exec`"),
        (["ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb"], "a veth pair"),
        (["ip", "-n", name, "link", "add", "pbr", "type", "bridge"], "a bridge"),
    ]
    try:
        for cmd, what in steps:
            try:
                p = _run(cmd, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{what} does not work here: {exc}"
            if p.returncode != 0:
                return f"{what} does not work here: {p.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


def ensure_iptables() -> str | None:
    """Make sure ``iptables`` exists (installing it with apt-get if needed); None or why not."""
    if shutil.which("iptables") is not None:
        return None
    if shutil.which("apt-get") is None:
        return "iptables is not installed and apt-get is not available to install it"
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        p = subprocess.run(["apt-get", "install", "-y", "-qq", "iptables"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=APT_INSTALL_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"iptables is not installed and `apt-get install iptables` failed: {exc}"
    if p.returncode != 0 or shutil.which("iptables") is None:
        return f"iptables is not installed and `apt-get install iptables` failed: {p.stdout.strip()[-300:]}"
    return None


def _used_prefixes() -> set[tuple[int, int]]:
    """(a, b) of every 10.a.b.x address or route the root namespace knows about."""
    out = _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
    out += _run(["ip", "-4", "-o", "addr"], check=False).stdout
    used = set()
    for tok in out.replace("/", " ").split():
        parts = tok.split(".")
        if len(parts) == 4 and parts[0] == "10" and all(x.isdigit() for x in parts):
            used.add((int(parts[1]), int(parts[2])))
    return used


class NetnsMemberSpec(MemberSpec):
    """A member spec whose URLs use the member's namespace address."""

    def __init__(self, name: str, host: str, netns: str, **kw) -> None:
        super().__init__(name, PEER_PORT, CLIENT_PORT, **kw)
        self.host = host
        self.netns = netns

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"


class NetnsCluster(LocalCluster):
    """``n`` real members, one per network namespace, joined by a bridge."""

    def __init__(self, n: int = 3, base_dir: str | None = None, *, heartbeat_ms: int = 100,
                 election_ms: int = 1000, extra_args: list[str] | tuple = (),
                 token: str = "geokv-netns", python: str = sys.executable, start: bool = True) -> None:
        if not 1 <= n <= MAX_NETNS_MEMBERS:
            raise ValueError(f"n must be in 1..{MAX_NETNS_MEMBERS}")
        reason = netns_unavailable_reason() or ensure_iptables()
        if reason:
            raise NetnsUnavailable(reason)
        super().__init__(n, base_dir, extra_args=extra_args, heartbeat_ms=heartbeat_ms,
                         election_ms=election_ms, token=token, python=python, start=False)
        self.tag = f"{random.randrange(16 ** 5):05x}"
        self.bridge_ns = f"gkv{self.tag}br"
        self.host_veth = f"gk{self.tag}h"
        self.namespaces: list[str] = []     # every namespace we created (for cleanup)
        self.rules: list[tuple[int, list[str]]] = []   # (member, iptables args) in force
        self._net_up = False
        try:
            self.subnet = self._pick_subnet()
            self.specs = [
                NetnsMemberSpec(f"n{i + 1}", self.ip(i), f"gkv{self.tag}m{i}")
                for i in range(n)
            ]
            initial = ",".join(f"{s.name}={s.peer_url}" for s in self.specs)
            for s in self.specs:
                s.initial_cluster = initial
            self._setup_network()
            probe = self.exec_in(0, ["iptables", "-w", "-S"])
            if probe.returncode != 0:
                raise NetnsUnavailable(f"iptables does not work inside a namespace: {probe.stderr.strip()}")
            if start:
                for i in range(n):
                    self._spawn(i)
        except BaseException:
            self.stop()
            raise

    # --- addresses --------------------------------------------------------------------
    def _pick_subnet(self) -> str:
        used = _used_prefixes()
        rng = random.Random()
        for _ in range(SUBNET_PICK_TRIES):
            a, b = rng.randrange(200, 254), rng.randrange(1, 255)
            if (a, b) not in used:
                return f"10.{a}.{b}"
        raise NetnsUnavailable("no free 10.x.y.0/24 subnet found")

    def ip(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.{HOST_OCTET}"

    def netns(self, i: int) -> str:
        return self.specs[i].netns

    # --- network setup/teardown -----------------------------------------------------
    def _setup_network(self) -> None:
        br = self.bridge_ns
        _run(["ip", "netns", "add", br])
        self.namespaces.append(br)
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])
        for i, s in enumerate(self.specs):
            _run(["ip", "netns", "add", s.netns])
            self.namespaces.append(s.netns)
            port = f"gk{self.tag}b{i}"
            _run(["ip", "link", "add", port, "netns", br, "type", "veth", "peer", "name", "eth0", "netns", s.netns])
            _run(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", s.netns, "addr", "add", f"{s.host}/24", "dev", "eth0"])
            _run(["ip", "-n", s.netns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", s.netns, "link", "set", "lo", "up"])
        _run(["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", f"gk{self.tag}hb", "netns", br])
        _run(["ip", "-n", br, "link", "set", f"gk{self.tag}hb", "master", "br0", "up"])
        _run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_veth])
        _run(["ip", "link", "set", self.host_veth, "up"])
        self._net_up = True

    def _teardown_network(self) -> None:
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        if _run(["ip", "link", "show", self.host_veth], check=False).returncode == 0:
            _run(["ip", "link", "del", self.host_veth], check=False)
        self.rules.clear()
        self._net_up = False

    def stop(self, timeout_s: float | None = None) -> None:
        try:
            if timeout_s is None:
                super().stop()
            else:
                super().stop(timeout_s)
        finally:
            self._teardown_network()

    def __enter__(self) -> "NetnsCluster":
        return self

    # --- processes (run inside the member's namespace) ------------------------------
    def args(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.netns(i), *super().args(i)]

    def channel(self, i: int) -> grpc.Channel:
        ch = self._channels.get(i)
        if ch is None:
            ch = grpc.insecure_channel(f"{self.specs[i].host}:{self.specs[i].client_port}", options=GRPC_OPTIONS)
            self._channels[i] = ch
        return ch

    def exec_in(self, i: int, cmd: list[str], timeout_s: float = IP_CMD_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside member i's namespace (no check; look at returncode)."""
        return _run(["ip", "netns", "exec", self.netns(i), *cmd], check=False, timeout_s=timeout_s)

    # --- partitions -----------------------------------------------------------------
    def _iptables(self, i: int, rule: list[str]) -> None:
        p = self.exec_in(i, ["iptables", "-w", "-A", *rule])
        if p.returncode != 0:
            raise RuntimeError(f"iptables in {self.netns(i)} failed: {p.stderr.strip()}")
        self.rules.append((i, rule))

    def _cut(self, i: int, j: int) -> None:
        """Drop every packet between members i and j (both directions, rules in i's ns)."""
        self._iptables(i, ["OUTPUT", "-d", self.ip(j), "-j", "DROP"])
        self._iptables(i, ["INPUT", "-s", self.ip(j), "-j", "DROP"])

    def isolate(self, i: int) -> None:
        """Cut member i off from every other member (clients still reach it)."""
        for j in range(len(self.specs)):
            if j != i:
                self._cut(i, j)

    def partition(self, groups: list[list[int]]) -> None:
        """Members talk only within their group; a member in no group is alone."""
        group_of = {}
        for g, members in enumerate(groups):
            for m in members:
                if m in group_of:
                    raise ValueError(f"member {m} is in two groups")
                group_of[m] = g
        n = len(self.specs)
        for i in range(n):
            group_of.setdefault(i, ("alone", i))
        for i in range(n):
            for j in range(i + 1, n):
                if group_of[i] != group_of[j]:
                    self._cut(i, j)

    def cut_links(self, pairs: list[tuple[int, int]]) -> None:
        """Cut exactly these member pairs (both directions): rings, bridges, ..."""
        for i, j in pairs:
            self._cut(i, j)

    def one_way(self, i: int, j: int) -> None:
        """Messages from i to j are lost; j -> i still flows.

        The transport sends i's Raft messages, pings and forwarded calls to j over the
        connection i dialed to j's peer port, and j's messages to i over j's own
        connection. Dropping the packets i sends to j's peer port loses exactly the
        i -> j traffic, while i still acknowledges (at the TCP level) what j sends it.
        """
        self._iptables(i, ["OUTPUT", "-d", self.ip(j), "-p", "tcp", "--dport", str(PEER_PORT), "-j", "DROP"])

    def heal(self) -> None:
        """Remove every partition rule."""
        for ns_index in sorted({i for i, _ in self.rules}):
            p = self.exec_in(ns_index, ["iptables", "-w", "-F"])
            if p.returncode != 0:
                raise RuntimeError(f"iptables -F in {self.netns(ns_index)} failed: {p.stderr.strip()}")
        self.rules.clear()

    def iptables_rules(self, i: int) -> str:
        return self.exec_in(i, ["iptables", "-S"]).stdout
