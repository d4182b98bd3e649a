"""geokv.runtime.memory: GC tuning respects the embedder, heap trimming gives memory back.

Each check runs in a fresh interpreter: both act on the whole process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SUBPROCESS_TIMEOUT_S = 60


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=SUBPROCESS_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_tune_gc_freezes_and_raises_thresholds_once():
    out = _run("""
        import gc
        from geokv.runtime import memory
        assert gc.get_threshold() == memory.GC_DEFAULT_THRESHOLDS
        assert memory.tune_gc() is True
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (memory.GC_GEN0_THRESHOLD, memory.GC_GEN1_THRESHOLD, memory.GC_GEN2_THRESHOLD)
        assert memory.tune_gc() is False  # once per process
        print("ok")
    """)
    assert out == "ok"


def test_tune_gc_keeps_an_embedders_thresholds():
    out = _run("""
        import gc
        from geokv.runtime import memory
        gc.set_threshold(1234, 5, 6)
        assert memory.tune_gc() is False
        assert gc.get_threshold() == (1234, 5, 6) and gc.get_freeze_count() == 0
        print("ok")
    """)
    assert out == "ok"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc")
def test_trim_heap_returns_freed_small_objects_to_the_kernel():
    # 1.3 KiB objects like the events of a big DeleteRange, with a few survivors spread
    # over the heap so that plain free() cannot shrink it from the top.
    out = _run("""
        from geokv.runtime import memory

        def rss_anon_mib():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024

        blobs = [bytes(1300) + i.to_bytes(8, "little") for i in range(150_000)]
        keep = blobs[::5000]
        before = rss_anon_mib()
        del blobs
        freed = rss_anon_mib()
        memory.trim_heap()
        after = rss_anon_mib()
        print(before, freed, after)
    """)
    before, freed, after = (float(x) for x in out.split())
    assert before - freed < 0.5 * (before - after), (before, freed, after)  # free() alone kept most
    assert after < before - 100, (before, freed, after)  # ~190 MiB allocated, most given back
