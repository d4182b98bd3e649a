from __future__ import annotations

import pytest

# Small RTTs keep the real-process tests fast: heartbeat 50 ms, election 500 ms.
FAST_RTT = "us-east:eu-west=20ms,us-east:ap-south=40ms,eu-west:ap-south=30ms,eu-central:us-east=25ms,eu-central:eu-west=5ms,eu-central:ap-south=30ms"


FAST_PLACEMENT_ARGS = ["--leader-return-delay", "1s", "--leader-cooldown", "2s"]


@pytest.fixture
def fast_placement() -> list[str]:
    """Server flags: shorter placement delays for the processes the test starts."""
    return list(FAST_PLACEMENT_ARGS)


@pytest.fixture
def fast_rtt() -> str:
    return FAST_RTT


@pytest.fixture
def sturdy_plan():
    """Timeouts for loaded CI machines (many processes on two cores): spurious elections
    under CPU starvation would blur what the tests check."""
    from geokv.geo.timeouts import TimeoutPlan

    return TimeoutPlan(heartbeat_interval_ms=100.0, election_timeout_ms=1000.0)
