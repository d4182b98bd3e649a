"""Three Members in one asyncio loop on loopback, with the real WAL and LMDB."""

import asyncio
import time

import pytest

from geokv import errors
from geokv.kv.types import Put, Range, DeleteRange
from geokv.raft.types import StateRole
from geokv.testing.inproc import InProcCluster

from .conftest import run


def get(m, key, mode="serializable"):
    async def go():
        res = await m.read(Range(key), mode=mode)
        return res.kvs[0].value if res.kvs else None
    return go()


def test_writes_through_any_member_are_applied_everywhere(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            followers = [m for m in c.members if m is not leader]
            r1 = await leader.propose(Put(b"k1", b"a"))
            r2 = await followers[0].propose(Put(b"k2", b"b"))   # forwarded to the leader
            assert r2.revision == r1.revision + 1
            # the follower acknowledged only after applying: read-your-writes locally
            assert await get(followers[0], b"k2") == b"b"
            res = await followers[1].read(Range(b"k", b"l"), mode="linearizable")
            assert [kv.value for kv in res.kvs] == [b"a", b"b"]
            # many concurrent writes from every member, all acknowledged, all present
            await asyncio.gather(*[c.members[i % 3].propose(Put(b"x%03d" % i, b"%d" % i)) for i in range(300)])
            for m in c.members:
                res = await m.read(Range(b"x", b"y"), mode="linearizable")
                assert res.count == 300
            assert len({m.store.hash_kv()[0] for m in c.members}) == 1
            assert c.members[0].header()[0] == c.members[2].header()[0]
    run(main())


def test_linearizable_read_on_follower_sees_latest_write(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            f = next(m for m in c.members if m is not leader)
            for i in range(20):
                await leader.propose(Put(b"k", b"%d" % i))
                assert await get(f, b"k", mode="linearizable") == b"%d" % i
            assert await get(leader, b"k", mode="lease") == b"19"
            res, staleness = await f.read_bounded(Range(b"k"), 60_000)
            assert res.kvs[0].value == b"19" and 0 <= staleness < 60_000
            with pytest.raises(errors.InvalidArgument):
                await f.read(Range(b"k"), mode="bogus")
    run(main())


def test_user_errors_are_etcd_errors(tmp_path):
    async def main():
        async with InProcCluster(1, str(tmp_path)) as c:
            m = await c.wait_leader()
            with pytest.raises(errors.EmptyKey):
                await m.propose(Put(b"", b"v"))
            with pytest.raises(errors.RequestTooLarge):
                await m.propose(Put(b"big", b"v" * (2 << 20)))
            with pytest.raises(errors.LeaseNotFound):
                await m.lease_revoke(12345)
            with pytest.raises(errors.LeaseNotFound):
                await m.propose(Put(b"k", b"v", lease=999))
            with pytest.raises(errors.MemberNotFound):
                await m.member_remove(42)
            with pytest.raises(errors.BadLeaderTransferee):
                await m.move_leader(42)
    run(main())


def test_no_leader_and_timeouts(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            await c.wait_leader()
            m0 = c.members[0]
            await c.stop_member(1)
            await c.stop_member(2)
            t0 = time.monotonic()
            with pytest.raises((errors.NoLeader, errors.Timeout, errors.TimeoutDueToLeaderFail)):
                await m0.propose(Put(b"k", b"v"), timeout_s=2.0)
            with pytest.raises((errors.NoLeader, errors.Timeout)):
                await m0.read(Range(b"k"), mode="linearizable", timeout_s=2.0)
            assert time.monotonic() - t0 < 10
            # a serializable read still answers from the local replica
            res = await m0.read(Range(b"k"), mode="serializable")
            assert res.count == 0
    run(main())


def test_leases_expire_keepalive_forwarded_and_new_leader_refreshes(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            f = next(m for m in c.members if m is not leader)
            g = await f.lease_grant(1)
            assert g.id > 0 and g.ttl >= 1
            await f.propose(Put(b"eph", b"1", lease=g.id))
            info = await f.lease_ttl(g.id, keys=True)
            assert info["granted_ttl"] == g.ttl and info["keys"] == [b"eph"]
            assert g.id in await leader.lease_list()
            # keepalives through a follower keep it alive past its TTL
            for _ in range(8):
                assert await f.lease_keepalive(g.id) == g.ttl
                await asyncio.sleep(0.25)
            assert await get(f, b"eph", mode="linearizable") == b"1"
            # then it expires: the leader revokes it and the key goes away everywhere
            deadline = time.monotonic() + g.ttl + 5
            while await get(f, b"eph", mode="linearizable") is not None:
                assert time.monotonic() < deadline, "lease did not expire"
                await asyncio.sleep(0.1)
            with pytest.raises(errors.LeaseNotFound):
                await f.lease_keepalive(g.id)
            with pytest.raises(errors.LeaseNotFound):
                await f.lease_ttl(g.id)
            # explicit ids, LeaseExist
            g2 = await leader.lease_grant(100, lease_id=77)
            assert g2.id == 77
            with pytest.raises(errors.LeaseExist):
                await f.lease_grant(100, lease_id=77)
            # a new leader gives every lease a fresh full TTL
            other = next(m for m in c.members if m is not leader)
            await leader.move_leader(other.id)
            await c.wait_leader()
            assert other.is_leader
            info = await leader.lease_ttl(77)
            assert info["ttl"] >= 99
    run(main())


def test_membership_learner_add_promote_remove_and_snapshot_catch_up(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path), snapshot_count=50) as c:
            for i in range(3):
                await c.stop_member(i)
                await c.start_member(i, snapshot_catchup_entries=10)
            leader = await c.wait_leader()
            for i in range(200):
                await c.members[i % 3].propose(Put(b"k%03d" % i, b"v"))
            assert leader.storage.first_index() > 2, "the leader's log was compacted"
            # add a learner through a follower; it starts with --initial-cluster-state existing
            f = next(m for m in c.members if m is not leader)
            from geokv.testing.inproc import member_configs
            extra = member_configs(1, str(tmp_path / "new"), heartbeat_ms=50, election_ms=500,
                                   token="geokv-test")[0]
            extra.name = "n4"
            peer_url = extra.initial_advertise_peer_urls[0]
            rec, members = await f.member_add([peer_url], is_learner=True)
            assert rec["is_learner"] and len(members) == 4
            with pytest.raises(errors.PeerURLExist):
                await f.member_add([peer_url])
            # the new member's config: full cluster, state existing
            extra.initial_cluster = ",".join(
                [f"{m['name']}={m['peer_urls'][0]}" for m in members if m["id"] != rec["id"]]
                + [f"{extra.name}={peer_url}"])
            extra.initial_cluster_state = "existing"
            assert extra.member_id == rec["id"]
            from geokv.runtime.member import Member
            new = Member(extra)
            await new.start()
            c.members.append(new)
            try:
                deadline = time.monotonic() + 20
                while new.applied_index < leader.applied_index:
                    assert time.monotonic() < deadline, "learner did not catch up"
                    await asyncio.sleep(0.05)
                # it caught up by snapshot: the entries it needed were compacted away
                assert new.statistics()["snapshots_restored"] >= 1
                res = await new.read(Range(b"k", b"l"), mode="serializable")
                assert res.count == 200
                assert new.role == StateRole.FOLLOWER
                # promote (through a follower: forwarded to the leader)
                members = await f.member_promote(rec["id"])
                assert not next(m for m in members if m["id"] == rec["id"])["is_learner"]
                with pytest.raises(errors.MemberNotLearner):
                    await f.member_promote(rec["id"])
                await f.propose(Put(b"after", b"promote"))
                assert len(leader.conf_state.voters) == 4
                # remove it again
                members = await leader.member_remove(rec["id"])
                assert rec["id"] not in [m["id"] for m in members]
                deadline = time.monotonic() + 10
                while not new.removed:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                with pytest.raises(errors.Stopped):
                    await new.propose(Put(b"x", b"y"))
                assert len(leader.conf_state.voters) == 3
                await leader.propose(Put(b"still", b"works"))
            finally:
                await new.stop()
    run(main(), timeout_s=90)


def test_restart_recovers_from_wal_and_store(tmp_path):
    async def main():
        c = InProcCluster(3, str(tmp_path), snapshot_count=40)
        await c.start()
        try:
            await c.wait_leader()
            for i in range(100):
                await c.members[i % 3].propose(Put(b"k%03d" % i, b"%d" % i))
            await c.members[0].propose(DeleteRange(b"k000"))
            await c.stop()
            await c.start()
            await c.wait_leader()
            for m in c.members:
                res = await m.read(Range(b"k", b"l"), mode="linearizable")
                assert res.count == 99
            r = await c.members[1].propose(Put(b"new", b"1"))
            assert r.revision == 102 + 1  # 100 puts + 1 delete after revision 1, then this one
        finally:
            await c.stop()
    run(main())


def test_lagging_follower_catches_up_by_snapshot_over_its_old_data(tmp_path):
    async def main():
        c = InProcCluster(3, str(tmp_path), snapshot_count=20)
        await c.start()
        try:
            for i in range(3):
                await c.stop_member(i)
                await c.start_member(i, snapshot_catchup_entries=5)
            await c.wait_leader()
            await c.members[0].propose(Put(b"old", b"1"))
            await c.wait_applied(c.members[0].applied_index)
            lagging = next(i for i, m in enumerate(c.members) if not m.is_leader)
            await c.stop_member(lagging)
            live = c.live()
            for i in range(120):
                await live[i % 2].propose(Put(b"k%03d" % i, b"v"))
            await live[0].propose(DeleteRange(b"old"))
            m = await c.start_member(lagging, snapshot_catchup_entries=5)
            target = max(x.applied_index for x in c.live() if x is not m)
            await c.wait_applied(target)
            assert m.statistics()["snapshots_restored"] == 1  # not replayed from the log
            res = await m.read(Range(b"k", b"l"), mode="serializable")
            assert res.count == 120
            assert (await m.read(Range(b"old"), mode="serializable")).count == 0
            hashes = {x.store.hash_kv(0)[0] for x in c.live()}
            assert len(hashes) == 1
        finally:
            await c.stop()
    run(main())


def test_idle_follower_stays_fresh_for_bounded_reads(tmp_path):
    async def main():
        async with InProcCluster(3, str(tmp_path)) as c:
            leader = await c.wait_leader()
            await leader.propose(Put(b"k", b"v"))
            f = next(m for m in c.members if m is not leader)
            await asyncio.sleep(1.5)  # no writes: only heartbeats
            # staleness is bounded by a few heartbeat intervals, not by the idle time
            assert f.staleness_ms() < 1000
            res, st = await f.read_bounded(Range(b"k"), 1000)
            assert res.kvs[0].value == b"v" and st < 1000
            assert (await f.status())["applied_lag_ms"] < 1000
    run(main())


def test_full_proposal_queue_gives_too_many_requests(tmp_path, monkeypatch):
    import geokv.runtime.member as member_mod

    monkeypatch.setattr(member_mod, "MAX_INFLIGHT_PROPOSALS", 4)

    async def main():
        async with InProcCluster(1, str(tmp_path)) as c:
            m = await c.wait_leader()
            results = await asyncio.gather(*[m.propose(Put(b"k%d" % i, b"v")) for i in range(20)],
                                           return_exceptions=True)
            refused = [r for r in results if isinstance(r, errors.TooManyRequests)]
            done = [r for r in results if not isinstance(r, Exception)]
            assert refused and done and len(refused) + len(done) == 20
            assert refused[0].code == "RESOURCE_EXHAUSTED"
            # nothing refused was applied; everything acknowledged was
            res = await m.read(Range(b"k", b"l"), mode="linearizable")
            assert res.count == len(done)
    run(main())


#: The write's deadline: far past the lone leader's step-down (check-quorum, about one
#: 200 ms election timeout), so the write is still pending when the leader is gone.
NO_QUORUM_WRITE_TIMEOUT_S = 6.0


def test_a_write_raft_took_is_never_refused_as_no_leader(tmp_path):
    """A proposal the leader appended may still commit (a later leader can carry it), so its
    timeout must be "request timed out" (outcome unknown), never "no leader": clients resend
    writes refused with "no leader", which would apply this one twice."""
    async def main():
        async with InProcCluster(3, str(tmp_path), heartbeat_ms=20, election_ms=200) as c:
            leader = await c.wait_leader()
            for i, m in enumerate(c.members):
                if m is not leader:
                    await c.stop_member(i)
            write = asyncio.ensure_future(leader.propose(Put(b"k", b"v"), timeout_s=NO_QUORUM_WRITE_TIMEOUT_S))
            while leader.leader_id != 0:  # check-quorum: the leader alone steps down
                assert not write.done(), "the leader did not step down before the write's deadline"
                await asyncio.sleep(0.02)
            assert not write.done()
            assert leader.storage.last_index() > leader.commit_index  # appended, never committed
            with pytest.raises((errors.Timeout, errors.TimeoutDueToLeaderFail)) as exc_info:
                await write
            assert not isinstance(exc_info.value, errors.NoLeader)
    run(main())
