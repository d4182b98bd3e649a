"""ReadIndex bookkeeping for SAFE reads (Raft thesis §6.4).

The leader records the commit index when a read arrives, broadcasts a heartbeat that
carries the read's context, and answers the read once a quorum has acknowledged that
heartbeat: at that moment it was still the leader, so the recorded index is at least
the index of every write acknowledged before the read began.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import Message

#: Most reads waiting for a heartbeat quorum; beyond this new reads are dropped loudly.
MAX_PENDING_READS = 8192


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def __len__(self) -> int:
        return len(self.queue)

    def add_request(self, index: int, m: Message) -> bool:
        """Track a read; False if a read with the same context is already pending."""
        ctx = m.entries[0].data
        if ctx in self.pending:
            return False
        self.pending[ctx] = ReadIndexStatus(m, index)
        self.queue.append(ctx)
        return True

    def recv_ack(self, node_id: int, ctx: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[node_id] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Pop every read queued up to and including ``ctx`` (all are now confirmed)."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        done = self.queue[: i + 1]
        del self.queue[: i + 1]
        return [self.pending.pop(c) for c in done]

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def clear(self) -> None:
        self.pending.clear()
        self.queue.clear()
