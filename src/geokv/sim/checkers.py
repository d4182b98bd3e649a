"""Safety checkers that watch a simulated cluster after every step.

Each method is called by a node at the moment something becomes true on it (a Ready
was persisted, an entry applied, a snapshot installed) and raises ``SafetyViolation``
with a precise message as soon as a Raft safety property is broken:

* election safety: at most one leader per term, and a node grants at most one vote per
  term;
* durability before sending: a granted vote and an append acknowledgement leave a node
  only once its disk holds them (the driver-loop contract, and Raft's classification of
  which messages must wait for persistence);
* log matching: two persisted entries with the same (index, term) carry the same data
  and follow entries of the same term (by induction: the logs agree on the prefix);
* leader completeness: an entry committed in term c is in the log of every leader of
  a term > c (checked when a leader's first Ready is persisted, and when an entry is
  found committed while a later-term leader already exists);
* committed entries never change: every node that sees index i committed sees the same
  entry there;
* state-machine safety: every node applies the same entry at each index, in order,
  only entries it knows to be committed, and a snapshot equals the applied prefix.

The checkers keep only dictionaries keyed by index, so each call costs O(new work).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from geokv.raft.storage import StorageError
from geokv.raft.types import Entry


class SafetyViolation(Exception):
    """A Raft safety property does not hold; the message says which and where."""


class LogView(Protocol):
    """What the checkers read from a node's persisted log (a MemoryStorage does)."""

    def term(self, index: int) -> int: ...
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...


def _term_or_none(log: LogView, index: int) -> int | None:
    try:
        return log.term(index)
    except StorageError:
        return None


@dataclass(slots=True)
class Committed:
    term: int            # term of the entry at this index
    commit_term: int     # lowest term in which any node was seen to know it committed


@dataclass(slots=True)
class SafetyChecker:
    #: term -> the node that was leader in it.
    leaders: dict[int, int] = field(default_factory=dict)
    #: (node, term) pairs whose leader completeness was verified.
    leaders_checked: set[tuple[int, int]] = field(default_factory=set)
    #: (index, term) -> (entry type, data, term of the previous entry or None).
    entries: dict[tuple[int, int], tuple[int, bytes, int | None]] = field(default_factory=dict)
    #: index -> the committed entry there.
    committed: dict[int, Committed] = field(default_factory=dict)
    #: index -> (term, type, data, chain crc after it) as first applied by any node.
    applied: dict[int, tuple[int, int, bytes, int]] = field(default_factory=dict)
    #: node -> (term, log view) for nodes that currently act as a checked leader.
    live_leaders: dict[int, tuple[int, LogView]] = field(default_factory=dict)
    #: (voter, term) -> the candidate it granted its vote to.
    votes: dict[tuple[int, int], int] = field(default_factory=dict)
    checks: int = 0

    # --- election safety --------------------------------------------------------------
    def on_leader(self, node: int, term: int) -> None:
        self.checks += 1
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SafetyViolation(
                f"election safety: nodes {other} and {node} are both leader of term {term}"
            )

    def on_not_leader(self, node: int) -> None:
        self.live_leaders.pop(node, None)

    # --- one vote per term, durable before it is sent ----------------------------------
    def on_vote_granted(self, voter: int, term: int, candidate: int,
                        durable_term: int, durable_vote: int) -> None:
        """``voter`` sends a granting VOTE_RESP; ``durable_*`` is its hard state on disk."""
        self.checks += 1
        other = self.votes.setdefault((voter, term), candidate)
        if other != candidate:
            raise SafetyViolation(
                f"vote safety: node {voter} granted its term-{term} vote to {other} and "
                f"then to {candidate}")
        if not (durable_term > term or (durable_term == term and durable_vote == candidate)):
            raise SafetyViolation(
                f"durability: node {voter} sent its term-{term} vote for {candidate} before "
                f"persisting it (disk has term {durable_term}, vote {durable_vote})")

    def on_append_acked(self, node: int, term: int, index: int, durable_term: int,
                        durable_last_index: int) -> None:
        """``node`` acknowledges its log up to ``index``; it must be on disk by now."""
        self.checks += 1
        if durable_term == term and durable_last_index < index:
            raise SafetyViolation(
                f"durability: node {node} acknowledged index {index} in term {term} but its "
                f"disk ends at {durable_last_index}")

    # --- leader completeness ----------------------------------------------------------
    def check_leader_complete(self, node: int, term: int, log: LogView) -> None:
        """``node`` is leader of ``term`` and ``log`` holds (at least) its log then."""
        self.checks += 1
        self.live_leaders[node] = (term, log)
        if (node, term) in self.leaders_checked:
            return
        self.leaders_checked.add((node, term))
        first = log.first_index() - 1  # the snapshot index: its term is still known
        for index, c in self.committed.items():
            if c.commit_term >= term or index < first:
                continue
            have = _term_or_none(log, index)
            if have != c.term:
                raise SafetyViolation(
                    f"leader completeness: index {index} (term {c.term}) was committed in "
                    f"term {c.commit_term} but leader {node} of term {term} has "
                    f"{'no entry' if have is None else f'term {have}'} there"
                )

    # --- log matching -----------------------------------------------------------------
    def on_persist_entries(self, node: int, entries: list[Entry], log: LogView) -> None:
        """``entries`` were just appended to ``node``'s durable ``log``."""
        for e in entries:
            self.checks += 1
            prev = _term_or_none(log, e.index - 1)
            if _term_or_none(log, e.index) != e.term:
                continue  # already compacted away again or replaced in the same write
            key = (e.index, e.term)
            seen = self.entries.get(key)
            if seen is None:
                self.entries[key] = (int(e.type), e.data, prev)
                continue
            typ, data, seen_prev = seen
            if typ != int(e.type) or data != e.data:
                raise SafetyViolation(
                    f"log matching: node {node} has entry (index {e.index}, term {e.term}) "
                    f"with data {e.data[:40]!r}, another node has {data[:40]!r}"
                )
            if prev is not None and seen_prev is not None and prev != seen_prev:
                raise SafetyViolation(
                    f"log matching: entry (index {e.index}, term {e.term}) follows term "
                    f"{prev} on node {node} but term {seen_prev} on another node"
                )

    # --- commitment -------------------------------------------------------------------
    def on_commit(self, node: int, lo: int, hi: int, node_term: int, log: LogView) -> None:
        """``node`` persisted a commit index that moved from ``lo - 1`` to ``hi``."""
        if hi > log.last_index():
            raise SafetyViolation(
                f"commit index {hi} of node {node} is past its last persisted index "
                f"{log.last_index()}"
            )
        for index in range(max(lo, log.first_index() - 1), hi + 1):
            self.checks += 1
            term = _term_or_none(log, index)
            if term is None:
                continue
            c = self.committed.get(index)
            if c is None:
                self.committed[index] = Committed(term, node_term)
                self._check_live_leaders(index, term, node_term)
            elif c.term != term:
                raise SafetyViolation(
                    f"committed entry changed: index {index} committed with term {c.term}, "
                    f"node {node} commits term {term} there"
                )
            elif node_term < c.commit_term:
                c.commit_term = node_term

    def _check_live_leaders(self, index: int, term: int, commit_term: int) -> None:
        for leader, (lterm, log) in self.live_leaders.items():
            if lterm <= commit_term or index < log.first_index() - 1:
                continue
            have = _term_or_none(log, index)
            if have != term:
                raise SafetyViolation(
                    f"leader completeness: index {index} committed with term {term} in "
                    f"term {commit_term}, but leader {leader} of later term {lterm} has "
                    f"{'no entry' if have is None else f'term {have}'} there"
                )

    # --- state-machine safety ---------------------------------------------------------
    def on_apply(self, node: int, e: Entry, node_applied: int, chain: int) -> None:
        """``node`` applied ``e`` (its applied index was ``node_applied`` before)."""
        self.checks += 1
        if e.index != node_applied + 1:
            raise SafetyViolation(
                f"apply order: node {node} applied index {e.index} after {node_applied}"
            )
        c = self.committed.get(e.index)
        if c is None or c.term != e.term:
            raise SafetyViolation(
                f"state-machine safety: node {node} applied index {e.index} term {e.term} "
                f"which is not known committed (committed: "
                f"{'nothing' if c is None else f'term {c.term}'})"
            )
        rec = self.applied.get(e.index)
        if rec is None:
            self.applied[e.index] = (e.term, int(e.type), e.data, chain)
            return
        term, typ, data, seen_chain = rec
        if term != e.term or typ != int(e.type) or data != e.data or seen_chain != chain:
            raise SafetyViolation(
                f"state-machine safety: node {node} applied (index {e.index}, term {e.term}, "
                f"data {e.data[:40]!r}) but another node applied (term {term}, data "
                f"{data[:40]!r}) there"
            )

    def on_restore(self, node: int, index: int, term: int, chain: int) -> None:
        """``node`` replaced its state machine with a snapshot at (index, term)."""
        self.checks += 1
        c = self.committed.get(index)
        if index > 0 and (c is None or c.term != term):
            raise SafetyViolation(
                f"snapshot safety: node {node} installed a snapshot at index {index} term "
                f"{term}, which is not a committed entry"
            )
        rec = self.applied.get(index)
        if rec is not None and rec[3] != chain:
            raise SafetyViolation(
                f"snapshot safety: node {node} installed a snapshot at index {index} whose "
                f"state differs from the applied prefix"
            )
