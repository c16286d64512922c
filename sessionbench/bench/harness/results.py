"""Measurement: server-side figures around a run, and the typed result records with their JSON.

Around each configuration :mod:`sessionbench.bench.harness.compare` takes a :class:`Snapshot` before and
after the run, counts round trips client-side, and turns the runner's
:class:`~sessionbench.bench.harness.runner.RunResult` into one :class:`RunRecord`; a
:class:`ResultFile` holds the records and everything needed to say what ran (versions,
settings, server configuration and topology, machine, seed, duration).  Each record
class owns its JSON round trip (``to_json`` / ``from_json``); the file holds only raw
figures (encoded HDR histograms, counters, time series) and the overhead ratios derived
from them, and :mod:`sessionbench.bench.harness.report` reads nothing else.  Format
``sessionbench-result v2`` (:data:`FORMAT`); v1 files (no offered load, no overhead
ratios, no topology) are read too, their overhead ratios derived on load.

Round trips per turn are counted client-side while the run lasts, by wrapping the
drivers' request methods: redis-py's ``send_packed_command`` (asyncio and sync clients;
one per request written to a socket, so a pipeline is one) and asyncpg's statement
execution (one per statement; a ``BEGIN`` or a pool's reset query on release counts
too; the one-off prepare of a statement on a new connection does not, it is counted
apart as ``pg_prepares``).  Server counters cannot do this: Redis counts a script's
inner calls, and PostgreSQL flushes per-backend statistics only every second or so.

Per operation, :class:`CountingTarget` also records the round trips each one made on the
wire (statements *and* prepares: with ``statement_cache_size=0``, behind PgBouncer, every
statement is prepared again, one more round trip) as ``"pg+redis"`` signatures per kind
of operation (:class:`RoundTrips`); :mod:`sessionbench.bench.harness.topology` projects a run onto a
network from them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from time import perf_counter_ns
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from hdrh.histogram import HdrHistogram

from sessionbench.bench.harness.floors import FLOOR_OF
from sessionbench.bench.harness.relay import RelayFigures
from sessionbench.bench.harness.runner import Interval, RunResult, Target, new_histogram
from sessionbench.bench.harness.topology import Network, Projection, project

__all__ = [
    "FORMAT",
    "FORMATS",
    "PERCENTILES",
    "CountingTarget",
    "DriverCallCounter",
    "GeneratorFigures",
    "Overhead",
    "ResultFile",
    "RoundTrips",
    "RunRecord",
    "ServerFigures",
    "Snapshot",
    "TurnSettings",
    "attach_overheads",
    "decode_histogram",
    "encode_histogram",
    "environment",
    "is_result",
    "load_result",
    "note_postgres",
    "reset_servers",
    "snapshot",
    "topology_of",
]

FORMAT_V1 = "sessionbench-result v1"
#: The result file's format; v2 adds the offered load, the overhead ratios and the topology.
FORMAT = "sessionbench-result v2"
#: Formats this version reads (v1 files get their overhead ratios derived on load).
FORMATS: tuple[str, ...] = (FORMAT_V1, FORMAT)
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
#: Operations a run across a network is projected for (:meth:`ResultFile.attach_projections`).
PROJECTED_OPS: tuple[str, ...] = ("append", "read", "read.hit", "read.miss", "turn")


# ----------------------------------------------------------------------------- histograms


def encode_histogram(hist: HdrHistogram) -> str:
    """HdrHistogram's compressed, base64 V2 encoding (readable by every HDR implementation)."""
    raw = hist.encode()
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


def decode_histogram(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


# ----------------------------------------------------------------------------- servers


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Server-side sizes at one moment."""

    pg_size: int
    redis_used_memory: int
    redis_keys: int
    redis_key_bytes: int | None = None


_PG_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'sessionstore_migrations'
"""


async def snapshot(database_url: str, redis_url: str, *, key_memory: bool = False) -> Snapshot:
    """PostgreSQL table sizes and Redis memory (``key_memory``: also sum
    ``MEMORY USAGE ... SAMPLES 0`` over every key, up to 200,000 keys)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        size = int(await conn.fetchval(_PG_SIZE))
    finally:
        await conn.close()
    used = keys = 0
    key_bytes: int | None = 0 if key_memory else None
    for client in await redis_masters(redis_url):
        try:
            used += int((await client.info("memory"))["used_memory"])
            keys += int(await client.dbsize())
            if key_bytes is not None:
                key_bytes += await _key_bytes(client)
        finally:
            await client.aclose()
    return Snapshot(size, used, keys, key_bytes)


async def redis_masters(redis_url: str) -> list[aioredis.Redis]:
    """A client per master: the one server, or every master of a Redis Cluster (the caller closes them).

    Figures of a cluster (memory, keys) are the sums over its masters; a reset flushes each.
    """
    client = aioredis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        if not int((await client.info("cluster")).get("cluster_enabled", 0)):
            return [client]
        nodes = await client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    except BaseException:
        await client.aclose()
        raise
    await client.aclose()
    masters = [addr for addr, node in nodes.items() if "master" in str(node.get("flags", ""))]
    return [aioredis.Redis(host=a.rsplit(":", 1)[0], port=int(a.rsplit(":", 1)[1]), socket_timeout=10) for a in masters]


async def _key_bytes(client: aioredis.Redis, limit: int = 200_000) -> int:
    total = 0
    seen = 0
    batch: list[Any] = []
    async for key in client.scan_iter(count=1000):
        batch.append(key)
        seen += 1
        if len(batch) == 1000 or seen >= limit:
            total += await _usage(client, batch)
            batch = []
        if seen >= limit:
            break
    return total + (await _usage(client, batch) if batch else 0)


async def _usage(client: aioredis.Redis, keys: list[Any]) -> int:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        return sum(int(x or 0) for x in await pipe.execute())


async def reset_servers(database_url: str, redis_url: str) -> None:
    """A fresh schema: drop every table in ``public`` and ``FLUSHALL`` Redis (every master of a cluster)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if tables:
            names = ", ".join('"' + r["tablename"].replace('"', '""') + '"' for r in tables)
            await conn.execute(f"DROP TABLE IF EXISTS {names} CASCADE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    for client in await redis_masters(redis_url):
        try:
            await client.flushall()
        finally:
            await client.aclose()


async def server_config(database_url: str, redis_url: str) -> dict[str, Any]:
    """What the servers say about themselves (versions and the settings that matter)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])",
            [
                "server_version",
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "shared_buffers",
                "max_connections",
                "wal_level",
                "work_mem",
            ],
        )
        pg = {r["name"]: r["setting"] + (r["unit"] or "") for r in rows}
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url, socket_timeout=10, decode_responses=True)
    try:
        info = await client.info("server")
        rd: dict[str, Any] = {
            "version": info.get("valkey_version") or info.get("redis_version"),
            "server_name": info.get("server_name", "redis"),
        }
        for pattern in ("maxmemory*", "appendonly", "save"):
            rd.update({str(k): v for k, v in (await client.config_get(pattern)).items()})
        if int((await client.info("cluster")).get("cluster_enabled", 0)):
            masters = await redis_masters(redis_url)
            rd["cluster_masters"] = len(masters)
            for master in masters:
                await master.aclose()
    finally:
        await client.aclose()
    return {"postgres": pg, "redis": rd}


class _OpTrips:
    """The round trips of the one operation running in this context (see :class:`CountingTarget`)."""

    __slots__ = ("pg", "redis")

    def __init__(self) -> None:
        self.pg = 0
        self.redis = 0


_CURRENT_OP: contextvars.ContextVar[_OpTrips | None] = contextvars.ContextVar("sessionbench_op", default=None)


def note_postgres(counter: Any) -> None:
    """One PostgreSQL round trip of a driver the counter does not patch itself (psycopg, for the peers):
    added to ``counter`` (anything with a ``postgres`` count, or None) and to the running operation."""
    if counter is not None:
        counter.postgres += 1
    if (op := _CURRENT_OP.get()) is not None:
        op.pg += 1


class DriverCallCounter:
    """Counts requests the Redis and PostgreSQL drivers send while active (see the module docstring).

    Patches classes of redis-py and asyncpg for the duration of the ``with`` block and
    restores them after; only one counter may be active at a time.  ``postgres`` counts
    statements, ``postgres_prepares`` the statements asyncpg prepared first (one more round
    trip each: once per connection with its statement cache, every time without).  While a
    :class:`CountingTarget` operation runs, each request is also added to that operation.
    """

    def __init__(self) -> None:
        self.redis = 0
        self.postgres = 0
        self.postgres_prepares = 0
        self._saved: list[tuple[type, str, Any]] = []

    def __enter__(self) -> DriverCallCounter:
        import asyncpg.connection as pg_conn
        import redis.asyncio.connection as async_conn
        import redis.connection as sync_conn

        counter = self
        async_cls: type = async_conn.AbstractConnection
        sync_cls: type = sync_conn.AbstractConnection
        pg_cls: type = pg_conn.Connection
        async_send = async_cls.send_packed_command  # type: ignore[attr-defined]
        sync_send = sync_cls.send_packed_command  # type: ignore[attr-defined]
        pg_execute = pg_cls.execute  # type: ignore[attr-defined]
        pg_statement = pg_cls._Connection__execute  # type: ignore[attr-defined]
        pg_many = pg_cls._executemany  # type: ignore[attr-defined]
        pg_get_statement = pg_cls._get_statement  # type: ignore[attr-defined]
        current = _CURRENT_OP.get

        def redis_request() -> None:
            counter.redis += 1
            if (op := current()) is not None:
                op.redis += 1

        def pg_request() -> None:
            counter.postgres += 1
            if (op := current()) is not None:
                op.pg += 1

        async def counted_async_send(self: Any, command: Any, check_health: bool = True) -> None:
            redis_request()
            await async_send(self, command, check_health)

        def counted_sync_send(self: Any, command: Any, check_health: bool = True) -> None:
            redis_request()
            sync_send(self, command, check_health)

        async def counted_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:  # the simple-query path; with arguments it goes through __execute
                pg_request()
            return await pg_execute(self, query, *args, **kwargs)

        async def counted_statement(self: Any, *args: Any, **kwargs: Any) -> Any:
            pg_request()
            return await pg_statement(self, *args, **kwargs)

        async def counted_many(self: Any, *args: Any, **kwargs: Any) -> Any:
            pg_request()
            return await pg_many(self, *args, **kwargs)

        async def counted_get_statement(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            # asyncpg's cache key (asyncpg 0.30-0.32); a key it no longer uses counts every call as a prepare
            record_class = kwargs.get("record_class") or self._protocol.get_record_class()
            key = (query, record_class, kwargs.get("ignore_custom_codec", False))
            if not kwargs.get("use_cache", True) or self._stmt_cache.get(key) is None:
                counter.postgres_prepares += 1
                if (op := current()) is not None:
                    op.pg += 1
            return await pg_get_statement(self, query, *args, **kwargs)

        patches = [
            (async_cls, "send_packed_command", counted_async_send),
            (sync_cls, "send_packed_command", counted_sync_send),
            (pg_cls, "execute", counted_execute),
            (pg_cls, "_Connection__execute", counted_statement),
            (pg_cls, "_executemany", counted_many),
            (pg_cls, "_get_statement", counted_get_statement),
        ]
        for cls, name, replacement in patches:
            self._saved.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, replacement)
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved = []


def signature(pg: int, redis: int) -> str:
    """The key of an operation's round trips: ``"1+2"`` is 1 PostgreSQL and 2 Redis round trips."""
    return f"{pg}+{redis}"


class RoundTrips:
    """Per kind of operation, how many operations made each number of round trips.

    Kinds: ``append``, ``read``, ``read.<cache result>`` (``read.hit``, ``read.miss``, ...)
    and ``turn`` (a user message's append through the assistant's append, for one
    session, everything in between included).  In runs without a turn of their own
    (the open and closed workload models) the turn's latency is also recorded here: the
    sum of its operations' service times (``turn_histogram``).
    """

    def __init__(self) -> None:
        self.signatures: dict[str, Counter[str]] = {}
        self.service: dict[str, HdrHistogram] = {}
        """Per kind: service times (call to return, nanoseconds), as this wrapper saw them."""
        self.turn_histogram = self._service("turn")
        self._turns: dict[str, list[int]] = {}  # session -> [service ns, pg, redis]

    def _service(self, kind: str) -> HdrHistogram:
        hist = self.service.get(kind)
        if hist is None:
            hist = self.service[kind] = new_histogram()
        return hist

    def add(self, kind: str, pg: int, redis: int, ns: int | None = None) -> None:
        counts = self.signatures.get(kind)
        if counts is None:
            counts = self.signatures[kind] = Counter()
        counts[signature(pg, redis)] += 1
        if ns is not None:
            self._service(kind).record_value(max(1, min(ns, 60_000_000_000)))

    def service_p50_ms(self, kind: str) -> float | None:
        hist = self.service.get(kind)
        if hist is None or not hist.get_total_count():
            return None
        return float(hist.get_value_at_percentile(50)) / 1e6

    def operation(self, session: str, kind: str, op: _OpTrips, ns: int, roles: str = "") -> None:
        """One operation of ``session`` completed."""
        self.add(kind.partition(".")[0], op.pg, op.redis, ns)
        if "." in kind:
            self.add(kind, op.pg, op.redis, ns)
        if roles[:1] == "u":
            self._turns[session] = [0, 0, 0]
        turn = self._turns.get(session)
        if turn is None:
            return
        turn[0] += ns
        turn[1] += op.pg
        turn[2] += op.redis
        if "a" in roles:
            del self._turns[session]
            self.add("turn", turn[1], turn[2], turn[0])

    def failed(self, session: str) -> None:
        """An operation of ``session`` failed: its turn is not counted."""
        self._turns.pop(session, None)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {k: dict(sorted(v.items())) for k, v in sorted(self.signatures.items())}


class CountingTarget:
    """A :class:`~sessionbench.bench.harness.runner.Target` that attributes driver requests to each operation.

    Around every ``append`` and ``read`` it opens a per-operation tally that the active
    :class:`DriverCallCounter` adds to, and times the call (service time, from the call to
    its return); at the end it hands both to a :class:`RoundTrips`.
    """

    def __init__(self, target: Target, trips: RoundTrips) -> None:
        self.target = target
        self.trips = trips
        self.name = target.name

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        op = _OpTrips()
        token = _CURRENT_OP.set(op)
        t0 = perf_counter_ns()
        try:
            await self.target.append(session, roles, sizes)
        except BaseException:
            self.trips.failed(session)
            raise
        finally:
            _CURRENT_OP.reset(token)
        self.trips.operation(session, "append", op, perf_counter_ns() - t0, roles)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        op = _OpTrips()
        token = _CURRENT_OP.set(op)
        t0 = perf_counter_ns()
        try:
            cache = await self.target.read(session, limit, before)
        except BaseException:
            self.trips.failed(session)
            raise
        finally:
            _CURRENT_OP.reset(token)
        self.trips.operation(session, f"read.{cache}" if cache else "read", op, perf_counter_ns() - t0)
        return cache

    async def append_and_read(self, session: str, roles: str, sizes: Sequence[int], limit: int) -> str | None:
        """A turn-shaped call of the wrapped target (see ``runner.turn_shaped``), counted as ``append_read``."""
        op = _OpTrips()
        token = _CURRENT_OP.set(op)
        t0 = perf_counter_ns()
        try:
            cache: str | None = await self.target.append_and_read(session, roles, sizes, limit)  # type: ignore[attr-defined]
        except BaseException:
            self.trips.failed(session)
            raise
        finally:
            _CURRENT_OP.reset(token)
        kind = f"append_read.{cache}" if cache else "append_read"
        self.trips.operation(session, kind, op, perf_counter_ns() - t0, roles)
        return cache

    async def close(self) -> None:
        await self.target.close()


# ----------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            check=False,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.decode().strip() or None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Machine and software versions, for the result file."""
    import psutil

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "machine": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_bytes": psutil.virtual_memory().total,
            "load_average": [round(x, 2) for x in load],
        },
        "versions": {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            **{p: _version(p) or "" for p in ("sessionbench", "asyncpg", "redis", "hiredis", "hdrhistogram", "psutil")},
            "git_commit": _git_commit(),
        },
    }


# ----------------------------------------------------------------------------- records


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _counts(data: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (data or {}).items()}


@dataclass(slots=True)
class ServerFigures:
    """What the servers held after a run, and the requests the drivers sent during it."""

    pg_size_bytes: int | None = None
    redis_used_memory_bytes: int | None = None
    """Growth of Redis ``used_memory`` over the run."""
    redis_keys: int | None = None
    redis_key_bytes: int | None = None
    """Sum of ``MEMORY USAGE`` over every key after the run."""
    pg_calls: int | None = None
    redis_calls: int | None = None
    turns_counted: int | None = None
    pg_prepares: int | None = None
    """Statements asyncpg prepared before running them (one more round trip each)."""
    """Turns the calls are divided by (the whole run, warm-up included)."""

    @property
    def pg_round_trips_per_turn(self) -> float | None:
        return self.pg_calls / self.turns_counted if self.pg_calls is not None and self.turns_counted else None

    @property
    def redis_round_trips_per_turn(self) -> float | None:
        return self.redis_calls / self.turns_counted if self.redis_calls is not None and self.turns_counted else None

    @classmethod
    def measured(
        cls, before: Snapshot | None, after: Snapshot | None, calls: DriverCallCounter | None, turns: int
    ) -> ServerFigures:
        out = cls()
        if before is not None and after is not None:
            out.pg_size_bytes = after.pg_size
            out.redis_used_memory_bytes = after.redis_used_memory - before.redis_used_memory
            out.redis_keys = after.redis_keys
            out.redis_key_bytes = after.redis_key_bytes
        if calls is not None:
            out.pg_calls, out.redis_calls, out.turns_counted = calls.postgres, calls.redis, turns
            out.pg_prepares = calls.postgres_prepares
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.pg_size_bytes is not None or self.redis_keys is not None:
            data.update(
                pg_size_bytes=self.pg_size_bytes,
                redis_used_memory_bytes=self.redis_used_memory_bytes,
                redis_keys=self.redis_keys,
                redis_key_bytes=self.redis_key_bytes,
            )
        if self.pg_calls is not None:
            data.update(
                pg_calls=self.pg_calls,
                redis_calls=self.redis_calls,
                turns_counted=self.turns_counted,
                pg_prepares=self.pg_prepares,
                pg_round_trips_per_turn=self.pg_round_trips_per_turn,  # derived; for readers of the JSON
                redis_round_trips_per_turn=self.redis_round_trips_per_turn,
            )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ServerFigures:
        d = data or {}
        return cls(
            pg_size_bytes=_opt_int(d.get("pg_size_bytes")),
            redis_used_memory_bytes=_opt_int(d.get("redis_used_memory_bytes")),
            redis_keys=_opt_int(d.get("redis_keys")),
            redis_key_bytes=_opt_int(d.get("redis_key_bytes")),
            pg_calls=_opt_int(d.get("pg_calls")),
            redis_calls=_opt_int(d.get("redis_calls")),
            turns_counted=_opt_int(d.get("turns_counted")),
            pg_prepares=_opt_int(d.get("pg_prepares")),
        )


@dataclass(frozen=True, slots=True)
class GeneratorFigures:
    """The load generator's own cost: CPU, dispatcher busy time, schedule lag (µs histogram)."""

    cpu_s: float
    cpu_cores: float
    scheduler_busy_s: float
    lag_histogram_us: str
    lag_p99_ms: float
    lag_max_ms: float

    @classmethod
    def of(cls, result: RunResult) -> GeneratorFigures:
        lag = result.lag
        return cls(
            cpu_s=result.cpu_s,
            cpu_cores=result.cpu_fraction,
            scheduler_busy_s=result.scheduler_busy_s,
            lag_histogram_us=encode_histogram(lag),
            lag_p99_ms=lag.get_value_at_percentile(99) / 1000 if lag.get_total_count() else 0.0,
            lag_max_ms=lag.get_max_value() / 1000,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_s,
            "cpu_cores": self.cpu_cores,
            "scheduler_busy_s": self.scheduler_busy_s,
            "lag_histogram_us": self.lag_histogram_us,
            "lag_p99_ms": self.lag_p99_ms,
            "lag_max_ms": self.lag_max_ms,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GeneratorFigures:
        return cls(
            cpu_s=float(d["cpu_s"]),
            cpu_cores=float(d["cpu_cores"]),
            scheduler_busy_s=float(d["scheduler_busy_s"]),
            lag_histogram_us=str(d["lag_histogram_us"]),
            lag_p99_ms=float(d["lag_p99_ms"]),
            lag_max_ms=float(d["lag_max_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Overhead:
    """One operation of a store against the floor of the round trips it makes (p50 over p50)."""

    op: str
    """The store's histogram (``append``, ``read.hit``, ``read``, ``turn``)."""
    floor: str
    floor_op: str
    p50_ms: float
    floor_p50_ms: float

    @property
    def ratio(self) -> float:
        return self.p50_ms / self.floor_p50_ms if self.floor_p50_ms > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "floor": self.floor,
            "floor_op": self.floor_op,
            "p50_ms": self.p50_ms,
            "floor_p50_ms": self.floor_p50_ms,
            "ratio": self.ratio,  # derived; for readers of the JSON
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Overhead:
        return cls(str(d["op"]), str(d["floor"]), str(d["floor_op"]), float(d["p50_ms"]), float(d["floor_p50_ms"]))


@dataclass(slots=True)
class RunRecord:
    """One configuration's run: raw figures (encoded HDR histograms, counters, series) and what ran.

    Every rate is derived here and nowhere else: :attr:`ops_per_s`, :attr:`turns_per_s`,
    :attr:`offered_per_s`.
    """

    name: str
    kind: str
    """``store`` | ``seed`` | ``floor`` | ``noop``."""
    settings: dict[str, Any]
    mode: str
    """``open`` | ``closed`` | ``turns``."""
    invalid: list[str]
    elapsed_s: float
    turns: int
    counts: dict[str, int]
    errors: dict[str, int]
    cache: dict[str, int]
    histograms: dict[str, str]
    """Per operation (``append``, ``read``, ``read.hit``, ``turn``, ...): HDR V2 encoding, nanoseconds."""
    generator: GeneratorFigures
    servers: ServerFigures
    series: list[Interval]
    options: dict[str, Any]
    history: int | None = None
    """``--closed-turns``: messages each session held before the run."""
    offered_operations: int | None = None
    """Open model: operations the schedule offered (dispatched); None for closed loops and v1 files."""
    schedule_s: float | None = None
    overhead: dict[str, Overhead] = field(default_factory=dict)
    """Per operation: against the floor of its round trips (see :func:`attach_overheads`)."""
    network: Network = field(default_factory=Network)
    """What the configuration ran through: added round-trip times, jitter, a pooler."""
    role: str = "measured"
    """``measured``, or ``local``: the same configuration with nothing added, run so that the
    measured columns can be set beside their projection."""
    point: float | None = None
    """``--sweep pg_rtt=...`` / ``redis_rtt=...``: the swept value (milliseconds) of this run."""
    round_trips: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per kind of operation: ``"pg+redis"`` round trips -> how many operations made them."""
    relays: dict[str, RelayFigures] = field(default_factory=dict)
    """``postgres`` / ``redis``: what the latency relay in front of that server did during the run."""
    projections: dict[str, Projection] = field(default_factory=dict)
    """Per operation: the local run's p50 projected onto :attr:`network` (see :meth:`ResultFile.attach_projections`)."""
    _decoded: dict[str, HdrHistogram] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_run(
        cls,
        name: str,
        result: RunResult,
        *,
        kind: str,
        settings: dict[str, Any],
        before: Snapshot | None = None,
        after: Snapshot | None = None,
        calls: DriverCallCounter | None = None,
        history: int | None = None,
        trips: RoundTrips | None = None,
        network: Network | None = None,
        role: str = "measured",
        point: float | None = None,
        relays: Mapping[str, RelayFigures] | None = None,
    ) -> RunRecord:
        histograms = {op: encode_histogram(h) for op, h in sorted(result.histograms.items())}
        if trips is not None and "turn" not in histograms and trips.turn_histogram.get_total_count():
            histograms["turn"] = encode_histogram(trips.turn_histogram)  # the open model has no turn of its own
        invalid = list(result.invalid)
        for server, figures in (relays or {}).items():
            if why := figures.saturated():
                invalid.append(f"the {server} latency relay was {why}")
        return cls(
            name=name,
            kind=kind,
            settings=settings,
            mode=result.mode,
            invalid=invalid,
            elapsed_s=result.elapsed_s,
            turns=result.turns,
            counts=dict(result.counts),
            errors=dict(result.errors),
            cache=dict(result.cache),
            histograms=histograms,
            generator=GeneratorFigures.of(result),
            servers=ServerFigures.measured(before, after, calls, result.window_turns),
            series=list(result.series),
            options=dict(result.options),
            history=history,
            offered_operations=result.offered,
            schedule_s=result.schedule_s,
            network=network or Network(),
            role=role,
            point=point,
            round_trips=trips.to_json() if trips is not None else {},
            relays=dict(relays or {}),
        )

    # -- derived figures (the one place each is computed)

    @property
    def valid(self) -> bool:
        return not self.invalid

    @property
    def operations(self) -> int:
        """Completed store operations (appends, reads and turn-shaped calls; a turn is three of them, or
        two when turn-shaped)."""
        return self.counts.get("append", 0) + self.counts.get("read", 0) + self.counts.get("append_read", 0)

    @property
    def ops_per_s(self) -> float | None:
        """Achieved throughput: completed operations per second of the run."""
        return self.operations / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def turns_per_s(self) -> float | None:
        return self.turns / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def offered_per_s(self) -> float | None:
        """Open model: the rate the schedule offered (the same for every configuration of a run)."""
        if self.offered_operations is None or not self.schedule_s:
            return None
        return self.offered_operations / self.schedule_s

    @property
    def pg_queries_per_s(self) -> float | None:
        """PostgreSQL statements per second of the run (per turn × turns per second: warm-up excluded)."""
        per_turn, tps = self.servers.pg_round_trips_per_turn, self.turns_per_s
        return per_turn * tps if per_turn is not None and tps is not None else None

    @property
    def relay_cpu_per_request_us(self) -> float | None:
        """CPU of every latency relay of the run per client request they forwarded (both ways)."""
        requests = sum(f.requests for f in self.relays.values())
        return sum(f.cpu_s for f in self.relays.values()) / requests * 1e6 if requests else None

    def trips(self, op: str) -> tuple[float, float] | None:
        """Mean (PG, Redis) round trips of one ``op`` (``append``, ``read``, ``read.hit``, ``turn``)."""
        counts = self.round_trips.get(op)
        total = sum(counts.values()) if counts else 0
        if not counts or not total:
            return None
        pg = sum(int(k.split("+")[0]) * n for k, n in counts.items()) / total
        rd = sum(int(k.split("+")[1]) * n for k, n in counts.items()) / total
        return pg, rd

    @property
    def hit_ratio(self) -> float | None:
        total = sum(self.cache.values())
        return self.cache.get("hit", 0) / total if total else None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def backend(self) -> str | None:
        """The store backend of a ``store`` column (``memory``, ``postgres``, ``hybrid``), else None."""
        if self.kind != "store":
            return None
        return str(self.settings.get("backend") or self.name.partition("?")[0])

    def histogram(self, op: str) -> HdrHistogram | None:
        """The decoded histogram of ``op`` (None when the run has none or it is empty)."""
        if op not in self._decoded:
            text = self.histograms.get(op)
            if not text:
                return None
            self._decoded[op] = decode_histogram(text)
        hist = self._decoded[op]
        return hist if hist.get_total_count() else None

    def latency_ms(self, op: str, point: str) -> float | None:
        """``point``: ``p50``, ``p99.9``, ... or ``max``; milliseconds."""
        hist = self.histogram(op)
        if hist is None:
            return None
        if point == "max":
            return float(hist.get_max_value()) / 1e6
        return float(hist.get_value_at_percentile(float(point.removeprefix("p")))) / 1e6

    def interval_p50_ms(self, op: str) -> list[float]:
        """Per-interval p50s of ``op`` (the repeated samples the regression gate uses)."""
        return [s.p50_ms[op] for s in self.series if s.p50_ms.get(op)]

    # -- JSON

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "settings": self.settings,
            "mode": self.mode,
            "valid": self.valid,  # derived; kept for readers of the JSON
            "invalid": self.invalid,
            "elapsed_s": self.elapsed_s,
            "operations": self.operations,  # derived
            "turns": self.turns,
            "counts": self.counts,
            "errors": self.errors,
            "cache": self.cache,
            "histograms": self.histograms,
            "generator": self.generator.to_json(),
            "servers": self.servers.to_json(),
            "series": [s.to_json() for s in self.series],
            "options": self.options,
            "offered_operations": self.offered_operations,
            "schedule_s": self.schedule_s,
            "overhead": {op: o.to_json() for op, o in self.overhead.items()},
        }
        if self.history is not None:
            data["history"] = self.history
        data["network"] = self.network.to_json()
        data["role"] = self.role
        if self.point is not None:
            data["point"] = self.point
        data["round_trips"] = self.round_trips
        if self.relays:
            data["relays"] = {k: v.to_json() for k, v in self.relays.items()}
        if self.projections:
            data["projections"] = {k: v.to_json() for k, v in self.projections.items()}
        return data

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunRecord:
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            settings=dict(d.get("settings") or {}),
            mode=str(d["mode"]),
            invalid=[str(x) for x in d.get("invalid") or []],
            elapsed_s=float(d["elapsed_s"]),
            turns=int(d["turns"]),
            counts=_counts(d.get("counts")),
            errors=_counts(d.get("errors")),
            cache=_counts(d.get("cache")),
            histograms={str(k): str(v) for k, v in (d.get("histograms") or {}).items()},
            generator=GeneratorFigures.from_json(d["generator"]),
            servers=ServerFigures.from_json(d.get("servers")),
            series=[Interval.from_json(s) for s in d.get("series") or []],
            options=dict(d.get("options") or {}),
            history=_opt_int(d.get("history")),
            offered_operations=_opt_int(d.get("offered_operations")),
            schedule_s=_opt_float(d.get("schedule_s")),
            overhead={str(op): Overhead.from_json(o) for op, o in (d.get("overhead") or {}).items()},
            network=Network.from_json(d.get("network")),
            role=str(d.get("role") or "measured"),
            point=_opt_float(d.get("point")),
            round_trips={str(k): _counts(v) for k, v in (d.get("round_trips") or {}).items()},
            relays={str(k): RelayFigures.from_json(v) for k, v in (d.get("relays") or {}).items()},
            projections={str(k): Projection.from_json(v) for k, v in (d.get("projections") or {}).items()},
        )


def attach_overheads(group: Sequence[RunRecord]) -> None:
    """Fill ``overhead`` of every store record of ``group`` (one history, one run) from :data:`FLOOR_OF`.

    A store's operation is divided by the floor that makes the same round trips, p50
    over p50; an operation whose floor did not run (or has no samples) gets no entry.
    """
    by_name = {r.name: r for r in group}
    for record in group:
        record.overhead = {}
        backend = record.backend
        if backend is None:
            continue
        for (owner, op), (floor_name, floor_op) in FLOOR_OF.items():
            if op == "turn" and record.mode != "turns":
                continue  # the workload models' turn is a sum of service times, not the turn benchmark's
            floor = by_name.get(floor_name)
            mine = record.latency_ms(op, "p50") if owner == backend else None
            theirs = floor.latency_ms(floor_op, "p50") if floor is not None else None
            if mine is not None and theirs:
                record.overhead[op] = Overhead(op, floor_name, floor_op, mine, theirs)


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """``--closed-turns``: the fixed turn and how long each configuration ran it."""

    clients: int
    histories: list[int]
    seconds: float
    warmup: float
    user_bytes: int = 200
    assistant_bytes: int = 800
    limit: int = 20
    shaped: bool = False
    """``--turn-shaped``: the user's append and the read were one ``add_and_read`` call."""

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "histories": self.histories,
            "seconds": self.seconds,
            "warmup": self.warmup,
            "user_bytes": self.user_bytes,
            "assistant_bytes": self.assistant_bytes,
            "limit": self.limit,
            "turn_shaped": self.shaped,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TurnSettings:
        return cls(
            clients=int(d["clients"]),
            histories=[int(h) for h in d["histories"]],
            seconds=float(d["seconds"]),
            warmup=float(d["warmup"]),
            user_bytes=int(d.get("user_bytes", 200)),
            assistant_bytes=int(d.get("assistant_bytes", 800)),
            limit=int(d.get("limit", 20)),
            shaped=bool(d.get("turn_shaped", False)),
        )


def topology_of(database_url: str, redis_url: str, mode: str) -> str:
    """Where the servers ran, in words: loopback unless a URL names another host."""
    hosts = {urlsplit(u).hostname or "" for u in (database_url, redis_url)}
    if hosts <= {"127.0.0.1", "localhost", "::1", ""}:
        return f"loopback: {mode} PostgreSQL and Redis on 127.0.0.1, the same machine as the client"
    return f"network: {mode} servers at {', '.join(sorted(hosts))}"


@dataclass(slots=True)
class ResultFile:
    """A ``result.json``: what ran (command, seed, versions, servers, machine) and one record per column.

    ``workload`` runs (``sessionbench compare``) carry the workload and load model;
    ``turns`` runs (``--closed-turns``) carry :class:`TurnSettings` and one record per
    configuration and history.  Keys this version does not know are kept in ``extra``
    and written back, so a round trip loses nothing.
    """

    kind: str
    created: str
    command: list[str]
    seed: int
    machine: dict[str, Any]
    versions: dict[str, Any]
    reference: str | None = None
    servers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    topology: str | None = None
    """Where the servers ran (see :func:`topology_of`); None in v1 files (then: from ``servers.mode``)."""
    workload: dict[str, Any] | None = None
    trace: str | None = None
    load_model: str | None = None
    ttl_traffic_s: float | None = None
    ttl_replay_s: float | None = None
    estimated_events_per_s: float | None = None
    turns: TurnSettings | None = None
    network: dict[str, Any] | None = None
    """The run's network: ``topology`` (a name or None) and the defaults every configuration
    started from (``pg_rtt_ms``, ``redis_rtt_ms``, ``jitter``, ``pooler``); None when nothing was added."""
    sweep: dict[str, Any] | None = None
    """``--sweep``: ``{"axis": "pg_rtt" | "redis_rtt" | "history", "values": [...]}`` (RTTs in ms)."""
    configs: list[RunRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, kind: str, *, command: list[str], seed: int, **fields: Any) -> ResultFile:
        """The top of a result file; ``configs`` is filled in as configurations finish."""
        env = environment()
        return cls(
            kind=kind,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            command=command,
            seed=seed,
            machine=env["machine"],
            versions=env["versions"],
            **fields,
        )

    def groups(self) -> list[tuple[str, list[RunRecord]]]:
        """The tables of the run, in order: one per history size (``turns`` runs), and within it
        one per sweep point, the local runs behind the projections in a table of their own."""
        if self.kind == "turns" and self.turns is not None:
            histories: list[int | None] = list(self.turns.histories)
        else:
            histories = [None]
        out: list[tuple[str, list[RunRecord]]] = []
        for h in histories:
            mine = [c for c in self.configs if h is None or c.history == h]
            parts: dict[tuple[str, float | None], list[RunRecord]] = {}
            for c in mine:
                parts.setdefault((c.role, c.point), []).append(c)
            if not parts:
                out.append((f"history {h}", []))
            for (role, point), records in parts.items():
                out.append((self._heading(role, point, records, h), records))
        return out

    def _heading(self, role: str, point: float | None, records: Sequence[RunRecord], history: int | None) -> str:
        parts: list[str] = []
        networks = {r.network for r in records}
        if role == "local":
            parts.append("local: nothing added (what the projections start from)")
        elif len(networks) == 1 and not (net := next(iter(networks))).local:
            parts.append(net.label())
        elif point is not None and self.sweep:
            axis = {"pg_rtt": "PG RTT", "redis_rtt": "Redis RTT"}.get(str(self.sweep.get("axis")), "")
            parts.append(f"sweep point: {axis} {point:g} ms".replace("  ", " "))
        if history is not None:
            parts.append(f"history {history}")
        return " · ".join(parts)

    def find(
        self, name: str, history: int | None = None, *, role: str = "measured", point: float | None = None
    ) -> RunRecord | None:
        """The record of ``name`` (at ``history``, sweep ``point``; ``role`` ``local`` for a baseline)."""
        for c in self.configs:
            if c.name == name and c.history == history and c.role == role and c.point == point:
                return c
        return None

    def local_of(self, record: RunRecord) -> RunRecord | None:
        """The run of the same configuration with nothing added, that ``record`` is projected from."""
        local = record.network.zeroed()
        same = [c for c in self.configs if c is not record and c.name == record.name and c.history == record.history]
        return next((c for c in sorted(same, key=lambda c: c.role != "local") if c.network == local), None)

    def attach_overheads(self) -> None:
        for _, group in self.groups():
            attach_overheads(group)

    def attach_projections(self) -> None:
        """Fill ``projections`` of every record run across a network from its local run."""
        for record in self.configs:
            record.projections = {}
            base = None if record.network.local else self.local_of(record)
            if base is None:
                continue
            for op in PROJECTED_OPS:
                p = project(op, base.latency_ms(op, "p50"), base.round_trips.get(op), record.network)
                if p is not None:
                    record.projections[op] = p

    def project_to(self, network: Network) -> list[tuple[RunRecord, dict[str, Projection]]]:
        """Every local record projected onto ``network`` (``sessionbench report --project``)."""
        out = []
        for record in self.configs:
            if not record.network.local:
                continue
            target = replace(network, pooler=record.network.pooler)
            projections = {
                op: p
                for op in PROJECTED_OPS
                if (p := project(op, record.latency_ms(op, "p50"), record.round_trips.get(op), target)) is not None
            }
            out.append((record, projections))
        return out

    @property
    def where(self) -> str:
        """:attr:`topology`, or what a v1 file's server mode implies."""
        if self.topology:
            return self.topology
        mode = self.servers.get("mode") or "unknown"
        if mode in ("embedded", "docker"):
            return f"loopback: {mode} PostgreSQL and Redis on 127.0.0.1, the same machine as the client"
        return f"{mode} servers (not recorded where)"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "created": self.created,
            "command": self.command,
            "seed": self.seed,
            "machine": self.machine,
            "versions": self.versions,
            "reference": self.reference,
            "servers": self.servers,
            "notes": self.notes,
            "topology": self.topology,
        }
        if self.kind == "turns":
            data["turns"] = self.turns.to_json() if self.turns else None
        else:
            data.update(
                workload=self.workload,
                trace=self.trace,
                load_model=self.load_model,
                ttl_traffic_s=self.ttl_traffic_s,
                ttl_replay_s=self.ttl_replay_s,
                estimated_events_per_s=self.estimated_events_per_s,
            )
        if self.network is not None:
            data["network"] = self.network
        if self.sweep is not None:
            data["sweep"] = self.sweep
        data.update(self.extra)
        data["configs"] = [c.to_json() for c in self.configs]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "result") -> ResultFile:
        if data.get("format") not in FORMATS:
            raise ValueError(f"{source}: not a sessionbench result (format {data.get('format')!r})")
        try:
            turns = data.get("turns")
            out = cls(
                kind=str(data.get("kind") or "workload"),
                created=str(data["created"]),
                command=[str(x) for x in data.get("command") or []],
                seed=int(data.get("seed") or 0),
                machine=dict(data.get("machine") or {}),
                versions=dict(data.get("versions") or {}),
                reference=data.get("reference"),
                servers=dict(data.get("servers") or {}),
                notes=[str(x) for x in data.get("notes") or []],
                topology=data.get("topology"),
                workload=data.get("workload"),
                trace=data.get("trace"),
                load_model=data.get("load_model"),
                ttl_traffic_s=_opt_float(data.get("ttl_traffic_s")),
                ttl_replay_s=_opt_float(data.get("ttl_replay_s")),
                estimated_events_per_s=_opt_float(data.get("estimated_events_per_s")),
                turns=TurnSettings.from_json(turns) if isinstance(turns, Mapping) else None,
                network=dict(data["network"]) if isinstance(data.get("network"), Mapping) else None,
                sweep=dict(data["sweep"]) if isinstance(data.get("sweep"), Mapping) else None,
                configs=[RunRecord.from_json(c) for c in data.get("configs") or []],
                extra={k: v for k, v in data.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: malformed sessionbench result ({type(exc).__name__}: {exc})") from None
        if data.get("format") == FORMAT_V1:
            out.attach_overheads()  # v1 files predate the overhead figures: derive them
        return out

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "result.json"
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ResultFile:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a sessionbench result (a JSON {type(data).__name__})")
        return cls.from_json(data, source=str(path))


_KNOWN = frozenset(
    {"format", *(f.name for f in fields(ResultFile) if f.name != "extra"), "turns", "workload", "configs"}
)


def is_result(data: object) -> bool:
    """Whether parsed JSON is a result file this version reads."""
    return isinstance(data, Mapping) and data.get("format") in FORMATS


def load_result(path: Path) -> ResultFile:
    return ResultFile.load(path)
