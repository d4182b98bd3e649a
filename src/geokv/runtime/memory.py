"""Process memory policy of a server: garbage-collector tuning and heap trimming.

Garbage collector. Every write creates short-lived container objects (Raft messages and
entries, futures, result objects); with CPython's default thresholds (700, 10, 10) a
member ran ~100 young collections per second under ``etcdctl check perf`` and full
collections that walked every object of the process, up to ~100 ms each with the loop
stopped (``bench/bench_runtime.py --gc-report`` measures it). ``tune_gc`` collects once,
freezes what exists after start-up (modules, protobuf descriptors, the member's own
long-lived state: never garbage) and raises the thresholds, so young collections are
~30x rarer and full ones walk only what was created since. Only applied when the
thresholds are still CPython's defaults: an embedding application's choice is kept.

Heap trimming. A huge apply (``etcdctl check perf`` ends by deleting its ~60k keys of
1.3 KiB in one DeleteRange) materialises every deleted key-value as an event; when that
memory is freed glibc keeps it (it is below the top of the heap), and a member's anonymous
RSS stayed ~350 MiB higher for the rest of its life. ``trim_heap`` hands free pages back
to the kernel (``malloc_trim``); the member calls it after applies that big only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("geokv.memory")

#: CPython's default collection thresholds; tune_gc leaves any other setting alone.
GC_DEFAULT_THRESHOLDS = (700, 10, 10)
#: Allocations (net of frees) of container objects between young collections.
GC_GEN0_THRESHOLD = 20000
#: Young collections between middle-generation collections, and those between full ones.
GC_GEN1_THRESHOLD = 50
GC_GEN2_THRESHOLD = 50
#: An apply batch that touched at least this many events or entries is followed by a trim.
TRIM_AFTER_EVENTS_MIN = 10000

_tuned = False
_malloc_trim = None


def tune_gc() -> bool:
    """Freeze start-up objects and raise the collection thresholds, once per process.
    Returns True if it changed anything."""
    global _tuned
    if _tuned or gc.get_threshold() != GC_DEFAULT_THRESHOLDS:
        return False
    _tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
    return True


def gc_thresholds() -> tuple[int, int, int]:
    return gc.get_threshold()


def _load_malloc_trim():
    global _malloc_trim
    if _malloc_trim is None:
        fn = False
        try:
            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            fn = getattr(lib, "malloc_trim", False) if lib is not None else False
            if fn:
                fn.argtypes = [ctypes.c_size_t]
                fn.restype = ctypes.c_int
        except OSError:
            fn = False
        _malloc_trim = fn
    return _malloc_trim


def trim_heap() -> bool:
    """Return free heap memory to the kernel (glibc only; a no-op elsewhere)."""
    fn = _load_malloc_trim()
    if not fn:
        return False
    return bool(fn(0))
