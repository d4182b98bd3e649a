"""End to end: plant a known bug in the system under test and the simulator reports it.

Each test breaks one rule through a monkeypatch, runs a handful of seeds, and expects
the matching checker to fail the run (the checkers' unit tests are in test_checkers.py).
"""

from __future__ import annotations

from geokv.sim import node as sim_node
from geokv.sim.config import SimConfig
from geokv.sim.run import Simulation

SEEDS = range(20_000, 20_006)


def _failures(seeds=SEEDS, **overrides):
    out = []
    for seed in seeds:
        cfg = SimConfig.generate(seed)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        res = Simulation(cfg).run()
        if not res.ok:
            out.append((res.failure_kind, res.failure))
    return out


def test_sending_votes_and_acks_before_the_fsync_is_caught(monkeypatch):
    original = sim_node.SimNode._handle_ready

    def send_everything_first(self, rd):
        for m in rd.persisted_messages:
            self._send(m)
        rd.persisted_messages = []
        original(self, rd)

    monkeypatch.setattr(sim_node.SimNode, "_handle_ready", send_everything_first)
    found = _failures()
    assert len(found) == len(SEEDS)
    assert all(kind == "safety" and "durability" in msg for kind, msg in found)


def test_answering_reads_from_local_state_is_caught(monkeypatch):
    def local_read(self, op):
        if self.pending_reads.pop(op.read_ctx, None) is not None:
            self.sim.client_read_done(op, self.sm.kv.get(op.op.key), self.id, 0)

    monkeypatch.setattr(sim_node.SimNode, "_read_index", local_read)
    found = _failures(write_fraction=0.5, keys=1)
    assert found and all(kind == "history" and "linearizab" in msg for kind, msg in found)


def test_forgetting_a_vote_across_a_restart_is_caught(monkeypatch):
    """A disk that does not keep the hard state lets a node vote twice in one term."""
    original = sim_node.SimDisk.write

    def write_without_vote(self, hard_state, entries, snapshot):
        if hard_state is not None:
            hard_state = type(hard_state)(hard_state.term, 0, hard_state.commit)
        original(self, hard_state, entries, snapshot)

    monkeypatch.setattr(sim_node.SimDisk, "write", write_without_vote)
    found = _failures(range(20_000, 20_040))
    assert found and any("vote" in msg for _, msg in found)
