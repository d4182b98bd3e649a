"""The geo side of a server process: timeouts, election ranges and leader placement on a
live Member.

``GeoService(member, cfg)`` is created by the server before ``member.start()``:

* ``install()`` registers an apply observer (``member.apply_observers``) that counts
  applied writes by origin member when follow-the-writes is on.
* ``start()`` runs a task that, every ``PLACEMENT_INTERVAL_S``:
  - timeouts (only when the user set neither --heartbeat-interval nor --election-timeout,
    ``member.timeouts_adjustable``): the leader derives the plan (geo.timeouts) from the
    region RTT table, refined by its measured RTTs and their spread, with hysteresis;
    followers adopt the plan the leader announces in its heartbeats
    (``raft_status().leader_timing``). Lease safety across the change is the Raft core's
    (the leader announces its lease hold); see geokv.raft.raft.
  - election ranges: ranks the voters by RTT to a quorum of the survivors (from the shared
    RTT table, so all members agree) and gives this voter its slot, so the voter closest
    to a quorum wins the election after a leader failure.
  - both go to the Raft node through ``member.set_raft_timing(heartbeat, election, range)``.
  - on the leader only, feeds a ``ClusterView`` to ``LeaderPlacement`` and transfers
    leadership when it says so (``--leader-preference``).

Follow the writes (opt-in): ``--leader-preference follow-writes[,region...]`` counts
applied writes by origin region and moves the leader to the region issuing most of
them (with hysteresis; the listed regions are the fallback while writes are few).

Placement delays are flags (``--leader-return-delay``, ``--leader-cooldown``,
``--follow-writes-dwell``); the GEOKV_* environment variables of earlier versions are
gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgpack

from geokv.raft.types import EntryType

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
from .timeouts import (LAG_SAMPLE_INTERVAL_S, PAUSE_WARMUP_S, PauseStats, RttStats, TimeoutPlan, TimeoutTuner,
                       derive_for_topology, election_slot_ticks)
from .topology import MemberPlacement, Topology
from .wan import RttError, build_rtt_table

log = logging.getLogger("geokv.geo")

STATUS_TIMEOUT_S = 2.0           # wait for the driver to hand over a Raft status
MOVE_LEADER_TIMEOUT_S = 10.0     # one placement transfer
TIMEOUT_WARN_INTERVAL_S = 60.0   # at most one "timeouts too short" warning per interval
PLACEMENT_LOG_INTERVAL_S = 30.0  # repeat an unchanged placement reason this often


class GeoService:
    def __init__(self, member: Any, cfg: Any) -> None:
        self.member = member
        self.cfg = cfg
        preference, follow_writes = parse_placement_spec(getattr(cfg, "leader_preference", "") or "")
        self.placement = LeaderPlacement(
            preference=preference,
            follow_writes=follow_writes,
            return_delay_s=float(getattr(cfg, "leader_return_delay_s", RETURN_DELAY_S_DEFAULT)),
            cooldown_s=float(getattr(cfg, "leader_cooldown_s", COOLDOWN_S_DEFAULT)),
            follow_writes_dwell_s=float(getattr(cfg, "follow_writes_dwell_s", FOLLOW_WRITES_DWELL_S_DEFAULT)),
        )
        try:
            self.table = build_rtt_table(getattr(cfg, "rtt", "") or None)
        except RttError:
            self.table = build_rtt_table(None)
        self.configured_plan = TimeoutPlan(float(getattr(cfg, "heartbeat_interval_ms", 100)),
                                           float(getattr(cfg, "election_timeout_ms", 1000)))
        self.rtt_stats = RttStats()
        self.pauses = PauseStats()
        self._fsync_buckets: list[tuple[float, float]] | None = None   # (bound ms, cumulative count)
        self._lag_task: asyncio.Task[None] | None = None
        self._started_s = time.monotonic()
        self.tuner: TimeoutTuner | None = None     # the leader's plan (auto timeouts only)
        self.plan = self.configured_plan           # the plan this member runs with
        self.slot: tuple[int, int] | None = None   # this voter's election range (ticks)
        self._applied: tuple | None = None         # what set_raft_timing last accepted
        self.timing_changes = 0
        self._task: asyncio.Task[None] | None = None
        self._last_warn_s = -TIMEOUT_WARN_INTERVAL_S
        self.transfers = 0
        self.writes_by_origin: dict[int, int] = {}   # origin member id -> writes applied
        self.write_counter_installed = False
        self._last_reason_kind = ""
        self._last_reason_log_s = 0.0

    # --- wiring -------------------------------------------------------------------------
    def install(self) -> None:
        """Before ``member.start()``: with follow-the-writes on, count applied writes by the
        member (hence region) they came from."""
        if self.placement.follow_writes:
            observers = getattr(self.member, "apply_observers", None)
            if observers is None:
                log.warning("geo: follow-writes is on but the member has no apply observers; "
                            "the leader will follow the static preference only")
                return
            observers.append(self._count_writes)
            self.write_counter_installed = True

    def _count_writes(self, ents: Any) -> None:
        """Apply observer (driver task: cheap, never raises). Entry data of a NORMAL entry
        is msgpack [origin id, request id, command] (runtime/member.py)."""
        counts = self.writes_by_origin
        for e in ents:
            if e.type == EntryType.NORMAL and e.data:
                try:
                    origin = msgpack.unpackb(e.data, raw=False)[0]
                except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData):
                    continue
                if isinstance(origin, int):
                    counts[origin] = counts.get(origin, 0) + 1

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
            self._started_s = time.monotonic()
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="geo-service")
            if getattr(self.member, "timeouts_adjustable", False):
                self._lag_task = loop.create_task(self._probe_loop_lag(), name="geo-loop-lag")

    async def stop(self) -> None:
        for name in ("_task", "_lag_task"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    async def _probe_loop_lag(self) -> None:
        """How late this process's event loop wakes up (CPU starvation, GC): a leader
        sends no heartbeat while its loop is stalled."""
        await asyncio.sleep(PAUSE_WARMUP_S)
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(LAG_SAMPLE_INTERVAL_S)
            now = time.monotonic()
            self.pauses.observe(now, max(0.0, (now - t0 - LAG_SAMPLE_INTERVAL_S) * 1000.0))

    def _observe_fsyncs(self, now: float) -> None:
        """WAL fsyncs since the last step, from the runtime's histogram (the driver waits
        for each one before its next turn)."""
        try:
            from geokv.runtime import metrics

            samples = [s for m in metrics.wal_fsync_seconds.collect() for s in m.samples
                       if s.name.endswith("_bucket")]
        except Exception:
            return
        cur = []
        for smp in samples:
            le = smp.labels.get("le", "")
            bound = float("inf") if le in ("+Inf", "inf") else float(le) * 1000.0
            cur.append((bound, float(smp.value)))
        cur.sort()
        prev, self._fsync_buckets = self._fsync_buckets, cur
        if prev is None or len(prev) != len(cur) or now - self._started_s < PAUSE_WARMUP_S:
            return
        below_prev = below_cur = 0.0
        for (bound, c), (_b, p) in zip(cur, prev):
            n = int((c - below_cur) - (p - below_prev))
            below_cur, below_prev = c, p
            if n > 0:
                self.pauses.observe(now, bound if bound != float("inf") else 10_000.0, n)

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
        return await self.member.raft_status(STATUS_TIMEOUT_S)

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

    def _slot(self, topo: Topology, leader_id: int, election_tick: int) -> tuple[int, int] | None:  # raises RttError
        """This voter's election range among the followers: who should win if the leader
        dies. The leader ranks among all voters (its range matters once it steps down)."""
        voter_ids = {m.id for m in topo.voters}
        if self.member.id not in voter_ids:
            return None
        exclude = {leader_id} if leader_id in voter_ids and leader_id != self.member.id else set()
        transport = getattr(self.member, "transport", None)
        if exclude and transport is not None and not transport.connected(leader_id):
            return self.slot   # the leader may be failing right now: keep the agreed ranks
        ranks = topo.quorum_closeness_rank(exclude)   # RttError: the caller tries other RTTs
        n = len(ranks)
        survivors = [m.id for m in topo.voters if m.id not in exclude]
        best = min(ranks, key=lambda k: ranks[k])
        max_peer = max((topo.rtt_member_ms(a, b) for a in [*exclude, *survivors] for b in survivors), default=0.0)
        skew = 0.0
        for lead in exclude:
            for f in survivors:
                if f != best:
                    skew = max(skew, (topo.rtt_member_ms(lead, f) - topo.rtt_member_ms(lead, best)
                                      - topo.rtt_member_ms(best, f)) / 2.0)
        slot = election_slot_ticks(ranks[self.member.id], n, election_tick, float(self.member.tick_ms),
                                   skew_ms=skew, quorum_rtt_ms=topo.quorum_rtt_without_ms(best, exclude),
                                   max_peer_rtt_ms=max_peer)
        if slot != self.slot:
            log.info("geo: election rank %d of %d (RTT to a quorum without the leader %.0f ms): "
                     "timeout %d..%d ticks of %.0f ms", ranks[self.member.id], n,
                     topo.quorum_rtt_without_ms(self.member.id, exclude), *slot, self.member.tick_ms)
        return slot

    def _check_timeouts(self, topo: Topology, now: float) -> None:
        """User-set timeouts are never changed; warn when the RTTs call for longer ones."""
        if now - self._last_warn_s < TIMEOUT_WARN_INTERVAL_S or not topo.voters:
            return
        try:
            need = derive_for_topology(topo, self.rtt_stats.spread_ms())
        except RttError:
            return
        el = self.configured_plan.election_timeout_ms
        if el < need.election_timeout_ms:
            self._last_warn_s = now
            log.warning("geo: --election-timeout %.0f ms is below the %.0f ms the RTTs call for "
                        "(heartbeat %.0f ms); expect spurious elections", el, need.election_timeout_ms,
                        need.heartbeat_interval_ms)

    def _observe_rtts(self) -> None:
        transport = getattr(self.member, "transport", None)
        if transport is not None:
            for pid, ms in transport.rtt_ms().items():
                self.rtt_stats.observe(pid, ms)

    def _leader_plan(self, table_topo: Topology | None, topo: Topology | None, now: float) -> TimeoutPlan:
        """The leader decides: the table's plan at first (the best estimate before any
        measurement), then the measured RTTs' (p50 for this member's links, the table for
        the others, spread of the measurements), through the tuner's hysteresis."""
        if self.tuner is None:
            if table_topo is None:
                return self.plan
            try:
                initial = derive_for_topology(table_topo)
            except RttError:
                return self.plan
            self.tuner = TimeoutTuner(initial)
            log.info("geo: timeouts from the RTT table: heartbeat %.0f ms, election %.0f ms",
                     initial.heartbeat_interval_ms, initial.election_timeout_ms)
            return initial
        if topo is None:
            return self.tuner.plan
        p50 = self.rtt_stats.p50_ms()
        pause = self.pauses.p99_ms(now)
        if not p50 and not pause:
            return self.tuner.plan      # not enough samples yet: the table's plan stands
        try:
            measured = topo.with_measured({(self.member.id, pid): ms for pid, ms in p50.items()})
            cand = derive_for_topology(measured, self.rtt_stats.spread_ms(), pause)
        except RttError:
            return self.tuner.plan
        plan = self.tuner.offer(now, cand)
        if self.tuner.changed:
            log.warning("geo: measured RTTs (spread %.0f ms) and pauses (p99 %.0f ms) call for "
                        "heartbeat %.0f ms, election timeout %.0f ms", self.rtt_stats.spread_ms(), pause,
                        plan.heartbeat_interval_ms, plan.election_timeout_ms)
        return plan

    def _apply_timing(self, plan: TimeoutPlan, slot: tuple[int, int] | None) -> None:
        key = (plan, slot)
        if key == self._applied:
            return
        try:
            auto = getattr(self.member, "timeouts_adjustable", False)
            self.member.set_raft_timing(plan.heartbeat_interval_ms, plan.election_timeout_ms, slot,
                                        plan.check_quorum_ms if auto else None)
        except ValueError as e:
            log.warning("geo: cannot apply heartbeat %.0f ms / election %.0f ms (range %s): %s",
                        plan.heartbeat_interval_ms, plan.election_timeout_ms, slot, e)
            return
        if self._applied is None or self._applied[0] != plan:
            log.info("geo: Raft timeouts now heartbeat %.0f ms, election %.0f ms",
                     plan.heartbeat_interval_ms, plan.election_timeout_ms)
            self.timing_changes += 1
        self._applied = key
        self.plan, self.slot = plan, slot

    @property
    def recommended_plan(self) -> TimeoutPlan:
        return self.tuner.plan if self.tuner is not None else self.plan

    async def step(self) -> int | None:
        """One evaluation; returns the transfer target if a transfer was started."""
        st = await self._raft_status()
        if st is None:
            return None
        voters = list(st.config.voters)
        learners = list(st.config.learners)
        topo = self.topology(voters, learners)
        # Decisions all members must agree on (ranks) come from the shared RTT table;
        # measured RTTs stand in only for pairs the table does not know.
        table_topo = self.topology(voters, learners, measured=False) if topo is not None else None
        now = time.monotonic()
        self._observe_rtts()
        self._observe_fsyncs(now)
        tick_ms = float(self.member.tick_ms)
        plan = self.plan
        if getattr(self.member, "timeouts_adjustable", False):
            if self.member.is_leader:
                plan = self._leader_plan(table_topo, topo, now)
            elif st.leader_timing[1] > 0:
                plan = TimeoutPlan(st.leader_timing[0] * tick_ms, st.leader_timing[1] * tick_ms)
        elif topo is not None:
            self._check_timeouts(topo, now)
        slot = self.slot
        if topo is not None:
            _hb, election_tick = plan.ticks(tick_ms)
            try:
                slot = self._slot(table_topo or topo, st.leader_id, election_tick)
            except RttError:
                try:
                    slot = self._slot(topo, st.leader_id, election_tick)
                except RttError:
                    pass   # some pair has no RTT yet: keep the current range
            if slot is not None and slot[0] < election_tick:
                slot = None
        self._apply_timing(plan, slot)
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
