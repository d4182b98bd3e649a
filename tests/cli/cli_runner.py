"""Run the ``geokv`` command as a subprocess, bounded in time."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

#: Bound on one CLI invocation in a test.
CLI_TIMEOUT_S = 60.0


@dataclass
class Cli:
    endpoints: list[str]

    def __call__(self, *args: str, input: str | bytes | None = None, endpoints: bool = True,
                 timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "geokv"]
        if endpoints:
            argv += ["--endpoints", ",".join(self.endpoints)]
        text = not isinstance(input, bytes)
        return subprocess.run(argv + list(args), input=input, capture_output=True, text=text, timeout=timeout_s,
                              stdin=None if input is not None else subprocess.DEVNULL)
