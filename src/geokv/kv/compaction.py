"""Physical compaction: removing the versions a logical compaction made invisible.

A Compact command moves ``compact_revision`` at once (older reads fail from then on);
the rows it hides are removed afterwards by ``compact_chunk``, which the store runs once
after every applied command until the work is done.  Each chunk walks at most a bounded
number of change-log rows, so no write waits long, and the amount of work per command
depends only on the log, so every replica's file stays byte-identical.
"""

from __future__ import annotations

import struct

from geokv.kv import layout
from geokv.kv.layout import key_prefix

_main_from = struct.Struct(">Q").unpack_from


def compact_chunk(txn, kv_db, log_db, target: int, pos: bytes, max_rows: int) -> tuple[bool, bytes, int]:
    """Remove versions hidden by the pending compaction, walking at most max_rows log rows.

    The rule (etcd's): after compacting at C, a version with main_rev <= C stays only if
    it is its key's newest version at or before C and not a deletion.  For each
    change-log row with main_rev <= target this drops every other version of the row's
    key at or before target; the row itself goes unless it is at target (the next
    compaction starts there, and watchers may start at the compact revision).  ``pos``
    is the log key to resume at.  Returns (finished, resume position, bytes freed).
    """
    logcur = txn.cursor(log_db)
    kvcur = txn.cursor(kv_db)
    freed = 0
    ok = logcur.set_range(pos)
    rows = 0
    done = True
    while ok:
        lkey = logcur.key()
        main = _main_from(lkey)[0]
        if main > target:
            break
        if rows == max_rows:
            done = False
            break
        rows += 1
        key = logcur.value()
        prefix = key_prefix(key)
        more = kvcur.set_range(prefix + layout.at_suffix(target))
        if more and kvcur.key().startswith(prefix):
            if kvcur.value():
                more = kvcur.next()  # the newest version at or before target stays
            # (a deletion as the newest version hides nothing any more: it goes below)
            while more:
                k = kvcur.key()
                if not k.startswith(prefix):
                    break
                freed += len(k) + len(kvcur.value())
                more = kvcur.delete()
        if main < target:
            freed += len(lkey) + len(key)
            ok = logcur.delete()
        else:
            ok = logcur.next()
    # Rows at target itself stay in the log, so the next compaction starts there.
    return done, (layout.log_key(target, 0) if done else logcur.key()), freed
