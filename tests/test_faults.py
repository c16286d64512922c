"""Faults under load lose nothing acknowledged and serve nothing stale (bench/reliability/faults.py: load, checks).

Short by default (part of ``make test``); ``SESSIONBENCH_LONG=1`` runs longer loads and outages.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from sessionbench.bench.reliability.cycles import format_store_cycles, run_store_cycles, schedule
from sessionbench.bench.reliability.faults import (
    Ledger,
    LoadOptions,
    PostgresRestart,
    RedisFreeze,
    RedisKill,
    RedisPause,
    ServiceKill,
    Timeline,
    check_cache,
    check_ledger,
    format_reports,
    in_process_service,
    run_fault,
    stale_reason,
)
from sessionbench.bench.servers import EmbeddedPgBouncer, EmbeddedPostgres, EmbeddedRedis
from sessionbench.bench.service.process import ServiceProcess
from sessionbench.store import RedisSettings, StoreUnavailable, open_store

pytestmark = pytest.mark.faults

LONG = os.environ.get("SESSIONBENCH_LONG") == "1"
LOAD = LoadOptions(sessions=64, concurrency=16, rate=400) if LONG else LoadOptions(sessions=16, concurrency=6, rate=150)
TIMELINE = Timeline(before=4, fault=8, after=8) if LONG else Timeline(before=1.2, fault=2.0, after=2.0)
REDIS = RedisSettings()
# the slowest a request may be while Redis does not answer: one command timeout (after a
# connect that the kernel completes even for a frozen server), plus slack for two busy cores
LATENCY_BOUND = REDIS.connect_timeout + REDIS.socket_timeout + 1.0


@pytest.fixture
async def service(database_url: str, redis_url: str) -> AsyncIterator[str]:
    """The hybrid service on uvicorn in this event loop, 127.0.0.1, default settings, empty servers."""
    async with in_process_service(database_url, redis_url) as url:
        yield url


@pytest.fixture
def redis_server(embedded_redis: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    """The embedded Redis, thawed and running again after the test whatever happened."""
    try:
        yield embedded_redis
    finally:
        embedded_redis.thaw()
        if embedded_redis.pid is None:
            embedded_redis.restart()


@pytest.fixture
def postgres_server(embedded_postgres: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL, running again after the test whatever happened."""
    try:
        yield embedded_postgres
    finally:
        if embedded_postgres.pid is None:
            embedded_postgres.restart()


def assert_nothing_lost_or_stale(report: object) -> None:
    from sessionbench.bench.reliability.faults import FaultReport

    assert isinstance(report, FaultReport)
    print("\n" + format_reports([report]))
    assert report.acknowledged > 0
    assert (report.lost, report.changed, report.sessions_with_gaps) == (0, 0, 0), report.examples
    assert report.stale_after == 0, report.examples
    assert report.stale_cache_entries == 0, report.examples
    assert report.server_errors_other_than_503 == 0, report.statuses


def assert_cache_fault_contract(report: object) -> None:
    """Rule 5: writes keep succeeding, reads fall back, the breaker opens and closes, the cache serves again."""
    from sessionbench.bench.reliability.faults import FaultReport

    assert isinstance(report, FaultReport)
    assert_nothing_lost_or_stale(report)
    assert set(report.statuses) <= {"200", "201"}, report.statuses  # no write refused, no read failed
    assert report.appends_during_ok > 0
    assert report.stale_during == 0, report.examples
    assert report.breaker_opened
    assert report.breaker_closed_at_end
    assert report.recovery_seconds is not None  # cache hits again after recovery
    assert report.cache_entries_checked > 0


# ----------------------------------------------------------------------------- Redis


async def test_redis_kill_and_restart_under_load(
    service: str, redis_server: EmbeddedRedis, database_url: str, redis_url: str
) -> None:
    """Redis SIGKILLed mid-run and restarted on its port: nothing lost, no failed request, breaker cycles, no stale."""
    report = await run_fault(RedisKill(redis_server), service, database_url=database_url, redis_url=redis_url,
                             load=LOAD, timeline=TIMELINE)  # fmt: skip
    assert_cache_fault_contract(report)


async def test_redis_frozen_beyond_the_timeout_under_load(
    service: str, redis_server: EmbeddedRedis, database_url: str, redis_url: str
) -> None:
    """Redis SIGSTOPped past the socket timeout: latency stays bounded, throughput holds, no connection pile-up."""
    report = await run_fault(RedisFreeze(redis_server), service, database_url=database_url, redis_url=redis_url,
                             load=LOAD, timeline=TIMELINE)  # fmt: skip
    assert_cache_fault_contract(report)
    assert report.max_latency_during < LATENCY_BOUND, report
    assert report.rps_during > 0.3 * report.rps_before, report
    assert report.redis_clients_after <= LOAD.concurrency + 8, report


async def test_redis_client_pause_beyond_the_timeout_under_load(
    service: str, redis_server: EmbeddedRedis, database_url: str, redis_url: str
) -> None:
    """``CLIENT PAUSE ALL`` past the socket timeout: the same bounds as a frozen process."""
    fault = RedisPause(redis_url, TIMELINE.fault)
    report = await run_fault(fault, service, database_url=database_url, redis_url=redis_url, load=LOAD,
                             timeline=TIMELINE)  # fmt: skip
    assert_cache_fault_contract(report)
    assert report.max_latency_during < LATENCY_BOUND, report
    assert report.rps_during > 0.3 * report.rps_before, report
    assert report.redis_clients_after <= LOAD.concurrency + 8, report


# ----------------------------------------------------------------------------- PostgreSQL and the service


async def test_postgres_immediate_restart_under_load(
    service: str, postgres_server: EmbeddedPostgres, database_url: str, redis_url: str
) -> None:
    """PostgreSQL SIGKILLed and restarted: outage appends answer 503, unacknowledged; every acknowledged one stays."""
    report = await run_fault(PostgresRestart(postgres_server), service, database_url=database_url,
                             redis_url=redis_url, load=LOAD, timeline=TIMELINE)  # fmt: skip
    assert_nothing_lost_or_stale(report)
    appends = {k: v for k, v in report.outage_statuses.items() if k.startswith("append")}
    assert appends, report.outage_statuses
    assert set(appends) == {"append 503"}, report.outage_statuses
    assert report.recovery_seconds is not None  # appends succeed again after the restart


#: How soon after PostgreSQL is back an append through PgBouncer must succeed: the embedded
#: PgBouncer retries a failed server login after 1 s (``server_login_retry``; 0.2-1.1 s measured),
#: plus slack. With PgBouncer's default of 15 s appends had not recovered 12 s after the restart.
PGBOUNCER_RECOVERY = 3.0
#: The store's statement timeout in this test: PgBouncer holds a query while it has no server
#: (up to its ``query_wait_timeout``), so the first call of an outage waits this long.
PGBOUNCER_COMMAND_TIMEOUT = 2.0


@pytest.mark.parametrize("backend", ["postgres", "hybrid"])
async def test_postgres_restart_behind_pgbouncer_is_typed_and_recovers(
    postgres_server: EmbeddedPostgres, pgbouncer: EmbeddedPgBouncer, redis_url: str, backend: str
) -> None:
    """PostgreSQL SIGKILLed behind PgBouncer (transaction mode): each append meanwhile raises StoreUnavailable
    within the statement timeout, never a driver exception; appends succeed again soon after the restart;
    every acknowledged one is read back."""
    spec = f"{backend}?postgres.statement_cache_size=0&postgres.command_timeout={PGBOUNCER_COMMAND_TIMEOUT}"
    async with await open_store(spec, database_url=pgbouncer.url, redis_url=redis_url) as store:
        sid = str(uuid.uuid4())
        await store.add_message(sid, "user", "before")
        postgres_server.kill()
        waits = []
        try:
            for i in range(3):
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.add_message(sid, "user", f"during {i}")
                waits.append(round(time.monotonic() - t0, 2))
        finally:
            postgres_server.restart()
        t0 = time.monotonic()
        recovered: float | None = None
        while recovered is None and time.monotonic() - t0 < 4 * PGBOUNCER_RECOVERY:
            try:
                await store.add_message(sid, "user", "after")
                recovered = time.monotonic() - t0
            except StoreUnavailable:
                await asyncio.sleep(0.1)
        print(f"\nfailed appends took {waits} s; appends succeeded again {recovered} s after the restart")
        assert max(waits) < PGBOUNCER_COMMAND_TIMEOUT + 1.0, waits
        assert recovered is not None
        assert recovered < PGBOUNCER_RECOVERY
        assert [m.content for m in (await store.read(sid)).messages] == ["before", "after"]


async def test_service_sigkill_and_restart_under_load(database_url: str, redis_url: str, tmp_path: Path) -> None:
    """``sessionbench serve`` SIGKILLed mid-run and started again: every acknowledged write is in PostgreSQL."""
    proc = ServiceProcess(database_url=database_url, redis_url=redis_url, log_path=tmp_path / "serve.log")
    try:
        await proc.astart()
        report = await run_fault(ServiceKill(proc), proc.url, database_url=database_url, redis_url=redis_url,
                                 load=LOAD, timeline=TIMELINE)  # fmt: skip
    finally:
        proc.stop()
    assert_nothing_lost_or_stale(report)
    assert report.statuses.get("none", 0) > 0  # the kill really cut requests off
    assert report.recovery_seconds is not None


# ----------------------------------------------------------------------------- repeated faults

CYCLES = 10 if LONG else 1  # x2 PostgreSQL crashes and x2 Redis faults (kill, freeze) per level


async def test_repeated_postgres_and_redis_faults_at_the_store_level(
    postgres_server: EmbeddedPostgres, redis_server: EmbeddedRedis, database_url: str, redis_url: str
) -> None:
    """16 clients on the store through repeated PostgreSQL kill -9s and Redis kills/freezes: no exception escapes
    the store, no acknowledged write is lost, no read misses one, no cache window is stale afterwards."""
    fault = schedule(postgres_server, redis_server, CYCLES, down=0.3, up=0.7)
    report = await run_store_cycles(fault, database_url=database_url, redis_url=redis_url, clients=16)
    print("\n" + format_store_cycles([report]))
    assert fault.done == 4 * CYCLES
    assert report.acknowledged > 0
    assert report.store_errors.get("StoreUnavailable", 0) > 0  # the faults really failed calls
    assert report.escaped == {}, report.examples
    assert (report.lost, report.stale_during, report.stale_after) == (0, 0, 0), report.examples
    assert report.stale_cache_entries == 0, report.examples


async def test_repeated_postgres_and_redis_faults_over_http(
    service: str, postgres_server: EmbeddedPostgres, redis_server: EmbeddedRedis, database_url: str, redis_url: str
) -> None:
    """The same faults under 16 HTTP clients: 503s while PostgreSQL is down, no other 5xx; nothing lost or stale."""
    fault = schedule(postgres_server, redis_server, CYCLES, down=0.3, up=0.7)
    load = LoadOptions(sessions=32, concurrency=16, rate=300)
    report = await run_fault(fault, service, database_url=database_url, redis_url=redis_url, load=load,
                             timeline=Timeline(before=0.5, fault=0.0, after=2.5))  # fmt: skip
    assert fault.done == 4 * CYCLES
    assert_nothing_lost_or_stale(report)
    assert report.statuses.get("503", 0) > 0  # PostgreSQL really was down


# ----------------------------------------------------------------------------- the checkers catch what they claim to


def test_stale_reason_flags_reads_that_contradict_the_ledger() -> None:
    """A read missing an acknowledged seq, with a gap, or with other content than acknowledged is stale."""
    ledger = Ledger()
    sid = str(uuid.uuid4())
    ledger.record(sid, [{"seq": 1, "role": "user", "content": "a"}, {"seq": 2, "role": "assistant", "content": "b"}])
    one, two = ({"seq": 1, "role": "user", "content": "a"}, {"seq": 2, "role": "assistant", "content": "b"})
    assert stale_reason([one, two], ledger, sid, floor=2) == ""
    assert "seq 2 was acknowledged" in stale_reason([one], ledger, sid, floor=2)
    assert "not contiguous" in stale_reason([one, {"seq": 3, "role": "user", "content": "c"}], ledger, sid, floor=2)
    assert "differs" in stale_reason([one, {**two, "content": "B"}], ledger, sid, floor=2)


async def test_check_cache_and_ledger_catch_a_stale_window_and_a_lost_write(database_url: str, redis_url: str) -> None:
    """A cached window that missed an append is reported stale; an acknowledged row missing from PostgreSQL is lost."""
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_url)
    ledger = Ledger()
    fresh, behind = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        for sid in (fresh, behind):
            stored = await store.add_messages(
                sid, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
            )
            ledger.record(sid, [m.to_dict() for m in stored])
            await store.get_messages(sid)  # populate the window
    finally:
        await store.close()
    clean = await check_cache(database_url, redis_url)
    assert (clean.entries, clean.stale) == (2, 0)
    conn = await asyncpg.connect(database_url)
    try:  # a write the cache never saw (as if the extend were lost), and an acknowledged row gone
        await conn.execute(
            "WITH s AS (UPDATE chat_sessions SET last_seq = 3 WHERE session_id = $1 RETURNING session_id) "
            "INSERT INTO chat_messages (session_id, seq, role, content) SELECT session_id, 3, 'user', 'x' FROM s",
            uuid.UUID(behind),
        )
        await conn.execute("DELETE FROM chat_messages WHERE session_id = $1 AND seq = 2", uuid.UUID(fresh))
    finally:
        await conn.close()
    stale = await check_cache(database_url, redis_url)
    assert stale.stale == 2  # behind: misses seq 3; fresh: caches a row PostgreSQL no longer has
    lost = await check_ledger(database_url, ledger)
    assert (lost.acknowledged, lost.lost, lost.sessions_with_gaps) == (4, 1, 1)
