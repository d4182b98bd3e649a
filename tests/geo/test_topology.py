from __future__ import annotations

import pytest

from geokv.geo.topology import MemberPlacement, Topology, quorum_size
from geokv.geo.wan import default_rtt_table

# us-east/eu-west 75, us-east/ap-south 190, eu-west/ap-south 120 (the numbers)
US, EU, AP = 1, 2, 3


def three_regions(learner_region: str | None = None) -> Topology:
    members = [
        MemberPlacement(US, "us-east"),
        MemberPlacement(EU, "eu-west"),
        MemberPlacement(AP, "ap-south"),
    ]
    if learner_region:
        members.append(MemberPlacement(4, learner_region, voter=False))
    return Topology(members, default_rtt_table())


def test_quorum_size():
    assert [quorum_size(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "region, floor_ms",
    [("us-east", 75.0), ("eu-west", 75.0), ("ap-south", 120.0), ("us-west", 135.0)],
)
def test_leaderless_floor_is_rtt_to_nearest_majority(region, floor_ms):
    assert three_regions().leaderless_floor_ms(region) == floor_ms


def test_nearest_majority_members():
    t = three_regions()
    assert [m.id for m in t.nearest_majority("ap-south")] == [AP, EU]


@pytest.mark.parametrize(
    "client, leader, floor_ms",
    [
        ("us-east", US, 0 + 75),     # leader local, nearest other voter eu-west
        ("eu-west", US, 75 + 75),
        ("ap-south", US, 190 + 75),
        ("ap-south", AP, 0 + 120),
        ("us-east", EU, 75 + 75),    # eu-west's nearest other voter is us-east (75 < 120)
    ],
)
def test_single_leader_put_floor(client, leader, floor_ms):
    assert three_regions().single_leader_put_floor_ms(client, leader) == floor_ms


def test_learners_do_not_count_for_quorums():
    t = three_regions(learner_region="eu-central")
    # A learner in eu-central is 25 ms from eu-west but must not shorten any quorum.
    assert t.quorum_rtt_ms(EU) == 75.0
    assert t.leaderless_floor_ms("eu-central") == 90.0
    assert [m.id for m in t.learners] == [4]


def test_read_floors_by_mode():
    t = three_regions()
    assert t.read_floor_ms("ap-south", US, "serializable") == 0.0
    assert t.read_floor_ms("ap-south", US, "bounded") == 0.0
    assert t.read_floor_ms("ap-south", US, "lease") == 190.0
    assert t.read_floor_ms("ap-south", US, "linearizable") == 265.0
    with pytest.raises(ValueError):
        t.read_floor_ms("ap-south", US, "eventual")


def test_measured_rtts_override_the_table():
    t = three_regions().with_measured({(US, EU): 60.0})
    assert t.rtt_member_ms(EU, US) == 60.0
    assert t.quorum_rtt_ms(US) == 60.0


def test_quorum_closeness_rank_puts_the_middle_region_first():
    # eu-west is 75 from us-east and 120 from ap-south: its quorum round is 75 (tie with
    # us-east broken by id), ap-south needs 120.
    ranks = three_regions().quorum_closeness_rank()
    assert ranks[AP] == 2
    assert sorted(ranks.values()) == [0, 1, 2]


def test_best_leader_for_all_regions_is_eu_west():
    t = three_regions()
    assert t.best_leader_for(["us-east", "eu-west", "ap-south"]) == EU
    assert t.best_leader_for(["ap-south"]) == AP


def test_closeness_rank_without_the_leader_prefers_the_central_survivor():
    # us-east leads and dies: eu-west and ap-south both need 120 ms to a quorum of
    # survivors; eu-west is more central (mean RTT 65 vs 103), so it ranks first.
    ranks = three_regions().quorum_closeness_rank(exclude={US})
    assert ranks == {EU: 0, AP: 1}
    assert three_regions().quorum_rtt_without_ms(AP, {US}) == 120.0
