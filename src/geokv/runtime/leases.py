"""Leases on a Member: grants and revokes go through Raft; TTL deadlines live on the leader.

Every member keeps ``granted TTL`` per lease from the applied log; only the leader's
deadlines count. On becoming leader every lease gets a fresh full TTL (as etcd does),
keepalives are forwarded to the leader, and the leader proposes LeaseRevoke for each
lease whose deadline passed (at most ``MAX_CONCURRENT_REVOKES`` at a time).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from geokv import errors
from geokv.kv.types import LeaseGrant, LeaseGrantResult, LeaseRevoke, validate_command

log = logging.getLogger("geokv.leases")

LEASE_CHECK_INTERVAL_S = 0.1
MAX_CONCURRENT_REVOKES = 64
MAX_LEASE_ID_ATTEMPTS = 16
REVOKE_RETRY_S = 2.0


class LeaseMixin:
    def _init_leases(self) -> None:
        self._lease_ttl: dict[int, int] = {}
        self._lease_deadline: dict[int, float] = {}
        self._revoking: dict[int, float] = {}

    @property
    def min_lease_ttl_s(self) -> int:
        """etcd's minimum TTL: a lease must outlive one leader election."""
        return max(1, math.ceil(1.5 * self.election_s))

    def _reload_leases(self) -> None:
        now = time.monotonic()
        self._lease_ttl = {int(i): int(t) for i, t in self.store.leases()}
        self._lease_deadline = {i: now + t for i, t in self._lease_ttl.items()}
        self._revoking.clear()

    def _on_become_leader(self) -> None:
        now = time.monotonic()
        self._lease_deadline = {i: now + t for i, t in self._lease_ttl.items()}
        self._revoking.clear()

    def _on_lease_applied(self, cmd, res, now: float) -> None:
        if type(cmd) is LeaseGrant:
            if isinstance(res, LeaseGrantResult):
                self._lease_ttl[res.id] = res.ttl
                self._lease_deadline[res.id] = now + res.ttl
        else:
            self._lease_ttl.pop(cmd.id, None)
            self._lease_deadline.pop(cmd.id, None)
            self._revoking.pop(cmd.id, None)

    # --- API -----------------------------------------------------------------------
    async def lease_grant(self, ttl: int, lease_id: int = 0, *, timeout_s: float | None = None) -> LeaseGrantResult:
        """Grant a lease (id 0: this member picks a fresh non-zero positive int64)."""
        self._check_running()
        if lease_id < 0:
            raise errors.InvalidArgument("etcdserver: lease ID must be positive")
        validate_command(LeaseGrant(lease_id, ttl))
        ttl = max(int(ttl), self.min_lease_ttl_s)
        if lease_id == 0:
            for _ in range(MAX_LEASE_ID_ATTEMPTS):
                lease_id = self._id_rng.getrandbits(63)
                if lease_id and lease_id not in self._lease_ttl:
                    break
            else:
                raise errors.LeaseExist()
        elif lease_id in self._lease_ttl:
            raise errors.LeaseExist()
        return await self.propose(LeaseGrant(lease_id, ttl), timeout_s=timeout_s)

    async def lease_revoke(self, lease_id: int, *, timeout_s: float | None = None):
        return await self.propose(LeaseRevoke(lease_id), timeout_s=timeout_s)

    async def lease_keepalive(self, lease_id: int, *, timeout_s: float | None = None) -> int:
        """Renew on the leader; returns the TTL (seconds). Raises LeaseNotFound."""
        return await self._on_leader("lease_keepalive", lease_id, self._lease_keepalive_local, timeout_s=timeout_s)

    async def _lease_keepalive_local(self, lease_id: int, deadline: float) -> int:
        # Wait until everything committed is applied, so a revoked lease is not renewed.
        await self._wait_applied(self.commit_index, deadline)
        if not self.is_leader:
            raise errors.NotLeader()
        ttl = self._lease_ttl.get(lease_id)
        if ttl is None:
            raise errors.LeaseNotFound()
        self._lease_deadline[lease_id] = time.monotonic() + ttl
        return ttl

    async def lease_ttl(self, lease_id: int, keys: bool = False, *, timeout_s: float | None = None) -> dict:
        """{"id", "ttl" (remaining s), "granted_ttl", "keys"}; raises LeaseNotFound."""
        res = await self._on_leader("lease_ttl", [lease_id, bool(keys)], self._lease_ttl_local, timeout_s=timeout_s)
        return res

    async def _lease_ttl_local(self, payload, deadline: float) -> dict:
        lease_id, keys = int(payload[0]), bool(payload[1])
        await self._wait_applied(self.commit_index, deadline)
        if not self.is_leader:
            raise errors.NotLeader()
        granted = self._lease_ttl.get(lease_id)
        if granted is None:
            raise errors.LeaseNotFound()
        remaining = self._lease_deadline.get(lease_id, time.monotonic()) - time.monotonic()
        return {
            "id": lease_id,
            "ttl": max(0, math.ceil(remaining)),
            "granted_ttl": granted,
            "keys": list(self.store.lease_keys(lease_id)) if keys else [],
        }

    async def lease_list(self) -> list[int]:
        self._check_running()
        return sorted(self._lease_ttl)

    # --- expiry (leader only) -------------------------------------------------------
    async def _run_lease_expiry(self) -> None:
        while True:
            await asyncio.sleep(LEASE_CHECK_INTERVAL_S)
            if not self.is_leader or self._stopping:
                continue
            now = time.monotonic()
            for lid, t in list(self._revoking.items()):
                if t < now - REVOKE_RETRY_S:
                    del self._revoking[lid]
            for lid, dl in list(self._lease_deadline.items()):
                if len(self._revoking) >= MAX_CONCURRENT_REVOKES:
                    break
                if dl <= now and lid not in self._revoking:
                    self._revoking[lid] = now
                    asyncio.ensure_future(self._revoke_expired(lid))

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            await self.propose(LeaseRevoke(lease_id), timeout_s=REVOKE_RETRY_S * 2)
        except errors.LeaseNotFound:
            pass
        except errors.GeoKVError as exc:
            log.debug("revoking expired lease %x failed: %s", lease_id, exc)
