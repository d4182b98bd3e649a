"""LocalCluster's own contract: a member that dies while the test waits for the cluster
is reported as such, instead of the wait succeeding without it or timing out vaguely."""

from __future__ import annotations

import signal
import threading

import pytest

from geokv.testing.cluster import LocalCluster


def test_wait_ready_reports_a_member_that_exits_during_the_wait(tmp_path):
    cluster = LocalCluster(3, base_dir=str(tmp_path), start=False)
    try:
        cluster._spawn(0)  # alone it can never elect a leader: wait_ready keeps waiting
        killer = threading.Timer(1.5, lambda: cluster.kill(0, signal.SIGKILL))
        killer.start()
        try:
            with pytest.raises(RuntimeError, match="member n1 exited"):
                cluster.wait_ready(timeout_s=45)
        finally:
            killer.cancel()
    finally:
        cluster.stop()


def test_wait_ready_returns_the_leader_of_a_healthy_cluster(tmp_path):
    cluster = LocalCluster(3, base_dir=str(tmp_path))
    try:
        i = cluster.wait_ready()
        assert cluster.status(i).leader == cluster.member_id(i)
    finally:
        cluster.stop()
