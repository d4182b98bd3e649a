"""A large watch batch is split into fragments only when the watcher asked for it."""

from __future__ import annotations

from geokv.api.watch import _Sub, _WatchStream
from geokv.kv import types as kvt


class _Header:
    """The two attributes _WatchStream reads from a member (no behaviour to fake)."""

    watch_hub = None

    def header(self):
        return (1, 2, 3, 4)


def events(n: int, size: int) -> list[kvt.Event]:
    return [kvt.Event(type=0, kv=kvt.KeyValue(key=b"k%03d" % i, mod_revision=9, value=b"x" * size))
            for i in range(n)]


def test_fragments_cover_all_events_in_order_and_only_last_is_unflagged():
    ws = _WatchStream(_Header(), max_response_bytes=1000, progress_interval_s=600)
    sub = _Sub(watch_id=5, watcher=None, prev_kv=False, progress_notify=False, fragment=True)
    out = ws._responses(sub, events(10, 300), 9)
    assert len(out) > 1
    assert [r.fragment for r in out] == [True] * (len(out) - 1) + [False]
    assert [e.kv.key for r in out for e in r.events] == [b"k%03d" % i for i in range(10)]
    assert all(r.ByteSize() <= 1000 for r in out[:-1])
    assert all(r.watch_id == 5 and r.header.revision == 9 for r in out)


def test_no_fragment_flag_means_one_response():
    ws = _WatchStream(_Header(), max_response_bytes=1000, progress_interval_s=600)
    sub = _Sub(watch_id=5, watcher=None, prev_kv=False, progress_notify=False, fragment=False)
    out = ws._responses(sub, events(10, 300), 9)
    assert len(out) == 1 and len(out[0].events) == 10 and not out[0].fragment
