"""Network partitions between real geokv processes in Linux network namespaces.

Every member is a real server process in its own namespace; partitions are iptables
DROP rules (packets vanish, like a dead link). All checks go through the real etcd v3
gRPC API. Waits are bounded by multiples of the configured election timeout; nothing
asserts on speed.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import threading
import time

import grpc
import pytest

from geokv.etcdpb import rpc_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(110)]

HEARTBEAT_MS = 100
ELECTION_MS = 1000
E = ELECTION_MS / 1000.0             # one election timeout, seconds
POLL_S = HEARTBEAT_MS / 1000.0
LEADER_WAIT_S = 15 * E               # a majority elects a leader within this
STATUS_TIMEOUT_S = 1.0
WRITE_TIMEOUT_S = 2 * E              # one client Put
WRITER_PAUSE_S = 0.05                # between two writes of one writer thread
MAX_WRITES_PER_WRITER = 5000


def converge_wait_s(partitioned_s: float) -> float:
    # after a long DROP, TCP's retransmission back-off may wait about as long again
    return 20 * E + 2 * partitioned_s


# --- helpers ------------------------------------------------------------------------
def put(c, i, key: bytes, value: bytes, timeout_s: float = WRITE_TIMEOUT_S):
    return c.kv_stub(i).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=timeout_s)


def status(c, i):
    return c.status(i, timeout_s=STATUS_TIMEOUT_S)


def dump(c, i) -> dict[bytes, tuple[bytes, int]]:
    """Every key on member i (serializable: its own store) -> (value, mod_revision)."""
    r = c.kv_stub(i).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", serializable=True),
                           timeout=STATUS_TIMEOUT_S * 5)
    return {kv.key: (kv.value, kv.mod_revision) for kv in r.kvs}


def wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except grpc.RpcError as exc:
            last_exc = exc
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for {what} (last error: {last_exc})")


def put_until_acked(c, i, key: bytes, value: bytes, acked: dict, timeout_s: float = LEADER_WAIT_S):
    """Retry one write on member i until acknowledged (each try bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = put(c, i, key, value)
            acked[key] = (value, r.header.revision)
            return r
        except grpc.RpcError as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(f"member {i} never acknowledged {key!r}: {exc.code()} {exc.details()}")
            time.sleep(POLL_S)


def claims_leader(c, i) -> tuple[int, int] | None:
    """(term, member id) if member i says it is the leader."""
    st = status(c, i)
    return (st.raftTerm, st.leader) if st.leader == c.member_id(i) else None


def current_leader(c, among: list[int]) -> int:
    """Index of the member among ``among`` that they all agree leads."""
    def agreed():
        sts = {i: status(c, i) for i in among}
        leaders = {st.leader for st in sts.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        lid = leaders.pop()
        for i in among:
            if c.member_id(i) == lid:
                return i + 1  # truthy
        return None
    return wait_for(agreed, LEADER_WAIT_S, f"an agreed leader among members {among}") - 1


def assert_converged(c, acked: dict, timeout_s: float) -> dict:
    """Every member holds the same data (serializable reads) and every acked write."""
    n = len(c.specs)

    def same():
        dumps = [dump(c, i) for i in range(n)]
        return dumps if all(d == dumps[0] for d in dumps[1:]) and all(
            k in dumps[0] for k in acked) else None
    try:
        dumps = wait_for(same, timeout_s, "every member to hold the same data")
    except AssertionError:
        dumps = [dump(c, i) for i in range(n)]
        missing = {i: sorted(k for k in acked if k not in d)[:5] for i, d in enumerate(dumps)}
        sizes = [len(d) for d in dumps]
        raise AssertionError(f"no convergence: sizes {sizes}, acked writes missing per member {missing}")
    data = dumps[0]
    for key, (value, revision) in acked.items():
        assert data[key] == (value, revision), (
            f"acknowledged write {key!r} at revision {revision} reads back as {data[key]}")
    return data


class Writers:
    """One thread per member writing unique keys; records what was acknowledged."""

    def __init__(self, c, members: list[int], prefix: bytes) -> None:
        self.c = c
        self.prefix = prefix
        self.acked: dict[bytes, tuple[bytes, int]] = {}
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in members]

    def _run(self, i: int) -> None:
        for n in range(MAX_WRITES_PER_WRITER):
            if self._stop.is_set():
                return
            key = b"%s/m%d/%05d" % (self.prefix, i, n)
            value = b"v-" + key
            try:
                r = put(self.c, i, key, value)
                with self._lock:
                    self.acked[key] = (value, r.header.revision)
            except grpc.RpcError:
                with self._lock:
                    self.failed += 1
            self._stop.wait(WRITER_PAUSE_S)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(WRITE_TIMEOUT_S + 5)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


class LeaderMonitor:
    """Polls every member's Status; records which members claimed leadership per term."""

    def __init__(self, c) -> None:
        self.c = c
        self.claims: dict[int, set[int]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(len(c.specs))

    def _one(self, i):
        try:
            return claims_leader(self.c, i)
        except grpc.RpcError:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            for claim in self._pool.map(self._one, range(len(self.c.specs))):
                if claim is not None:
                    term, lid = claim
                    self.claims.setdefault(term, set()).add(lid)
            self.samples += 1
            self._stop.wait(POLL_S / 2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True)

    def assert_one_leader_per_term(self) -> None:
        assert self.samples > 0
        two = {t: ids for t, ids in self.claims.items() if len(ids) > 1}
        assert not two, f"two leaders in one term: {two}"


# --- 1. isolate the leader ----------------------------------------------------------
class StaleReadProbe:
    """Reads ``key`` at member i in a loop (the cluster's default read mode); counts
    answers that still show ``old`` after ``new_acked()`` was called."""

    def __init__(self, c, i: int, key: bytes, old: bytes) -> None:
        self.c, self.i, self.key, self.old = c, i, key, old
        self.ok_reads = 0
        self.stale: list[float] = []
        self._acked_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def new_acked(self) -> None:
        self._acked_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            acked_at = self._acked_at  # read before the request is sent
            try:
                r = self.c.kv_stub(self.i).Range(rpc_pb2.RangeRequest(key=self.key), timeout=E / 2)
            except grpc.RpcError:
                self._stop.wait(POLL_S / 4)
                continue
            self.ok_reads += 1
            if acked_at is not None and [kv.value for kv in r.kvs] == [self.old]:
                self.stale.append(time.monotonic() - acked_at)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(E + 5)


@pytest.mark.parametrize("read_mode", ["linearizable", "lease"])
def test_isolated_leader_cannot_commit_and_majority_moves_on(netns_cluster, read_mode):
    c = netns_cluster(3, heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS,
                      extra_args=["--read-mode-default", read_mode])
    old = c.wait_ready()
    old_id = c.member_id(old)
    term0 = status(c, old).raftTerm
    acked: dict = {}
    for k in range(10):
        put_until_acked(c, old, b"before/%02d" % k, b"x%d" % k, acked)
    put_until_acked(c, old, b"lin", b"old", acked)
    others = [i for i in range(3) if i != old]

    c.isolate(old)
    time.sleep(2 * POLL_S)  # acks already in flight are in; none can arrive from now on
    commit0 = status(c, old).raftIndex

    with concurrent.futures.ThreadPoolExecutor(1) as ex, StaleReadProbe(c, old, b"lin", b"old") as probe:
        lost = ex.submit(put, c, old, b"isolated/write", b"never", 3 * E)

        new = current_leader(c, others)
        new_st = status(c, new)
        assert new_st.raftTerm > term0
        for k in range(10):
            put_until_acked(c, new, b"majority/leader/%02d" % k, b"y%d" % k, acked)
            put_until_acked(c, [i for i in others if i != new][0], b"majority/follower/%02d" % k, b"z%d" % k, acked)

        put_until_acked(c, new, b"lin", b"new", acked)
        probe.new_acked()

        with pytest.raises(grpc.RpcError):
            r = lost.result(timeout=3 * E + 5)
            pytest.fail(f"the isolated old leader acknowledged a write (header {r.header})")
    # reads at the deposed leader (ReadIndex, or its lease while it lasts) never return
    # the overwritten value once the overwrite was acknowledged
    assert not probe.stale, f"{len(probe.stale)} stale {read_mode} reads at the old leader: {probe.stale[:5]}"

    # The isolated member committed nothing new, never applied the lost write, and
    # (CheckQuorum) stopped calling itself leader.
    st = status(c, old)
    assert st.raftIndex <= commit0 and st.raftAppliedIndex <= commit0, (st.raftIndex, commit0)
    got = c.kv_stub(old).Range(rpc_pb2.RangeRequest(key=b"isolated/write", serializable=True), timeout=2)
    assert not got.kvs
    wait_for(lambda: status(c, old).leader != old_id, 10 * E, "the isolated leader to step down")

    c.heal()
    new_id = c.member_id(new)
    wait_for(lambda: status(c, old).leader == new_id, converge_wait_s(10 * E),
             "the old leader to follow the new one")
    assert current_leader(c, [0, 1, 2]) == new
    assert_converged(c, acked, converge_wait_s(10 * E))
    for i in range(3):
        assert status(c, i).raftTerm >= new_st.raftTerm
    if shutil.which("etcdctl"):  # and what the real etcdctl sees on each member, over the bridge
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["ETCDCTL_API"] = "3"
        for ep in c.endpoints:
            out = subprocess.run(["etcdctl", "--endpoints", ep, "--command-timeout=5s", "get",
                                  "--consistency=s", "--print-value-only", "majority/leader/09"],
                                 capture_output=True, text=True, timeout=15, env=env)
            assert out.returncode == 0 and out.stdout.strip() == "y9", (ep, out.stdout, out.stderr)


# --- 2. isolate a follower: PreVote + CheckQuorum keep the leader -------------------
def test_isolated_follower_does_not_disrupt_leader_and_catches_up(netns_cluster):
    c = netns_cluster(3, heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS)
    leader = c.wait_ready()
    leader_id = c.member_id(leader)
    term = status(c, leader).raftTerm
    follower = (leader + 1) % 3
    acked: dict = {}
    for k in range(5):
        put_until_acked(c, follower, b"before/%02d" % k, b"a%d" % k, acked)

    isolated_s = 5 * E
    c.isolate(follower)
    deadline = time.monotonic() + isolated_s
    k = 0
    while time.monotonic() < deadline:
        put_until_acked(c, leader, b"during/%04d" % k, b"b%d" % k, acked, timeout_s=WRITE_TIMEOUT_S * 3)
        k += 1
        # PreVote: the cut-off follower campaigns without raising its term
        assert status(c, follower).raftTerm == term
        time.sleep(WRITER_PAUSE_S)
    assert k > 0
    commit = status(c, leader).raftIndex

    c.heal()
    wait_for(lambda: (lambda st: st.leader == leader_id and st.raftAppliedIndex >= commit)(status(c, follower)),
             converge_wait_s(isolated_s), "the healed follower to rejoin and catch up")
    for i in range(3):
        st = status(c, i)
        assert (st.leader, st.raftTerm) == (leader_id, term), f"member {i}: leader/term changed: {st}"
    put_until_acked(c, follower, b"after/heal", b"c", acked)
    assert_converged(c, acked, converge_wait_s(isolated_s))
    assert status(c, leader).raftTerm == term


# --- 3. one-way and non-transitive partitions ---------------------------------------
def test_asymmetric_ring_and_bridge_partitions_keep_one_leader_per_term(netns_cluster):
    n = 5
    everyone = list(range(n))
    c = netns_cluster(n, heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS)
    c.wait_ready()
    phase_s = 3 * E
    with LeaderMonitor(c) as mon, Writers(c, everyone, b"w") as w:
        # (a) the leader's messages to one follower vanish; that follower's still arrive
        leader = current_leader(c, everyone)
        victim = (leader + 1) % n
        c.one_way(leader, victim)
        time.sleep(phase_s)
        c.heal()

        # (b) the leader's messages to everyone vanish, it still hears them all: the
        # followers elect a new leader in a higher term while the old one still believes
        leader = current_leader(c, everyone)
        term = status(c, leader).raftTerm
        for j in everyone:
            if j != leader:
                c.one_way(leader, j)
        wait_for(lambda: any((claim := claims_leader(c, j)) and claim[0] > term
                             for j in everyone if j != leader),
                 LEADER_WAIT_S, "a new leader while the old leader's messages are lost")
        time.sleep(E)
        c.heal()

        # (c) a ring: each member reaches only its two neighbours (a majority with itself)
        current_leader(c, everyone)
        c.cut_links([(i, j) for i in everyone for j in range(i + 1, n) if (j - i) % n not in (1, n - 1)])
        time.sleep(phase_s)
        c.heal()

        # (d) a bridge: the leader reaches only one member, which reaches everyone
        leader = current_leader(c, everyone)
        bridge = (leader + 2) % n
        c.cut_links([(leader, j) for j in everyone if j not in (leader, bridge)])
        time.sleep(phase_s)
        c.heal()
        current_leader(c, everyone)
    mon.assert_one_leader_per_term()
    assert len(mon.claims) >= 2, f"the partitions never moved leadership: {mon.claims}"
    assert w.count() > 0, "no write was acknowledged at all"
    assert_converged(c, w.acked, converge_wait_s(phase_s))
