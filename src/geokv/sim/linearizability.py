"""A linearizability checker for a map of registers with unique written values.

The history is checked key by key (registers are independent objects, and
linearizability is compositional). For one key the search is Wing & Gong's with
Lowe's memoisation: walk the time-ordered call/return events, linearize any pending
operation whose effect is legal in the current state, and back off when a return is
reached before its operation could be placed; ``(set of linearized ops, state)`` pairs
already explored are cached.

Operations whose outcome is unknown (a write whose client timed out) have their return
at +infinity: they may take effect at any time after their call, or never. Such a write
that no read observed is dropped before the search: placing it last is always legal.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bound on search steps per key; exceeding it is reported, never silently passed.
SEARCH_STEPS_MAX = 2_000_000


class CheckerBoundExceeded(Exception):
    """The history is too concurrent to check within SEARCH_STEPS_MAX steps."""


@dataclass(slots=True)
class Op:
    """One client operation. ``call``/``ret`` are stamps from a single total order of
    real-time events; ``ret is None`` means the outcome is unknown."""

    op_id: int
    client: int
    kind: str          # "w" or "r"
    key: str
    value: int | None  # the value written, or the value a read returned (None = unset)
    call: int
    ret: int | None

    def describe(self) -> str:
        what = f"write {self.value}" if self.kind == "w" else f"read -> {self.value}"
        end = "?" if self.ret is None else str(self.ret)
        return f"op{self.op_id} client{self.client} {self.key}: {what} [{self.call}, {end}]"


class _Event:
    __slots__ = ("op", "is_call", "match", "prev", "next", "bit")

    def __init__(self, op: Op | None, is_call: bool, bit: int) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Event | None = None
        self.prev: _Event | None = None
        self.next: _Event | None = None
        self.bit = bit


def check_history(ops: list[Op]) -> str | None:
    """Return None if the history is linearizable, else a description of why not."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key in sorted(by_key):
        msg = check_register(by_key[key])
        if msg is not None:
            return f"key {key!r}: {msg}"
    return None


def check_register(ops: list[Op]) -> str | None:
    """Linearizability of one register (initial value None, unique written values)."""
    read_values = {op.value for op in ops if op.kind == "r"}
    written: dict[int, Op] = {}
    kept: list[Op] = []
    for op in ops:
        if op.kind == "w":
            if op.value in written:
                return f"value {op.value} written twice ({op.describe()})"
            written[op.value] = op
            if op.ret is None and op.value not in read_values:
                continue
        kept.append(op)
    for op in kept:
        if op.kind == "r" and op.value is not None and op.value not in written:
            return f"{op.describe()} returned a value nobody wrote"
    return _search(kept)


def _search(ops: list[Op]) -> str | None:
    inf = float("inf")
    events: list[tuple[float, int, _Event]] = []
    for i, op in enumerate(ops):
        call = _Event(op, True, 1 << i)
        ret = _Event(op, False, 1 << i)
        call.match = ret
        # Calls sort before returns at the same stamp cannot happen (stamps are unique),
        # but keep (stamp, kind) as the key so ordering never depends on list order.
        events.append((float(op.call), 0, call))
        events.append((inf if op.ret is None else float(op.ret), 1, ret))
    events.sort(key=lambda t: (t[0], t[1], t[2].op.op_id))
    head = _Event(None, False, 0)
    prev = head
    for _, _, ev in events:
        prev.next = ev
        ev.prev = prev
        prev = ev

    def lift(ev: _Event) -> None:
        ev.prev.next = ev.next
        if ev.next is not None:
            ev.next.prev = ev.prev
        r = ev.match
        r.prev.next = r.next
        if r.next is not None:
            r.next.prev = r.prev

    def unlift(ev: _Event) -> None:
        r = ev.match
        r.prev.next = r
        if r.next is not None:
            r.next.prev = r
        ev.prev.next = ev
        if ev.next is not None:
            ev.next.prev = ev

    state: int | None = None
    linearized = 0
    cache: set[tuple[int, int | None]] = set()
    stack: list[tuple[_Event, int | None]] = []
    entry = head.next
    steps = 0
    deepest: Op | None = None
    deepest_len = -1
    while head.next is not None:
        steps += 1
        if steps > SEARCH_STEPS_MAX:
            raise CheckerBoundExceeded(f"more than {SEARCH_STEPS_MAX} steps on {len(ops)} ops")
        if entry.is_call:
            op = entry.op
            if op.kind == "w":
                ok, new_state = True, op.value
            else:
                ok, new_state = op.value == state, state
            if ok:
                key = (linearized | entry.bit, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    linearized |= entry.bit
                    state = new_state
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if len(stack) > deepest_len:
                deepest_len, deepest = len(stack), entry.op
            if not stack:
                return _explain(ops, deepest)
            entry, state = stack.pop()
            linearized &= ~entry.bit
            unlift(entry)
            entry = entry.next
    return None


def _explain(ops: list[Op], stuck: Op | None) -> str:
    if stuck is None:
        return "not linearizable"
    near = [o for o in ops if o.call <= (stuck.ret or stuck.call)
            and (o.ret is None or o.ret >= stuck.call)]
    near.sort(key=lambda o: o.call)
    lines = "; ".join(o.describe() for o in near[:12])
    return f"not linearizable: no order places {stuck.describe()}; concurrent ops: {lines}"
