from __future__ import annotations

import pytest

# Small RTTs keep the real-process tests fast: heartbeat 50 ms, election 500 ms.
FAST_RTT = "us-east:eu-west=20ms,us-east:ap-south=40ms,eu-west:ap-south=30ms,eu-central:us-east=25ms,eu-central:eu-west=5ms,eu-central:ap-south=30ms"


@pytest.fixture
def fast_placement(monkeypatch):
    """Shorter placement delays for the server processes the test starts."""
    monkeypatch.setenv("GEOKV_LEADER_RETURN_DELAY_S", "1")
    monkeypatch.setenv("GEOKV_LEADER_COOLDOWN_S", "2")


@pytest.fixture
def fast_rtt() -> str:
    return FAST_RTT


@pytest.fixture
def sturdy_plan():
    """Timeouts for loaded CI machines (many processes on two cores): spurious elections
    under CPU starvation would blur what the tests check."""
    from geokv.geo.timeouts import TimeoutPlan

    return TimeoutPlan(heartbeat_interval_ms=100.0, election_timeout_ms=1000.0)
