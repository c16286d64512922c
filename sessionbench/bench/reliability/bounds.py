"""Resource bounds, measured: ``sessionbench bounds`` prints the figures.

Three measurements, each a function the tests call at a smaller scale
(``tests/test_resource_bounds.py``):

:func:`memory_bound`
    The in-process backend written to by many more sessions than ``max_sessions``:
    the session count never exceeds the bound, and the process RSS (psutil) stops
    growing once the bound is reached.
:func:`redis_bound`
    The hybrid's Redis after caching ``sessions`` windows of ``cache.size`` messages,
    then after appending more to every session: ``INFO memory`` ``used_memory``
    against the prediction *window × active sessions × mean encoded entry*, and the
    same figure after the extra appends (it must not grow with history).
:func:`cleanup_bound`
    ``cleanup_inactive`` over ``sessions`` inactive sessions inserted in one
    ``INSERT ... SELECT generate_series`` (not through the API), while a concurrent
    appender writes to an active session: total duration, the longest batch (one
    transaction, so the longest any lock is held), and the appender's latencies.

Servers come from :mod:`sessionbench.bench.servers` (embedded by default); the benchmark only
touches its own keys and rows (a separate key prefix, sessions it inserted) except
that the cleanup deletes every session older than ``--older-than``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import psutil

from sessionbench.bench.servers import MODES, open_servers
from sessionbench.store.backends.hybrid import HybridStore, create_redis
from sessionbench.store.backends.memory import MemoryStore
from sessionbench.store.backends.postgres import PostgresStore, create_pool, migrate
from sessionbench.store.models import NewMessage
from sessionbench.store.settings import CacheSettings, MemorySettings, RedisSettings

MIB = 1024 * 1024


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ----------------------------------------------------------------------------- memory backend


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    sessions_written: int
    max_sessions: int
    max_messages: int
    peak_sessions: int
    peak_messages_per_session: int
    rss_start: int
    rss_at_bound: int
    rss_end: int
    seconds: float

    @property
    def growth_after_bound(self) -> float:
        """RSS growth after the bound was reached, as a fraction of the growth up to it."""
        return (self.rss_end - self.rss_at_bound) / max(1, self.rss_at_bound - self.rss_start)


async def memory_bound(
    *,
    max_sessions: int = 20_000,
    sessions: int = 200_000,
    turns: int = 2,
    content_bytes: int = 200,
    max_messages: int = 50,
    long_session_messages: int = 500,
) -> MemoryFigures:
    """Write ``sessions`` sessions (``turns`` two-message turns each) into a bounded memory store."""
    store = MemoryStore(settings=MemorySettings(max_sessions=max_sessions, max_messages=max_messages))
    text = "x" * content_bytes
    turn = [NewMessage("user", text), NewMessage("assistant", text)]
    gc.collect()
    rss_start = _rss()
    rss_at_bound = rss_start
    peak = 0
    t0 = time.perf_counter()
    # one long conversation first: per-session history is bounded too
    long_sid = str(uuid.uuid4())
    for _ in range(long_session_messages // 2):
        await store.add_messages(long_sid, turn)
    peak_messages = len(await store.get_messages(long_sid, limit=min(1000, long_session_messages)))
    for i in range(sessions):
        sid = str(uuid.uuid4())
        for _ in range(turns):
            await store.add_messages(sid, turn)
        peak = max(peak, len(store))
        if i + 1 == max_sessions:
            gc.collect()
            rss_at_bound = _rss()
    seconds = time.perf_counter() - t0
    gc.collect()
    rss_end = _rss()
    await store.close()
    return MemoryFigures(sessions + 1, max_sessions, max_messages, peak, peak_messages, rss_start, rss_at_bound,
                         rss_end, seconds)  # fmt: skip


# ----------------------------------------------------------------------------- Redis


@dataclass(frozen=True, slots=True)
class RedisFigures:
    sessions: int
    window: int
    history_before: int
    history_after: int
    mean_entry_bytes: float
    predicted_bytes: int
    keys_after_populate: int
    keys_after_appends: int
    used_after_populate: int
    used_after_appends: int
    max_cached_messages: int
    seconds: float

    @property
    def ratio(self) -> float:
        """What the cache keys take (``MEMORY USAGE``) over the prediction (window × sessions × mean entry)."""
        return self.keys_after_appends / max(1, self.predicted_bytes)

    @property
    def used_ratio(self) -> float:
        """``used_memory`` growth over the prediction (includes the server's per-key bookkeeping)."""
        return self.used_after_appends / max(1, self.predicted_bytes)

    @property
    def growth_with_history(self) -> float:
        """How much the cache keys grew while every session's history grew past the window."""
        return self.keys_after_appends / max(1, self.keys_after_populate) - 1.0


async def _used_memory(redis: Any) -> int:
    """``INFO memory`` ``used_memory``, once the server's cron has shrunk idle client buffers."""
    await asyncio.sleep(1.2)
    info = await redis.info("memory")
    return int(info["used_memory"])


async def _keys_usage(redis: Any, keys: list[str]) -> int:
    """The sum of ``MEMORY USAGE`` over ``keys`` (exact per key; other clients' data does not count)."""
    total = 0
    for start in range(0, len(keys), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 500]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(v or 0) for v in await pipe.execute())
    return total


async def _insert_history(conn: Any, sids: list[uuid.UUID], messages: int, content_bytes: int) -> None:
    """``messages`` messages per session in two set-based statements (sessions, then messages)."""
    await conn.execute(
        "INSERT INTO chat_sessions (session_id, user_id, last_seq) SELECT s, 'bounds', $2 FROM unnest($1::uuid[]) s",
        sids,
        messages,
    )
    await conn.execute(
        """
        INSERT INTO chat_messages (session_id, seq, role, content)
        SELECT s, g, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END, left(repeat(md5(g::text), $3 / 32 + 1), $3)
        FROM unnest($1::uuid[]) s, generate_series(1, $2) g
        """,
        sids,
        messages,
        content_bytes,
    )


async def redis_bound(
    database_url: str,
    redis_url: str,
    *,
    sessions: int = 1000,
    window: int = 20,
    history: int = 60,
    extra_turns: int = 10,
    content_bytes: int = 200,
    concurrency: int = 16,
    key_prefix: str = "sbbounds",
) -> RedisFigures:
    """Cache ``sessions`` windows, append ``extra_turns`` turns to each; compare Redis memory with the prediction."""
    pool = await create_pool(database_url, min_size=1, max_size=concurrency)
    redis = create_redis(redis_url, RedisSettings(socket_timeout=5.0, connect_timeout=5.0))
    sids = [uuid.uuid4() for _ in range(sessions)]
    cache = CacheSettings(size=window, key_prefix=key_prefix)
    store = HybridStore(redis, PostgresStore(pool), cache=cache, breaker=RedisSettings(breaker_failures=1_000_000))
    try:
        await migrate(pool)
        keys = [k for sid in sids for k in store.layout.session(str(sid)).entry[:2]]
        async with pool.acquire() as conn:
            await _insert_history(conn, sids, history, content_bytes)
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(concurrency)
        # open the pool's connections and load the scripts first: only cache entries should count
        await asyncio.gather(*(store.get_messages(sids[0]) for _ in range(concurrency)))
        await redis.delete(*store.layout.session(str(sids[0])).entry)
        base = await _used_memory(redis)

        async def read(sid: uuid.UUID) -> None:
            async with sem:
                await store.get_messages(sid, limit=window)

        await asyncio.gather(*(read(s) for s in sids))
        keys_populated = await _keys_usage(redis, keys)
        used_populated = await _used_memory(redis) - base
        turn = [NewMessage("user", "u" * content_bytes), NewMessage("assistant", "a" * content_bytes)]

        async def append(sid: uuid.UUID) -> None:
            async with sem:
                for _ in range(extra_turns):
                    await store.add_messages(sid, turn)

        await asyncio.gather(*(append(s) for s in sids))
        keys_appended = await _keys_usage(redis, keys)
        used_appended = await _used_memory(redis) - base
        lengths: list[int] = []
        entry_bytes: list[int] = []
        for sid in sids:
            entries = await redis.lrange(store.layout.session(str(sid)).messages, 0, -1)
            lengths.append(len(entries))
            entry_bytes.extend(len(e.encode() if isinstance(e, str) else e) for e in entries)
        mean_entry = sum(entry_bytes) / max(1, len(entry_bytes))
        predicted = int(window * sessions * mean_entry)
        seconds = time.perf_counter() - t0
    finally:
        with contextlib.suppress(Exception):  # best effort: leave nothing of ours behind
            async with pool.acquire() as conn:
                await conn.execute("DELETE FROM chat_sessions WHERE session_id = ANY($1::uuid[])", sids)
            left = [k async for k in redis.scan_iter(match=store.layout.pattern(), count=1000)]
            if left:
                await redis.delete(*left)
        await store.close()  # its sync loop; the clients are closed here
        await redis.aclose()
        await pool.close()
    return RedisFigures(sessions, window, history, history + 2 * extra_turns, mean_entry, predicted, keys_populated,
                        keys_appended, used_populated, used_appended, max(lengths, default=0), seconds)  # fmt: skip


# ----------------------------------------------------------------------------- cleanup


class _TimedPostgres(PostgresStore):
    """A PostgreSQL store that records how long each cleanup batch (one transaction) took."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.batch_seconds: list[float] = []

    async def cleanup_batch(self, older_than: float, batch_size: int) -> list[str]:
        t0 = time.perf_counter()
        try:
            return await super().cleanup_batch(older_than, batch_size)
        finally:
            self.batch_seconds.append(time.perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class CleanupFigures:
    sessions: int
    messages_per_session: int
    insert_seconds: int | float
    deleted: int
    seconds: float
    batch_size: int
    batches: int
    longest_batch_seconds: float
    appends_before: int
    append_p50_before: float
    append_max_before: float
    appends_during: int
    append_p50_during: float
    append_p99_during: float
    append_max_during: float
    active_session_intact: bool

    @property
    def sessions_per_second(self) -> float:
        return self.deleted / max(1e-9, self.seconds)


async def cleanup_bound(
    database_url: str,
    redis_url: str | None = None,
    *,
    sessions: int = 100_000,
    messages_per_session: int = 2,
    batch_size: int = 1000,
    older_than: float = 30 * 86400.0,
    append_interval: float = 0.005,
    max_appends: int = 100_000,
) -> CleanupFigures:
    """Insert ``sessions`` inactive sessions, then clean them up while appending to an active session."""
    pool = await create_pool(database_url, min_size=2, max_size=4)
    redis = create_redis(redis_url, RedisSettings()) if redis_url else None
    try:
        await migrate(pool)
        durable = _TimedPostgres(pool)
        store: PostgresStore | HybridStore = (
            HybridStore(redis, durable, cache=CacheSettings(key_prefix="sbbounds")) if redis is not None else durable
        )
        t0 = time.perf_counter()
        async with pool.acquire() as conn:
            await conn.execute(
                """
                INSERT INTO chat_sessions (session_id, user_id, created_at, last_message_at, last_seq)
                SELECT gen_random_uuid(), 'idle' || (i % 1000), now() - interval '90 days',
                       now() - ($2::float8 + 86400 + i) * interval '1 second', $3
                FROM generate_series(1, $1) i
                """,
                sessions,
                older_than,
                messages_per_session,
            )
            await conn.execute(
                """
                INSERT INTO chat_messages (session_id, seq, role, content, created_at)
                SELECT s.session_id, g, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
                       'an old message ' || g, s.last_message_at
                FROM chat_sessions s, generate_series(1, $2) g
                WHERE s.user_id LIKE 'idle%' AND s.last_message_at < now() - $1 * interval '1 second'
                """,
                older_than,
                messages_per_session,
            )
        insert_seconds = time.perf_counter() - t0
        active = str(uuid.uuid4())
        before = await _append_for(store, active, seconds=0.5, interval=append_interval, max_count=max_appends)
        done = asyncio.Event()
        during_task = asyncio.create_task(
            _append_while(store, active, done, interval=append_interval, max_count=max_appends)
        )
        t0 = time.perf_counter()
        try:
            deleted = await store.cleanup_inactive(older_than, batch_size)
        finally:
            done.set()
        seconds = time.perf_counter() - t0
        during = await during_task
        seqs = [m.seq for m in await store.get_messages(active, limit=1000)]
        total = len(before) + len(during)
        intact = seqs == list(range(max(1, total - 999), total + 1))
        await store.close()  # stops a hybrid's sync loop; the clients are closed below
    finally:
        if redis is not None:
            await redis.aclose()
        await pool.close()
    return CleanupFigures(
        sessions, messages_per_session, insert_seconds, deleted, seconds, batch_size, len(durable.batch_seconds),
        max(durable.batch_seconds, default=0.0), len(before), _percentile(before, 0.5), max(before, default=0.0),
        len(during), _percentile(during, 0.5), _percentile(during, 0.99), max(during, default=0.0), intact,
    )  # fmt: skip


async def _append_once(store: PostgresStore | HybridStore, sid: str, i: int) -> float:
    t0 = time.perf_counter()
    await store.add_message(sid, "user", f"still talking {i}")
    return time.perf_counter() - t0


async def _append_for(
    store: PostgresStore | HybridStore, sid: str, *, seconds: float, interval: float, max_count: int
) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(latencies) < max_count:
        latencies.append(await _append_once(store, sid, len(latencies)))
        await asyncio.sleep(interval)
    return latencies


async def _append_while(
    store: PostgresStore | HybridStore, sid: str, done: asyncio.Event, *, interval: float, max_count: int
) -> list[float]:
    """Append to ``sid`` every ``interval`` s until ``done`` (at most ``max_count`` appends, at most 10 min)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + 600
    while not done.is_set() and len(latencies) < max_count and time.perf_counter() < deadline:
        latencies.append(await _append_once(store, sid, 10_000 + len(latencies)))
        await asyncio.sleep(interval)
    return latencies


# ----------------------------------------------------------------------------- the command


def format_figures(memory: MemoryFigures | None, redis: RedisFigures | None, cleanup: CleanupFigures | None) -> str:
    lines: list[str] = []
    if memory is not None:
        m = memory
        lines += [
            "memory backend",
            f"  sessions written        {m.sessions_written:>12,}   (bound max_sessions={m.max_sessions:,})",
            f"  peak sessions held      {m.peak_sessions:>12,}",
            f"  longest history held    {m.peak_messages_per_session:>12,}   (bound max_messages={m.max_messages})",
            f"  RSS start / at bound    {m.rss_start / MIB:>9.1f} MiB / {m.rss_at_bound / MIB:.1f} MiB",
            f"  RSS at end              {m.rss_end / MIB:>9.1f} MiB   (growth after the bound: "
            f"{m.growth_after_bound:+.1%} of the growth up to it)",
            f"  time                    {m.seconds:>9.1f} s",
        ]
    if redis is not None:
        r = redis
        lines += [
            "redis (hybrid cache)",
            f"  active sessions × window {r.sessions:,} × {r.window}   mean entry {r.mean_entry_bytes:.0f} B",
            f"  prediction              {r.predicted_bytes / MIB:>9.2f} MiB   (window × sessions × mean entry)",
            f"  cache keys, populated   {r.keys_after_populate / MIB:>9.2f} MiB   (MEMORY USAGE; history "
            f"{r.history_before} messages; used_memory +{r.used_after_populate / MIB:.2f} MiB)",
            f"  cache keys, +appends    {r.keys_after_appends / MIB:>9.2f} MiB   (history {r.history_after} messages, "
            f"{r.growth_with_history:+.1%}; used_memory +{r.used_after_appends / MIB:.2f} MiB)",
            f"  measured / predicted    {r.ratio:>12.2f}   (used_memory / predicted {r.used_ratio:.2f})",
            f"  longest cached window   {r.max_cached_messages:>12,}",
        ]
    if cleanup is not None:
        c = cleanup
        lines += [
            "cleanup_inactive",
            f"  inactive sessions       {c.sessions:>12,}   ({c.messages_per_session} messages each, inserted in "
            f"{c.insert_seconds:.1f} s)",
            f"  deleted                 {c.deleted:>12,}   in {c.seconds:.2f} s ({c.sessions_per_second:,.0f}/s)",
            f"  batches                 {c.batches:>12,}   of {c.batch_size}; "
            f"longest {c.longest_batch_seconds * 1000:.0f} ms",
            f"  concurrent appends      {c.appends_during:>12,}   p50 {c.append_p50_during * 1000:.1f} ms, "
            f"p99 {c.append_p99_during * 1000:.1f} ms, max {c.append_max_during * 1000:.1f} ms",
            f"  appends before cleanup  {c.appends_before:>12,}   p50 {c.append_p50_before * 1000:.1f} ms, "
            f"max {c.append_max_before * 1000:.1f} ms",
            f"  active session intact   {c.active_session_intact!s:>12}",
        ]
    return "\n".join(lines)


async def _run(args: argparse.Namespace, database_url: str, redis_url: str) -> dict[str, Any]:
    memory = redis = cleanup = None
    if "memory" in args.only:
        memory = await memory_bound(max_sessions=args.max_sessions, sessions=args.max_sessions * 10)
    if "redis" in args.only:
        redis = await redis_bound(database_url, redis_url, sessions=args.redis_sessions, window=args.window)
    if "cleanup" in args.only:
        cleanup = await cleanup_bound(database_url, redis_url, sessions=args.sessions, batch_size=args.batch_size)
    print(format_figures(memory, redis, cleanup))
    return {
        "memory": asdict(memory) if memory else None,
        "redis": asdict(redis) if redis else None,
        "cleanup": asdict(cleanup) if cleanup else None,
    }


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servers", choices=MODES, default="auto", help="where servers come from (default: auto)")
    parser.add_argument("--only", nargs="+", choices=("memory", "redis", "cleanup"),
                        default=["memory", "redis", "cleanup"], help="bounds to measure (default: all)")  # fmt: skip
    parser.add_argument("--sessions", type=int, default=100_000, metavar="N",
                        help="inactive sessions to clean up (100000)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1000, metavar="N", help="cleanup batch size (1000)")
    parser.add_argument("--max-sessions", type=int, default=20_000, metavar="N", help="memory backend bound (20000)")
    parser.add_argument("--redis-sessions", type=int, default=1000, metavar="N",
                        help="sessions cached in Redis (1000)")  # fmt: skip
    parser.add_argument("--window", type=int, default=20, metavar="MESSAGES", help="cache.size (20)")
    parser.set_defaults(func=_command)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bounds",
        help="measure the resource bounds: memory backend RSS, Redis memory per window, cleanup under load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(p)


def _command(args: argparse.Namespace) -> int:
    for name in ("sessions", "batch_size", "max_sessions", "redis_sessions", "window"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    with open_servers(args.servers) as servers:
        print(f"servers: {servers.describe()}", flush=True)
        asyncio.run(_run(args, servers.database_url, servers.redis_url))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionbench bounds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
