"""Real server processes on loopback with WAN emulation (LocalCluster + geo service)."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from geokv.geo.cluster import start_geo_cluster
from geokv.geo.workload import KVClient, RegionEndpoint, leader_region, wait_leader

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REGIONS = ["us-east", "eu-west", "ap-south"]


def endpoints(cluster, regions):
    return [RegionEndpoint(r, e.replace("http://", "")) for r, e in zip(regions, cluster.endpoints)]


def test_leader_moves_to_preferred_region_and_back_after_failover(tmp_path, fast_placement, fast_rtt, sturdy_plan):
    with start_geo_cluster(REGIONS, base_dir=str(tmp_path), leader_preference=["ap-south", "eu-west"], rtt=fast_rtt, plan=sturdy_plan,
                           extra_args=fast_placement) as c:
        c.wait_ready()
        eps = endpoints(c, REGIONS)
        wait_leader(eps, 30, region="ap-south")
        time.sleep(2.5)   # the followers re-rank their election ranges for the new leader
        # Kill the preferred region: the second choice (or any survivor) takes over ...
        c.kill(REGIONS.index("ap-south"), signal.SIGKILL)
        survivors = [e for e in eps if e.region != "ap-south"]
        st = wait_leader(survivors, 30)
        # The biased election ranges make the survivor closest to a quorum win: us-east and
        # eu-west are both 20 ms from each other, eu-west is more central (30 vs 40 ms to
        # ap-south), so it times out first.
        assert leader_region(st) == "eu-west"
        KVClient(survivors[0].endpoint).put(b"k", b"written during the outage")
        # ... and after the restart the leader goes back once ap-south is caught up.
        c.restart(REGIONS.index("ap-south"))
        st = wait_leader(eps, 40, region="ap-south")
        assert leader_region(st) == "ap-south"
        resp, _ = KVClient(eps[2].endpoint).get(b"k", "linearizable")
        assert resp.kvs[0].value == b"written during the outage"


def test_follow_the_writes_moves_the_leader_to_the_writing_region(tmp_path, fast_placement, fast_rtt, sturdy_plan):
    with start_geo_cluster(REGIONS, base_dir=str(tmp_path), leader_preference=["follow-writes", "us-east"], rtt=fast_rtt,
                           plan=sturdy_plan, extra_args=fast_placement + ["--follow-writes-dwell", "1s"]) as c:
        c.wait_ready()
        eps = endpoints(c, REGIONS)
        wait_leader(eps, 30, region="us-east")
        writer = KVClient(eps[2].endpoint)       # all writes come from ap-south
        deadline = time.monotonic() + 45
        moved = False
        try:
            while time.monotonic() < deadline and not moved:
                for _ in range(20):
                    try:
                        writer.put(b"from-ap-south", b"x", timeout_s=3.0)
                    except grpc.RpcError as e:
                        # A put in flight while leadership moves may fail retryably.
                        assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
                st = wait_leader(eps, 10)
                moved = leader_region(st) == "ap-south"
        finally:
            writer.close()
        assert moved, "the leader did not follow the writes to ap-south"


def test_learners_never_vote_nor_lead(tmp_path, fast_placement, fast_rtt, sturdy_plan):
    # The learner sits in the most preferred region: placement must still never pick it.
    with start_geo_cluster(REGIONS, base_dir=str(tmp_path), leader_preference=["eu-central", "us-east"], rtt=fast_rtt, plan=sturdy_plan,
                           extra_args=fast_placement) as c:
        c.wait_ready()
        li = c.add_member(region="eu-central", learner=True)
        eps = endpoints(c, REGIONS + ["eu-central"])
        wait_leader(eps, 30, region="us-east")
        learner = KVClient(eps[li].endpoint)
        learner_id = learner.status().header.member_id
        deadline = time.monotonic() + 20
        while not learner.status().isLearner:     # until it has applied its own MemberAdd
            assert time.monotonic() < deadline, "the learner never reported isLearner"
            time.sleep(0.1)
        # Leadership stays with the best voter; the learner serves reads.
        time.sleep(3)
        st = wait_leader(eps, 10)
        assert st.leader_id != learner_id and leader_region(st) == "us-east"
        learner.put(b"via-learner", b"forwarded")
        resp, _ = learner.get(b"via-learner", "serializable")
        assert [kv.value for kv in resp.kvs] == [b"forwarded"]
        # Kill two of three voters: one voter + one learner is no quorum, so no leader may
        # emerge and writes must fail, for several election timeouts.
        c.kill(REGIONS.index("eu-west"), signal.SIGKILL)
        c.kill(REGIONS.index("ap-south"), signal.SIGKILL)
        survivors = [eps[0], eps[li]]
        deadline = time.monotonic() + 6.0    # 6 election timeouts of 1 s; check quorum needs <= 2
        while time.monotonic() < deadline:
            for e in survivors:
                s = KVClient(e.endpoint)
                try:
                    st = s.status()
                    assert st.leader != learner_id
                    assert not (st.header.member_id == st.leader and time.monotonic() > deadline - 2.5), \
                        "a leader without a quorum of voters"
                finally:
                    s.close()
            time.sleep(0.2)
        with pytest.raises(grpc.RpcError):
            learner.put(b"k", b"no quorum", timeout_s=1.5)
        learner.close()


def test_bounded_reads_never_older_than_the_bound(tmp_path):
    """A bounded read at time t sees every write acknowledged before t - bound.

    The writer sits next to the leader (us-east); the reader is in ap-south, 95 ms one
    way from it, so its replica is always some 95 ms behind: a read with a 50 ms bound
    must not be served from the stale replica, a read with a 2 s bound may be.
    """
    with start_geo_cluster(REGIONS, base_dir=str(tmp_path), leader_preference=["us-east"]) as c:
        c.wait_ready()
        eps = endpoints(c, REGIONS)
        wait_leader(eps, 30, region="us-east")
        acked: list[tuple[float, int]] = []      # (client time the put was acknowledged, counter)
        stop = threading.Event()

        def writer():
            w = KVClient(eps[0].endpoint)
            i = 0
            while not stop.is_set():
                i += 1
                w.put(b"counter", str(i).encode())
                acked.append((time.perf_counter(), i))
            w.close()

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        r = KVClient(eps[2].endpoint)
        violations = []
        try:
            time.sleep(0.5)
            for bound_ms in (50, 2000):
                deadline = time.perf_counter() + 2.0
                while time.perf_counter() < deadline:
                    t_read = time.perf_counter()
                    resp, _ = r.get(b"counter", "bounded", max_staleness_ms=bound_ms)
                    seen = int(resp.kvs[0].value) if resp.kvs else 0
                    # the newest write acknowledged before t_read - bound must be visible
                    must = max((n for ta, n in list(acked) if ta < t_read - bound_ms / 1000.0), default=0)
                    if seen < must:
                        violations.append((bound_ms, seen, must))
        finally:
            stop.set()
            t.join(10)
            r.close()
        assert not violations, f"bounded reads older than their bound: {violations[:5]}"
        assert len(acked) > 10
