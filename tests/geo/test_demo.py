"""The demo (``geokv demo`` = ``python -m geokv.geo.demo``) end to end: real processes, clean exit, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_demo(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geokv.geo.demo", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_demo_runs_all_parts_and_stops_everything(tmp_path):
    p = run_demo("--rounds", "5", "--base-dir", str(tmp_path), timeout=140)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = p.stdout
    for part in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "leaderless floor", "writes succeed again after",
                 "new leader:", "leader back in us-east"):
        assert part in out, f"missing {part!r} in:\n{out}"
    for op in ("put", "get_linearizable", "get_lease", "get_serializable", "get_bounded"):
        assert f" {op} " in out
    # every server process is gone: their logs say they stopped or were killed
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps


@pytest.mark.parametrize(
    "args, message",
    [
        (["--regions", "us-east,moon"], "unknown region 'moon'"),
        (["--rtt", "us-east=3"], "invalid RTT entry"),
        (["--leader-preference", "eu-central"], "has no voter"),
        (["--rounds", "0"], "--rounds"),
    ],
)
def test_demo_user_errors_are_one_clear_line(args, message):
    p = run_demo(*args, timeout=60)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
