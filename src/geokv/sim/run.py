"""One simulated run: cluster, clients, nemesis, the two phases, and the final checks.

Phase 1 (safety, ``safety_ms``): clients write and read while the nemesis injects
faults; the checkers watch every step. Phase 2 (liveness): every fault is healed, and
within ``liveness_ms_max`` a leader must be elected and a new write must commit. Then
the replicas get ``settle_ms`` to converge, every acknowledged write must be present on
every replica that applied past it, and the client history must be linearizable.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import deque
from dataclasses import dataclass

from geokv.raft.types import ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType
from geokv.raft.types import ConfState, StateRole

from . import partitions
from .checkers import SafetyChecker, SafetyViolation
from .config import RunResult, SimConfig
from .linearizability import CheckerBoundExceeded, Op, check_history
from .network import Network, NetworkParams
from .node import CRASHED, PAUSED, RUNNING, STOPPED, SimNode, describe_conf_change
from .scheduler import Scheduler, SimulationLimitExceeded
from .statemachine import encode_write

#: Trace lines kept for a failure report (the tail of the run).
TRACE_LINES_MAX = 300
#: Bound on client operations per run (keeps the linearizability check small).
CLIENT_OPS_MAX = 4000
#: Interval at which the liveness phase retries its probe write.
PROBE_RETRY_MS = 1000.0
#: Leader churn ("figure8" profile; see Simulation._on_new_leader): share of new leaders
#: cut off at once (before their first appends leave), share given 8x longer before
#: they are churned, share cut off when their commit index first moves in their term,
#: and how long a churned leader stays cut off or down (election timeouts, uniform).
CHURN_AT_ONCE = 0.5
CHURN_LONGER_TERM = 0.2
CHURN_AT_FIRST_COMMIT = 0.8
CHURN_DOWN_ELECTIONS = (1.0, 6.0)


class LivenessFailure(Exception):
    pass


class HistoryViolation(Exception):
    pass


@dataclass(slots=True, eq=False)
class ClientOp:
    op: Op
    client: int
    node_id: int
    write_id: int = 0
    data: bytes = b""
    read_ctx: bytes = b""
    done: bool = False
    is_probe: bool = False
    #: When the op completes, the client issues its next one (False: the caller drives).
    chain: bool = True


class Simulation:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.sched = Scheduler(cfg.seed)
        master = self.sched.rng
        self.rng_net = random.Random(master.getrandbits(64))
        self.rng_nemesis = random.Random(master.getrandbits(64))
        self.rng_client = random.Random(master.getrandbits(64))
        self.rng_nodes = random.Random(master.getrandbits(64))
        self.checker = SafetyChecker()
        self.nodes: dict[int, SimNode] = {}
        self.net = Network(
            self.sched, self.rng_net, {}, self._deliver,
            NetworkParams(loss_rate=cfg.loss_rate, dup_rate=cfg.dup_rate,
                          reorder_rate=cfg.reorder_rate),
        )
        self.trace_lines: deque[str] = deque(maxlen=TRACE_LINES_MAX)
        self.fault_log: list[str] = []
        self.history: list[ClientOp] = []
        self.acked: dict[int, tuple[int, int]] = {}   # write id -> (node, applied index)
        self.next_write_id = 1
        self.next_op_id = 1
        self.phase = "safety"
        self.leader_seen: dict[int, int] = {}          # term -> leader (for the trace)
        #: term -> its leader's commit index when elected (-1 once it advanced).
        self.leader_first_commit: dict[int, int] = {}
        self.conf_index_max = 0
        self.members_ever: set[int] = set()
        self.partition_epoch = 0
        self.probe_acked_at: float | None = None
        self.probe_ops: list[ClientOp] = []
        self.crashes = 0
        self.snapshots_installed = 0
        self.next_node_id = cfg.n_voters + 1
        self.client_node: dict[int, int] = {}          # client -> the server it talks to

        voters = tuple(range(1, cfg.n_voters + 1))
        for nid in voters:
            self._add_node(nid, voters)
        self.members_ever.update(voters)
        self.conf_index_max = len(voters)  # the bootstrap entries

    # --- plumbing ---------------------------------------------------------------------
    def trace(self, line: str) -> None:
        self.trace_lines.append(f"t={self.sched.now_ms:9.1f} {line}")

    def fault(self, line: str) -> None:
        entry = f"t={self.sched.now_ms:9.1f} {line}"
        self.fault_log.append(entry)
        self.trace_lines.append(entry)

    def _add_node(self, nid: int, initial_voters: tuple[int, ...]) -> SimNode:
        cfg = self.cfg
        rng = self.rng_nodes
        drift = 0.0
        if cfg.drift_max:
            # Half the nodes sit at the edge of the drift bound: that is where leases break.
            drift = (rng.choice((-cfg.drift_max, cfg.drift_max)) if rng.random() < 0.5
                     else rng.uniform(-cfg.drift_max, cfg.drift_max))
        node = SimNode(self, nid, rng.choice(cfg.regions), initial_voters,
                       tick_ms=cfg.tick_ms * (1.0 + drift),
                       fsync_ms=rng.uniform(0.1, cfg.fsync_ms_max),
                       rng_seed=rng.getrandbits(64))
        self.nodes[nid] = node
        self.net.placement[nid] = node.region
        node.start()
        return node

    def _deliver(self, to: int, frm: int, payload: bytes) -> None:
        node = self.nodes.get(to)
        if node is None:
            self.net.stats.dropped_dead += 1
            return
        node.on_payload(frm, payload)

    def note_leader(self, nid: int, term: int, commit: int) -> None:
        """Called in ``nid``'s driver turn while it leads ``term``, before it sends the
        turn's messages; ``commit`` is its commit index now."""
        first = self.leader_first_commit.get(term)
        if first is None:
            self.leader_seen[term] = nid
            self.leader_first_commit[term] = commit
            self.trace(f"n{nid} became leader of term {term}")
            self._on_new_leader(nid, term)
        elif first >= 0 and commit > first:
            self.leader_first_commit[term] = -1
            self._on_leader_first_commit(nid, term)

    def leader(self) -> SimNode | None:
        best = None
        for node in self.nodes.values():
            if node.status == RUNNING and node.rawnode.role == StateRole.LEADER:
                if best is None or node.rawnode.term > best.rawnode.term:
                    best = node
        return best

    def on_conf_applied(self, node: SimNode, index: int, cc: ConfChange, cs: ConfState) -> None:
        if index <= self.conf_index_max:
            return
        self.conf_index_max = index
        members = set(cs.voters) | set(cs.learners) | set(cs.voters_outgoing) | set(cs.learners_next)
        self.trace(f"config at {index} ({describe_conf_change(cc)}): voters={list(cs.voters)} "
                   f"learners={list(cs.learners)} outgoing={list(cs.voters_outgoing)}")
        for nid in sorted(self.members_ever - members):
            self.members_ever.discard(nid)
            self.sched.after(0.0, self._retire, nid)
        self.members_ever |= members

    def _retire(self, nid: int) -> None:
        node = self.nodes.get(nid)
        if node is not None and not node.removed:
            self.fault(f"n{nid} removed from the cluster: shuts down")
            node.stop_forever()

    # --- clients ----------------------------------------------------------------------
    def _start_clients(self) -> None:
        for c in range(1, self.cfg.clients + 1):
            self.sched.after(self.rng_client.uniform(0, 200), self._client_next, c)

    def _pick_node(self, client: int) -> SimNode | None:
        """Clients stick to one server (as real clients keep a connection) and switch
        after a failure, or now and then; a new pick is the leader half of the time."""
        rng = self.rng_client
        sticky = self.nodes.get(self.client_node.get(client, 0))
        if sticky is not None and sticky.status != STOPPED and rng.random() < 0.9:
            return sticky
        node = self.leader() if rng.random() < 0.5 else None
        if node is None:
            candidates = [n for n in self.nodes.values() if n.status != STOPPED]
            node = rng.choice(candidates) if candidates else None
        if node is not None:
            self.client_node[client] = node.id
        return node

    def _client_next(self, client: int) -> None:
        if self.phase != "safety" or len(self.history) >= CLIENT_OPS_MAX:
            return
        rng = self.rng_client
        node = self._pick_node(client)
        if node is None:
            return
        key = f"k{rng.randrange(self.cfg.keys)}"
        if rng.random() < self.cfg.write_fraction:
            op = self._new_write(client, key, node.id)
        else:
            op = self._new_read(client, key, node.id)
        self._submit(op, node)

    def _new_write(self, client: int, key: str, nid: int) -> ClientOp:
        wid = self.next_write_id
        self.next_write_id += 1
        op = Op(self.next_op_id, client, "w", key, wid, 0, None)
        self.next_op_id += 1
        return ClientOp(op, client, nid, write_id=wid, data=encode_write(wid, key, wid))

    def _new_read(self, client: int, key: str, nid: int) -> ClientOp:
        op = Op(self.next_op_id, client, "r", key, None, 0, None)
        ctx = b"r%d" % self.next_op_id
        self.next_op_id += 1
        return ClientOp(op, client, nid, read_ctx=ctx)

    def _submit(self, cop: ClientOp, node: SimNode) -> None:
        cop.op.call = self.sched.next_seq()
        if not node.submit(cop):
            cop.done = True  # connection refused: the request never left the client
            self.client_node.pop(cop.client, None)
            self._client_idle(cop)
            return
        self.history.append(cop)
        self.sched.after(self.cfg.client_timeout_ms, self._client_timeout, cop)

    def _client_idle(self, cop: ClientOp) -> None:
        if cop.chain and not cop.is_probe:
            self.sched.after(self.rng_client.uniform(0, self.cfg.think_ms_max),
                             self._client_next, cop.client)

    def _client_timeout(self, cop: ClientOp) -> None:
        if cop.done:
            return
        node = self.nodes[cop.node_id]
        node.forget_client_op(cop)
        if cop.op.kind == "w":
            self.client_write_unknown(cop)
        else:
            self.client_read_failed(cop)

    def client_write_acked(self, cop: ClientOp, nid: int, index: int) -> None:
        if cop.done:
            return
        cop.done = True
        cop.op.ret = self.sched.next_seq()
        self.acked[cop.write_id] = (nid, index)
        if cop.is_probe and self.probe_acked_at is None:
            self.probe_acked_at = self.sched.now_ms
            self.trace(f"liveness write {cop.write_id} acked by n{nid} at index {index}")
        self._client_idle(cop)

    def client_write_unknown(self, cop: ClientOp) -> None:
        if cop.done:
            return
        self.client_node.pop(cop.client, None)
        cop.done = True
        cop.op.ret = None  # may or may not take effect
        self._client_idle(cop)

    def client_write_failed(self, cop: ClientOp) -> None:
        """Definitely not applied (refused before entering any log)."""
        if cop.done:
            return
        self.client_node.pop(cop.client, None)
        cop.done = True
        cop.op.ret = -1
        self._client_idle(cop)

    def client_read_done(self, cop: ClientOp, value: int | None, nid: int, index: int) -> None:
        if cop.done:
            return
        cop.done = True
        cop.op.value = value
        cop.op.ret = self.sched.next_seq()
        self._client_idle(cop)

    def client_read_failed(self, cop: ClientOp) -> None:
        if cop.done:
            return
        self.client_node.pop(cop.client, None)
        cop.done = True
        cop.op.ret = -1
        self._client_idle(cop)

    # --- nemesis ----------------------------------------------------------------------
    def _plan_faults(self) -> None:
        cfg = self.cfg
        if not cfg.faults or not cfg.fault_kinds:
            return
        rng = self.rng_nemesis
        t = 300.0
        end = cfg.safety_ms - 300.0
        while True:
            t += rng.expovariate(1.0 / cfg.fault_mean_interval_ms)
            if t >= end:
                break
            kind = rng.choice(cfg.fault_kinds)
            duration = rng.uniform(100.0, 3500.0)
            self.sched.at(t, self._inject, kind, duration)

    def _plan_churn(self) -> None:
        if self.cfg.faults and self.cfg.leader_churn_ms > 0:
            self.sched.at(300.0, self._churn_tick)

    def _churn_tick(self) -> None:
        """Leader churn keeps a majority up (it must depose leaders, not stop the
        cluster for good); the cut-offs themselves follow elections (_on_new_leader)."""
        if self.phase != "safety":
            return
        self._keep_majority_up()
        self.sched.after(self.cfg.leader_churn_ms, self._churn_tick)

    def _on_new_leader(self, nid: int, term: int) -> None:
        cfg = self.cfg
        if (cfg.leader_churn_ms <= 0 or not cfg.faults or self.phase != "safety"
                or self.sched.now_ms >= cfg.safety_ms - 300.0):
            return
        rng = self.rng_nemesis
        # Half are cut off at once, before their empty entry leaves (this is called in
        # the node's driver turn before it sends that Ready, and a partition drops
        # messages at send time): their log keeps a suffix of their term that nobody
        # else has (Figure 8's S1 in (b), S5 in (c)). The others go a few round trips
        # into their term, while they replicate their predecessors' entries (one per
        # append in the figure8 profile) and their own empty entry; now and then one
        # leads longer and its clients commit more.
        u = rng.random()
        if u < CHURN_AT_ONCE:
            self._churn(nid, term, cut_only=True)
            return
        span = cfg.leader_churn_ms * (8.0 if u > 1.0 - CHURN_LONGER_TERM else 1.0)
        self.sched.after(rng.uniform(0.0, span), self._churn, nid, term)

    def _on_leader_first_commit(self, nid: int, term: int) -> None:
        """A leader advanced its commit index for the first time in its term (what a
        nemesis watching the leader's metrics sees): cutting it off now, before the
        appends that carry the new commit index leave, is the last step of Figure 8."""
        cfg = self.cfg
        if (cfg.leader_churn_ms <= 0 or not cfg.faults or self.phase != "safety"
                or self.sched.now_ms >= cfg.safety_ms - 300.0):
            return
        if self.rng_nemesis.random() < CHURN_AT_FIRST_COMMIT:
            self._churn(nid, term, cut_only=True)

    def _churn(self, nid: int, term: int, cut_only: bool = False) -> None:
        """Cut off or crash ``nid`` if it still leads ``term`` (``cut_only``: inside the
        node's driver turn, where only the network may change)."""
        if self.phase != "safety":
            return
        leader = self.nodes.get(nid)
        if (leader is None or leader.status != RUNNING
                or leader.rawnode.role != StateRole.LEADER or leader.rawnode.term != term):
            return
        rng = self.rng_nemesis
        cfg = self.cfg
        down_ms = rng.uniform(*CHURN_DOWN_ELECTIONS) * cfg.election_tick * cfg.tick_ms
        action = 0.0 if cut_only else rng.random()
        if action < 0.5:
            # Cut the leader off with at most a minority while its clients keep writing
            # to it: a suffix of its term that a majority lacks.
            nodes = sorted(n.id for n in self.nodes.values() if n.status != STOPPED)
            others = [n for n in nodes if n != nid]
            k = rng.randint(0, max(0, (len(nodes) - 1) // 2 - 1))
            side = sorted([nid] + rng.sample(others, k))
            rest = [n for n in nodes if n not in side]
            if not rest:
                return
            self.net.set_blocked(partitions.cut(side, rest))
            self.partition_epoch += 1
            self.fault(f"churn: partition {side} (leader n{nid} of term {term}) | {rest} "
                       f"for {down_ms:.0f}ms")
            self.sched.after(down_ms, self._heal_partition, self.partition_epoch)
        elif action < 0.75:
            # Right after an append: its messages are out, the fsync is in progress.
            leader.crash_on_fsync = down_ms
            self.fault(f"churn: arm crash of leader n{nid} of term {term} during its next fsync")
        else:
            self._crash(leader, down_ms, f"churn (leader of term {term}): ")

    def _keep_majority_up(self) -> None:
        """Restart crashed members until a majority of the voters is up (the churn
        must depose leaders, not stop the cluster for good)."""
        voters = next((n.conf_state.voters for n in self.nodes.values() if n.up),
                      tuple(self.nodes))
        down = sorted(n.id for n in self.nodes.values() if n.status == CRASHED and not n.removed)
        up = sum(1 for v in voters if v in self.nodes and self.nodes[v].up)
        rng = self.rng_nemesis
        while down and up <= len(voters) // 2:
            self._restart(down.pop(rng.randrange(len(down))))
            up += 1

    def _inject(self, kind: str, duration_ms: float) -> None:
        if self.phase != "safety":
            return
        rng = self.rng_nemesis
        up = [n for n in self.nodes.values() if n.up]
        if kind == "partition":
            nodes = sorted(n.id for n in self.nodes.values() if n.status != STOPPED)
            if len(nodes) < 2:
                return
            leader = self.leader()
            if leader is not None and rng.random() < 0.3:
                # Cut the leader off while its clients keep writing to it: its log grows
                # a suffix nobody else has, which the next leader must overwrite.
                links, desc = partitions.isolate_node(nodes, leader.id)
                desc += " (the leader)"
            else:
                shape = rng.choice(sorted(partitions.SHAPES))
                links, desc = partitions.SHAPES[shape](nodes, rng)
            self.net.set_blocked(links)
            self.partition_epoch += 1
            self.fault(f"partition {desc} for {duration_ms:.0f}ms")
            self.sched.after(duration_ms, self._heal_partition, self.partition_epoch)
        elif kind in ("crash", "crash_leader"):
            target = self.leader() if kind == "crash_leader" else None
            if target is None:
                if not up:
                    return
                target = rng.choice(up)
            if rng.random() < 0.5:
                # Crash inside the target's next fsync: that is where lost writes hide.
                target.crash_on_fsync = duration_ms
                self.fault(f"arm crash of n{target.id} during its next fsync")
            else:
                self._crash(target, duration_ms)
        elif kind == "power_loss":
            # Several servers lose power at the same instant (a rack or a region).
            if not up:
                return
            k = rng.randint(max(1, len(up) // 2), len(up))
            for target in sorted(rng.sample(up, k), key=lambda n: n.id):
                self._crash(target, duration_ms, "power loss: ")
        elif kind == "pause":
            running = [n for n in up if n.status == RUNNING]
            if not running:
                return
            target = rng.choice(running)
            target.pause()
            self.fault(f"pause n{target.id} for {duration_ms:.0f}ms")
            self.sched.after(duration_ms, self._resume, target.id, target.epoch)
        elif kind == "clog":
            if not up:
                return
            target = rng.choice(up)
            until = self.sched.now_ms + duration_ms * 0.5
            outgoing = rng.random() < 0.5
            for other in self.nodes:
                if other != target.id:
                    if outgoing:
                        self.net.clog(target.id, other, until)
                    else:
                        self.net.clog(other, target.id, until)
            self.fault(f"clog {'out of' if outgoing else 'into'} n{target.id} "
                       f"for {duration_ms * 0.5:.0f}ms")
        elif kind == "member":
            self._membership_change()
        elif kind == "transfer":
            leader = self.leader()
            if leader is None:
                return
            voters = [v for v in leader.conf_state.voters if v != leader.id]
            if not voters:
                return
            target = rng.choice(voters)
            self.fault(f"transfer leadership n{leader.id} -> n{target}")
            leader.admin("transfer", target)

    def _membership_change(self) -> None:
        rng = self.rng_nemesis
        leader = self.leader()
        if leader is None:
            return
        cs = leader.conf_state
        voters, learners = list(cs.voters), list(cs.learners)
        A, R, L = ConfChangeType.ADD_NODE, ConfChangeType.REMOVE_NODE, ConfChangeType.ADD_LEARNER
        if cs.voters_outgoing and not cs.auto_leave:
            cc = ConfChange()
            self.fault(f"member change via n{leader.id}: leave joint config")
            leader.admin("conf", cc)
            return
        if cs.voters_outgoing:
            return  # auto-leave in progress
        # (option, weight): joint changes are weighted up, they are where bugs hide.
        room = len(self.nodes) < self.cfg.nodes_max
        options = [
            ("add_learner", 2 if room else 0),
            ("promote", 1 if learners and len(voters) < 7 else 0),
            ("remove_voter", 1 if len(voters) > 3 else 0),
            ("remove_learner", 1 if learners else 0),
            ("replace_joint", 3 if learners and len(voters) >= 3 else 0),
            ("swap_new_voter_joint", 2 if room and len(voters) >= 3 else 0),
        ]
        options = [(o, w) for o, w in options if w]
        if not options:
            return
        choice = rng.choices([o for o, _ in options], [w for _, w in options])[0]
        transition = ConfChangeTransition.AUTO
        if choice in ("add_learner", "swap_new_voter_joint"):
            nid = self.next_node_id
            self.next_node_id += 1
            self._add_node(nid, ())
        if choice == "add_learner":
            changes = (ConfChangeSingle(L, nid),)
        elif choice == "promote":
            changes = (ConfChangeSingle(A, rng.choice(learners)),)
        elif choice == "remove_voter":
            changes = (ConfChangeSingle(R, rng.choice(voters)),)
        elif choice == "remove_learner":
            changes = (ConfChangeSingle(R, rng.choice(learners)),)
        else:
            incoming = nid if choice == "swap_new_voter_joint" else rng.choice(learners)
            changes = (ConfChangeSingle(A, incoming), ConfChangeSingle(R, rng.choice(voters)))
            transition = rng.choice(list(ConfChangeTransition))
        cc = ConfChange(changes, transition)
        self.fault(f"member change via n{leader.id}: {describe_conf_change(cc)}")
        leader.admin("conf", cc)

    def _crash(self, target: SimNode, duration_ms: float, why: str = "") -> None:
        what = target.crash()
        self.crashes += 1
        self.fault(f"{why}crash n{target.id} ({what}) for {duration_ms:.0f}ms")
        self.sched.after(duration_ms, self._restart, target.id)

    def crash_armed(self, target: SimNode, epoch: int, duration_ms: float) -> None:
        if target.epoch == epoch and target.up and self.phase == "safety":
            self._crash(target, duration_ms, "armed: ")

    def _heal_partition(self, epoch: int) -> None:
        if epoch == self.partition_epoch and self.net.blocked:
            self.net.set_blocked(set())
            self.fault("partition healed")

    def _restart(self, nid: int) -> None:
        node = self.nodes[nid]
        if node.status == CRASHED and not node.removed:
            node.restart()
            self.fault(f"restart n{nid}")

    def _resume(self, nid: int, epoch: int) -> None:
        node = self.nodes[nid]
        if node.status == PAUSED and node.epoch == epoch:
            node.resume()
            self.fault(f"resume n{nid}")

    def _heal_everything(self) -> None:
        self.phase = "liveness"
        self.net.heal()
        p = self.net.params
        p.loss_rate = p.dup_rate = p.reorder_rate = 0.0
        for node in self.nodes.values():
            if node.status == CRASHED and not node.removed:
                node.restart()
            elif node.status == PAUSED:
                node.resume()
        self.fault("heal everything: liveness phase starts")

    def _probe(self) -> None:
        if self.probe_acked_at is not None:
            return
        node = self.leader()
        if node is None:
            up = [n for n in self.nodes.values() if n.status == RUNNING]
            if not up:
                return
            node = self.rng_client.choice(up)
        cop = self._new_write(0, "probe", node.id)
        cop.is_probe = True
        self.probe_ops.append(cop)
        self._submit(cop, node)
        self.sched.after(PROBE_RETRY_MS, self._probe)

    # --- the run ----------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        wall0 = time.perf_counter()
        res = RunResult(seed=cfg.seed, ok=True, config=cfg.summary())
        try:
            self._plan_faults()
            self._plan_churn()
            self._start_clients()
            self.sched.run_until(cfg.safety_ms)
            self._heal_everything()
            heal_at = self.sched.now_ms
            self.sched.after(0.0, self._probe)
            deadline = heal_at + cfg.liveness_ms_max
            self.sched.run_until(deadline, lambda: self.probe_acked_at is not None)
            if self.probe_acked_at is None:
                leader = self.leader()
                raise LivenessFailure(
                    f"liveness: no write committed within {cfg.liveness_ms_max:.0f}ms after "
                    f"healing (leader now: {'none' if leader is None else f'n{leader.id}'}; "
                    f"roles: {self._roles()})")
            res.liveness_ms = self.probe_acked_at - heal_at
            self.sched.run_until(self.sched.now_ms + cfg.settle_ms)
            self._final_checks()
        except SafetyViolation as exc:
            res.ok, res.failure, res.failure_kind = False, str(exc), "safety"
        except (LivenessFailure, HistoryViolation, CheckerBoundExceeded) as exc:
            res.ok, res.failure = False, str(exc)
            res.failure_kind = {LivenessFailure: "liveness", HistoryViolation: "history",
                                CheckerBoundExceeded: "checker-bound"}[type(exc)]
        except SimulationLimitExceeded as exc:
            res.ok, res.failure, res.failure_kind = False, str(exc), "limit"
        except Exception as exc:  # an assert or crash in the code under test is a finding
            kind = "assertion" if isinstance(exc, AssertionError) else "exception"
            res.ok, res.failure_kind = False, kind
            res.failure = f"{type(exc).__name__}: {exc} at {_where(exc)}"
        res.virtual_ms = self.sched.now_ms
        res.events = self.sched.events_run
        res.wall_s = time.perf_counter() - wall0
        res.ops_acked = sum(1 for c in self.history if c.op.kind == "w" and c.op.ret not in (None, -1))
        res.ops_unknown = sum(1 for c in self.history if c.op.kind == "w" and c.op.ret is None)
        res.reads_done = sum(1 for c in self.history if c.op.kind == "r" and c.op.ret not in (None, -1))
        res.leaders = len(self.leader_seen)
        res.crashes = self.crashes
        res.fault_log = list(self.fault_log)
        res.trace_tail = list(self.trace_lines)
        res.net = self.net.stats.as_dict()
        return res

    def _roles(self) -> str:
        return ", ".join(f"n{n.id}:{n.role_name()}" for n in self.nodes.values())

    def _final_checks(self) -> None:
        # No acknowledged write is lost: every live replica that applied past the index
        # at which a write was acknowledged holds that write.
        for node in self.nodes.values():
            if not node.up:
                continue
            sm = node.sm
            for wid, (nid, index) in self.acked.items():
                if index <= sm.applied_index and wid not in sm.applied_ids:
                    raise HistoryViolation(
                        f"acknowledged write {wid} (applied by n{nid} at index {index}) is "
                        f"missing on n{node.id}, which applied up to {sm.applied_index}")
        ops = [c.op for c in self.history
               if (c.op.kind == "w" and c.op.ret != -1)
               or (c.op.kind == "r" and c.op.ret is not None and c.op.ret != -1)]
        msg = check_history(ops)
        if msg is not None:
            raise HistoryViolation(f"linearizability: {msg}")


def _where(exc: BaseException) -> str:
    """The innermost frames of a traceback, as 'file:line in func' (for reports)."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                       for f in reversed(frames))


def run_seed(seed: int, *, faults: bool = True) -> RunResult:
    return Simulation(SimConfig.generate(seed, faults=faults)).run()
