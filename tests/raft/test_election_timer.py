"""Raft §5.2 (Figure 2, Followers): the election timer restarts when a follower hears
from the leader or *grants* a vote, not when it refuses a candidate of a higher term.

Simulator seed 502179 (tests/sim/regression_seeds.txt): two voters with a stale log
campaigned in turn, each refused by the two voters with the longer log, whose timers
every refused VOTE restarted; the nodes that could win rarely got to campaign and the
cluster took 18.1 s to elect a leader after healing (2.2 s with this rule).
"""

from __future__ import annotations

import random

from geokv.raft.config import Config
from geokv.raft.rawnode import RawNode
from geokv.raft.storage import MemoryStorage
from geokv.raft.types import ConfState, Entry, HardState, Message, MessageType as MT, StateRole


def _follower(log_terms=(1, 1, 2, 2), pre_vote=False):
    st = MemoryStorage(ConfState(voters=(1, 2, 3, 4)))
    st.append([Entry(t, i + 1) for i, t in enumerate(log_terms)])
    st.set_hard_state(HardState(max(log_terms), 0, 2))
    cfg = Config(id=1, election_tick=10, heartbeat_tick=1, pre_vote=pre_vote,
                 check_quorum=True, applied=2, rng=random.Random(7))
    return RawNode(cfg, st)


def _tick(rn: RawNode, n: int) -> None:
    for _ in range(n):
        rn.tick()


def _vote_answers(rn: RawNode) -> list[Message]:
    rd = rn.ready()
    msgs = [m for m in rd.messages + rd.persisted_messages if m.type == MT.VOTE_RESP]
    rn.advance(rd)
    return msgs


def test_refusing_a_stale_candidate_keeps_the_election_timer():
    rn = _follower()
    _tick(rn, 7)
    elapsed = rn.raft.election_elapsed
    assert elapsed == 7
    # Candidate 2 of a higher term with a log that ends behind ours (term 1, index 2).
    rn.step(Message(MT.VOTE, 1, 2, rn.term + 1, log_term=1, index=2))
    (resp,) = _vote_answers(rn)
    assert resp.reject and resp.to == 2
    assert rn.term == 3 and rn.raft.vote == 0  # the term is adopted, no vote given
    assert rn.raft.election_elapsed == elapsed
    # So this node still campaigns within one randomized timeout of the last leader
    # contact, however often stale candidates ask.
    for _ in range(40):
        if rn.role == StateRole.CANDIDATE:
            break
        rn.step(Message(MT.VOTE, 1, 3, rn.term + 1, log_term=1, index=2))
        _vote_answers(rn)
        rn.tick()
    assert rn.role == StateRole.CANDIDATE


def test_granting_a_vote_restarts_the_election_timer():
    rn = _follower()
    _tick(rn, 7)
    rn.step(Message(MT.VOTE, 1, 2, rn.term + 1, log_term=2, index=4))
    (resp,) = _vote_answers(rn)
    assert not resp.reject and rn.raft.vote == 2
    assert rn.raft.election_elapsed == 0


def test_hearing_from_a_leader_of_a_higher_term_restarts_the_timer():
    rn = _follower()
    _tick(rn, 7)
    rn.step(Message(MT.HEARTBEAT, 1, 2, rn.term + 1, commit=2))
    assert rn.raft.lead == 2 and rn.raft.election_elapsed == 0
