"""Partition shapes: each returns the set of blocked directed links and a description.

``nodes`` is a sorted list of node ids; every choice is drawn from the given rng.
"""

from __future__ import annotations

import random

Links = set[tuple[int, int]]


def cut(a: list[int], b: list[int], *, both_ways: bool = True) -> Links:
    links = {(x, y) for x in a for y in b}
    if both_ways:
        links |= {(y, x) for x in a for y in b}
    return links


def _split(nodes: list[int], rng: random.Random) -> tuple[list[int], list[int]]:
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    k = rng.randint(1, len(shuffled) - 1)
    return sorted(shuffled[:k]), sorted(shuffled[k:])


def symmetric(nodes: list[int], rng: random.Random) -> tuple[Links, str]:
    a, b = _split(nodes, rng)
    return cut(a, b), f"symmetric {a} | {b}"


def asymmetric(nodes: list[int], rng: random.Random) -> tuple[Links, str]:
    a, b = _split(nodes, rng)
    return cut(a, b, both_ways=False), f"asymmetric {a} -/-> {b} (replies flow back)"


def isolate_one(nodes: list[int], rng: random.Random) -> tuple[Links, str]:
    return isolate_node(nodes, rng.choice(nodes))


def isolate_node(nodes: list[int], x: int) -> tuple[Links, str]:
    return cut([x], [n for n in nodes if n != x]), f"isolate {x}"


def majorities_ring(nodes: list[int], rng: random.Random) -> tuple[Links, str]:
    """Each node talks only to its two ring neighbours (with 5 nodes: every node sees
    a majority including itself, but no two nodes see the same majority)."""
    ring = list(nodes)
    rng.shuffle(ring)
    n = len(ring)
    allowed = set()
    for i, x in enumerate(ring):
        for y in (ring[(i - 1) % n], ring[(i + 1) % n]):
            allowed.add((x, y))
    links = {(x, y) for x in nodes for y in nodes if x != y and (x, y) not in allowed}
    return links, f"majorities ring {ring}"


def bridge(nodes: list[int], rng: random.Random) -> tuple[Links, str]:
    """Two halves that cannot talk, except through one bridge node in the middle."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    mid = shuffled.pop()
    if len(shuffled) < 2:
        return symmetric(nodes, rng)
    k = rng.randint(1, len(shuffled) - 1)
    a, b = sorted(shuffled[:k]), sorted(shuffled[k:])
    return cut(a, b), f"bridge {a} <-{mid}-> {b}"


SHAPES = {
    "symmetric": symmetric,
    "asymmetric": asymmetric,
    "isolate": isolate_one,
    "ring": majorities_ring,
    "bridge": bridge,
}
