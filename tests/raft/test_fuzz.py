"""Seeded random faults (loss, duplication, reordering, partitions, restarts, membership
changes, transfers, reads) against the safety properties of Raft:

  * election safety: at most one leader per term;
  * state machine safety: every node applies a prefix of one common sequence;
  * leader completeness: an entry applied anywhere is in every later leader's log;
  * read safety: a read state's index is >= every index applied anywhere before the read
    was requested (linearizable reads see every completed write).
A failure message names the seed; rerun with that seed to replay it exactly.
"""

from __future__ import annotations

import random

import pytest

from geokv.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ProposalDropped,
    ReadOnlyOption,
    StateRole,
)

from .harness import Network

STEPS = 500


def _check(net: Network, leaders_by_term: dict, seed: int) -> None:
    for i, n in net.nodes.items():
        if n.rn.role == StateRole.LEADER:
            prev = leaders_by_term.setdefault(n.rn.term, i)
            assert prev == i, f"seed {seed}: two leaders in term {n.rn.term}: {prev}, {i}"
    seqs = [[(e.index, e.term, e.data) for e in n.applied_entries] for n in net.nodes.values()]
    longest = max(seqs, key=len)
    for s in seqs:
        assert s == longest[: len(s)], f"seed {seed}: applied sequences diverge"


def _run(seed: int, read_mode: ReadOnlyOption, membership: bool) -> None:
    rng = random.Random(seed)
    net = Network([1, 2, 3, 4, 5] if membership else [1, 2, 3], seed=seed,
                  voters=[1, 2, 3], learners=[4] if membership else (),
                  bootstrap_log=True, read_only_option=read_mode,
                  pre_vote=rng.random() < 0.7, check_quorum=True,
                  max_inflight_msgs=rng.choice([1, 4, 64]),
                  max_size_per_msg=rng.choice([64, 1 << 20]))
    if membership:
        # Node 5 exists but is in no config until someone adds it.
        net.nodes.pop(5)
        net.add_node(5)
    leaders_by_term: dict[int, int] = {}
    pending_reads: dict[bytes, int] = {}  # ctx -> max applied index when requested
    counter = 0
    for step in range(STEPS):
        ids = list(net.nodes)
        r = rng.random()
        if r < 0.30:
            for i in ids:
                net[i].rn.tick()
        elif r < 0.55:
            i = rng.choice(ids)
            counter += 1
            try:
                net[i].rn.propose(b"s%d-%d" % (seed, counter))
            except ProposalDropped:
                pass
        elif r < 0.60:
            a, b = rng.sample(ids, 2)
            net.cut(a, b)
        elif r < 0.65:
            net.heal()
        elif r < 0.67:
            i = rng.choice(ids)
            net.restart(i)
        elif r < 0.70 and membership:
            i = rng.choice(ids)
            t = rng.choice(list(ConfChangeType))
            target = rng.choice([2, 3, 4, 5])
            try:
                net[i].rn.propose_conf_change(ConfChange((ConfChangeSingle(t, target),)))
            except ProposalDropped:
                pass
        elif r < 0.72:
            i = rng.choice(ids)
            try:
                net[i].rn.transfer_leader(rng.choice(ids))
            except ProposalDropped:
                pass
        elif r < 0.77:
            i = rng.choice(ids)
            counter += 1
            ctx = b"r%d" % counter
            try:
                net[i].rn.read_index(ctx)
                pending_reads[ctx] = max(len(n.applied_entries) and n.applied_entries[-1].index
                                         for n in net.nodes.values())
            except ProposalDropped:
                pass
        # Deliver a random subset, with loss, duplication and reordering.
        net.flush_ready()
        q = list(net.queue)
        rng.shuffle(q)
        net.queue.clear()
        for m in q:
            x = rng.random()
            if x < 0.10:
                continue  # lost
            net.queue.append(m)
            if x > 0.95:
                net.queue.append(m)  # duplicated
        net.deliver()
        net.flush_ready()
        _check(net, leaders_by_term, seed)
        for n in net.nodes.values():
            for rs in n.read_states:
                floor = pending_reads.pop(rs.request_ctx, None)
                if floor is not None:
                    assert rs.index >= floor, (
                        f"seed {seed}: read {rs.request_ctx!r} at {rs.index} misses "
                        f"applied index {floor}")
            n.read_states.clear()
    # Liveness: heal everything; one leader emerges and every member applies a new entry.
    net.heal()
    for _ in range(300):
        net.tick(1)
        if len(net.leaders()) == 1:
            break
    _check(net, leaders_by_term, seed)
    for _ in range(100):  # a pending transfer refuses proposals until it ends
        lead = net.leader()
        try:
            net.propose(lead, b"final")
            break
        except ProposalDropped:
            net.tick(1)
    cs = net[lead].rn.status().config
    members = set(cs.voters) | set(cs.learners)
    for _ in range(100):
        if all(net[i].applied_entries and net[i].applied_entries[-1].data == b"final"
               for i in members):
            break
        net.tick(1)
    else:
        raise AssertionError(f"seed {seed}: members {sorted(members)} did not converge")
    _check(net, leaders_by_term, seed)


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_safety_safe_reads(seed):
    _run(seed, ReadOnlyOption.SAFE, membership=False)


@pytest.mark.parametrize("seed", range(100, 108))
def test_fuzz_safety_lease_reads(seed):
    _run(seed, ReadOnlyOption.LEASE_BASED, membership=False)


@pytest.mark.parametrize("seed", range(200, 212))
def test_fuzz_safety_with_membership_changes(seed):
    _run(seed, ReadOnlyOption.SAFE, membership=True)
