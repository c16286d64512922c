"""Measurement: server-side figures around a run, and the typed result records with their JSON.

Around each configuration :mod:`bench.harness.compare` takes a :class:`Snapshot` before and
after the run, counts round trips client-side, and turns the runner's
:class:`~bench.harness.runner.RunResult` into one :class:`RunRecord`; a
:class:`ResultFile` holds the records and everything needed to say what ran (versions,
settings, server configuration and topology, machine, seed, duration).  Each record
class owns its JSON round trip (``to_json`` / ``from_json``); the file holds only raw
figures (encoded HDR histograms, counters, time series) and the overhead ratios derived
from them, and :mod:`bench.harness.report` reads nothing else.  Format
``sessionbench-result v2`` (:data:`FORMAT`); v1 files (no offered load, no overhead
ratios, no topology) are read too, their overhead ratios derived on load.

Round trips per turn are counted client-side while the run lasts, by wrapping the
drivers' request methods: redis-py's ``send_packed_command`` (asyncio and sync clients;
one per request written to a socket, so a pipeline is one) and asyncpg's statement
execution (one per statement; a ``BEGIN`` or a pool's reset query on release counts
too; the one-off prepare of a statement on a new connection does not).  Server
counters cannot do this: Redis counts a script's inner calls, and PostgreSQL flushes
per-backend statistics only every second or so.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from hdrh.histogram import HdrHistogram

from bench.harness.floors import FLOOR_OF
from bench.harness.runner import Interval, RunResult

__all__ = [
    "FORMAT",
    "FORMATS",
    "PERCENTILES",
    "DriverCallCounter",
    "GeneratorFigures",
    "Overhead",
    "ResultFile",
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
    client = aioredis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        memory = await client.info("memory")
        keys = int(await client.dbsize())
        key_bytes = await _key_bytes(client) if key_memory else None
    finally:
        await client.aclose()
    return Snapshot(size, int(memory["used_memory"]), keys, key_bytes)


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
    """A fresh schema: drop every table in ``public`` and ``FLUSHALL`` Redis."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if tables:
            names = ", ".join('"' + r["tablename"].replace('"', '""') + '"' for r in tables)
            await conn.execute(f"DROP TABLE IF EXISTS {names} CASCADE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url, socket_timeout=10)
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
    finally:
        await client.aclose()
    return {"postgres": pg, "redis": rd}


class DriverCallCounter:
    """Counts requests the Redis and PostgreSQL drivers send while active (see the module docstring).

    Patches classes of redis-py and asyncpg for the duration of the ``with`` block and
    restores them after; only one counter may be active at a time.
    """

    def __init__(self) -> None:
        self.redis = 0
        self.postgres = 0
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

        async def counted_async_send(self: Any, command: Any, check_health: bool = True) -> None:
            counter.redis += 1
            await async_send(self, command, check_health)

        def counted_sync_send(self: Any, command: Any, check_health: bool = True) -> None:
            counter.redis += 1
            sync_send(self, command, check_health)

        async def counted_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:  # the simple-query path; with arguments it goes through __execute
                counter.postgres += 1
            return await pg_execute(self, query, *args, **kwargs)

        async def counted_statement(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter.postgres += 1
            return await pg_statement(self, *args, **kwargs)

        async def counted_many(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter.postgres += 1
            return await pg_many(self, *args, **kwargs)

        patches = [
            (async_cls, "send_packed_command", counted_async_send),
            (sync_cls, "send_packed_command", counted_sync_send),
            (pg_cls, "execute", counted_execute),
            (pg_cls, "_Connection__execute", counted_statement),
            (pg_cls, "_executemany", counted_many),
        ]
        for cls, name, replacement in patches:
            self._saved.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, replacement)
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved = []


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
    ) -> RunRecord:
        return cls(
            name=name,
            kind=kind,
            settings=settings,
            mode=result.mode,
            invalid=list(result.invalid),
            elapsed_s=result.elapsed_s,
            turns=result.turns,
            counts=dict(result.counts),
            errors=dict(result.errors),
            cache=dict(result.cache),
            histograms={op: encode_histogram(h) for op, h in sorted(result.histograms.items())},
            generator=GeneratorFigures.of(result),
            servers=ServerFigures.measured(before, after, calls, result.window_turns),
            series=list(result.series),
            options=dict(result.options),
            history=history,
            offered_operations=result.offered,
            schedule_s=result.schedule_s,
        )

    # -- derived figures (the one place each is computed)

    @property
    def valid(self) -> bool:
        return not self.invalid

    @property
    def operations(self) -> int:
        """Completed store operations (appends and reads; a turn is three of them)."""
        return self.counts.get("append", 0) + self.counts.get("read", 0)

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

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "histories": self.histories,
            "seconds": self.seconds,
            "warmup": self.warmup,
            "user_bytes": self.user_bytes,
            "assistant_bytes": self.assistant_bytes,
            "limit": self.limit,
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
        """The tables of the run: one, or one per history size for ``turns`` runs."""
        if self.kind != "turns" or self.turns is None:
            return [("", self.configs)]
        return [(f"history {h}", [c for c in self.configs if c.history == h]) for h in self.turns.histories]

    def find(self, name: str, history: int | None = None) -> RunRecord | None:
        return next((c for c in self.configs if c.name == name and c.history == history), None)

    def attach_overheads(self) -> None:
        for _, group in self.groups():
            attach_overheads(group)

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
