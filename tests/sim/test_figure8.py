"""The Raft paper's Figure 8 (§5.4.2): a leader must not commit an entry of an older
term by counting replicas. With that check removed from ``RaftLog.maybe_commit`` the
"figure8" fault profile makes the swarm report a lost committed entry; the mixed
profile alone almost never does (a new leader's empty entry usually rides in the same
append as the old entries, so one acknowledgement covers both).
"""

from __future__ import annotations

import itertools

from geokv.raft import log as raft_log
from geokv.sim.config import SimConfig
from geokv.sim.run import Simulation

#: The first figure8-profile seeds from here on are the test's swarm.
FIRST_SEED = 20_000
SEEDS_MAX = 12


def _figure8_seeds(n: int = SEEDS_MAX) -> list[int]:
    out = []
    for seed in itertools.count(FIRST_SEED):
        if SimConfig.generate(seed).profile == "figure8":
            out.append(seed)
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


def _commit_by_counting(self, max_index: int, term: int) -> bool:
    """The planted bug: maybe_commit without the term check of §5.4.2."""
    if max_index > self.committed:
        self.commit_to(max_index)
        return True
    return False


def test_the_profile_is_drawn_with_its_knobs():
    seeds = _figure8_seeds()
    assert len(seeds) == SEEDS_MAX and seeds[-1] - FIRST_SEED < 100  # ~1 in 5 seeds
    for seed in seeds:
        cfg = SimConfig.generate(seed)
        assert cfg.n_voters == 5 and cfg.max_size_per_msg == 1 and cfg.max_inflight_msgs == 1
        assert cfg.leader_churn_ms > 0
    mixed = SimConfig.generate(FIRST_SEED + 1)
    assert mixed.profile == "mixed" and mixed.leader_churn_ms == 0
    assert SimConfig.generate(seeds[0], faults=False).profile == "mixed"


def test_figure8_profile_runs_pass_and_churn_leaders():
    for seed in _figure8_seeds(4):
        res = Simulation(SimConfig.generate(seed)).run()
        assert res.ok, f"seed {seed}: [{res.failure_kind}] {res.failure}"
        assert res.leaders >= 4, res.leaders
        assert any("churn" in line for line in res.fault_log)


def test_committing_an_old_term_entry_by_counting_replicas_is_caught(monkeypatch):
    monkeypatch.setattr(raft_log.RaftLog, "maybe_commit", _commit_by_counting)
    found = []
    for seed in _figure8_seeds():
        res = Simulation(SimConfig.generate(seed)).run()
        if not res.ok:
            found.append((seed, res.failure_kind, res.failure))
    assert found, "the planted Figure 8 bug went unnoticed"
    for seed, kind, msg in found:
        assert kind == "safety", (seed, kind, msg)
        assert "leader completeness" in msg or "committed entry changed" in msg, (seed, msg)
