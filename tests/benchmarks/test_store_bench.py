"""pytest-benchmark scenarios: each configuration and operation, paired with a bare-driver floor.

Operations: ``append`` (one ~200 B user message), ``read_hit`` (last 20 of a session
whose window is cached, or a plain read where there is no cache), ``read_miss`` (the
same read right after ``FLUSHALL``: the cache must go to PostgreSQL and populate) and
``turn`` (append user ~200 B, read last 20, append assistant ~800 B).

Every round first runs the same operation on the **reference** (the floor for that
operation, :data:`REFERENCE`), untimed by pytest-benchmark but timed here, then the
scenario.  The reference's per-round times go into ``extra_info["reference_data"]``,
so ``sessionbench regress`` divides each round by the reference round measured a
moment earlier: a machine that gets busier or faster between scenarios moves both.
``make test`` runs these bodies once (benchmarks disabled, a smoke test) and again in
``make bench-gate`` with pytest-benchmark enabled, against ``sessionbench/bench/baselines/ratios.json``.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

import pytest
import redis.asyncio as aioredis

from sessionbench.bench.harness.compare import seed_available
from sessionbench.bench.harness.runner import Target, prefill
from sessionbench.bench.servers import Servers

pytestmark = pytest.mark.benchmark_scenario

CONFIGS = ["memory", "postgres", "hybrid", *(["seed"] if seed_available() else []), "floor-asyncpg", "floor-redis",
           "floor-hybrid"]  # fmt: skip
#: The reference (floor) per operation: the floor that makes the same round trips.
REFERENCE = {"append": "floor-asyncpg", "read_hit": "floor-redis", "read_miss": "floor-asyncpg",
             "turn": "floor-asyncpg"}  # fmt: skip
#: The hybrid's appends and turns are divided by floor-hybrid (an INSERT, then one Redis pipeline):
#: the least work its design needs, so the gate holds the hybrid's own overhead.
HYBRID_REFERENCE = {"append": "floor-hybrid", "turn": "floor-hybrid"}


def reference_of(config: str, op: str) -> str:
    """The configuration whose same-run rounds ``config``'s ``op`` is divided by."""
    return HYBRID_REFERENCE.get(op, REFERENCE[op]) if config == "hybrid" else REFERENCE[op]


#: Configurations where a miss differs from a hit (plus the reference itself).
HAS_CACHE = {"hybrid", "seed"}
#: Code under test: the gate fails on these.  Floors and the seed are instruments, reported only.
GATED = {"memory", "postgres", "hybrid"}
WARMUP_ROUNDS = 3


def _scenarios() -> list[Any]:
    out = []
    for op in REFERENCE:
        for config in CONFIGS:
            if op == "read_miss" and config not in HAS_CACHE | {REFERENCE[op]}:
                continue
            out.append(pytest.param(config, op, id=f"{config}-{op}"))
    return out


def _body(loop: asyncio.AbstractEventLoop, target: Target, op: str) -> Callable[[], Awaitable[None]]:
    """Prefill eight sessions with 40 messages, warm their cache, return the timed operation."""
    sessions = [f"bench-{target.name}-{uuid.uuid4().hex[:12]}" for _ in range(8)]
    loop.run_until_complete(prefill(target, sessions, 40, concurrency=4))
    for key in sessions:
        loop.run_until_complete(target.read(key, 20, None))
    cycle = itertools.cycle(sessions)

    async def append() -> None:
        await target.append(next(cycle), "u", (200,))

    async def read() -> None:
        await target.read(next(cycle), 20, None)

    async def turn() -> None:
        key = next(cycle)
        await target.append(key, "u", (200,))
        await target.read(key, 20, None)
        await target.append(key, "a", (800,))

    return {"append": append, "read_hit": read, "read_miss": read, "turn": turn}[op]


@pytest.mark.parametrize(("config", "op"), _scenarios())
def test_scenario(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    open_targets: Callable[[str], Target],
    servers: Servers,
    request: pytest.FixtureRequest,
    config: str,
    op: str,
) -> None:
    """Times one operation of one configuration, each round paired with the same-run floor reference."""
    body = _body(loop, open_targets(config), op)
    reference = reference_of(config, op)
    paired = config != reference
    ref_body = _body(loop, open_targets(reference), op) if paired else None
    client = aioredis.Redis.from_url(servers.redis_url) if op == "read_miss" else None
    ref_times: list[float] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        if client is not None:  # read_miss: an empty cache before every round (not timed)
            loop.run_until_complete(client.flushall())
        if ref_body is not None:
            t0 = perf_counter_ns()
            loop.run_until_complete(ref_body())
            ref_times.append((perf_counter_ns() - t0) / 1e9)
        return (), {}

    rounds = max(5, int(request.config.getoption("benchmark_min_rounds") or 0))
    benchmark.group = op
    benchmark.extra_info.update(
        {"config": config, "reference": f"test_scenario[{reference}-{op}]", "gate": config in GATED}
    )
    try:
        benchmark.pedantic(
            lambda: loop.run_until_complete(body()),
            setup=setup, rounds=rounds, iterations=1, warmup_rounds=WARMUP_ROUNDS,
        )  # fmt: skip
    finally:
        if client is not None:
            loop.run_until_complete(client.aclose())
    if paired and not benchmark.disabled:
        benchmark.extra_info["reference_data"] = ref_times[-rounds:]
        assert len(ref_times) >= rounds
