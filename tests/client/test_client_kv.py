"""The client's key-value, txn, lease, lock and maintenance calls against a real server."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from geokv import errors
from geokv.client import AsyncClient, Client, Compare, Op
from geokv.client.errors import BadEndpoint


@pytest.fixture
def client(server):
    c = Client(server.endpoints, timeout_s=5)
    try:
        yield c
    finally:
        c.close()


def test_put_then_get_returns_the_value_and_revisions(client, prefix):
    r1 = client.put(prefix + "a", "1")
    got = client.get(prefix + "a")
    assert got.value == b"1"
    kv = got.kvs[0]
    assert kv.key == (prefix + "a").encode()
    assert kv.mod_revision == r1.header.revision == kv.create_revision
    assert kv.version == 1
    client.put(prefix + "a", b"2")
    kv2 = client.get(prefix + "a").kvs[0]
    assert (kv2.value, kv2.version, kv2.create_revision) == (b"2", 2, kv.create_revision)


def test_get_of_a_missing_key_is_empty(client, prefix):
    got = client.get(prefix + "missing")
    assert got.kvs == [] and got.value is None and got.count == 0


def test_prefix_range_limit_sort_keys_only_and_count_only(client, prefix):
    for i in range(5):
        client.put(f"{prefix}k{i}", f"v{i}")
    client.put(prefix.rstrip("/") + "0", "outside the prefix")
    got = client.get(prefix, prefix=True)
    assert [kv.key for kv in got.kvs] == [f"{prefix}k{i}".encode() for i in range(5)]
    limited = client.get(prefix, prefix=True, limit=2)
    assert len(limited.kvs) == 2 and limited.more and limited.count == 5
    desc = client.get(prefix, prefix=True, sort_order="descend", sort_target="key")
    assert desc.kvs[0].key == f"{prefix}k4".encode()
    keys = client.get(prefix, prefix=True, keys_only=True)
    assert all(kv.value == b"" for kv in keys.kvs) and len(keys.kvs) == 5
    counted = client.get(prefix, prefix=True, count_only=True)
    assert counted.count == 5 and counted.kvs == []
    ranged = client.get(f"{prefix}k1", range_end=f"{prefix}k3")
    assert [kv.value for kv in ranged.kvs] == [b"v1", b"v2"]


def test_get_at_an_old_revision_sees_the_old_value(client, prefix):
    r1 = client.put(prefix + "x", "old").header.revision
    client.put(prefix + "x", "new")
    assert client.get(prefix + "x", revision=r1).value == b"old"
    assert client.get(prefix + "x").value == b"new"


def test_serializable_read_mode_reads_the_local_replica(client, prefix):
    client.put(prefix + "s", "v")
    assert client.get(prefix + "s", serializable=True).value == b"v"
    assert client.get(prefix + "s", read_mode="serializable").value == b"v"


def test_put_prev_kv_and_delete_prev_kv(client, prefix):
    client.put(prefix + "p", "one")
    r = client.put(prefix + "p", "two", prev_kv=True)
    assert r.prev_kv is not None and r.prev_kv.value == b"one"
    d = client.delete(prefix + "p", prev_kv=True)
    assert d.deleted == 1 and d.prev_kvs[0].value == b"two"
    assert client.get(prefix + "p").kvs == []


def test_delete_prefix_removes_every_key_under_it(client, prefix):
    for i in range(3):
        client.put(f"{prefix}d/{i}", "x")
    client.put(f"{prefix}e", "stays")
    assert client.delete(prefix + "d/", prefix=True).deleted == 3
    assert [kv.key for kv in client.get(prefix, prefix=True).kvs] == [f"{prefix}e".encode()]


def test_txn_takes_then_branch_when_compare_holds(client, prefix):
    client.put(prefix + "t", "v1")
    res = (client.txn()
           .if_(Compare.value(prefix + "t") == "v1", Compare.version(prefix + "t") > 0)
           .then(Op.put(prefix + "t", "v2"), Op.get(prefix + "t"))
           .else_(Op.get(prefix + "t"))
           .commit())
    assert res.succeeded
    assert res.responses[1].kvs[0].value == b"v2"


def test_txn_takes_else_branch_when_compare_fails(client, prefix):
    client.put(prefix + "t", "v1")
    res = (client.txn()
           .if_(Compare.value(prefix + "t") == "nope")
           .then(Op.put(prefix + "t", "bad"))
           .else_(Op.get(prefix + "t"), Op.delete(prefix + "other"))
           .commit())
    assert not res.succeeded
    assert res.responses[0].kvs[0].value == b"v1"
    assert res.responses[1].deleted == 0
    assert client.get(prefix + "t").value == b"v1"


def test_txn_compare_and_swap_on_mod_revision_detects_a_concurrent_write(client, prefix):
    rev = client.put(prefix + "cas", "0").header.revision
    client.put(prefix + "cas", "someone else")
    res = client.txn().if_(Compare.mod_revision(prefix + "cas") == rev).then(Op.put(prefix + "cas", "1")).commit()
    assert not res.succeeded


def test_txn_with_a_duplicate_key_is_a_user_error(client, prefix):
    with pytest.raises(errors.DuplicateKey):
        client.txn().then(Op.put(prefix + "k", "1"), Op.put(prefix + "k", "2")).commit()


def test_empty_key_put_is_rejected_with_etcds_error(client):
    with pytest.raises(errors.EmptyKey) as ei:
        client.put("", "v")
    assert str(ei.value) == "etcdserver: key is not provided"


def test_lease_grant_attach_time_to_live_list_and_revoke(client, prefix):
    grant = client.lease_grant(30)
    assert grant.ttl == 30 and grant.id != 0
    client.put(prefix + "leased", "v", lease=grant.id)
    ttl = client.lease_time_to_live(grant.id, keys=True)
    assert 0 < ttl.ttl <= 30 and ttl.granted_ttl == 30
    assert ttl.keys == [(prefix + "leased").encode()]
    assert grant.id in client.leases()
    assert client.lease_keep_alive_once(grant.id) == 30
    client.lease_revoke(grant.id)
    assert client.get(prefix + "leased").kvs == []
    assert client.lease_time_to_live(grant.id).ttl == -1


def test_unknown_lease_is_reported_as_lease_not_found(client, prefix):
    with pytest.raises(errors.LeaseNotFound):
        client.lease_revoke(0x1234567)
    with pytest.raises(errors.LeaseNotFound):
        client.put(prefix + "k", "v", lease=0x1234567)
    with pytest.raises(errors.LeaseNotFound):
        client.lease_keep_alive_once(0x1234567)


def test_keep_alive_keeps_a_short_lease_alive_past_its_ttl(client, prefix):
    grant = client.lease_grant(1)
    client.put(prefix + "ka", "v", lease=grant.id)
    with client.keep_alive(grant.id) as ka:
        assert client._run(ka.wait_renewed(3.0))
        assert client._run(ka.wait_renewed(3.0))
        assert client.get(prefix + "ka").value == b"v"
        assert not ka.expired and ka.renewals >= 3
    client.lease_revoke(grant.id)


def test_lock_is_exclusive_and_released_by_unlock(client, prefix):
    name = prefix + "lock"
    l1 = client.lease_grant(10).id
    l2 = client.lease_grant(10).id
    key1 = client.lock(name, lease=l1)
    assert key1.startswith(name.encode())
    with pytest.raises(Exception):
        client.lock(name, lease=l2, timeout_s=0.5)  # held by l1: times out
    client.unlock(key1)
    key2 = client.lock(name, lease=l2, timeout_s=5)
    assert key2 != key1
    client.unlock(key2)
    for lease in (l1, l2):
        client.lease_revoke(lease)


def test_locked_context_manager_holds_and_releases(client, prefix):
    name = prefix + "cm"
    with client.locked(name, ttl_s=5) as key:
        owners = client.get(name, prefix=True)
        assert [kv.key for kv in owners.kvs] == [key]
    assert client.get(name, prefix=True).kvs == []


def test_member_list_status_and_hash(client, server):
    members = client.member_list()
    assert len(members) == 1 and members[0].client_urls
    st = client.status(server.endpoints[0])
    assert st.leader == members[0].id and st.is_leader
    assert st.raft_index > 0 and st.db_size > 0
    h, rev, _ = client.hash_kv()
    assert rev > 0 and isinstance(h, int)


def test_compact_then_reading_an_old_revision_raises_compacted(client, prefix):
    r1 = client.put(prefix + "c", "1").header.revision
    r2 = client.put(prefix + "c", "2").header.revision
    client.compact(r2)
    with pytest.raises(errors.Compacted):
        client.get(prefix + "c", revision=r1)
    assert client.get(prefix + "c").value == b"2"


def test_snapshot_save_writes_a_file(client, tmp_path):
    path = str(tmp_path / "snap.db")
    size = client.snapshot_save(path)
    assert size > 0 and os.path.getsize(path) == size
    assert not os.path.exists(path + ".part")


def test_async_client_put_get_and_txn(server, prefix):
    async def main():
        async with AsyncClient(server.endpoints, timeout_s=5) as c:
            await c.put(prefix + "a", "1")
            res = await c.txn().if_(Compare.value(prefix + "a") == "1").then(Op.put(prefix + "a", "2")).commit()
            assert res.succeeded
            return (await c.get(prefix + "a")).value

    assert asyncio.run(main()) == b"2"


def test_bad_endpoint_strings_are_rejected_clearly():
    for bad in ["", "nohostport", "127.0.0.1:notaport", "127.0.0.1:70000"]:
        with pytest.raises(BadEndpoint) as ei:
            Client([bad])
        assert "bad endpoint" in str(ei.value)


def test_election_campaign_leader_proclaim_observe_resign(client, prefix):
    name = prefix + "elect"
    lease = client.lease_grant(10).id
    leader_key = client.campaign(name, "alice", lease=lease)
    assert leader_key.key.startswith(name.encode()) and leader_key.lease == lease
    assert client.leader(name).value == b"alice"
    client.proclaim(leader_key, "alice-2")
    assert client.leader(name).value == b"alice-2"
    observed = client.observe(name)
    assert next(observed).value == b"alice-2"
    observed.close()
    client.resign(leader_key)
    assert client.leader(name) is None
    client.lease_revoke(lease)


def test_member_add_learner_promote_refused_then_remove(client):
    from etcdproc import free_port

    peer = f"http://127.0.0.1:{free_port()}"
    added, members = client.member_add([peer], is_learner=True)
    assert added.is_learner and added.peer_urls == [peer]
    assert added.id in [m.id for m in members]
    assert added.id in [m.id for m in client.member_list()]
    with pytest.raises(errors.LearnerNotReady):
        client.member_promote(added.id)  # it never started, so it is not in sync
    remaining = client.member_remove(added.id)
    assert added.id not in [m.id for m in remaining]
    with pytest.raises(errors.MemberNotFound):
        client.member_remove(added.id)


def test_keep_alive_reports_a_revoked_lease_as_expired(client):
    from geokv.client import LeaseExpired

    lease = client.lease_grant(3).id
    with client.keep_alive(lease, interval_s=0.1) as ka:
        client.lease_revoke(lease)
        deadline = time.monotonic() + 5
        while not ka.expired:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(LeaseExpired):
            ka.check()
