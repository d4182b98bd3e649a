"""Range scans step over a key's older versions (a few cursor steps, then a seek): every
key with any number of versions and tombstones is read right at every revision."""

from __future__ import annotations

from geokv.kv.layout import SKIP_NEXT_MAX
from geokv.kv.types import DeleteRange, Put, Range


def test_scans_see_each_key_once_whatever_its_history(kv):
    # key i gets i versions (some ending in a deletion), around SKIP_NEXT_MAX.
    history: list[dict[bytes, bytes]] = [{}]  # the live keys after each revision
    state: dict[bytes, bytes] = {}
    rev0 = kv.store.revision
    for rnd in range(2 * SKIP_NEXT_MAX + 3):
        for i in range(2 * SKIP_NEXT_MAX + 3):
            key = b"s/%02d" % i
            if rnd < i:
                v = b"%d.%d" % (i, rnd)
                kv.ok(Put(key, v))
                state[key] = v
                history.append(dict(state))
            elif rnd == i and i % 3 == 0 and key in state:
                kv.ok(DeleteRange(key))
                del state[key]
                history.append(dict(state))
    assert kv.store.revision == rev0 + len(history) - 1
    for back, live in enumerate(reversed(history)):
        rev = kv.store.revision - back
        at = 0 if back == 0 else rev
        res = kv.store.range(Range(b"s/", b"s0", revision=at))
        assert [(x.key, x.value) for x in res.kvs] == sorted(live.items()), rev
        assert res.count == len(live)
        lim = kv.store.range(Range(b"s/", b"s0", revision=at, limit=2))
        assert [x.key for x in lim.kvs] == sorted(live)[:2] and lim.more == (len(live) > 2)
        assert kv.store.range(Range(b"s/05", b"\x00", revision=at, count_only=True)).count == \
            len([k for k in live if k >= b"s/05"])
