"""The geo side of a server process: leader placement and election bias on a live Member.

``GeoService(member, cfg)`` is created by the server before ``member.start()``:

* ``install()`` swaps the member's random generator for a ``BiasedElectionRng`` (same
  seed semantics), so once the voters' regions are known the voter closest to a quorum
  draws the earliest election timeouts and wins elections after a failure.
* ``start()`` runs a task that, every ``PLACEMENT_INTERVAL_S``: re-ranks the voters by
  RTT to a quorum (measured RTTs from the transport where known, the region table
  otherwise); and, on the leader only, feeds a ``ClusterView`` to ``LeaderPlacement`` and
  transfers leadership when it says so (``--leader-preference``). It also warns when the
  measured RTT p99 calls for longer timeouts than the configured ones.

Follow the writes (opt-in): ``--leader-preference follow-writes[,region...]`` counts
applied writes by origin region and moves the leader to the region issuing most of
them (with hysteresis; the listed regions are the fallback while writes are few).

Tuning knobs without flags (environment, seconds): ``GEOKV_LEADER_RETURN_DELAY_S``,
``GEOKV_LEADER_COOLDOWN_S``, ``GEOKV_FOLLOW_WRITES_DWELL_S``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from .placement import (
    COOLDOWN_S_DEFAULT,
    FOLLOW_WRITES_DWELL_S_DEFAULT,
    PLACEMENT_INTERVAL_S,
    RETURN_DELAY_S_DEFAULT,
    ClusterView,
    LeaderPlacement,
    MemberState,
    parse_placement_spec,
)
from .timeouts import BiasedElectionRng, TimeoutPlan, TimeoutTuner, derive_timeouts, election_slot_ticks
from .topology import MemberPlacement, Topology
from .wan import RttError, build_rtt_table

log = logging.getLogger("geokv.geo")

STATUS_TIMEOUT_S = 2.0           # wait for the driver to hand over a Raft status
MOVE_LEADER_TIMEOUT_S = 10.0     # one placement transfer
TIMEOUT_WARN_INTERVAL_S = 60.0   # at most one "timeouts too short" warning per interval
PLACEMENT_LOG_INTERVAL_S = 30.0  # repeat an unchanged placement reason this often


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise RttError(f"{name}={raw!r} is not a number of seconds") from None
    if v < 0:
        raise RttError(f"{name} must be >= 0")
    return v


class GeoService:
    def __init__(self, member: Any, cfg: Any) -> None:
        self.member = member
        self.cfg = cfg
        preference, follow_writes = parse_placement_spec(getattr(cfg, "leader_preference", "") or "")
        self.placement = LeaderPlacement(
            preference=preference,
            follow_writes=follow_writes,
            return_delay_s=_env_float("GEOKV_LEADER_RETURN_DELAY_S", RETURN_DELAY_S_DEFAULT),
            cooldown_s=_env_float("GEOKV_LEADER_COOLDOWN_S", COOLDOWN_S_DEFAULT),
            follow_writes_dwell_s=_env_float("GEOKV_FOLLOW_WRITES_DWELL_S", FOLLOW_WRITES_DWELL_S_DEFAULT),
        )
        try:
            self.table = build_rtt_table(getattr(cfg, "rtt", "") or None)
        except RttError:
            self.table = build_rtt_table(None)
        hb = float(getattr(cfg, "heartbeat_interval_ms", 100))
        el = float(getattr(cfg, "election_timeout_ms", 1000))
        self.election_tick = max(2, round(el / hb))
        self.tuner = TimeoutTuner(TimeoutPlan(hb, el))
        self.rng: BiasedElectionRng | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_warn_s = -TIMEOUT_WARN_INTERVAL_S
        self.transfers = 0
        self.writes_by_origin: dict[int, int] = {}   # origin member id -> writes applied
        self.write_counter_installed = ""
        self._last_reason_kind = ""
        self._last_reason_log_s = 0.0

    # --- wiring -------------------------------------------------------------------------
    def install(self) -> None:
        """Before ``member.start()``: give the Raft core the biased election generator and,
        with follow-the-writes on, count applied writes by the region they came from."""
        if hasattr(self.member, "_rng"):
            self.rng = BiasedElectionRng(self.election_tick, seed=self.member._rng.getrandbits(64))
            self.member._rng = self.rng
        if self.placement.follow_writes:
            self._install_write_counter()

    # The runtime's apply step, newest name first: called with the committed entries first.
    APPLY_HOOK_NAMES = ("_apply_entries", "_apply")

    def _install_write_counter(self) -> None:
        """Wrap the member's apply step: entry data is msgpack [origin id, request id, cmd]
        (runtime/member.py), so the origin member, hence region, of each write is known.
        A proper runtime hook (an apply observer getting origin ids) would replace this."""
        import inspect

        import msgpack

        from geokv.raft.types import EntryType

        name = next((n for n in self.APPLY_HOOK_NAMES if callable(getattr(self.member, n, None))), None)
        if name is None:
            log.warning("geo: follow-writes is on but the member has no apply step to observe; "
                        "the leader will follow the static preference only")
            return
        apply = getattr(self.member, name)
        counts = self.writes_by_origin

        def count(ents: Any) -> None:
            for e in ents:
                if e.type == EntryType.NORMAL and e.data:
                    try:
                        origin = msgpack.unpackb(e.data, raw=False)[0]
                    except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData):
                        continue
                    if isinstance(origin, int):
                        counts[origin] = counts.get(origin, 0) + 1

        if inspect.iscoroutinefunction(apply):
            async def counting_apply(ents: Any, *args: Any, **kw: Any) -> Any:
                count(ents)
                return await apply(ents, *args, **kw)
        else:
            def counting_apply(ents: Any, *args: Any, **kw: Any) -> Any:  # type: ignore[misc]
                count(ents)
                return apply(ents, *args, **kw)

        setattr(self.member, name, counting_apply)
        self.write_counter_installed = name

    def _feed_writes(self, now: float) -> None:
        if not self.writes_by_origin:
            return
        regions = self._regions()
        for origin, n in self.writes_by_origin.items():
            region = regions.get(origin)
            if region:
                self.placement.observe_writes(region, n, now)
        self.writes_by_origin.clear()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="geo-service")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # --- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PLACEMENT_INTERVAL_S)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # placement is advisory: log, keep the server running
                log.warning("geo: placement step failed: %r", e)

    async def _raft_status(self) -> Any | None:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()

        def grab(rn: Any) -> None:
            if not fut.done():
                fut.set_result(rn.status())

        add = getattr(self.member, "_add_action", None)
        if add is None or not add(grab):
            return None
        try:
            return await asyncio.wait_for(fut, STATUS_TIMEOUT_S)
        except asyncio.TimeoutError:
            return None

    def _regions(self) -> dict[int, str]:
        regions = {self.member.id: self.member.region}
        transport = getattr(self.member, "transport", None)
        if transport is not None:
            for pid, info in transport.peer_info().items():
                if info.get("region"):
                    regions[pid] = info["region"]
        return regions

    def topology(self, voters: list[int], learners: list[int], *, measured: bool = True) -> Topology | None:
        """The members with their regions; RTTs from the table, refined by this member's
        measurements when ``measured`` (each member measures only its own links, so two
        members' measured views differ; decisions all members must agree on use the table)."""
        regions = self._regions()
        if any(v not in regions for v in voters):
            return None
        for r in regions.values():
            if not self.table.has_region(r):
                self.table.add_region(r)   # unknown regions: only measured RTTs count
        members = [MemberPlacement(v, regions[v]) for v in voters]
        members += [MemberPlacement(l, regions.get(l, ""), voter=False) for l in learners if l in regions]
        topo = Topology(members, self.table)
        transport = getattr(self.member, "transport", None)
        if transport is not None and measured:
            topo = topo.with_measured({(self.member.id, pid): ms for pid, ms in transport.rtt_ms().items()})
        return topo

    def _rank(self, topo: Topology, leader_id: int) -> None:  # raises RttError
        """Rank this voter among the followers: who should win if the leader dies.

        The leader itself is left out (its election timer does not run while it leads),
        so the best follower gets the earliest slot.
        """
        voter_ids = {m.id for m in topo.voters}
        if self.rng is None or self.member.id not in voter_ids:
            return
        # A follower ranks among the followers. The leader ranks among all voters, so that
        # when it steps down (transfer) it is not left with a stale or uniform range.
        exclude = {leader_id} if leader_id in voter_ids and leader_id != self.member.id else set()
        transport = getattr(self.member, "transport", None)
        if exclude and transport is not None and not transport.connected(leader_id):
            return   # the leader may be failing right now: keep the ranks everyone agreed on
        ranks = topo.quorum_closeness_rank(exclude)   # RttError: the caller tries other RTTs
        n = len(ranks)
        rank = ranks[self.member.id]
        tick_ms = float(getattr(self.cfg, "heartbeat_interval_ms", 100))
        survivors = [m.id for m in topo.voters if m.id not in exclude]
        max_peer = max((topo.rtt_member_ms(a, b) for a in [*exclude, *survivors] for b in survivors), default=0.0)
        best = min(ranks, key=lambda k: ranks[k])
        slot = election_slot_ticks(rank, n, self.election_tick, tick_ms, max_peer,
                                   topo.quorum_rtt_without_ms(best, exclude))
        if self.rng.slot != slot:
            log.info("geo: election rank %d of %d followers (RTT to a quorum without the leader %.0f ms): "
                     "timeout %d..%d ticks", rank, n, topo.quorum_rtt_without_ms(self.member.id, exclude), *slot)
            self.rng.set_slot(*slot)
            self._redraw_election_timeout()

    def _redraw_election_timeout(self) -> None:
        """Make the new slot count now: Raft redraws its timeout only when it resets (term
        change, new role), so ask the driver to redraw it (elapsed ticks are kept)."""
        add = getattr(self.member, "_add_action", None)

        def redraw(rn: Any) -> None:
            raft = getattr(rn, "raft", None)
            fn = getattr(raft, "reset_randomized_election_timeout", None)
            if fn is not None:
                fn()

        if add is not None:
            add(redraw)

    def _check_timeouts(self, topo: Topology, now: float) -> None:
        if now - self._last_warn_s < TIMEOUT_WARN_INTERVAL_S:
            return
        if not topo.voters or self.member.id not in {m.id for m in topo.members}:
            return
        try:
            max_peer = topo.max_peer_rtt_ms(self.member.id)
            quorum = max(topo.quorum_rtt_ms(m.id) for m in topo.voters)
        except RttError:
            return
        need = derive_timeouts(max_peer, quorum)
        el = float(getattr(self.cfg, "election_timeout_ms", 0))
        if el and el < need.election_timeout_ms:
            self._last_warn_s = now
            log.warning("geo: --election-timeout %.0f ms is below the %.0f ms the RTTs call for "
                        "(heartbeat %.0f ms); expect spurious elections", el, need.election_timeout_ms,
                        need.heartbeat_interval_ms)

    def _tune(self, now: float, n_voters: int) -> None:
        """Feed the transport's RTT estimates to the tuner; log when its plan changes.

        The Raft core's ticks are fixed at start, so the plan is advisory (logged, and in
        ``recommended_plan``) until the runtime can retune a live member.
        """
        transport = getattr(self.member, "transport", None)
        if transport is None or n_voters == 0:
            return
        for pid, ms in transport.rtt_ms().items():
            self.tuner.observe_rtt(pid, ms)
        plan = self.tuner.update(now, n_voters)
        if self.tuner.changed:
            log.warning("geo: measured RTTs call for heartbeat %.0f ms, election timeout %.0f ms "
                        "(configured %s / %s ms)", plan.heartbeat_interval_ms, plan.election_timeout_ms,
                        getattr(self.cfg, "heartbeat_interval_ms", "?"), getattr(self.cfg, "election_timeout_ms", "?"))

    @property
    def recommended_plan(self) -> TimeoutPlan:
        return self.tuner.plan

    async def step(self) -> int | None:
        """One evaluation; returns the transfer target if a transfer was started."""
        st = await self._raft_status()
        if st is None:
            return None
        voters = list(st.config.voters)
        learners = list(st.config.learners)
        topo = self.topology(voters, learners)
        now = time.monotonic()
        if topo is not None:
            # Ranks must agree between members, so they come from the shared RTT table;
            # measured RTTs stand in only for pairs the table does not know.
            table_topo = self.topology(voters, learners, measured=False)
            try:
                self._rank(table_topo or topo, st.leader_id)
            except RttError:
                try:
                    self._rank(topo, st.leader_id)
                except RttError:
                    pass   # some pair has no RTT yet: keep the current range
            self._check_timeouts(topo, now)
        self._tune(now, len(voters))
        self._feed_writes(now)
        if not self.member.is_leader or not (self.placement.preference or self.placement.follow_writes):
            return None
        regions = self._regions()
        transport = self.member.transport
        members = []
        for vid in voters + learners:
            pr = st.progress.get(vid)
            match = st.commit if vid == self.member.id else (pr[0] if pr else 0)
            alive = vid == self.member.id or bool(transport is not None and transport.connected(vid))
            members.append(MemberState(id=vid, region=regions.get(vid, ""), voter=vid in voters,
                                       match_index=match, last_heard_s=now if alive else float("-inf"),
                                       alive=alive))
        view = ClusterView(now_s=now, leader_id=st.leader_id, term=st.term, commit_index=st.commit, members=members)
        target = self.placement.decide(view)
        reason = self.placement.last_decision.reason
        kind = reason.split(":")[0].split("(")[0]
        if kind != self._last_reason_kind or now - self._last_reason_log_s > PLACEMENT_LOG_INTERVAL_S:
            self._last_reason_kind = kind
            self._last_reason_log_s = now
            log.info("geo: placement: %s [commit %d; %s]", reason, st.commit, ", ".join(
                f"{regions.get(m.id, '?')} match {m.match_index}{'' if m.alive else ' unreachable'}" for m in members))
        if target is None:
            return None
        log.warning("geo: moving leadership to %x (%s): %s", target, regions.get(target, "?"),
                    self.placement.last_decision.reason)
        self.transfers += 1
        try:
            await self.member.move_leader(target, timeout_s=MOVE_LEADER_TIMEOUT_S)
        except Exception as e:
            log.warning("geo: leadership transfer to %x failed: %r", target, e)
        self.placement.note_transfer(time.monotonic())
        return target
