"""Quorum maths: committed index and vote outcome for majority and joint configurations.

A joint configuration (C_old, C_new) needs a majority of *each* half: its committed
index is the minimum of the two halves' committed indexes, and a vote is won only when
won in both. An empty majority config commits everything and wins every vote, so a
joint config whose outgoing half is empty behaves exactly like its incoming half.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Mapping

#: Committed index of an empty config: "no constraint".
INDEX_INFINITY = 1 << 63


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed_index(voters: frozenset[int] | tuple[int, ...],
                             match: Mapping[int, int]) -> int:
    """Largest index acknowledged by a majority of ``voters``.

    ``match`` maps node id -> acknowledged index (missing = 0).
    """
    n = len(voters)
    if n == 0:
        return INDEX_INFINITY
    if n == 1:
        for v in voters:
            return match.get(v, 0)
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    # acked[q-1] is acknowledged by at least q = n//2+1 voters.
    return acked[n // 2]


def majority_vote_result(voters: frozenset[int] | tuple[int, ...],
                         votes: Mapping[int, bool]) -> VoteResult:
    n = len(voters)
    if n == 0:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        r = votes.get(v)
        if r is None:
            continue
        if r:
            granted += 1
        else:
            rejected += 1
    q = n // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if n - rejected >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_committed_index(incoming: frozenset[int], outgoing: frozenset[int],
                          match: Mapping[int, int]) -> int:
    a = majority_committed_index(incoming, match)
    b = majority_committed_index(outgoing, match)
    return a if a < b else b


def joint_vote_result(incoming: frozenset[int], outgoing: frozenset[int],
                      votes: Mapping[int, bool]) -> VoteResult:
    r1 = majority_vote_result(incoming, votes)
    r2 = majority_vote_result(outgoing, votes)
    if r1 == r2:
        return r1
    if r1 == VoteResult.LOST or r2 == VoteResult.LOST:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_active(incoming: frozenset[int], outgoing: frozenset[int],
                 active: Mapping[int, bool]) -> bool:
    """Has each half heard from a majority recently (CheckQuorum)?"""
    return joint_vote_result(incoming, outgoing, active) == VoteResult.WON
