"""One test per claim of the Raft paper (Ongaro & Ousterhout, §5), named after it."""

from __future__ import annotations

from geokv.raft import Entry, Message, MessageType as MT, StateRole

from .harness import Network


def _plain(ids=(1, 2, 3), **kw) -> Network:
    kw.setdefault("pre_vote", False)
    kw.setdefault("check_quorum", False)
    return Network(list(ids), **kw)


def test_5_1_node_adopts_higher_term_and_becomes_follower():
    net = _plain()
    net.campaign(1)
    r1 = net[1].rn
    old = r1.term
    r1.step(Message(MT.APP_RESP, 1, 2, term=old + 5))
    assert r1.role == StateRole.FOLLOWER and r1.term == old + 5


def test_5_1_request_with_stale_term_is_rejected():
    net = _plain()
    net.campaign(1)
    net.campaign(2)  # term 2, node 1 follows 2
    term = net[1].rn.term
    net[1].rn.step(Message(MT.APP, 1, 3, term=1, index=0, log_term=0,
                           entries=[Entry(1, 99, data=b"stale")]))
    assert net[1].rn.term == term
    assert all(e.data != b"stale" for e in net[1].raft.raft_log.all_entries())


def test_5_2_follower_times_out_and_starts_election_with_new_term():
    net = _plain()
    term = net[1].rn.term
    net.tick(25, ids=[1], stabilize=False)
    assert net[1].rn.role == StateRole.CANDIDATE
    assert net[1].rn.term > term and net[1].raft.vote == 1


def test_5_2_election_safety_at_most_one_leader_per_term():
    for seed in range(10):
        net = _plain(seed=seed)
        seen = {}
        for _ in range(60):
            net.tick(1)
            for i, n in net.nodes.items():
                if n.rn.role == StateRole.LEADER:
                    assert seen.setdefault(n.rn.term, i) == i


def test_5_2_candidate_steps_down_on_append_from_legitimate_leader():
    net = _plain()
    net.campaign(1)
    net.isolate(3)
    net[3].rn.campaign()
    assert net[3].rn.role == StateRole.CANDIDATE
    r3 = net[3].rn
    r3.step(Message(MT.APP, 3, 1, term=r3.term, index=0, log_term=0))
    assert r3.role == StateRole.FOLLOWER and r3.leader_id == 1


def test_5_3_leader_append_only_never_overwrites_its_log():
    net = _plain()
    net.campaign(1)
    for i in range(5):
        net.propose(1, b"%d" % i)
    before = net.logs(1)
    r1 = net[1].rn
    # A conflicting APP at the leader's own term is not something a leader accepts.
    r1.step(Message(MT.APP, 1, 2, term=r1.term, index=1, log_term=1,
                    entries=[Entry(r1.term, 2, data=b"evil")]))
    assert net.logs(1)[: len(before)] == before


def test_5_3_follower_rejects_append_whose_previous_entry_it_lacks():
    net = _plain()
    net.campaign(1)
    r2 = net[2].rn
    r2.step(Message(MT.APP, 2, 1, term=r2.term, index=10, log_term=r2.term,
                    entries=[Entry(r2.term, 11, data=b"x")]))
    rd = r2.ready()
    resp = [m for m in rd.persisted_messages if m.type == MT.APP_RESP]
    assert resp and resp[0].reject
    r2.advance(rd)


def test_5_3_log_matching_conflicting_suffix_is_replaced():
    net = _plain()
    net.campaign(1)
    net.isolate(1)
    for i in range(3):
        net[1].rn.propose(b"orphan%d" % i)
        net.flush_ready([1])
    net.queue.clear()
    net.heal()
    net.isolate(1)
    net.cut_links.discard((2, 3))
    net.cut_links.discard((3, 2))
    net.campaign(2)
    net.propose(2, b"winner")
    net.heal()
    net.tick(2)
    assert net.logs(1) == net.logs(2) == net.logs(3)
    assert all(b"orphan" not in d for _, _, d in net.logs(1))


def test_5_4_1_election_restriction_voter_denies_less_up_to_date_candidate():
    net = _plain()
    net.campaign(1)
    net.propose(1, b"a")
    r2 = net[2].rn
    r2.step(Message(MT.VOTE, 2, 3, term=r2.term + 1, index=1, log_term=1))
    rd = r2.ready()
    vr = [m for m in rd.persisted_messages if m.type == MT.VOTE_RESP]
    assert vr and vr[0].reject
    r2.advance(rd)


def test_5_4_2_leader_never_commits_old_term_entry_by_counting_replicas():
    """Figure 8: the leader may commit an old-term entry only indirectly, by committing
    an entry of its own term after it."""
    net = _plain(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(3)
    # Node 1 (term 1) appends X, only node 1 has it; then node 1 loses leadership.
    net.isolate(1)
    net[1].rn.propose(b"X")
    net.flush_ready([1])
    net.queue.clear()
    r1 = net[1].rn
    r1.step(Message(MT.APP_RESP, 1, 2, term=r1.term + 1))  # deposed by a higher term
    assert r1.role == StateRole.FOLLOWER
    net.heal()
    # Node 1 becomes leader again in a new term with X only on itself; X reaches node 2.
    net.isolate(3)
    net.campaign(1)
    r1 = net[1].rn
    assert r1.role == StateRole.LEADER
    x_index = next(e.index for e in net[1].raft.raft_log.all_entries() if e.data == b"X")
    x_term = net[1].raft.raft_log.term(x_index)
    assert x_term < r1.term
    # It is committed only together with the new leader's empty entry of its own term.
    commit = r1.status().commit
    assert commit > x_index
    assert net[1].raft.raft_log.term(commit) == r1.term


def test_5_4_3_state_machine_safety_all_apply_the_same_sequence():
    net = _plain(seed=4)
    net.campaign(1)
    for i in range(10):
        lead = net.leaders()[0]
        net.propose(lead, b"%d" % i)
        if i == 4:
            net.isolate(lead)
            net.tick(30)
            net.heal()
            net.tick(5)
    seqs = [n.applied for n in net.nodes.values()]
    longest = max(seqs, key=len)
    assert all(s == longest[: len(s)] for s in seqs)
    assert len(longest) == 10


def test_5_4_leader_completeness_new_leader_has_all_committed_entries():
    net = _plain()
    net.campaign(1)
    for i in range(3):
        net.propose(1, b"c%d" % i)
    committed = {e for e in net[1].applied}
    net.isolate(1)
    net.tick(40, ids=[2, 3])
    new = [i for i in (2, 3) if net[i].rn.role == StateRole.LEADER]
    assert new
    held = {d for _, _, d in net.logs(new[0])}
    assert committed <= held
