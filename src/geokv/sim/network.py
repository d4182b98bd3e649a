"""A simulated network between nodes placed in regions.

Per-link one-way latency is half the region-to-region RTT plus jitter; on top of that
the network can lose, duplicate and reorder messages, block directed links (partitions)
and clog links (hold messages back until the clog clears). Payloads are opaque bytes:
the caller encodes Raft messages with the real wire codec before handing them over.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from .scheduler import Scheduler

#: Round-trip times between regions in milliseconds (rough public-cloud figures).
REGION_RTT_MS: dict[tuple[str, str], float] = {
    ("us-east", "us-west"): 64.0,
    ("us-east", "eu-west"): 76.0,
    ("us-east", "ap-south"): 188.0,
    ("us-east", "ap-northeast"): 150.0,
    ("us-west", "eu-west"): 138.0,
    ("us-west", "ap-south"): 220.0,
    ("us-west", "ap-northeast"): 104.0,
    ("eu-west", "ap-south"): 118.0,
    ("eu-west", "ap-northeast"): 212.0,
    ("ap-south", "ap-northeast"): 126.0,
}
REGIONS: tuple[str, ...] = ("us-east", "us-west", "eu-west", "ap-south", "ap-northeast")
#: RTT between two nodes in the same region (different zones).
INTRA_REGION_RTT_MS = 1.2


def region_rtt_ms(a: str, b: str) -> float:
    if a == b:
        return INTRA_REGION_RTT_MS
    rtt = REGION_RTT_MS.get((a, b))
    if rtt is None:
        rtt = REGION_RTT_MS[(b, a)]
    return rtt


@dataclass(slots=True)
class NetworkParams:
    """Fault rates of the network; every one is a probability per message."""

    loss_rate: float = 0.0
    dup_rate: float = 0.0
    #: Probability that a message gets an extra delay of up to ``reorder_delay_ms_max``.
    reorder_rate: float = 0.0
    reorder_delay_ms_max: float = 400.0
    #: Jitter as a fraction of the one-way latency (uniform in [0, jitter_frac]).
    jitter_frac: float = 0.1
    #: Bound on messages in flight on one directed link; beyond it, new ones are dropped
    #: (a full socket buffer).
    inflight_per_link_max: int = 2048


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_overflow: int = 0
    dropped_dead: int = 0
    duplicated: int = 0
    reordered: int = 0
    clogged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Network:
    sched: Scheduler
    rng: random.Random
    #: node id -> region name.
    placement: dict[int, str]
    #: Called as ``deliver(to, frm, payload)`` when a message arrives.
    deliver: Callable[[int, int, bytes], None]
    params: NetworkParams = field(default_factory=NetworkParams)
    stats: NetworkStats = field(default_factory=NetworkStats)
    #: Directed links (src, dst) that currently drop everything.
    blocked: set[tuple[int, int]] = field(default_factory=set)
    #: Directed link -> virtual time until which its messages are held back.
    clogged_until_ms: dict[tuple[int, int], float] = field(default_factory=dict)
    _inflight: dict[tuple[int, int], int] = field(default_factory=dict)

    def one_way_ms(self, frm: int, to: int) -> float:
        return region_rtt_ms(self.placement[frm], self.placement[to]) / 2.0

    def is_blocked(self, frm: int, to: int) -> bool:
        return (frm, to) in self.blocked

    def send(self, frm: int, to: int, payload: bytes) -> bool:
        """Hand a message to the network; return False if it was dropped at once."""
        st = self.stats
        st.sent += 1
        link = (frm, to)
        if link in self.blocked:
            st.dropped_partition += 1
            return False
        p = self.params
        rng = self.rng
        if p.loss_rate and rng.random() < p.loss_rate:
            st.dropped_loss += 1
            return True  # silently lost: the sender cannot tell
        if self._inflight.get(link, 0) >= p.inflight_per_link_max:
            st.dropped_overflow += 1
            return True
        copies = 1
        if p.dup_rate and rng.random() < p.dup_rate:
            copies = 2
            st.duplicated += 1
        base = self.one_way_ms(frm, to)
        for _ in range(copies):
            delay = base * (1.0 + p.jitter_frac * rng.random())
            if p.reorder_rate and rng.random() < p.reorder_rate:
                delay += p.reorder_delay_ms_max * rng.random()
                st.reordered += 1
            at_ms = self.sched.now_ms + delay
            clog = self.clogged_until_ms.get(link)
            if clog is not None and clog > self.sched.now_ms:
                at_ms = max(at_ms, clog + delay)
                st.clogged += 1
            self._inflight[link] = self._inflight.get(link, 0) + 1
            self.sched.at(at_ms, self._arrive, frm, to, payload)
        return True

    def _arrive(self, frm: int, to: int, payload: bytes) -> None:
        link = (frm, to)
        self._inflight[link] -= 1
        self.stats.delivered += 1
        self.deliver(to, frm, payload)

    # --- faults -----------------------------------------------------------------------
    def set_blocked(self, links: set[tuple[int, int]]) -> None:
        self.blocked = set(links)

    def heal(self) -> None:
        self.blocked = set()
        self.clogged_until_ms = {}

    def clog(self, frm: int, to: int, until_ms: float) -> None:
        self.clogged_until_ms[(frm, to)] = until_ms
