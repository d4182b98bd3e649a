from __future__ import annotations

import shutil
import tempfile

import pytest

from geokv.kv.store import MVCCStore


class Applier:
    """A store plus a Raft-index counter: ``run(cmd)`` applies one command, returns its result."""

    def __init__(self, store: MVCCStore) -> None:
        self.store = store
        self.index = store.applied_index

    def run(self, cmd):
        self.index += 1
        [(res, _events)] = self.store.apply_batch([(self.index, cmd)])
        return res

    def run_events(self, cmd):
        self.index += 1
        [(res, events)] = self.store.apply_batch([(self.index, cmd)])
        return res, events

    def ok(self, cmd):
        res = self.run(cmd)
        assert not isinstance(res, Exception), res
        return res


@pytest.fixture
def tmp_dir():
    d = tempfile.mkdtemp(prefix="geokv-kv-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def store(tmp_dir):
    s = MVCCStore(tmp_dir + "/db", quota_bytes=1 << 26)
    yield s
    s.close()


@pytest.fixture
def kv(store):
    return Applier(store)
