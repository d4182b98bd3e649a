"""Throughput of the pure Raft core: a 3-node in-memory cluster, no I/O at all.

Each node has a MemoryStorage; messages are handed from node to node in-process.
Modes:
  batched    the leader takes ``batch`` proposals, then one Ready/advance cycle runs
             for the whole batch (what the runtime does under load);
  unbatched  one proposal, then full Ready/advance cycles until all three applied it
             (the reference, measured in the same run).
Counted: entries applied on all three nodes per second of wall time.

Usage: python bench/bench_raft.py [--entries N] [--batch B ...] [--payload BYTES]
       [--profile]
Prints a table and a final line: RESULT {...json...}
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import time

from geokv.raft import Config, ConfState, MemoryStorage, RawNode, StateRole

#: Safety bound on Ready cycles per batch (a stuck cluster fails instead of hanging).
MAX_CYCLES_PER_BATCH = 10_000


class Cluster:
    def __init__(self, n: int = 3, seed: int = 1) -> None:
        cs = ConfState(voters=tuple(range(1, n + 1)))
        self.storages = {i: MemoryStorage(cs) for i in range(1, n + 1)}
        self.nodes = {
            i: RawNode(Config(id=i, rng=random.Random(seed + i), max_inflight_msgs=256,
                              max_size_per_msg=4 << 20, max_committed_size_per_ready=64 << 20),
                       self.storages[i])
            for i in range(1, n + 1)
        }
        self.applied = {i: 0 for i in self.nodes}
        self.nodes[1].campaign()
        self.run_until(lambda: self.nodes[1].raft.state == StateRole.LEADER
                       and self.all_applied(self.nodes[1].raft.raft_log.committed))
        self.leader = self.nodes[1]

    def all_applied(self, index: int) -> bool:
        return all(rn.raft.raft_log.applied >= index for rn in self.nodes.values())

    def cycle(self) -> bool:
        """One Ready/advance turn on every node, then deliver; False if idle."""
        nodes = self.nodes
        storages = self.storages
        outbox = []
        busy = False
        for i, rn in nodes.items():
            if not rn.has_ready():
                continue
            busy = True
            rd = rn.ready()
            outbox += rd.messages
            st = storages[i]
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            outbox += rd.persisted_messages
            if rd.committed_entries:
                self.applied[i] += len(rd.committed_entries)
            rn.advance(rd)
        for m in outbox:
            nodes[m.to].step(m)
        return busy or bool(outbox)

    def run_until(self, cond) -> int:
        cycles = 0
        while not cond():
            if not self.cycle():
                # Idle but not done: a heartbeat round moves acks/commit along.
                for rn in self.nodes.values():
                    rn.tick()
            cycles += 1
            if cycles > MAX_CYCLES_PER_BATCH:
                raise RuntimeError("cluster made no progress")
        return cycles


def run_mode(entries: int, batch: int, payload: bytes, use_batch_api: bool) -> dict:
    c = Cluster()
    leader = c.leader
    log = leader.raft.raft_log
    start_index = log.last_index()
    target = start_index + entries
    cycles = 0
    t0 = time.perf_counter()
    proposed = 0
    while proposed < entries:
        k = min(batch, entries - proposed)
        if use_batch_api:
            leader.propose_batch([payload] * k)
        else:
            for _ in range(k):
                leader.propose(payload)
        proposed += k
        want = start_index + proposed
        cycles += c.run_until(lambda: c.all_applied(want))
    elapsed = time.perf_counter() - t0
    assert c.all_applied(target)
    # Every node applied the same entries.
    logs = {i: c.storages[i].last_index() for i in c.storages}
    assert len(set(logs.values())) == 1, logs
    return {"entries": entries, "batch": batch, "api": "propose_batch" if use_batch_api
            else "propose", "seconds": elapsed, "entries_per_s": entries / elapsed,
            "cycles": cycles}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--unbatched-entries", type=int, default=5_000)
    ap.add_argument("--batch", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--payload", type=int, default=64, help="bytes per entry")
    ap.add_argument("--profile", action="store_true", help="cProfile the 1024 batch run")
    args = ap.parse_args(argv)
    if args.entries <= 0 or args.unbatched_entries <= 0 or args.payload < 0:
        ap.error("entries must be positive and payload non-negative")
    if any(b <= 0 for b in args.batch):
        ap.error("batch sizes must be positive")
    payload = b"x" * args.payload

    rows = [run_mode(args.unbatched_entries, 1, payload, False)]
    for b in args.batch:
        rows.append(run_mode(args.entries, b, payload, False))
    rows.append(run_mode(args.entries, max(args.batch), payload, True))

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_mode(args.entries // 4, max(args.batch), payload, False)
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(18)

    ref = rows[0]["entries_per_s"]
    print(f"{'mode':<10} {'batch':>6} {'api':<14} {'entries':>8} {'seconds':>8} "
          f"{'entries/s':>11} {'vs ref':>7}")
    for r in rows:
        mode = "unbatched" if r["batch"] == 1 else "batched"
        print(f"{mode:<10} {r['batch']:>6} {r['api']:<14} {r['entries']:>8} "
              f"{r['seconds']:>8.3f} {r['entries_per_s']:>11,.0f} "
              f"{r['entries_per_s'] / ref:>6.1f}x")
    best = max(rows[1:], key=lambda r: r["entries_per_s"])
    result = {
        "bench": "raft_core_3node_inmemory",
        "payload_bytes": args.payload,
        "reference_unbatched_entries_per_s": round(ref),
        "batched": {f"{r['api']}_{r['batch']}": round(r["entries_per_s"]) for r in rows[1:]},
        "best_batched_entries_per_s": round(best["entries_per_s"]),
        "speedup_vs_unbatched": round(best["entries_per_s"] / ref, 1),
        "goal_entries_per_s": 200_000,
        "goal_met": best["entries_per_s"] >= 200_000,
    }
    print("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
