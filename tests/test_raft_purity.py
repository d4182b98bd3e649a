"""geokv.raft must stay pure: no I/O, clocks, threads or randomness may be imported.

Time reaches the core only as tick() calls and randomness only through Config.rng, so
the simulator can replay any run exactly. This test parses every module with ast.
"""

from __future__ import annotations

import ast
import pathlib

import geokv.raft

FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "selectors",
             "subprocess", "multiprocessing", "signal", "datetime", "secrets", "io",
             "concurrent", "importlib", "builtins", "ctypes", "uuid", "shutil", "pathlib"}
FORBIDDEN_CALLS = {"__import__", "open", "eval", "exec", "input", "print"}

RAFT_DIR = pathlib.Path(geokv.raft.__file__).parent


def violations(source: str, filename: str = "<src>") -> list[str]:
    out = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN:
                    out.append(f"{filename}:{node.lineno} imports {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN:
                out.append(f"{filename}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                out.append(f"{filename}:{node.lineno} calls {node.func.id}()")
    return out


def test_scanner_catches_forbidden_imports():
    assert violations("import time")
    assert violations("import os.path")
    assert violations("from random import Random")
    assert violations("from asyncio import sleep")
    assert violations("def f():\n    import socket\n")
    assert violations("__import__('time')")
    assert not violations("from .types import Entry\nimport msgpack\nfrom enum import IntEnum")


def test_raft_package_imports_nothing_impure():
    files = sorted(RAFT_DIR.rglob("*.py"))
    assert len(files) >= 8, f"raft sources not found under {RAFT_DIR}"
    bad = []
    for f in files:
        bad += violations(f.read_text(), str(f.relative_to(RAFT_DIR)))
    assert not bad, "impure raft modules:\n" + "\n".join(bad)
