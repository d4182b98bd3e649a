"""Lease reads stay linearizable while the members change their timeouts at runtime.

The simulator drives the real RawNode with drifting clocks (within the lease's drift
bound). Mid-run the leader lengthens its election timeout (as a leader applying a new
timeout plan before its followers do) and the followers shorten theirs (as followers
that already took a shorter plan); then the leader is cut off while a client keeps
reading from it. The leader announces its lease hold in its heartbeats and counts old
stamps with the old hold, so the followers refuse votes for as long as the leader
trusts its lease and the linearizability checker finds nothing. Without the announced
hold the same runs serve stale reads.
"""

from __future__ import annotations

from geokv.sim.config import SimConfig, lease_drift_ticks_for
from geokv.sim.linearizability import check_history
from geokv.sim.node import RUNNING
from geokv.sim.run import Simulation

DRIFT = 0.05
TRIALS = range(41_000, 41_010)
LEADER_ELECTION_TICKS = 20     # the leader's new election timeout (was 10)
FOLLOWER_ELECTION_TICKS = 6    # the followers' new one


def _run(seed: int, announce: bool) -> str | None:
    cfg = SimConfig.generate(seed, faults=False)
    cfg.n_voters = 3
    cfg.regions = ("eu-west",)
    cfg.check_quorum, cfg.pre_vote, cfg.read_mode = True, True, "lease"
    cfg.drift_max = DRIFT
    cfg.lease_drift_ticks = lease_drift_ticks_for(FOLLOWER_ELECTION_TICKS, 2 * DRIFT)
    cfg.clients = 0
    cfg.client_timeout_ms = 40.0
    sim = Simulation(cfg)
    slow, fast = cfg.tick_ms * (1 + DRIFT), cfg.tick_ms * (1 - DRIFT)
    for nid, node in sim.nodes.items():
        node.tick_ms = slow if nid == 1 else fast
    sched = sim.sched
    sched.run_until(3_000)
    leader = sim.leader()
    assert leader is not None
    if leader.id != 1:
        leader.admin("transfer", 1)
        sched.run_until(4_000)
    assert sim.leader() is not None and sim.leader().id == 1
    for node in sim.nodes.values():
        node.rawnode.raft.announce_lease_hold = announce

    stop_ms = float("inf")

    def loop(client: int, kind: str, nid: int) -> None:
        node = sim.nodes[nid]
        if node.status != RUNNING or sched.now_ms > stop_ms:
            return
        pending = [c for c in sim.history if c.client == client and not c.done]
        if not pending:
            op = (sim._new_read(client, "k0", nid) if kind == "r"
                  else sim._new_write(client, "k0", nid))
            op.chain = False
            sim._submit(op, node)
        sched.after(10.0, loop, client, kind, nid)

    sched.after(0.0, loop, 1, "r", 1)
    sched.after(0.0, loop, 2, "w", 2)
    sched.after(0.0, loop, 3, "w", 3)
    # The leader lengthens its timeout and keeps heartbeating with it for a while; then
    # the followers shorten theirs (they never heard of the leader's change).
    sim.nodes[1].rawnode.set_timing(1, LEADER_ELECTION_TICKS)
    sched.run_until(sched.now_ms + 5 * cfg.tick_ms)
    lo = FOLLOWER_ELECTION_TICKS
    sim.nodes[2].rawnode.set_timing(1, lo, (lo, lo + 2))
    sim.nodes[3].rawnode.set_timing(1, lo, (lo + 3, lo + 5))
    cut_ms = sched.now_ms + 3 * cfg.tick_ms
    stop_ms = cut_ms + 2_500
    sched.run_until(cut_ms)
    sim.net.set_blocked({(1, 2), (1, 3), (2, 1), (3, 1)})  # isolate the leader
    sched.run_until(stop_ms + 500)
    ops = [c.op for c in sim.history
           if (c.op.kind == "w" and c.op.ret != -1)
           or (c.op.kind == "r" and c.op.ret is not None and c.op.ret != -1)]
    assert sum(1 for o in ops if o.kind == "r") > 20
    return check_history(ops)


def test_timeout_changes_keep_lease_reads_linearizable():
    for seed in TRIALS:
        msg = _run(seed, announce=True)
        assert msg is None, f"seed {seed}: {msg}"


def test_without_the_announced_hold_the_checker_finds_stale_reads():
    assert any(_run(seed, announce=False) is not None for seed in TRIALS)
