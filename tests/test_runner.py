"""The runner: open-model latency counts stalls and queueing, invalid runs are flagged, counts are right."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis

from sessionbench.bench.harness.floors import AsyncpgFloor, HybridFloor, RedisFloor
from sessionbench.bench.harness.results import DriverCallCounter
from sessionbench.bench.harness.runner import (
    NoopTarget,
    RunOptions,
    RunResult,
    run_closed,
    run_open,
    run_turns,
    session_uuid,
)
from sessionbench.bench.servers import Servers
from sessionbench.store.accesslog import TraceEvent

STALL_MS = 400


def _reads(seconds: float, rate: float, sessions: int) -> list[TraceEvent]:
    """A steady stream of history reads spread over ``sessions`` sessions."""
    n = int(seconds * rate)
    return [TraceEvent(round(i / rate, 6), f"s{i % sessions}", "read", limit=20) for i in range(n)]


def _ms(result: RunResult, op: str, percentile: float) -> float:
    return float(result.histograms[op].get_value_at_percentile(percentile)) / 1e6


async def _run_with_pause(redis_url: str, pause_at: float | None) -> RunResult:
    floor = await RedisFloor.open(redis_url)
    admin = aioredis.Redis.from_url(redis_url)

    async def pause() -> None:
        assert pause_at is not None
        await asyncio.sleep(pause_at)
        await admin.execute_command("CLIENT", "PAUSE", STALL_MS, "ALL")

    try:
        stall = asyncio.create_task(pause()) if pause_at is not None else None
        result = await run_open(floor, _reads(3.0, 200, 20), RunOptions(max_lag_ms=50))
        if stall is not None:
            await stall
        return result
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await floor.close()


async def test_open_model_latency_includes_an_injected_redis_stall(servers: Servers) -> None:
    """A 400 ms CLIENT PAUSE shows up as a ~400 ms p99 while the schedule keeps its pace (no coordinated omission)."""
    control = await _run_with_pause(servers.redis_url, None)
    stalled = await _run_with_pause(servers.redis_url, 1.0)
    # Reads due during the pause waited for its end: up to STALL_MS, about 1/8 of the run above 100 ms.
    assert _ms(stalled, "read", 99) >= 0.75 * STALL_MS, _ms(stalled, "read", 99)
    assert _ms(stalled, "read", 99) >= _ms(control, "read", 99) + 0.5 * STALL_MS
    assert 0.85 * STALL_MS <= stalled.histograms["read"].get_max_value() / 1e6 < STALL_MS + 300
    # Every read due in the pause is counted from its due time, not only the one per session
    # that hit it first: ~13% of reads were due in it, so p90 sits ~100 ms into it.
    assert _ms(stalled, "read", 90) >= 0.15 * STALL_MS, _ms(stalled, "read", 90)
    # The dispatcher did not stop during the stall: every read was issued near its due time...
    assert stalled.lag.get_value_at_percentile(99) / 1000 < 50
    assert stalled.counts["read"] == 600
    # ...and the run did not stretch by the stall (a closed loop would have slipped instead).
    assert stalled.elapsed_s < 3.0 + 0.3


async def test_queueing_behind_a_slow_operation_counts_from_the_due_time() -> None:
    """An op due while its session is still busy is timed from when it was due, not from when it got to run."""

    class Slow(NoopTarget):
        async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
            await asyncio.sleep(0.3)

    events = [
        TraceEvent(0.0, "a", "append", "u", (10,)),
        TraceEvent(0.05, "a", "read", limit=20),  # due 50 ms in, its session busy until 300 ms
        TraceEvent(0.05, "b", "read", limit=20),  # another session: not delayed
    ]
    result = await run_open(Slow(), events, RunOptions())
    read = result.histograms["read"]
    assert read.get_max_value() / 1e6 >= 230  # ~250 ms of queueing counted
    assert read.get_min_value() / 1e6 < 30


async def test_same_instant_steps_are_timed_from_their_predecessor_not_double_counted() -> None:
    """The read right after the user's message (same instant) is timed from that append's end."""

    class SlowAppend(NoopTarget):
        async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
            await asyncio.sleep(0.2)

    events = [TraceEvent(0.0, "a", "append", "u", (10,)), TraceEvent(0.0, "a", "read", limit=20)]
    result = await run_open(SlowAppend(), events, RunOptions())
    assert result.histograms["append"].get_max_value() / 1e6 >= 190
    assert result.histograms["read"].get_max_value() / 1e6 < 50


async def test_a_generator_that_falls_behind_its_schedule_is_flagged_invalid() -> None:
    """When the event loop is blocked the dispatcher lags; the run says so instead of reporting quietly."""

    class Blocking(NoopTarget):
        async def read(self, session: str, limit: int, before: int | None) -> str | None:
            time.sleep(0.004)  # noqa: ASYNC251 - blocking the loop on purpose, like the seed's sync Redis client
            return None

    result = await run_open(Blocking(), _reads(0.25, 1000, 50), RunOptions(max_lag_ms=10))
    assert not result.valid
    assert any("fell behind its schedule" in reason for reason in result.invalid)
    fine = await run_open(NoopTarget(), _reads(0.5, 200, 50), RunOptions(max_lag_ms=50))
    assert fine.valid, fine.invalid


async def test_overload_beyond_max_in_flight_stops_and_flags_the_run() -> None:
    """A store that cannot keep up fills the in-flight bound; dispatching stops and the run is flagged."""

    class Stuck(NoopTarget):
        async def read(self, session: str, limit: int, before: int | None) -> str | None:
            await asyncio.sleep(0.5)
            return None

    result = await run_open(Stuck(), _reads(0.2, 2000, 400), RunOptions(max_in_flight=100, drain_timeout=2))
    assert any("in flight" in reason for reason in result.invalid)
    assert result.counts["read"] <= 100


async def test_closed_model_keeps_each_session_on_one_client_in_order() -> None:
    """N clients share the work, but a session's events run one at a time in trace order."""
    order: list[tuple[str, int]] = []
    active: set[str] = set()
    overlaps = 0

    class Tracking(NoopTarget):
        async def read(self, session: str, limit: int, before: int | None) -> str | None:
            nonlocal overlaps
            overlaps += session in active
            active.add(session)
            await asyncio.sleep(0)
            active.discard(session)
            order.append((session, limit))
            return None

    events = [TraceEvent(0.0, f"s{i % 7}", "read", limit=i + 1) for i in range(700)]
    result = await run_closed(Tracking(), events, clients=4, duration=30)
    assert result.counts["read"] == 700
    assert overlaps == 0
    for s in {e.session for e in events}:
        limits = [limit for session, limit in order if session == s]
        assert limits == sorted(limits)


async def test_driver_call_counter_counts_one_request_per_round_trip(servers: Servers) -> None:
    """Per turn the bare floors make exactly 3 PG, 3 Redis, or 2 PG + 3 Redis requests, and the counter sees each."""
    pg = await AsyncpgFloor.open(servers.database_url)
    rd = await RedisFloor.open(servers.redis_url)
    hy = await HybridFloor.open(servers.database_url, servers.redis_url)
    try:
        for target, per_turn in ((pg, (3, 0)), (rd, (0, 3)), (hy, (2, 3))):
            run = uuid.uuid4().hex[:8]  # floors share floor_messages (and servers may be reused): fresh sessions
            sessions = [f"{target.name}-{run}-c{i}" for i in range(4)]
            # Warm the pools first: a new connection's handshake is a real but one-off request.
            await run_turns(target, sessions, clients=2, duration=0.1, warmup=0.0)
            with DriverCallCounter() as calls:
                result = await run_turns(target, sessions, clients=2, duration=0.3, warmup=0.0)
            assert not result.errors
            assert result.window_turns > 0
            assert (calls.postgres, calls.redis) == (
                per_turn[0] * result.window_turns,
                per_turn[1] * result.window_turns,
            )
    finally:
        await pg.close()
        await rd.close()
        await hy.close()


async def test_floor_hybrid_makes_one_insert_and_one_pipeline_per_append_and_one_lrange_per_read(
    servers: Servers,
) -> None:
    """floor-hybrid: an append is 1 PostgreSQL + 1 Redis request, a read 1 Redis request, counted client-side."""
    floor = await HybridFloor.open(servers.database_url, servers.redis_url, window=50, ttl=60.0)
    sessions = [f"fh-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    try:
        await floor.append(sessions[0], "u", (10,))  # the pools' first connections are one-off requests
        await floor.read(sessions[0], 20, None)
        with DriverCallCounter() as appends:
            for i in range(20):
                await floor.append(sessions[i % 4], "u" if i % 2 == 0 else "a", (200,))
        assert (appends.postgres, appends.redis) == (20, 20)
        with DriverCallCounter() as batch:
            await floor.append(sessions[1], "ua", (200, 800))  # a whole turn in one INSERT and one pipeline
        assert (batch.postgres, batch.redis) == (1, 1)
        with DriverCallCounter() as reads:
            for i in range(12):
                await floor.read(sessions[i % 4], 20, None)
        assert (reads.postgres, reads.redis) == (0, 12)
        # The pipeline keeps the window, a TTL and the hybrid's entry shape: [seq, role, content, created_at, meta].
        key = floor.cache.key(sessions[1])
        entries = await floor.cache.redis.lrange(key, 0, -1)
        assert [json.loads(e)[:2] for e in entries[-2:]] == [[6, "user"], [7, "assistant"]]
        assert 0 < await floor.cache.redis.pttl(key) <= 60_000
        rows = await floor.database.pool.fetchval(
            "SELECT count(*) FROM floor_messages WHERE session_id = $1", uuid.UUID(session_uuid(sessions[1]))
        )
        assert rows == 7
    finally:
        await floor.close()


async def test_open_model_records_the_offered_load_apart_from_what_completed() -> None:
    """run_open counts the operations its schedule offered and the schedule's length, beside those completed."""
    result = await run_open(NoopTarget(), _reads(1.0, 200, 10), RunOptions(duration=1.0, max_lag_ms=50))
    assert result.offered == 200
    assert result.schedule_s == 1.0
    assert result.counts["read"] == 200
    closed = await run_closed(NoopTarget(), _reads(1.0, 200, 10), clients=2, duration=5)
    assert closed.offered is None


async def test_turn_runner_records_turns_and_per_operation_histograms() -> None:
    """run_turns reports completed turns per second and a histogram for the turn and each step."""
    result = await run_turns(NoopTarget(), [f"t{i}" for i in range(8)], clients=4, duration=0.3, warmup=0.1)
    assert result.turns > 0  # how many depends on the machine; the counts below must agree exactly
    assert result.counts["append"] == 2 * result.counts["turn"]
    assert result.counts["read"] == result.counts["turn"]
    assert result.window_turns >= result.turns
    assert set(result.histograms) >= {"turn", "append", "read"}
