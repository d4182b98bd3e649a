"""A linearizability checker for a map of registers with unique written values.

The history is checked key by key (registers are independent objects, and
linearizability is compositional). Two independent deciders run on each key:

* the zone test for registers whose writes are unique (Gibbons & Korach; Golab, Li &
  Shah): group each write with the reads that returned its value; the group's zone runs
  from its earliest return to its latest call. The history is linearizable iff no read
  returns before its write is called, no two forward zones (earliest return < latest
  call) overlap, and no backward zone lies inside a forward zone. O(n log n).
* Wing & Gong's search with Lowe's memoisation: walk the time-ordered call/return
  events, linearize any pending operation whose effect is legal in the current state,
  and back off when a return is reached before its operation could be placed;
  ``(set of linearized ops, state)`` pairs already explored are cached. Exponential in
  the worst case, so it runs only on keys with at most WGL_OPS_MAX operations, where
  it cross-checks the zone test (a disagreement is a checker bug and raises).

Operations whose outcome is unknown (a write whose client timed out) have their return
at +infinity: they may take effect at any time after their call, or never. Such a write
that no read observed is dropped before the search: placing it last is always legal.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

#: Bound on search steps per key; exceeding it is reported, never silently passed.
SEARCH_STEPS_MAX = 2_000_000
#: Keys with at most this many operations are also checked by the search.
WGL_OPS_MAX = 300


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
    verdict = zones(kept, written)
    if len(kept) <= WGL_OPS_MAX:
        try:
            searched = _search(kept)
        except CheckerBoundExceeded:
            return verdict
        if (searched is None) != (verdict is None):
            raise AssertionError(
                f"linearizability deciders disagree: zones say {verdict!r}, search says "
                f"{searched!r}")
    return verdict


def zones(ops: list[Op], written: dict[int, Op]) -> str | None:
    """The zone test (see the module docstring); ``ops`` hold every kept op of one key."""
    inf = float("inf")
    first_ret: dict[int | None, float] = {}
    last_call: dict[int | None, float] = {}
    for v, w in written.items():
        if w.ret is None and not any(o.kind == "r" and o.value == v for o in ops):
            continue  # an unacknowledged write nobody read: dropped
        first_ret[v] = inf if w.ret is None else float(w.ret)
        last_call[v] = float(w.call)
    for op in ops:
        if op.kind != "r":
            continue
        v = op.value
        if v is None:
            first_ret[None] = -inf  # the initial value was "written" before everything
            last_call[None] = max(last_call.get(None, -inf), float(op.call))
            continue
        w = written[v]
        if op.ret < w.call:
            return f"{op.describe()} returned before {w.describe()} was even called"
        first_ret[v] = min(first_ret[v], float(op.ret))
        last_call[v] = max(last_call[v], float(op.call))
    forward = sorted((first_ret[v], last_call[v], v) for v in first_ret
                     if first_ret[v] < last_call[v])
    backward = [(last_call[v], first_ret[v], v) for v in first_ret
                if first_ret[v] >= last_call[v]]
    for (f1, s1, v1), (f2, s2, v2) in zip(forward, forward[1:]):
        if f2 < s1:
            return (f"not linearizable: the writes of {v1} and {v2} were each observed "
                    f"after the other had certainly taken effect "
                    f"({_cluster(ops, written, v1)}; {_cluster(ops, written, v2)})")
    # A backward zone [s, f] inside a forward zone [F, S] (F < s and f < S).
    starts = [z[0] for z in forward]
    best: list[tuple[float, int | None]] = []   # prefix max of S over forward zones
    top: tuple[float, int | None] = (-inf, None)
    for f, s_, v in forward:
        if s_ > top[0]:
            top = (s_, v)
        best.append(top)
    for s_b, f_b, vb in backward:
        k = bisect.bisect_left(starts, s_b) - 1
        if k >= 0 and best[k][0] > f_b:
            vf = best[k][1]
            return (f"not linearizable: the write of {vb} (with its reads) happened "
                    f"entirely while {vf} was certainly the value "
                    f"({_cluster(ops, written, vb)}; {_cluster(ops, written, vf)})")
    return None


def _cluster(ops: list[Op], written: dict[int, Op], v: int | None) -> str:
    members = [o for o in ops if o.value == v]
    members.sort(key=lambda o: o.call)
    text = ", ".join(o.describe() for o in members[:6])
    more = f" +{len(members) - 6} more" if len(members) > 6 else ""
    return f"value {v}: {text}{more}"


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
