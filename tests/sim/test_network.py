"""The simulated network, partition shapes, disk and scheduler behave as specified."""

from __future__ import annotations

import random

import pytest

from geokv.raft.types import Entry, HardState
from geokv.sim import partitions
from geokv.sim.disk import SimDisk
from geokv.sim.network import Network, NetworkParams, region_rtt_ms
from geokv.sim.scheduler import Scheduler, SimulationLimitExceeded

NODES = [1, 2, 3, 4, 5]


def reachable(links, a, b):
    return (a, b) not in links


def make_net(params=None, placement=None):
    sched = Scheduler(1)
    got = []
    net = Network(sched, random.Random(2), placement or {1: "us-east", 2: "ap-south"},
                  lambda to, frm, p: got.append((sched.now_ms, to, frm, p)),
                  params or NetworkParams(jitter_frac=0.0))
    return sched, net, got


def test_latency_is_half_the_region_rtt():
    sched, net, got = make_net()
    net.send(1, 2, b"x")
    sched.run_until(10_000)
    assert got == [(region_rtt_ms("us-east", "ap-south") / 2, 2, 1, b"x")]


def test_partition_blocks_only_listed_directions():
    sched, net, got = make_net()
    net.set_blocked({(1, 2)})
    assert net.send(1, 2, b"a") is False
    assert net.send(2, 1, b"b") is True
    sched.run_until(10_000)
    assert [g[3] for g in got] == [b"b"]
    net.heal()
    net.send(1, 2, b"c")
    sched.run_until(20_000)
    assert [g[3] for g in got] == [b"b", b"c"]


def test_loss_and_duplication_rates():
    sched, net, got = make_net(NetworkParams(loss_rate=0.2, dup_rate=0.1))
    for i in range(2000):
        net.send(1, 2, b"%d" % i)
    sched.run_until(100_000)
    s = net.stats
    assert 300 < s.dropped_loss < 500
    assert 120 < s.duplicated < 240
    assert len(got) == 2000 - s.dropped_loss + s.duplicated


def test_clog_holds_messages_until_it_clears():
    sched, net, got = make_net()
    net.clog(1, 2, 5_000.0)
    net.send(1, 2, b"held")
    net.send(2, 1, b"free")
    sched.run_until(100_000)
    times = {p: t for t, _, _, p in got}
    assert times[b"free"] < 1_000 < 5_000 < times[b"held"]


def test_reordering_happens_with_jitter_and_extra_delay():
    sched, net, got = make_net(NetworkParams(jitter_frac=0.5, reorder_rate=0.3))
    for i in range(200):
        net.send(1, 2, b"%03d" % i)
    sched.run_until(100_000)
    order = [p for _, _, _, p in got]
    assert order != sorted(order)                      # some messages overtook others
    assert sorted(order) == [b"%03d" % i for i in range(200)]  # none lost or invented


def test_inflight_bound_drops_overflow():
    sched, net, got = make_net(NetworkParams(inflight_per_link_max=10))
    for i in range(15):
        net.send(1, 2, b"x")
    assert net.stats.dropped_overflow == 5


@pytest.mark.parametrize("shape", sorted(partitions.SHAPES))
def test_partition_shapes_never_block_self_links_and_cut_something(shape):
    for seed in range(20):
        links, desc = partitions.SHAPES[shape](NODES, random.Random(seed))
        assert links and desc
        assert all(a != b and a in NODES and b in NODES for a, b in links)


def test_isolate_cuts_exactly_one_node_both_ways():
    links, desc = partitions.isolate_one(NODES, random.Random(3))
    x = int(desc.split()[-1])
    assert links == {(x, y) for y in NODES if y != x} | {(y, x) for y in NODES if y != x}


def test_majorities_ring_every_node_sees_exactly_its_two_neighbours():
    links, _ = partitions.majorities_ring(NODES, random.Random(4))
    for a in NODES:
        peers = [b for b in NODES if b != a and reachable(links, a, b)]
        assert len(peers) == 2  # itself + 2 = a majority of 5
        assert all(reachable(links, b, a) for b in peers)


def test_bridge_node_reaches_both_sides_which_cannot_reach_each_other():
    links, desc = partitions.bridge(NODES, random.Random(5))
    mid = int(desc.split("<-")[1].split("->")[0])
    assert all(reachable(links, mid, b) and reachable(links, b, mid) for b in NODES if b != mid)
    others = [n for n in NODES if n != mid]
    assert any(not reachable(links, a, b) for a in others for b in others if a != b)


def test_asymmetric_blocks_one_direction_only():
    links, _ = partitions.asymmetric(NODES, random.Random(6))
    assert all((b, a) not in links for a, b in links)


def test_scheduler_runs_in_time_then_fifo_order_and_bounds_events():
    s = Scheduler(0)
    out = []
    s.at(5, out.append, "b")
    s.at(1, out.append, "a")
    s.at(5, out.append, "c")
    s.run_until(10)
    assert out == ["a", "b", "c"] and s.now_ms == 10
    s2 = Scheduler(0, events_max=10)

    def again():
        s2.after(1, again)
    s2.after(0, again)
    with pytest.raises(SimulationLimitExceeded):
        s2.run_until(1_000)


def test_disk_torn_write_keeps_a_prefix_and_never_a_hard_state_ahead_of_entries():
    ents = [Entry(2, i) for i in range(1, 6)]
    seen_partial = False
    for seed in range(50):
        d = SimDisk()
        d.write(HardState(1, 1, 0), [], None)
        what = d.write_torn(HardState(2, 1, 5), ents, None, random.Random(seed))
        st = d.load()
        n = st.last_index()
        assert st.entries(1, n + 1) == ents[:n]
        hs = st.hard_state()
        assert hs.commit <= n
        if n < 5:
            seen_partial = True
            assert hs == HardState(1, 1, 0), what
    assert seen_partial


def test_disk_complete_write_and_snapshot_compaction_survive_reload():
    d = SimDisk()
    d.write(HardState(3, 2, 4), [Entry(3, i) for i in range(1, 8)], None)
    from geokv.raft.types import ConfState, Snapshot, SnapshotMetadata
    d.save_snapshot(Snapshot(SnapshotMetadata(5, 3, ConfState(voters=(1, 2))), b"sm"), 4)
    st = d.load()
    assert st.snapshot().metadata.index == 5 and st.snapshot().data == b"sm"
    assert st.first_index() == 5 and st.last_index() == 7
    assert st.hard_state() == HardState(3, 2, 4)
