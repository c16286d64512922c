"""The peers (stores users already have) as compare columns, on the session's real servers.

Skipped, with the reason, when the ``peers`` extra is not installed; under ``CI=true``
the extra is required and its absence fails the tests instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sessionbench.bench.harness import compare, peers, report, results
from sessionbench.bench.harness.peers import PEERS, Peer, PsycopgRoundTrips, open_peer, window
from sessionbench.bench.harness.results import DriverCallCounter, ResultFile, RunRecord
from sessionbench.bench.harness.runner import RunOptions, run_closed, run_open
from sessionbench.bench.harness.workload import Workload, generate
from sessionbench.bench.servers import Servers
from sessionbench.store.accesslog import TraceEvent
from sessionbench.store.settings import Settings

MISSING = peers.missing_packages()
TTL = Settings().cache.ttl  # the hybrid column's cache TTL in traffic seconds, as compare's default
TURNS = 12  # per session, then one two-message append: 26 messages
SESSIONS = ("s0", "s1", "s2")
#: Round trips (PostgreSQL, Redis) per operation once warm, for each peer.
ROUND_TRIPS: dict[str, dict[str, tuple[int, int]]] = {
    "peer-langchain-postgres": {"append u": (1, 0), "append ua": (1, 0), "read": (1, 0)},
    "peer-langchain-redis": {"append u": (0, 1), "append ua": (0, 2), "read": (0, 1)},
    "peer-langgraph-postgres": {"append u": (3, 0), "append ua": (3, 0), "read": (1, 0)},
}


@pytest.fixture(scope="session")
def extra() -> None:
    """The peers extra: a skip with the install hint when missing, a failure under CI=true."""
    if MISSING:
        reason = f"the peers extra is not installed (missing {', '.join(MISSING)}): {peers.PEER_EXTRA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} -- required under CI=true")
        pytest.skip(reason)


@pytest.fixture
async def urls(extra: None, servers: Servers) -> tuple[str, str]:
    """The session's servers with a fresh schema (every table dropped, FLUSHALL), as compare leaves them."""
    await results.reset_servers(servers.database_url, servers.redis_url)
    return servers.database_url, servers.redis_url


def _events() -> list[TraceEvent]:
    """Per session: TURNS turns (append u, read 20, append a), a two-message append, and a paged read."""
    out: list[TraceEvent] = []
    for turn in range(TURNS):
        for key in SESSIONS:
            t = float(turn)
            out += [
                TraceEvent(t, key, "append", "u", (200,)),
                TraceEvent(t, key, "read", limit=20),
                TraceEvent(t, key, "append", "a", (800,)),
            ]
    for key in SESSIONS:
        out += [TraceEvent(99.0, key, "append", "ua", (300, 900)), TraceEvent(99.0, key, "read", limit=5, before=4)]
    return out


def test_window_is_the_last_limit_messages_before_the_sequence_number() -> None:
    """The client-side window matches get_messages(limit, before_seq) on 1-based sequence numbers."""
    history = list(range(1, 11))  # seq 1..10
    assert window(history, 3, None) == [8, 9, 10]
    assert window(history, 20, None) == history
    assert window(history, 3, 5) == [2, 3, 4]
    assert window(history, 3, 2) == [1]
    assert window(history, 3, 1) == []
    assert window(history, 3, 50) == [8, 9, 10]
    assert window([], 20, None) == []


def test_open_peer_refuses_an_unknown_name() -> None:
    """An unknown peer name is a ValueError naming the peers, before anything is opened."""
    with pytest.raises(ValueError, match="peer-langchain-postgres"):
        peers.missing_packages("peer-nonsense")


@pytest.mark.parametrize("name", PEERS)
async def test_each_peer_through_the_runner_stores_every_message_and_reads_back_windows(
    urls: tuple[str, str], name: str
) -> None:
    """Driven by the runner, each peer keeps every message in order and its reads give the store's windows."""
    target = await open_peer(name, *urls)
    try:
        run = await run_closed(target, _events(), clients=3, duration=120.0)
        assert run.errors == {}
        assert run.counts["append"] == len(SESSIONS) * (2 * TURNS + 1)
        assert run.counts["read"] == len(SESSIONS) * (TURNS + 1)
        for key in SESSIONS:
            every = await target.messages(key, 1000, None)
            assert len(every) == 2 * TURNS + 2
            kinds = [m.type for m in every]
            assert kinds == ["human", "ai"] * (TURNS + 1)
            assert [len(str(m.content)) for m in every[-4:]] == [200, 800, 300, 900]
            last = await target.messages(key, 20, None)
            assert [m.content for m in last] == [m.content for m in every[-20:]]
            paged = await target.messages(key, 5, 4)
            assert [m.content for m in paged] == [m.content for m in every[:3]]
        assert await target.messages("never-written", 20, None) == []
    finally:
        await target.close()


async def _counted(target: Peer, op: str) -> tuple[int, int, int]:
    with DriverCallCounter() as calls, PsycopgRoundTrips(calls) as psycopg_calls:
        if op == "read":
            await target.read("rt", 20, None)
        else:
            roles = op.split()[1]
            await target.append("rt", roles, [200 if r == "u" else 800 for r in roles])
    return calls.postgres, calls.redis, psycopg_calls.count


@pytest.mark.parametrize("name", PEERS)
async def test_round_trips_per_operation_of_each_peer(urls: tuple[str, str], name: str) -> None:
    """Once warm, each peer's append and read make exactly their documented round trips (PEERS.md)."""
    target = await open_peer(name, *urls, pool_size=1)  # one connection: past psycopg's prepare threshold below
    try:
        for _ in range(8):
            await target.append("rt", "ua", [200, 800])
            await target.read("rt", 20, None)
        for op, (pg, redis) in ROUND_TRIPS[name].items():
            for _ in range(3):
                assert await _counted(target, op) == (pg, redis, pg), op
    finally:
        await target.close()


async def test_psycopg_counter_counts_flights_and_restores_psycopg(urls: tuple[str, str]) -> None:
    """A pipelined batch of five INSERTs is one round trip, BEGIN/INSERT/COMMIT three; afterwards nothing is patched."""
    import psycopg
    import psycopg._cursor_base as cursor_base

    original = vars(cursor_base)["execute"]
    async with await psycopg.AsyncConnection.connect(urls[0], autocommit=True) as conn:
        await conn.execute("CREATE TABLE counted (n int)")
        with PsycopgRoundTrips() as counter:
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO counted VALUES (%s)", [(i,) for i in range(5)])
        assert counter.count == 1
    assert vars(cursor_base)["execute"] is original
    async with await psycopg.AsyncConnection.connect(urls[0]) as conn:
        with PsycopgRoundTrips() as counter:
            await conn.execute("INSERT INTO counted VALUES (99)")  # psycopg sends BEGIN first, on its own
            await conn.commit()
        assert counter.count == 3
        await conn.execute("SELECT 1")
        assert counter.count == 3
        await conn.rollback()


# ----------------------------------------------------------------------------- a compare-like run


async def _measure(name: str, urls: tuple[str, str], workload: Workload) -> RunRecord:
    """What compare does per configuration: fresh schema, open, replay with round trips counted, sizes, close."""
    db, rd = urls
    await results.reset_servers(db, rd)
    target: Any
    if name in PEERS:
        target, settings, kind = await open_peer(name, db, rd), peers.describe(name), "peer"
    else:
        config = compare.Config.parse(name)
        ttl = workload.replay_seconds(TTL)
        target, settings = await compare.open_target(config, db, rd, cache_size=None, ttl_replay=ttl)
        kind = config.kind
    try:
        before = await results.snapshot(db, rd)
        with DriverCallCounter() as calls, PsycopgRoundTrips(calls):
            run = await run_open(target, generate(workload), RunOptions(duration=workload.duration, max_lag_ms=50))
        after = await results.snapshot(db, rd, key_memory=True)
    finally:
        await target.close()
    return RunRecord.from_run(name, run, kind=kind, settings=settings, before=before, after=after, calls=calls)


def _implied(record: RunRecord, trips: dict[str, tuple[int, int]], server: int) -> int:
    """The round trips to ``server`` (0 PostgreSQL, 1 Redis) the run's appends and reads imply once warm."""
    return record.counts["append"] * trips["append u"][server] + record.counts["read"] * trips["read"][server]


async def test_a_short_compare_of_the_peers_and_hybrid_prints_one_table(
    urls: tuple[str, str], servers: Servers, tmp_path: Path
) -> None:
    """One seeded workload through every peer and hybrid renders one table with their columns and round trips."""
    workload = Workload(seed=3, duration=2.0, new_sessions_per_s=0.2)
    names: Sequence[str] = (*PEERS, "hybrid")
    result = ResultFile.new(
        "workload",
        command=["pytest", "tests/test_peers.py"],
        seed=workload.seed,
        reference="hybrid",
        servers={"mode": servers.mode, **await results.server_config(*urls)},
        topology=results.topology_of(*urls, servers.mode),
        workload=workload.to_dict(),
        load_model="open",
        ttl_traffic_s=TTL,
        ttl_replay_s=workload.replay_seconds(TTL),
    )
    for name in names:
        result.configs.append(await _measure(name, urls, workload))
    result.attach_overheads()
    data = ResultFile.load(result.write(tmp_path))
    table = report.render_table(data, reference="hybrid")
    print(table)
    header = next(line for line in table.splitlines() if "hybrid" in line and "peer-" in line)
    for name in names:
        assert name in header
    assert "PG round trips/turn" in table
    by_name = {r.name: r for r in data.configs}
    for record in by_name.values():
        assert record.errors == {}, record.name
        assert record.counts["append"] > 0, record.name
        assert record.counts["read"] > 0, record.name
    # Each append of this workload is one message.  Besides the warm costs: a thread's first LangGraph
    # append makes one round trip less, psycopg PREPAREs a statement once per connection, and the
    # Redis peer's first operation on a session makes its client (handshake and INFO: 5 requests).
    sessions = len({ev.session for ev in generate(workload) if ev.t <= workload.duration})
    for name, trips in ROUND_TRIPS.items():
        record = by_name[name]
        pg, redis = record.servers.pg_calls, record.servers.redis_calls
        assert pg is not None
        assert redis is not None
        pg_warm, redis_warm = _implied(record, trips, 0), _implied(record, trips, 1)
        if pg_warm:
            assert pg_warm - sessions <= pg <= pg_warm + 3 * peers.POOL_MAX, (name, pg, pg_warm, sessions)
        else:
            assert pg == 0, name
        if redis_warm:
            assert redis_warm <= redis <= redis_warm + 5 * sessions, (name, redis, redis_warm, sessions)
        else:
            assert redis == 0, name
    assert by_name["hybrid"].cache.get("hit", 0) > 0
