"""The client on each transport: the native channel (geokv.edge.client, the default) and
grpc.aio; the same operations give the same answers on both, against etcd and geokv."""

from __future__ import annotations

import pytest

from geokv.client import AsyncClient, Client, Compare, Op
from geokv.client import aio as client_aio
from geokv.edge.client import NativeChannel


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_every_kind_of_call_on_each_transport(server, prefix, transport, tmp_path):
    with Client(server.endpoints, timeout_s=5, transport=transport) as c:
        rev = c.put(prefix + "a", "1").header.revision
        assert c.get(prefix + "a").value == b"1"
        res = c.txn().if_(Compare.value(prefix + "a") == "1").then(Op.put(prefix + "b", "2")).else_().commit()
        assert res.succeeded
        with c.watch(prefix, prefix=True, start_revision=rev) as w:
            assert [next(w).kv.key for _ in range(2)] == [(prefix + "a").encode(), (prefix + "b").encode()]
        grant = c.lease_grant(10)
        assert c.lease_keep_alive_once(grant.id) == 10
        with c.locked(prefix + "lock", ttl_s=5) as key:
            assert key.startswith((prefix + "lock").encode())
        assert c.member_list()
        assert c.status().header.revision >= rev
        assert c.snapshot_save(str(tmp_path / "snap.db")) > 0
        c.lease_revoke(grant.id)
        ep = c._aio._endpoints[0]
        assert isinstance(ep.channel, NativeChannel) == (transport == "native")


def test_the_transport_defaults_to_native_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv(client_aio.TRANSPORT_ENV, raising=False)
    assert AsyncClient(["127.0.0.1:1"]).transport == "native"
    monkeypatch.setenv(client_aio.TRANSPORT_ENV, "grpcio")
    assert AsyncClient(["127.0.0.1:1"]).transport == "grpcio"
    assert AsyncClient(["127.0.0.1:1"], transport="native").transport == "native"
    with pytest.raises(ValueError, match="transport must be one of native, grpcio"):
        AsyncClient(["127.0.0.1:1"], transport="carrier-pigeon")
    monkeypatch.setenv(client_aio.TRANSPORT_ENV, "nope")
    with pytest.raises(ValueError, match="GEOKV_CLIENT_TRANSPORT must be one of"):
        AsyncClient(["127.0.0.1:1"])
