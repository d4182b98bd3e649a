"""Where the members are, and the physical latency floors that placement implies.

A floor is the least latency any protocol could reach given the speed of light between
regions; geokv reports measured latencies beside them.

* Leaderless floor for region R: a write must reach a majority of voters, so it costs at
  least the RTT from R to its nearest majority (the q-th smallest RTT from R to the
  voters, counting a voter in R as 0).
* Single-leader floor for a put from R with the leader in L: RTT(R, L) to reach the
  leader and get the answer back, plus the leader's quorum round: the RTT from L to the
  nearest (q - 1) other voters (the leader counts itself).
* Linearizable read with ReadIndex: the same as a put (one leader round to a quorum).
  Lease read: RTT(R, L). Serializable / bounded read: 0 (answered locally).

Pure: no I/O, no clock. RTTs come from an ``RttTable`` by region, optionally refined by
measured member-to-member RTTs (``with_measured``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .wan import RttTable, default_rtt_table


@dataclass(slots=True, frozen=True)
class MemberPlacement:
    """One member's place in the world. Learners replicate but never vote."""

    id: int
    region: str
    zone: str = ""
    name: str = ""
    voter: bool = True


def quorum_size(n_voters: int) -> int:
    assert n_voters > 0
    return n_voters // 2 + 1


@dataclass(slots=True)
class Topology:
    members: list[MemberPlacement]
    table: RttTable = field(default_factory=default_rtt_table)
    # Measured RTTs between member ids (either order), preferred over the region table.
    measured_rtt_ms: dict[frozenset[int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        assert len(set(ids)) == len(ids), f"duplicate member ids in {ids}"

    # --- lookup -----------------------------------------------------------------------
    @property
    def voters(self) -> list[MemberPlacement]:
        return [m for m in self.members if m.voter]

    @property
    def learners(self) -> list[MemberPlacement]:
        return [m for m in self.members if not m.voter]

    @property
    def regions(self) -> list[str]:
        seen: list[str] = []
        for m in self.members:
            if m.region not in seen:
                seen.append(m.region)
        return seen

    def member(self, member_id: int) -> MemberPlacement:
        for m in self.members:
            if m.id == member_id:
                return m
        raise KeyError(f"no member {member_id:x}")

    def members_in(self, region: str) -> list[MemberPlacement]:
        return [m for m in self.members if m.region == region]

    def with_measured(self, measured: Mapping[tuple[int, int], float]) -> "Topology":
        """A copy that uses measured member-to-member RTTs where known."""
        merged = dict(self.measured_rtt_ms)
        for (a, b), ms in measured.items():
            if a != b and ms >= 0:
                merged[frozenset((a, b))] = float(ms)
        return Topology(list(self.members), self.table, merged)

    # --- RTTs -------------------------------------------------------------------------
    def rtt_region_ms(self, a: str, b: str) -> float:
        return self.table.rtt_ms(a, b)

    def rtt_member_ms(self, a: int, b: int) -> float:
        if a == b:
            return 0.0
        measured = self.measured_rtt_ms.get(frozenset((a, b)))
        if measured is not None:
            return measured
        return self.table.rtt_ms(self.member(a).region, self.member(b).region)

    def _rtt_region_to_member_ms(self, region: str, m: MemberPlacement) -> float:
        return self.table.rtt_ms(region, m.region)

    # --- majorities and floors --------------------------------------------------------
    def nearest_majority(self, region: str) -> list[MemberPlacement]:
        """The majority of voters a client in ``region`` reaches soonest (ties by id)."""
        voters = sorted(self.voters, key=lambda m: (self._rtt_region_to_member_ms(region, m), m.id))
        return voters[: quorum_size(len(voters))]

    def leaderless_floor_ms(self, region: str) -> float:
        """RTT from ``region`` to its nearest majority of voters."""
        return max(self._rtt_region_to_member_ms(region, m) for m in self.nearest_majority(region))

    def quorum_rtt_ms(self, member_id: int) -> float:
        """RTT from a voter to the nearest (q - 1) other voters: its commit round as leader.

        For a learner (or a single-voter cluster) this is the round it would need
        without counting itself: still (q - 1) others, 0 when q == 1.
        """
        others = sorted(self.rtt_member_ms(member_id, m.id) for m in self.voters if m.id != member_id)
        need = quorum_size(len(self.voters)) - (1 if self.member(member_id).voter else 0)
        if need <= 0:
            return 0.0
        if need > len(others):
            return float("inf")
        return others[need - 1]

    def rtt_region_to_member_ms(self, region: str, member_id: int) -> float:
        return self.table.rtt_ms(region, self.member(member_id).region)

    def single_leader_put_floor_ms(self, client_region: str, leader_id: int) -> float:
        """RTT(R, leader) + the leader's quorum round."""
        return self.rtt_region_to_member_ms(client_region, leader_id) + self.quorum_rtt_ms(leader_id)

    def read_floor_ms(self, client_region: str, leader_id: int, mode: str) -> float:
        """The floor of a read in ``mode`` from ``client_region`` served near the client."""
        if mode in ("serializable", "bounded"):
            return 0.0
        if mode == "lease":
            return self.rtt_region_to_member_ms(client_region, leader_id)
        if mode == "linearizable":
            return self.single_leader_put_floor_ms(client_region, leader_id)
        raise ValueError(f"unknown read mode {mode!r}")

    def best_leader_for(self, client_regions: Iterable[str], weights: Mapping[str, float] | None = None) -> int:
        """The voter minimising the (weighted) mean single-leader put floor over regions."""
        regions = list(client_regions)
        assert regions and self.voters

        def cost(m: MemberPlacement) -> tuple[float, int]:
            total = 0.0
            for r in regions:
                w = 1.0 if weights is None else weights.get(r, 0.0)
                total += w * self.single_leader_put_floor_ms(r, m.id)
            return (total, m.id)

        return min(self.voters, key=cost).id

    def quorum_rtt_without_ms(self, member_id: int, exclude: set[int]) -> float:
        """``quorum_rtt_ms`` when the voters in ``exclude`` are gone (quorum size unchanged)."""
        others = sorted(
            self.rtt_member_ms(member_id, m.id) for m in self.voters if m.id != member_id and m.id not in exclude
        )
        need = quorum_size(len(self.voters)) - (1 if self.member(member_id).voter else 0)
        if need <= 0:
            return 0.0
        if need > len(others):
            return float("inf")
        return others[need - 1]

    def quorum_closeness_rank(self, exclude: Iterable[int] = ()) -> dict[int, int]:
        """Voters not in ``exclude`` ranked by RTT to a quorum (0 = closest).

        ``exclude`` is the current leader when ranking who should take over if it dies:
        the quorum is then counted among the survivors. Ties go to the voter with the
        lower mean RTT to all voters (the more central one), then the lower id.
        """
        gone = set(exclude)
        alive = [m for m in self.voters if m.id not in gone]

        def key(m: MemberPlacement) -> tuple[float, float, int]:
            mean = sum(self.rtt_member_ms(m.id, o.id) for o in self.voters) / len(self.voters)
            return (self.quorum_rtt_without_ms(m.id, gone), mean, m.id)

        ordered = sorted(alive, key=key)
        return {m.id: i for i, m in enumerate(ordered)}

    def max_peer_rtt_ms(self, member_id: int) -> float:
        others = [self.rtt_member_ms(member_id, m.id) for m in self.members if m.id != member_id]
        return max(others, default=0.0)

    def floors_table(self, leader_id: int) -> list[dict[str, float | str]]:
        """One row per region: the floors a client there faces with the given leader."""
        rows: list[dict[str, float | str]] = []
        for region in self.regions:
            rows.append(
                {
                    "region": region,
                    "leaderless_floor_ms": self.leaderless_floor_ms(region),
                    "put_floor_ms": self.single_leader_put_floor_ms(region, leader_id),
                    "linearizable_floor_ms": self.read_floor_ms(region, leader_id, "linearizable"),
                    "lease_floor_ms": self.read_floor_ms(region, leader_id, "lease"),
                    "serializable_floor_ms": 0.0,
                }
            )
        return rows
