"""Quorum maths against brute force: majority and joint committed index and votes."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings, strategies as st

from geokv.raft.quorum import (
    INDEX_INFINITY,
    VoteResult,
    joint_committed_index,
    joint_vote_result,
    majority_committed_index,
    majority_vote_result,
)

ids = st.frozensets(st.integers(1, 7), max_size=7)


def brute_committed(voters, match):
    if not voters:
        return INDEX_INFINITY
    q = len(voters) // 2 + 1
    best = 0
    for group in combinations(sorted(voters), q):
        best = max(best, min(match.get(v, 0) for v in group))
    return best


def brute_vote(voters, votes):
    if not voters:
        return VoteResult.WON
    q = len(voters) // 2 + 1
    yes = sum(1 for v in voters if votes.get(v) is True)
    undecided = sum(1 for v in voters if v not in votes)
    if yes >= q:
        return VoteResult.WON
    if yes + undecided >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


@settings(max_examples=150, deadline=None)
@given(ids, st.dictionaries(st.integers(1, 7), st.integers(0, 20)))
def test_majority_committed_index_is_largest_index_a_quorum_has(voters, match):
    assert majority_committed_index(voters, match) == brute_committed(voters, match)


@settings(max_examples=150, deadline=None)
@given(ids, ids, st.dictionaries(st.integers(1, 7), st.integers(0, 20)))
def test_joint_committed_index_is_min_of_halves(a, b, match):
    assert joint_committed_index(a, b, match) == min(brute_committed(a, match),
                                                     brute_committed(b, match))


@settings(max_examples=150, deadline=None)
@given(ids, st.dictionaries(st.integers(1, 7), st.booleans()))
def test_majority_vote_result(voters, votes):
    assert majority_vote_result(voters, votes) == brute_vote(voters, votes)


@settings(max_examples=150, deadline=None)
@given(ids, ids, st.dictionaries(st.integers(1, 7), st.booleans()))
def test_joint_vote_needs_both_halves(a, b, votes):
    r1, r2 = brute_vote(a, votes), brute_vote(b, votes)
    if r1 == VoteResult.WON and r2 == VoteResult.WON:
        want = VoteResult.WON
    elif VoteResult.LOST in (r1, r2):
        want = VoteResult.LOST
    else:
        want = VoteResult.PENDING
    assert joint_vote_result(a, b, votes) == want


def test_examples():
    assert majority_committed_index({1, 2, 3}, {1: 5, 2: 3, 3: 1}) == 3
    assert majority_committed_index({1, 2, 3, 4}, {1: 5, 2: 3, 3: 1, 4: 9}) == 3
    assert joint_committed_index(frozenset({1, 2, 3}), frozenset(), {1: 5, 2: 5}) == 5
    assert majority_vote_result({1, 2, 3}, {1: True, 2: False}) == VoteResult.PENDING
    assert majority_vote_result({1, 2, 3}, {1: False, 2: False}) == VoteResult.LOST


def test_tracker_three_voter_fast_path_matches_general_maths():
    import random
    from geokv.raft.confchange import restore
    from geokv.raft.tracker import ProgressTracker
    from geokv.raft.types import ConfState
    rng = random.Random(4)
    for _ in range(200):
        cfg, prs = restore(ConfState(voters=(1, 2, 3)), 0, 4)
        t = ProgressTracker(4)
        t.set_config(cfg, prs)
        match = {i: rng.randrange(10) for i in (1, 2, 3)}
        for i, m in match.items():
            prs[i].match = m
        assert t.committed() == brute_committed({1, 2, 3}, match)
