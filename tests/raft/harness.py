"""A tiny in-process network of RawNodes for interaction tests.

Every message goes through the wire codec (encode -> decode), so nodes never share
mutable objects and the codec is exercised on every delivery. The harness follows the
RawNode driver contract exactly: send ``messages``, persist, then send
``persisted_messages``, apply, advance.
"""

from __future__ import annotations

import random
from collections import deque

from geokv.raft import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    StateRole,
)
from geokv.raft.codec import decode_message, encode_message

#: Bound on delivery rounds in stabilize(): a livelock is a test failure, not a hang.
MAX_STABILIZE_ROUNDS = 10_000


class Node:
    def __init__(self, cfg: Config, storage: MemoryStorage) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.storage = storage
        self.rn = RawNode(cfg, storage)
        self.applied: list[bytes] = []
        self.applied_entries = []
        self.read_states = []
        self.conf_states: list[ConfState] = []
        self.snapshots_installed = 0
        self.sent_before_persist: list[Message] = []

    def handle_ready(self) -> list[Message]:
        rd = self.rn.ready()
        out = list(rd.messages)
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
            self.snapshots_installed += 1
            self.applied.append(b"<snapshot:" + rd.snapshot.data + b">")
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        out += rd.persisted_messages
        for e in rd.committed_entries:
            self.applied_entries.append(e)
            if e.type == EntryType.CONF_CHANGE:
                self.conf_states.append(self.rn.apply_conf_change(ConfChange.decode(e.data)))
            elif e.data:
                self.applied.append(e.data)
        self.read_states += rd.read_states
        self.rn.advance(rd)
        return out

    @property
    def raft(self):
        return self.rn.raft


class Network:
    def __init__(self, ids, *, seed: int = 0, voters=None, learners=(), codec: bool = True,
                 bootstrap_log: bool = False, **cfg_kwargs) -> None:
        self.rng = random.Random(seed)
        self.cfg_kwargs = cfg_kwargs
        self.codec = codec
        voters = tuple(ids) if voters is None else tuple(voters)
        self.initial_cs = ConfState(voters=voters, learners=tuple(learners))
        self.nodes: dict[int, Node] = {}
        for i in ids:
            if bootstrap_log:
                # etcd style: the base config is in the log (so joiners can learn it).
                st = MemoryStorage()
                st.bootstrap(voters, tuple(learners))
                self.add_node(i, storage=st)
            else:
                self.add_node(i, self.initial_cs)
        self.queue: deque[Message] = deque()
        self.cut_links: set[tuple[int, int]] = set()
        self.drop_types: set[MessageType] = set()
        self.delivered: list[Message] = []
        self.auto_report_snapshot = True

    def add_node(self, i: int, cs: ConfState | None = None, storage=None, **overrides) -> Node:
        kw = dict(self.cfg_kwargs)
        kw.update(overrides)
        cfg = Config(id=i, rng=random.Random(self.rng.randrange(1 << 30)), **kw)
        st = storage if storage is not None else MemoryStorage(
            cs if cs is not None else ConfState())
        n = Node(cfg, st)
        self.nodes[i] = n
        return n

    def restart(self, i: int, **overrides) -> Node:
        """Crash and restart node i from its storage (unstable state is lost)."""
        old = self.nodes[i]
        kw = dict(self.cfg_kwargs)
        kw.update(overrides)
        cfg = Config(id=i, rng=random.Random(self.rng.randrange(1 << 30)), **kw)
        n = Node(cfg, old.storage)
        self.nodes[i] = n
        return n

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    # --- faults ---------------------------------------------------------------------
    def isolate(self, i: int) -> None:
        for j in self.nodes:
            if j != i:
                self.cut_links.add((i, j))
                self.cut_links.add((j, i))

    def cut(self, a: int, b: int) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop_types.clear()

    # --- driving --------------------------------------------------------------------
    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            assert m.frm != m.to, f"node {m.frm} sent a message to itself: {m}"
            if (m.frm, m.to) in self.cut_links or m.type in self.drop_types:
                if m.type == MessageType.SNAP and self.auto_report_snapshot:
                    self.nodes[m.frm].rn.report_snapshot(m.to, False)
                continue
            if self.codec:
                m = decode_message(encode_message(m))
            self.queue.append(m)

    def flush_ready(self, ids=None) -> None:
        for i in (ids if ids is not None else list(self.nodes)):
            n = self.nodes.get(i)
            if n is not None and n.rn.has_ready():
                self.send(n.handle_ready())

    def deliver(self, filter_fn=None) -> int:
        """Deliver every queued message once (new ones wait for the next call)."""
        batch = list(self.queue)
        self.queue.clear()
        count = 0
        for m in batch:
            if filter_fn is not None and not filter_fn(m):
                self.queue.append(m)
                continue
            n = self.nodes.get(m.to)
            if n is None:
                continue
            self.delivered.append(m)
            n.rn.step(m)
            count += 1
            if m.type == MessageType.SNAP and self.auto_report_snapshot:
                # What a runtime does once the snapshot stream finished.
                sender = self.nodes.get(m.frm)
                if sender is not None:
                    sender.rn.report_snapshot(m.to, True)
        return count

    def stabilize(self) -> None:
        for _ in range(MAX_STABILIZE_ROUNDS):
            self.flush_ready()
            if not self.queue:
                if not any(n.rn.has_ready() for n in self.nodes.values()):
                    return
                continue
            self.deliver()
        raise AssertionError("network did not stabilize")

    def tick(self, n: int = 1, ids=None, stabilize: bool = True) -> None:
        for _ in range(n):
            for i in (ids if ids is not None else list(self.nodes)):
                self.nodes[i].rn.tick()
            if stabilize:
                self.stabilize()

    def campaign(self, i: int) -> None:
        self.stabilize()  # apply any bootstrap conf entries first
        self.nodes[i].rn.campaign()
        self.stabilize()

    def propose(self, i: int, data: bytes) -> None:
        self.nodes[i].rn.propose(data)
        self.stabilize()

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.rn.role == StateRole.LEADER]

    def leader(self) -> int:
        ls = self.leaders()
        assert len(ls) == 1, f"expected one leader, got {ls}"
        return ls[0]

    def logs(self, i: int):
        log = self.nodes[i].raft.raft_log
        return [(e.term, e.index, bytes(e.data)) for e in log.all_entries()]
