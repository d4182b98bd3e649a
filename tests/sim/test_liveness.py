"""After healing, a leader is elected and a new write commits within a bounded time;
and the liveness check does fail when the cluster cannot make progress."""

from __future__ import annotations

from geokv.sim.config import SimConfig
from geokv.sim.run import Simulation


def test_cluster_recovers_after_heavy_faults():
    for seed in range(30_000, 30_010):
        cfg = SimConfig.generate(seed)
        cfg.fault_kinds = ("power_loss", "partition", "crash_leader", "pause")
        cfg.fault_mean_interval_ms = 300.0
        res = Simulation(cfg).run()
        assert res.ok, f"seed {seed}: {res.failure}"
        assert res.liveness_ms is not None and res.liveness_ms <= cfg.liveness_ms_max
        assert res.crashes > 0


def test_liveness_failure_is_reported_when_the_cluster_stays_split():
    cfg = SimConfig.generate(30_100, faults=False)
    cfg.liveness_ms_max = 5_000.0
    sim = Simulation(cfg)
    heal = sim._heal_everything

    def heal_but_keep_everyone_isolated():
        heal()
        ids = sorted(sim.nodes)
        sim.net.set_blocked({(a, b) for a in ids for b in ids if a != b})

    sim._heal_everything = heal_but_keep_everyone_isolated
    res = sim.run()
    assert not res.ok and res.failure_kind == "liveness"
    assert "no write committed within 5000ms" in res.failure


def test_liveness_is_measured_from_the_heal():
    res = Simulation(SimConfig.generate(30_200, faults=False)).run()
    assert res.ok and res.liveness_ms is not None
    # Without faults a leader exists already: the probe commits within a few RTTs.
    assert res.liveness_ms < 2_000.0
