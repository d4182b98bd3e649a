"""Defragmentation while clients write and watch: nothing acknowledged is lost, watchers
see every event once, replicas stay identical, and the file shrinks. In-process members
on loopback (real transport, WAL and LMDB)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from geokv import errors
from geokv.kv.types import Compact, DeleteRange, Put, Range
from geokv.runtime.alarms import (ACTION_ACTIVATE, ACTION_DEACTIVATE, ALARM_NOSPACE, put_cost, txn_cost)
from geokv.kv.types import Txn
from geokv.testing.inproc import InProcCluster

TEST_TIMEOUT_S = 60.0
WRITERS = 4
WRITES_PER_WRITER = 60
DEFRAG_ROUNDS = 2


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, TEST_TIMEOUT_S)
    return asyncio.run(bounded())


def test_defragment_under_writes_loses_nothing_and_shrinks_the_file(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            big = b"b" * 8000
            for i in range(100):
                await leader.propose(Put(b"old/%03d" % i, big))
            res = await leader.propose(DeleteRange(b"old/", b"old0"))
            await leader.propose(Compact(res.revision, physical=True))
            await c.wait_applied(leader.applied_index)
            sizes_before = [m.store.db_size() for m in c.members]
            leftover = os.path.join(os.path.dirname(c.members[0].store.path), ".defrag-left-by-a-crash")
            os.makedirs(leftover)
            with open(os.path.join(leftover, "data.mdb"), "wb") as f:
                f.write(b"half a copy")

            watcher = c.members[2].watch_hub.subscribe(b"w/", b"w0")
            acked: dict[bytes, bytes] = {}
            rng = random.Random(7)

            async def writer(n: int) -> None:
                for i in range(WRITES_PER_WRITER):
                    key, value = b"w/%d/%03d" % (n, i), b"%d" % rng.randrange(1 << 30)
                    m = c.members[rng.randrange(3)]
                    await m.propose(Put(key, value))
                    acked[key] = value

            writers = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
            reports = []
            for _ in range(DEFRAG_ROUNDS):
                for m in c.members:
                    reports.append(await m.defragment())
                    # reads on the loop right after the swap see the new environment
                    assert (await m.read(Range(b"old/", b"old0"), mode="serializable")).count == 0
            await asyncio.gather(*writers)
            await c.wait_applied(leader.applied_index)

            for m in c.members:
                got = await m.read(Range(b"w/", b"w0"), mode="serializable")
                assert {kv.key: kv.value for kv in got.kvs} == acked
            assert len({m.store.hash_kv(0) for m in c.members}) == 1
            for before, m in zip(sizes_before, c.members):
                assert m.store.db_size() * 4 < before, (sizes_before, [x.store.db_size() for x in c.members])
                assert os.path.getsize(os.path.join(m.store.path, "data.mdb")) * 4 < before
                assert m.alarm_statistics()["defrags"] == DEFRAG_ROUNDS
            assert all(r["after_bytes"] <= r["before_bytes"] for r in reports)
            assert not os.path.exists(leftover), "a crashed defrag's copy was not cleaned up"

            # the watcher on a defragmented member saw every write once, in revision order
            events = []
            while len(events) < len(acked):
                batch = await watcher.next_batch(timeout_s=10)
                assert batch is not None, f"watcher stalled after {len(events)} events"
                events.extend(batch[0])
            assert sorted(e.kv.key for e in events) == sorted(acked)
            revs = [e.kv.mod_revision for e in events]
            assert revs == sorted(revs) and len(set(revs)) == len(revs)

            # a restart reopens the defragmented files
            await c.stop()
            await c.start()
            await c.wait_leader()
            for m in c.members:
                got = await m.read(Range(b"w/", b"w0"), mode="linearizable")
                assert {kv.key: kv.value for kv in got.kvs} == acked
    run(main())


def test_alarm_requests_follow_etcd(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            f = next(m for m in c.members if m is not leader)
            assert await f.alarms() == []
            # ACTIVATE answers with the alarm only when it changed anything (etcd's reply)
            assert await f.alarms(ACTION_ACTIVATE, 7, ALARM_NOSPACE) == [(7, ALARM_NOSPACE)]
            assert await leader.alarms(ACTION_ACTIVATE, 7, ALARM_NOSPACE) == []
            assert await leader.alarms(0, 0, ALARM_NOSPACE) == [(7, ALARM_NOSPACE)]
            assert await leader.alarms(0, 0, 2) == []  # GET by type
            with pytest.raises(errors.InvalidArgument):
                await f.alarms(9, 7, ALARM_NOSPACE)
            with pytest.raises(errors.InvalidArgument):
                await f.alarms(ACTION_ACTIVATE, 7, 42)
            # while NOSPACE is active: writes that cost space are refused, others pass
            for m in c.members:
                with pytest.raises(errors.NoSpace):
                    m.space_gate(put_cost(b"k", b"v"))
                assert m.space_gate(0) is None
            assert await f.alarms(ACTION_DEACTIVATE, 7, ALARM_NOSPACE) == [(7, ALARM_NOSPACE)]
            assert await f.alarms(ACTION_DEACTIVATE, 7, ALARM_NOSPACE) == []
            await c.wait_applied(leader.applied_index)
            for m in c.members:
                assert m.space_gate(put_cost(b"k", b"v")) is None
            # etcd's costs: 256 + key + value per put; a txn costs its larger branch
            t = Txn([], [Put(b"a", b"12"), DeleteRange(b"x")], [Put(b"bb", b"1"), Put(b"c", b"")])
            assert txn_cost(t) == max(256 + 3, (256 + 3) + (256 + 1))
            assert txn_cost(Txn([], [DeleteRange(b"x")], [Range(b"y")])) == 0
            # a write past the quota raises the alarm for the member that got it
            with pytest.raises(errors.NoSpace):
                await f.space_gate(f.config.quota_backend_bytes)
            await c.wait_applied(leader.applied_index)
            for m in c.members:
                assert m.alarm_list() == [(f.id, ALARM_NOSPACE)]
    run(main())
