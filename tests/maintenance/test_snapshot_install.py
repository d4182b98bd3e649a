"""A follower that catches up by installing the leader's snapshot keeps its watchers
correct (the watch hub is told the store was replaced) and has the alarm list it
missed (the alarm table is part of the store snapshot). In-process members on loopback: real transport, WAL and LMDB; the partition is
the follower dropping every inbound Raft message, as a lossy network would."""

from __future__ import annotations

import asyncio
import time

import pytest

from geokv import errors
from geokv.kv.types import Compact, Put, Range
from geokv.runtime.alarms import ACTION_ACTIVATE, ACTION_DEACTIVATE, ALARM_CORRUPT, ALARM_NOSPACE
from geokv.testing.inproc import InProcCluster

TEST_TIMEOUT_S = 60.0
WRITES_WHILE_CUT = 60
CATCH_UP_TIMEOUT_S = 20.0
WATCH_WAIT_S = 10.0


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT_S)
    return asyncio.run(bounded())


async def _drain(w, upto: int, timeout_s: float) -> list:
    """Events of watcher ``w`` until revision ``upto`` has been delivered."""
    got = []
    deadline = time.monotonic() + timeout_s
    while w.next_rev <= upto:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"watcher stuck at revision {w.next_rev}, wanted {upto}"
        batch = await w.next_batch(timeout_s=remaining)
        if batch is not None:
            got.extend(batch[0])
    return got


async def _wait_for(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def test_follower_installing_a_snapshot_keeps_watchers_and_alarms_correct(tmp_path):
    async def main():
        c = InProcCluster(3, str(tmp_path), snapshot_count=20)
        await c.start()
        try:
            for i in range(3):  # a short WAL tail, so a lagging follower needs a snapshot
                await c.stop_member(i)
                await c.start_member(i, snapshot_catchup_entries=5)
            leader = await c.wait_leader()
            f = next(m for m in c.members if m is not leader)
            first = await leader.propose(Put(b"w/start", b"0"))
            await leader.alarms(ACTION_ACTIVATE, f.id, ALARM_CORRUPT)
            await c.wait_applied(leader.applied_index)
            assert f.alarm_list() == [(f.id, ALARM_CORRUPT)]

            live = f.watch_hub.subscribe(b"w/", b"w0")                   # from now
            old = f.watch_hub.subscribe(b"w/", b"w0", start_rev=first.revision)  # from the past, never read
            assert live.next_rev == first.revision + 1

            # Cut the follower off; the others write, compact, and change the alarms.
            deliver = f.transport.on_raft
            f.transport.on_raft = lambda msgs: None
            revs = []
            for i in range(WRITES_WHILE_CUT):
                revs.append((await leader.propose(Put(b"w/%03d" % i, b"%d" % i))).revision)
            await leader.propose(Compact(first.revision + 1))
            await leader.alarms(ACTION_DEACTIVATE, f.id, ALARM_CORRUPT)
            await leader.alarms(ACTION_ACTIVATE, leader.id, ALARM_NOSPACE)
            for i in range(30):  # push the alarm entries out of the leader's log
                await leader.propose(Put(b"x/%03d" % i, b"x"))
            assert leader.storage.first_index() > f.applied_index + 1, "the leader's log still has the entries"
            assert f.alarm_list() == [(f.id, ALARM_CORRUPT)]  # stale while cut off

            # Heal: the follower installs a snapshot; no write follows.
            f.transport.on_raft = deliver
            target = leader.applied_index
            await _wait_for(lambda: f.applied_index >= target, CATCH_UP_TIMEOUT_S, "no catch-up")
            assert f.statistics()["snapshots_restored"] >= 1

            # The live watcher gets every event exactly once, in order, with no new write.
            events = await _drain(live, revs[-1], WATCH_WAIT_S)
            assert [e.kv.mod_revision for e in events] == revs
            assert [e.kv.key for e in events] == [b"w/%03d" % i for i in range(WRITES_WHILE_CUT)]
            # A watcher whose start revision was compacted meanwhile is told so.
            with pytest.raises(errors.Compacted):
                await old.next_batch(timeout_s=WATCH_WAIT_S)

            # The alarm list came with the snapshot: nothing to ask of anyone.
            assert f.alarm_list() == [(leader.id, ALARM_NOSPACE)]
            assert await f.alarms() == [(leader.id, ALARM_NOSPACE)]
            for m in c.live():
                with pytest.raises(errors.NoSpace):
                    m.space_gate(300)
            # Alarm commands leave no trace in the keyspace.
            res = await f.read(Range(b"\x00", b"\x00"), mode="linearizable")
            assert {kv.key[:2] for kv in res.kvs} <= {b"w/", b"x/"}

            # Restarted alone (no leader, no one to ask), the follower reads the list
            # from its store.
            idx = c.members.index(f)
            for i in range(3):
                await c.stop_member(i)
            f2 = await c.start_member(idx, snapshot_catchup_entries=5)
            assert f2.alarm_list() == [(leader.id, ALARM_NOSPACE)]
            with pytest.raises(errors.NoSpace):
                f2.space_gate(300)
        finally:
            await c.stop()
    run(main())
