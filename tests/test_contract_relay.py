"""The store contract suite (tests/test_contract.py) again, with PostgreSQL and Redis behind latency relays.

The same tests, collected here with a ``store`` fixture of this module that reaches both
servers through relays (PostgreSQL 0.4 ms, Redis 0.2 ms, 50% jitter): delayed, re-timed
chunks and delayed connection set-up must change no answer of any backend that talks to a
server.  The memory backend talks to none, so it is not repeated here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from sessionbench.bench.harness.relay import Relay, target_of
from sessionbench.bench.servers import Servers
from sessionbench.store import SessionStore, open_store
from tests.test_contract import *  # noqa: F403 - the contract's tests, run here on the relayed stores below

RELAYED = ("postgres", "hybrid")


@pytest.fixture(scope="module")
def relays(servers: Servers) -> Iterator[tuple[Relay, Relay]]:
    """One relay in front of the session's PostgreSQL and one in front of its Redis, for this module."""
    pg = Relay(target_of(servers.database_url), rtt_ms=0.4, jitter=0.5, seed=1).start()
    try:
        rd = Relay(target_of(servers.redis_url), rtt_ms=0.2, jitter=0.5, seed=2).start()
        try:
            yield pg, rd
        finally:
            rd.stop()
    finally:
        pg.stop()


@pytest.fixture(params=RELAYED)
async def store(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, relays: tuple[Relay, Relay]
) -> AsyncIterator[SessionStore]:
    """The postgres and hybrid backends, every server reached through its relay (checked when the test ends)."""
    pg, rd = relays
    before = [pg.stats().up_chunks, rd.stats().up_chunks]
    backend = await open_store(request.param, database_url=pg.url(database_url), redis_url=rd.url(redis_url))
    yield backend
    await backend.close()
    assert pg.stats().up_chunks > before[0], "the store did not talk to PostgreSQL through its relay"
    if request.param == "hybrid":
        assert rd.stats().up_chunks > before[1], "the store did not talk to Redis through its relay"
