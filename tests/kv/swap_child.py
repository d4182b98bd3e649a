"""Child process of test_kv_swap_crash: opens a store and restores / defragments it,
killing itself with SIGKILL at a named step of MVCCStore.swap_in, or looping until the
parent kills it.

    python swap_child.py STORE_DIR restore SNAP_FILE STEP
    python swap_child.py STORE_DIR defrag - STEP
    python swap_child.py STORE_DIR loop SNAP_A,SNAP_B ROUNDS_MAX
"""

from __future__ import annotations

import os
import signal
import sys

from geokv.kv import maintenance
from geokv.kv.store import MVCCStore


def die_at(step: str):
    def hook(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def main() -> None:
    path, op, arg, extra = sys.argv[1:5]
    store = MVCCStore(path)
    if op == "loop":
        snaps = arg.split(",")
        print("ready", flush=True)
        for i in range(int(extra)):  # the parent kills us long before this ends
            with open(snaps[i % 2], "rb") as f:
                store.restore(f)
            if i % 3 == 2:
                store.defragment()
        return
    maintenance.swap_step_hook = die_at(extra)
    if op == "restore":
        with open(arg, "rb") as f:
            store.restore(f)
    else:
        store.defragment()
    store.close()


if __name__ == "__main__":
    main()
