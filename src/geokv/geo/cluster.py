"""A LocalCluster whose members run with the geo service (``python -m geokv.geo.serve``).

Used by the demo, bench/geo and the geo tests: real server processes on loopback, each
in an emulated region (``--region``, ``--wan-emulation on``, optional ``--rtt``).
Without a ``plan`` the members get no --heartbeat-interval / --election-timeout, so the
geo layer derives the timeouts from the RTTs and applies them at runtime (what a user
who sets neither gets); with one, the timeouts are fixed.
"""

from __future__ import annotations

from typing import Sequence

from geokv.testing.cluster import LocalCluster

from .topology import MemberPlacement, Topology
from .timeouts import TimeoutPlan, derive_for_topology
from .wan import build_rtt_table

SERVER_MODULE = "geokv.geo.serve"
_TIMEOUT_FLAGS = ("--heartbeat-interval", "--election-timeout")


class GeoLocalCluster(LocalCluster):
    auto_timeouts = False

    def args(self, i: int) -> list[str]:
        a = super().args(i)
        a = [SERVER_MODULE if x == "geokv.runtime.serve" else x for x in a]
        if self.auto_timeouts:
            out: list[str] = []
            skip = False
            for x in a:
                if skip:
                    skip = False
                    continue
                if x in _TIMEOUT_FLAGS:
                    skip = True
                    continue
                out.append(x)
            a = out
        return a


def plan_for(regions: Sequence[str], rtt: str | None = None) -> TimeoutPlan:
    """Heartbeat / election timeouts for voters in ``regions`` (geo.timeouts margins)."""
    table = build_rtt_table(rtt)
    topo = Topology([MemberPlacement(i + 1, r) for i, r in enumerate(regions)], table)
    return derive_for_topology(topo)


def start_geo_cluster(
    regions: Sequence[str],
    *,
    base_dir: str | None = None,
    leader_preference: Sequence[str] = (),
    rtt: str | None = None,
    extra_args: Sequence[str] = (),
    plan: TimeoutPlan | None = None,
) -> GeoLocalCluster:
    """Start one voter per region with WAN emulation; returns the (running) cluster.
    ``plan=None``: timeouts derived and applied at runtime by the geo layer."""
    args = ["--wan-emulation", "on", *extra_args]
    if leader_preference:
        args += ["--leader-preference", ",".join(leader_preference)]
    if rtt:
        args += ["--rtt", rtt]
    shown = plan or plan_for(regions, rtt)
    cls = GeoLocalCluster
    if plan is None:
        cls = type("AutoTimeoutGeoLocalCluster", (GeoLocalCluster,), {"auto_timeouts": True})
    return cls(
        len(regions), base_dir, regions=list(regions), extra_args=args,
        heartbeat_ms=int(shown.heartbeat_interval_ms), election_ms=int(shown.election_timeout_ms),
    )
