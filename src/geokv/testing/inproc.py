"""Several Members in one asyncio loop on loopback: real transport, WAL and LMDB.

    async with InProcCluster(3, base_dir) as c:
        leader = await c.wait_leader()
        await c.members[1].propose(Put(b"k", b"v"))
"""

from __future__ import annotations

import asyncio
import os
import time

from geokv.runtime.config import ServerConfig, finish
from geokv.runtime.member import Member
from geokv.testing.ports import free_ports

WAIT_LEADER_TIMEOUT_S = 20.0


def member_configs(n: int, base_dir: str, *, heartbeat_ms: int = 50, election_ms: int = 500,
                   snapshot_count: int = 100000, regions: list[str] | None = None,
                   token: str = "geokv-test") -> list[ServerConfig]:
    ports = free_ports(2 * n)
    names = [f"n{i + 1}" for i in range(n)]
    peer_urls = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(n)]
    client_urls = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(n)]
    initial = ",".join(f"{nm}={u}" for nm, u in zip(names, peer_urls))
    out = []
    for i in range(n):
        cfg = ServerConfig(
            name=names[i], data_dir=os.path.join(base_dir, names[i]),
            listen_client_urls=[client_urls[i]], advertise_client_urls=[client_urls[i]],
            listen_peer_urls=[peer_urls[i]], initial_advertise_peer_urls=[peer_urls[i]],
            initial_cluster=initial, initial_cluster_token=token,
            heartbeat_interval_ms=heartbeat_ms, election_timeout_ms=election_ms,
            snapshot_count=snapshot_count, region=(regions[i] if regions else "local"),
        )
        out.append(finish(cfg))
    return out


class InProcCluster:
    def __init__(self, n: int, base_dir: str, **kwargs) -> None:
        self.base_dir = base_dir
        self.configs = member_configs(n, base_dir, **kwargs)
        self.members: list[Member | None] = [None] * n
        self.kwargs = kwargs

    async def start(self) -> None:
        for i in range(len(self.configs)):
            await self.start_member(i)

    async def start_member(self, i: int, **member_kwargs) -> Member:
        m = Member(self.configs[i], **member_kwargs)
        await m.start()
        self.members[i] = m
        return m

    async def stop_member(self, i: int) -> None:
        m = self.members[i]
        if m is not None:
            self.members[i] = None
            await m.stop()

    async def stop(self) -> None:
        for i in range(len(self.members)):
            await self.stop_member(i)

    def live(self) -> list[Member]:
        return [m for m in self.members if m is not None]

    def leader(self) -> Member | None:
        for m in self.live():
            if m.is_leader:
                return m
        return None

    async def wait_leader(self, timeout_s: float = WAIT_LEADER_TIMEOUT_S) -> Member:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ld = self.leader()
            if ld is not None and all(m.leader_id == ld.id for m in self.live()):
                return ld
            await asyncio.sleep(0.02)
        raise TimeoutError("no leader agreed by all live members")

    async def wait_applied(self, index: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(m.applied_index >= index for m in self.live()):
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"not every member applied index {index}: "
                           f"{[m.applied_index for m in self.live()]}")

    async def __aenter__(self) -> "InProcCluster":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()
