"""Per-process CPU time and memory from /proc, shared by the benchmark scripts.

A process that has exited reads as 0 (a benchmark may sample a member that just died).
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _status_kib(pid: int, names: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(names):
                    out[line.split(":")[0]] = int(line.split()[1])
    except FileNotFoundError:
        pass
    return out


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS) of ``pid`` in MiB."""
    return _status_kib(pid, ("VmRSS:",)).get("VmRSS", 0) / 1024.0


def rss_breakdown_mib(pid: int) -> dict[str, float]:
    """RssAnon (heap: Python objects, buffers) and RssFile (mapped files: LMDB pages,
    shared libraries; the kernel can drop these) of ``pid``, MiB."""
    return {k: round(v / 1024.0, 1) for k, v in _status_kib(pid, ("RssAnon:", "RssFile:")).items()}
