"""``python -m geokv.sim``: replay, swarm, summary line, exit status, usage errors."""

from __future__ import annotations

import json

import pytest

import geokv.sim.__main__ as cli
from geokv.sim.config import RunResult, SimConfig


def test_single_seed_prints_config_schedule_and_verdict(capsys):
    assert cli.main(["--seed", "20003"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 20003: voters=")
    assert "fault schedule (" in out and "heal everything" in out
    assert out.rstrip().endswith("seed 20003: PASS")


def test_swarm_prints_summary_and_machine_readable_result(capsys):
    assert cli.main(["--seeds", "20000..20002", "--faults", "off"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["runs"] == 3 and result["failed"] == 0 and result["faults"] == "off"


def _failing(seed: int, faults: bool) -> RunResult:
    return RunResult(seed=seed, ok=seed != 7, failure=None if seed != 7 else "boom",
                     failure_kind=None if seed != 7 else "safety",
                     config=SimConfig.generate(seed).summary(),
                     trace_tail=["t=1 something happened"])


def test_failures_are_listed_and_exit_non_zero(capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_one", _failing)
    assert cli.main(["--seeds", "5..8", "-q"]) == 1
    out = capsys.readouterr().out
    assert "FAIL seed 7 [safety] boom" in out and "failing seeds: 7" in out
    assert cli.main(["--seed", "7"]) == 1
    out = capsys.readouterr().out
    assert "seed 7: FAIL [safety] boom" in out and "t=1 something happened" in out


@pytest.mark.parametrize("argv", [[], ["--seed", "x"], ["--seeds", "9..3"],
                                  ["--seed", "1", "--faults", "maybe"],
                                  ["--seed", "1", "--seeds", "1..2"], ["--seed", "-4"]])
def test_usage_errors_exit_2_without_traceback(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_swarm_summary_has_the_recovery_time_distribution(capsys, monkeypatch):
    def run(seed: int, faults: bool) -> RunResult:
        # Seeds 1..100 recover in seed*100 ms: p50 5000, p90 9000, p99 9900, max 10000.
        return RunResult(seed=seed, ok=True, liveness_ms=seed * 100.0,
                         config=SimConfig.generate(seed).summary())

    monkeypatch.setattr(cli, "run_one", run)
    assert cli.main(["--seeds", "1..100", "-q"]) == 0
    out = capsys.readouterr().out
    assert "recovery after heal (ms): p50 5000, p90 9000, p99 9900, max 10000 (seed 100)" in out
    result = json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["liveness_ms_p50"] == 5000.0 and result["liveness_ms_p99"] == 9900.0
    assert result["liveness_ms_max"] == 10000.0 and result["liveness_ms_max_seed"] == 100
    assert result["liveness_over_half_bound"] == 0  # 10 s is not over half of 20 s
