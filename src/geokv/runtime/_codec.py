"""Fallback wire form of a Raft Message, used only while geokv.raft.codec is absent.

Shape: [type, to, frm, term, log_term, index, [[term, index, type, data], ...], commit,
snapshot|None, reject, reject_hint, context]; a snapshot is
[index, term, [voters, learners, voters_outgoing, learners_next, auto_leave], data].
"""

from __future__ import annotations

from geokv.raft.types import (ConfState, Entry, EntryType, Message, MessageType, Snapshot,
                              SnapshotMetadata)


def encode_message(m: Message) -> list:
    snap = None
    if m.snapshot is not None:
        md = m.snapshot.metadata
        cs = md.conf_state
        snap = [md.index, md.term, [list(cs.voters), list(cs.learners), list(cs.voters_outgoing),
                                    list(cs.learners_next), cs.auto_leave], m.snapshot.data]
    return [int(m.type), m.to, m.frm, m.term, m.log_term, m.index,
            [[e.term, e.index, int(e.type), e.data] for e in m.entries],
            m.commit, snap, m.reject, m.reject_hint, m.context]


def _int(x) -> int:
    if type(x) is not int or x < 0:
        raise ValueError(f"expected a non-negative int, got {x!r}")
    return x


def _bytes(x) -> bytes:
    if not isinstance(x, bytes):
        raise ValueError(f"expected bytes, got {type(x).__name__}")
    return x


def decode_message(obj) -> Message:
    try:
        (t, to, frm, term, log_term, index, ents, commit, snap, reject, hint, ctx) = obj
        entries = [Entry(_int(et), _int(ei), EntryType(_int(ety)), _bytes(ed)) for et, ei, ety, ed in ents]
        snapshot = None
        if snap is not None:
            si, st, cs, sd = snap
            voters, learners, vo, ln, auto = cs
            snapshot = Snapshot(
                SnapshotMetadata(_int(si), _int(st), ConfState(
                    tuple(map(_int, voters)), tuple(map(_int, learners)), tuple(map(_int, vo)),
                    tuple(map(_int, ln)), bool(auto))),
                _bytes(sd))
        return Message(MessageType(_int(t)), _int(to), _int(frm), _int(term), _int(log_term), _int(index),
                       entries, _int(commit), snapshot, bool(reject), _int(hint), _bytes(ctx))
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"malformed raft message: {exc!r}") from None
