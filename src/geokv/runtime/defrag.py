"""Defragmentation of a Member's store (a mixin of AlarmMixin).

Defragmentation (``Member.defragment``): LMDB's compacting copy of the environment is
written in a worker thread (a consistent read snapshot; writes go on meanwhile),
fsynced (``MVCCStore.copy_compacted``), and swapped in only if nothing was applied since
the copy began -- in the driver, between Readies, as one synchronous step
(``MVCCStore.swap_in``: close, atomic rename of data.mdb, directory fsync, reopen), so
no reader on the event loop ever sees a half-swapped environment and a crash leaves
either the old or the new file. Under a steady write stream the last attempt copies
inside that step (writes wait, as they do in etcd).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile

from geokv import errors

log = logging.getLogger("geokv.defrag")

DEFRAG_COPY_ATTEMPTS_MAX = 3
"""Background copies tried before the copy is made inside the driver step..."""
DEFRAG_ATTEMPTS_MAX = 6
"""...and attempts in all (a step finding a snapshot being written tries again)."""
DEFRAG_ACTION_TIMEOUT_S = 120.0
"""Bound on the wait for the driver to run the swap step."""
DEFRAG_TMP_PREFIX = ".defrag-"


class DefragMixin:
    """``Member.defragment``; uses the member's ``store``, ``_add_action``,
    ``_snapshot_task`` and ``_alarm_stats`` (set up by AlarmMixin)."""

    async def _alarm_defragment(self) -> dict:
        """Rewrite the LMDB file without free pages; {"before_bytes", "after_bytes"}."""
        self._check_running()
        if self._defrag_lock is None:
            self._defrag_lock = asyncio.Lock()
        async with self._defrag_lock:
            store = self.store
            before = store.db_size()
            parent = os.path.dirname(os.path.abspath(store.path.rstrip("/")))
            for name in os.listdir(parent):  # copies left by a crash during an earlier defrag
                if name.startswith(DEFRAG_TMP_PREFIX):
                    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            for attempt in range(DEFRAG_ATTEMPTS_MAX):
                tmp = tempfile.mkdtemp(prefix=DEFRAG_TMP_PREFIX, dir=parent)
                try:
                    if self._snapshot_task is not None:  # it uses the environment in a thread
                        await asyncio.wait([self._snapshot_task])
                    if attempt < DEFRAG_COPY_ATTEMPTS_MAX:
                        index = store.applied_index
                        await asyncio.to_thread(self._defrag_copy, tmp)
                    else:
                        index = None  # copy inside the driver step
                    swapped = await self._defrag_in_driver(tmp, index)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                if swapped:
                    break
                self._alarm_stats["defrag_copies_stale"] += 1
            else:
                raise errors.Timeout("etcdserver: defragment did not complete (snapshots kept running)")
            after = store.db_size()
        self._space_checked_at = -1e18
        self._alarm_stats["defrags"] += 1
        self._alarm_stats["defrag_bytes_freed"] += max(0, before - after)
        log.info("%s: defragmented the store: %d -> %d bytes", self.name, before, after)
        return {"before_bytes": before, "after_bytes": after}

    def _defrag_copy(self, tmp: str) -> None:
        self.store.copy_compacted(tmp)

    async def _defrag_in_driver(self, tmp: str, index: int | None) -> bool:
        """Swap ``tmp``'s copy in from a driver action (between Readies: nothing is being
        applied). ``index`` None: copy there first. False if the copy is stale."""
        fut = asyncio.get_running_loop().create_future()

        def step(_rn) -> None:
            if fut.done():
                return
            try:
                if self._snapshot_task is not None or (index is not None and self.store.applied_index != index):
                    fut.set_result(False)
                    return
                if index is None:
                    self._alarm_stats["defrag_copies_in_driver"] += 1
                    self._defrag_copy(tmp)
                self._defrag_swap(tmp)
                fut.set_result(True)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        if not self._add_action(step):
            raise errors.TooManyRequests()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), DEFRAG_ACTION_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise errors.Timeout() from None

    def _defrag_swap(self, tmp: str) -> None:
        """Replace data.mdb by the compacted copy (crash-safe: see MVCCStore.swap_in)."""
        self.store.swap_in(tmp)
