"""Membership changes: the simple one-voter path and joint consensus (Raft thesis §4.3).

A ``Changer`` computes a new (TrackerConfig, progress map) from the current one without
mutating it; the core then switches to the result. Every invalid change raises
``ConfChangeError`` with a readable reason.
"""

from __future__ import annotations

from .tracker import Progress, TrackerConfig, check_invariants
from .types import ConfChangeSingle, ConfChangeType, ConfState


class ConfChangeError(ValueError):
    """A membership change that cannot be applied to the current configuration."""


class Changer:
    __slots__ = ("config", "progress", "last_index", "max_inflight")

    def __init__(self, config: TrackerConfig, progress: dict[int, Progress],
                 last_index: int, max_inflight: int) -> None:
        self.config = config
        self.progress = progress
        self.last_index = last_index
        self.max_inflight = max_inflight

    def enter_joint(self, auto_leave: bool, changes: tuple[ConfChangeSingle, ...]
                    ) -> tuple[TrackerConfig, dict[int, Progress]]:
        cfg, prs = self._copy()
        if cfg.joint():
            raise ConfChangeError("config is already joint")
        if not cfg.voters_in:
            raise ConfChangeError("can't make a zero-voter config joint")
        cfg.voters_out = cfg.voters_in
        self._apply(cfg, prs, changes)
        cfg.auto_leave = auto_leave
        return self._checked(cfg, prs)

    def leave_joint(self) -> tuple[TrackerConfig, dict[int, Progress]]:
        cfg, prs = self._copy()
        if not cfg.joint():
            raise ConfChangeError("can't leave a non-joint config")
        for nid in cfg.learners_next:
            prs[nid] = _clone(prs[nid], is_learner=True)
        cfg.learners = cfg.learners | cfg.learners_next
        cfg.learners_next = frozenset()
        for nid in cfg.voters_out:
            if nid not in cfg.voters_in and nid not in cfg.learners:
                del prs[nid]
        cfg.voters_out = frozenset()
        cfg.auto_leave = False
        return self._checked(cfg, prs)

    def simple(self, changes: tuple[ConfChangeSingle, ...]
               ) -> tuple[TrackerConfig, dict[int, Progress]]:
        cfg, prs = self._copy()
        if cfg.joint():
            raise ConfChangeError("can't apply simple config change in joint config")
        self._apply(cfg, prs, changes)
        if len(self.config.voters_in ^ cfg.voters_in) > 1:
            raise ConfChangeError("more than one voter changed without entering joint config")
        return self._checked(cfg, prs)

    # --- internals ------------------------------------------------------------------
    def _copy(self) -> tuple[TrackerConfig, dict[int, Progress]]:
        # Progress objects are shared except where a change touches them (then replaced).
        return self.config.copy(), dict(self.progress)

    def _checked(self, cfg: TrackerConfig, prs: dict[int, Progress]):
        check_invariants(cfg, prs)
        return cfg, prs

    def _apply(self, cfg: TrackerConfig, prs: dict[int, Progress],
               changes: tuple[ConfChangeSingle, ...]) -> None:
        for cc in changes:
            if cc.node_id == 0:
                raise ConfChangeError("node id 0 is not allowed")
            if cc.type == ConfChangeType.ADD_NODE:
                self._make_voter(cfg, prs, cc.node_id)
            elif cc.type == ConfChangeType.ADD_LEARNER:
                self._make_learner(cfg, prs, cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE:
                self._remove(cfg, prs, cc.node_id)
            else:
                raise ConfChangeError(f"unknown change type {cc.type!r}")
        if not cfg.voters_in:
            raise ConfChangeError("removed all voters")

    def _new_progress(self, is_learner: bool) -> Progress:
        return Progress(self.last_index + 1, self.max_inflight, is_learner)

    def _make_voter(self, cfg: TrackerConfig, prs: dict[int, Progress], nid: int) -> None:
        pr = prs.get(nid)
        if pr is None:
            prs[nid] = self._new_progress(False)
        elif pr.is_learner:
            prs[nid] = _clone(pr, is_learner=False)
        cfg.voters_in = cfg.voters_in | {nid}
        cfg.learners = cfg.learners - {nid}
        cfg.learners_next = cfg.learners_next - {nid}

    def _make_learner(self, cfg: TrackerConfig, prs: dict[int, Progress], nid: int) -> None:
        pr = prs.get(nid)
        if pr is None:
            prs[nid] = self._new_progress(True)
            cfg.learners = cfg.learners | {nid}
            return
        if pr.is_learner:
            return
        # A voter becomes a learner. If it is still an outgoing voter, it must keep
        # voting there until the joint config is left: park it in learners_next.
        cfg.voters_in = cfg.voters_in - {nid}
        if nid in cfg.voters_out:
            cfg.learners_next = cfg.learners_next | {nid}
        else:
            prs[nid] = _clone(pr, is_learner=True)
            cfg.learners = cfg.learners | {nid}

    def _remove(self, cfg: TrackerConfig, prs: dict[int, Progress], nid: int) -> None:
        if nid not in prs:
            return
        cfg.voters_in = cfg.voters_in - {nid}
        cfg.learners = cfg.learners - {nid}
        cfg.learners_next = cfg.learners_next - {nid}
        if nid not in cfg.voters_out:
            del prs[nid]


def _clone(pr: Progress, *, is_learner: bool) -> Progress:
    n = Progress(pr.next, pr.inflights.size_max, is_learner)
    n.match = pr.match
    n.state = pr.state
    n.pending_snapshot = pr.pending_snapshot
    n.recent_active = pr.recent_active
    n.probe_sent = pr.probe_sent
    n.inflights = pr.inflights
    n.lease_ack_tick = pr.lease_ack_tick
    return n


def restore(cs: ConfState, last_index: int, max_inflight: int
            ) -> tuple[TrackerConfig, dict[int, Progress]]:
    """Build the tracked config from a ConfState (startup or snapshot install)."""
    cfg = TrackerConfig(cs.voters, cs.voters_outgoing, cs.learners, cs.learners_next,
                        cs.auto_leave)
    prs: dict[int, Progress] = {}
    for nid in cfg.voter_ids() | cfg.learners_next:
        prs[nid] = Progress(last_index + 1, max_inflight, False)
    for nid in cfg.learners:
        if nid in prs:
            raise ConfChangeError(f"{nid} is both a voter and a learner in {cs}")
        prs[nid] = Progress(last_index + 1, max_inflight, True)
    if cfg.joint() and not cfg.voters_in:
        raise ConfChangeError(f"joint config without incoming voters: {cs}")
    check_invariants(cfg, prs)
    return cfg, prs
