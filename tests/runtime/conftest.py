import asyncio

import pytest

TEST_TIMEOUT_S = 60.0


def run(coro, timeout_s: float = TEST_TIMEOUT_S):
    """Run ``coro`` in a fresh event loop with an overall bound."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)
    return asyncio.run(bounded())


@pytest.fixture
def arun():
    return run
