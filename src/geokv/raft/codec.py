"""The wire form of a Message: nested lists of ints and bytes (msgpack-able, compact).

Layout (trailing fields equal to their defaults are omitted):
  [type, to, frm, term, log_term, index, entries, commit, snapshot, reject, reject_hint,
   context]
  entries  = flat list [term, index, type, data, term, index, type, data, ...]
  snapshot = None | [index, term, [voters, learners, voters_outgoing, learners_next,
                                   auto_leave], data]
``decode_message`` parses untrusted bytes from the network: it raises ValueError and
never anything else on malformed input.
"""

from __future__ import annotations

from .types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

_FIELDS = 12
#: Upper bound of any integer field (node ids, terms, indexes are uint64 in etcd).
_U64_MAX = (1 << 64) - 1
#: Most entries accepted in one message (a sender honours max_size_per_msg far below).
MAX_ENTRIES_PER_MESSAGE = 1 << 20

_MT = {int(t): t for t in MessageType}
_ET = {int(t): t for t in EntryType}


def _enc_snapshot(s: Snapshot) -> list:
    md = s.metadata
    cs = md.conf_state
    return [md.index, md.term,
            [list(cs.voters), list(cs.learners), list(cs.voters_outgoing),
             list(cs.learners_next), 1 if cs.auto_leave else 0],
            s.data]


def encode_message(m: Message) -> list:
    ents = m.entries
    flat: list = []
    if ents:
        for e in ents:
            flat += (e.term, e.index, int(e.type), e.data)
    out = [int(m.type), m.to, m.frm, m.term, m.log_term, m.index, flat, m.commit,
           None if m.snapshot is None else _enc_snapshot(m.snapshot),
           1 if m.reject else 0, m.reject_hint, m.context]
    # Trim trailing defaults so heartbeats and acks stay tiny.
    n = _FIELDS
    while n > 6 and not out[n - 1]:  # every default (0, b"", [], None) is falsy
        n -= 1
    return out[:n]


def _u(x: object) -> int:
    if type(x) is not int or x < 0 or x > _U64_MAX:
        raise ValueError(f"expected an unsigned 64-bit int, got {x!r}")
    return x


def _b(x: object) -> bytes:
    if type(x) is not bytes:
        raise ValueError(f"expected bytes, got {type(x).__name__}")
    return x


def _ids(x: object) -> tuple[int, ...]:
    if type(x) not in (list, tuple):
        raise ValueError("expected a list of node ids")
    return tuple(_u(v) for v in x)


def _dec_snapshot(obj: object) -> Snapshot:
    if type(obj) not in (list, tuple) or len(obj) != 4:
        raise ValueError("snapshot must be a 4-element list")
    index, term, cs, data = obj
    if type(cs) not in (list, tuple) or len(cs) != 5:
        raise ValueError("conf state must be a 5-element list")
    if cs[4] not in (0, 1) or type(cs[4]) is not int:
        raise ValueError("auto_leave must be 0 or 1")
    conf = ConfState(_ids(cs[0]), _ids(cs[1]), _ids(cs[2]), _ids(cs[3]), bool(cs[4]))
    return Snapshot(SnapshotMetadata(_u(index), _u(term), conf), _b(data))


def decode_message(obj: object) -> Message:
    try:
        return _decode(obj)
    except ValueError:
        raise
    except Exception as exc:  # defensive: untrusted input must only ever give ValueError
        raise ValueError(f"malformed message: {exc!r}") from None


def _decode(obj: object) -> Message:
    if type(obj) not in (list, tuple):
        raise ValueError("message must be a list")
    n = len(obj)
    if n < 6 or n > _FIELDS:
        raise ValueError(f"message has {n} fields, expected 6..{_FIELDS}")
    f = list(obj) + [None] * (_FIELDS - n)
    t = _MT.get(f[0]) if type(f[0]) is int else None
    if t is None:
        raise ValueError(f"unknown message type {f[0]!r}")
    entries: list[Entry] = []
    flat = f[6]
    if flat is not None:
        if type(flat) not in (list, tuple) or len(flat) % 4:
            raise ValueError("entries must be a flat list of 4-tuples")
        if len(flat) // 4 > MAX_ENTRIES_PER_MESSAGE:
            raise ValueError("too many entries in one message")
        for i in range(0, len(flat), 4):
            et = _ET.get(flat[i + 2]) if type(flat[i + 2]) is int else None
            if et is None:
                raise ValueError(f"unknown entry type {flat[i + 2]!r}")
            entries.append(Entry(_u(flat[i]), _u(flat[i + 1]), et, _b(flat[i + 3])))
    reject = f[9]
    if reject is None:
        reject = 0
    if type(reject) is not int or reject not in (0, 1):
        raise ValueError("reject must be 0 or 1")
    return Message(
        t, _u(f[1]), _u(f[2]), _u(f[3]), _u(f[4]), _u(f[5]), entries,
        _u(f[7]) if f[7] is not None else 0,
        _dec_snapshot(f[8]) if f[8] is not None else None,
        bool(reject),
        _u(f[10]) if f[10] is not None else 0,
        _b(f[11]) if f[11] is not None else b"",
    )
