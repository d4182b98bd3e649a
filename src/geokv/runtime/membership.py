"""Cluster membership on a Member: the replicated member table and Raft conf changes.

A member record (what ``member_list()`` returns, one dict per member) is
``{"id", "name", "peer_urls", "client_urls", "is_learner", "region", "zone"}``. It lives
in the MVCC store (MemberSet/MemberRemove commands), so it is replicated, snapshotted
and recovered with the data. Add/remove/promote are Raft conf changes whose context
carries the record; update is a plain MemberSet. After start each member publishes its
own name, client URLs, region and zone (like etcd's attribute publish).
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgpack

from geokv import errors
from geokv.kv.types import MemberSet
from geokv.raft.types import ConfChange, ConfChangeSingle, ConfChangeType
from geokv.runtime.config import ConfigError, member_id_for, url_host_port

log = logging.getLogger("geokv.membership")

MAX_LEARNERS = 1                 # etcd's default --max-learners
LEARNER_READY_FRACTION = 0.9     # a learner is promotable at >= 90% of the leader's log
PUBLISH_INTERVAL_S = 0.2
PUBLISH_TIMEOUT_S = 5.0


class MembershipMixin:
    def _init_membership(self) -> None:
        self._published = False

    def _initial_member_records(self) -> list[dict]:
        """The bootstrap member table: identical on every initial member (only what
        --initial-cluster says); each member publishes its own attributes later."""
        cfg = self.config
        out = []
        for name, urls in cfg.peers().items():
            mid = member_id_for(urls, cfg.initial_cluster_token)
            out.append({"id": mid, "name": name, "peer_urls": list(urls), "client_urls": [],
                        "is_learner": False, "region": "", "zone": ""})
        return out

    async def member_list(self) -> list[dict]:
        return self.members()

    def members(self) -> list[dict]:
        """The replicated member table, sorted by id (no I/O)."""
        return sorted(self.store.members(), key=lambda m: m["id"])

    def _member(self, member_id: int) -> dict | None:
        for m in self.store.members():
            if m["id"] == member_id:
                return m
        return None

    def _refresh_peers(self) -> None:
        if self.transport is None:
            return
        members = self.store.members()
        if members:
            peers = {m["id"]: m["peer_urls"][0] for m in members if m.get("peer_urls")}
        else:  # joining an existing cluster: the table arrives with the leader's snapshot
            peers = {r["id"]: r["peer_urls"][0] for r in self._initial_member_records()}
        self.transport.set_peers(peers)

    async def _rn_query(self, fn):
        """Run ``fn(rawnode)`` inside the driver task and return its result."""
        fut = asyncio.get_running_loop().create_future()

        def action(rn) -> None:
            if fut.done():
                return
            try:
                fut.set_result(fn(rn))
            except Exception as exc:
                fut.set_exception(exc)

        if not self._add_action(action):
            raise errors.TooManyRequests()
        return await asyncio.wait_for(fut, self.request_timeout_s)

    async def _propose_conf(self, changes: tuple, record: dict, deadline: float):
        req_id = next(self._req_ids)
        ctx = msgpack.packb([self.id, req_id, record], use_bin_type=True)
        cc = ConfChange(changes=changes, context=ctx)
        return await self._propose_raw(1, cc, req_id, deadline)

    @staticmethod
    def _check_urls(peer_urls: list[str]) -> list[str]:
        urls = [str(u) for u in peer_urls]
        if not urls:
            raise errors.MemberBadURLs()
        try:
            for u in urls:
                url_host_port(u)
        except ConfigError:
            raise errors.MemberBadURLs() from None
        return urls

    # --- API -----------------------------------------------------------------------
    async def member_add(self, peer_urls: list[str], is_learner: bool = False, *, region: str = "",
                         zone: str = "", timeout_s: float | None = None) -> tuple[dict, list[dict]]:
        self._check_running()
        urls = self._check_urls(peer_urls)
        members = self.store.members()
        in_use = {u for m in members for u in m.get("peer_urls", [])}
        if any(u in in_use for u in urls):
            raise errors.PeerURLExist()
        mid = member_id_for(urls, self.config.initial_cluster_token)
        if any(m["id"] == mid for m in members):
            raise errors.MemberExist()
        if is_learner and sum(1 for m in members if m.get("is_learner")) >= MAX_LEARNERS:
            raise errors.TooManyLearners()
        record = {"id": mid, "name": "", "peer_urls": urls, "client_urls": [], "is_learner": bool(is_learner),
                  "region": str(region), "zone": str(zone)}
        typ = ConfChangeType.ADD_LEARNER if is_learner else ConfChangeType.ADD_NODE
        await self._propose_conf((ConfChangeSingle(typ, mid),), record, self._deadline(timeout_s))
        return record, self.members()

    async def member_remove(self, member_id: int, *, timeout_s: float | None = None) -> list[dict]:
        self._check_running()
        if self._member(member_id) is None:
            raise errors.MemberNotFound()
        await self._propose_conf((ConfChangeSingle(ConfChangeType.REMOVE_NODE, member_id),),
                                 {"id": member_id, "remove": True}, self._deadline(timeout_s))
        return self.members()

    async def member_update(self, member_id: int, peer_urls: list[str], *,
                            timeout_s: float | None = None) -> list[dict]:
        self._check_running()
        urls = self._check_urls(peer_urls)
        rec = self._member(member_id)
        if rec is None:
            raise errors.MemberNotFound()
        for m in self.store.members():
            if m["id"] != member_id and any(u in m.get("peer_urls", []) for u in urls):
                raise errors.PeerURLExist()
        rec = dict(rec, peer_urls=urls)
        await self.propose(MemberSet(rec), timeout_s=timeout_s)
        return self.members()

    async def member_promote(self, member_id: int, *, timeout_s: float | None = None) -> list[dict]:
        deadline = self._deadline(timeout_s)
        index = await self._on_leader("member_promote", member_id, self._member_promote_local, timeout_s=timeout_s)
        await self._wait_applied(int(index or 0), deadline)  # answer with the promoted table
        return self.members()

    async def _member_promote_local(self, member_id: int, deadline: float):
        rec = self._member(member_id)
        if rec is None:
            raise errors.MemberNotFound()
        if not rec.get("is_learner"):
            raise errors.MemberNotLearner()
        st = await self._rn_query(lambda rn: rn.status())
        if st.role != 2:  # StateRole.LEADER
            raise errors.NotLeader()
        leader_match = st.progress.get(self.id, (st.commit,))[0] or st.commit
        pr = st.progress.get(member_id)
        if pr is None or pr[0] < leader_match * LEARNER_READY_FRACTION:
            raise errors.LearnerNotReady()
        rec = dict(rec, is_learner=False)
        await self._propose_conf((ConfChangeSingle(ConfChangeType.ADD_NODE, member_id),), rec, deadline)
        return self.applied_index

    # --- attribute publish ----------------------------------------------------------
    async def _run_publish(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            if self._stopping or self.removed:
                return
            rec = self._member(self.id)
            if rec is None or self.leader_id == 0:
                continue
            want = dict(rec, name=self.name, client_urls=list(self.config.advertise_client_urls),
                        region=self.region, zone=self.zone)
            if want == rec:
                self._published = True
                continue
            try:
                await self.propose(MemberSet(want), timeout_s=PUBLISH_TIMEOUT_S)
                self._published = True
            except errors.GeoKVError as exc:
                log.debug("publishing member attributes failed: %s", exc)
