"""Measurement: server-side figures around a run, and the raw result JSON.

Around each configuration :mod:`bench.harness.compare` takes a :class:`Snapshot` before and
after the run, counts Redis round trips client-side, and turns the runner's
:class:`~bench.harness.runner.RunResult` into one JSON record.  The result file holds only
raw figures (encoded HDR histograms, counters, time series) plus everything needed to
say what ran: versions, settings, server configuration, machine, seed, duration.
:mod:`bench.harness.report` reads nothing else.

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
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from hdrh.histogram import HdrHistogram

from bench.harness.runner import RunResult

__all__ = [
    "FORMAT",
    "PERCENTILES",
    "DriverCallCounter",
    "Snapshot",
    "decode_histogram",
    "encode_histogram",
    "environment",
    "percentiles",
    "reset_servers",
    "run_record",
    "snapshot",
    "write_result",
]

FORMAT = "sessionbench-result v1"
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


# ----------------------------------------------------------------------------- histograms


def encode_histogram(hist: HdrHistogram) -> str:
    """HdrHistogram's compressed, base64 V2 encoding (readable by every HDR implementation)."""
    raw = hist.encode()
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


def decode_histogram(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def percentiles(hist: HdrHistogram) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max in milliseconds (histograms record nanoseconds)."""
    out = {f"p{p:g}": hist.get_value_at_percentile(p) / 1e6 for p in PERCENTILES}
    out["max"] = hist.get_max_value() / 1e6
    out["count"] = float(hist.get_total_count())
    return out


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


def run_record(
    name: str,
    result: RunResult,
    *,
    kind: str,
    settings: dict[str, Any],
    before: Snapshot | None = None,
    after: Snapshot | None = None,
    calls: DriverCallCounter | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One configuration's raw figures as a JSON-ready dict."""
    turns = result.window_turns
    servers: dict[str, Any] = {}
    if before is not None and after is not None:
        servers = {
            "pg_size_bytes": after.pg_size,
            "redis_used_memory_bytes": after.redis_used_memory - before.redis_used_memory,
            "redis_keys": after.redis_keys,
            "redis_key_bytes": after.redis_key_bytes,
        }
    if calls is not None:
        servers.update(
            {
                "pg_calls": calls.postgres,
                "redis_calls": calls.redis,
                "turns_counted": turns,
                "pg_round_trips_per_turn": calls.postgres / turns if turns else None,
                "redis_round_trips_per_turn": calls.redis / turns if turns else None,
            }
        )
    return {
        "name": name,
        "kind": kind,
        "settings": settings,
        "mode": result.mode,
        "valid": result.valid,
        "invalid": list(result.invalid),
        "elapsed_s": result.elapsed_s,
        "operations": result.operations,
        "turns": result.turns,
        "counts": dict(result.counts),
        "errors": dict(result.errors),
        "cache": dict(result.cache),
        "histograms": {op: encode_histogram(h) for op, h in sorted(result.histograms.items())},
        "generator": {
            "cpu_s": result.cpu_s,
            "cpu_cores": result.cpu_fraction,
            "scheduler_busy_s": result.scheduler_busy_s,
            "lag_histogram_us": encode_histogram(result.lag),
            "lag_p99_ms": result.lag.get_value_at_percentile(99) / 1000 if result.lag.get_total_count() else 0.0,
            "lag_max_ms": result.lag.get_max_value() / 1000,
        },
        "servers": servers,
        "series": result.series,
        "options": result.options,
        **(extra or {}),
    }


def new_result(kind: str, *, command: list[str], seed: int, **fields: Any) -> dict[str, Any]:
    """The top of a result file; ``configs`` is filled in as configurations finish."""
    return {
        "format": FORMAT,
        "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "seed": seed,
        **environment(),
        **fields,
        "configs": [],
    }


def write_result(directory: Path, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "result.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return path


def load_result(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sessionbench result (format {data.get('format')!r})")
    return data
