"""Fixtures for the pytest-benchmark scenarios: one event loop per module, targets opened in it.

pytest-benchmark cannot await (its issue #66), so each module owns a loop and times
``loop.run_until_complete(op())``; ``asyncio.run`` per call would add ~140 µs of loop
set-up to every sample.  Targets use the session's real servers (``servers`` from
``tests/conftest.py``) with session ids of their own, so nothing needs a reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from sessionbench.bench.harness.compare import Config, open_target
from sessionbench.bench.harness.runner import Target
from sessionbench.bench.servers import Servers


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the whole module (closed at the end)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(scope="module")
def open_targets(servers: Servers, loop: asyncio.AbstractEventLoop) -> Iterator[Callable[[str], Target]]:
    """``get(name)`` opens a configuration's target once (in ``loop``) and closes all at the end."""
    opened: dict[str, Target] = {}

    def get(name: str) -> Target:
        if name not in opened:
            target, _ = loop.run_until_complete(
                open_target(Config.parse(name), servers.database_url, servers.redis_url, cache_size=None,
                            ttl_replay=3600.0)
            )  # fmt: skip
            opened[name] = target
        return opened[name]

    try:
        yield get
    finally:
        for target in opened.values():
            loop.run_until_complete(target.close())
