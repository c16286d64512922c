"""``sessionbench hotpath``: one client, each store operation against the bare-driver floor of its round trips.

The targets of the store's hot paths are ratios to floors measured beside them, in the
same process, on the same servers, in alternating blocks (A B A B ...) so drift on a
shared machine falls on both sides alike:

==========================================  ==========================================  ======
store operation (p50 per call)              floor (p50 per call)                        target
==========================================  ==========================================  ======
hybrid ``read`` of the last 20, cache hit   ``LRANGE`` of those 20 (``floor-redis``)      1.25x
hybrid ``add_message``                      ``INSERT`` + one pipeline (``floor-hybrid``)  1.25x
postgres ``read`` of the last 20            ``SELECT ... LIMIT 20`` (``floor-asyncpg``)   1.25x
postgres ``add_message``                    ``INSERT`` (``floor-asyncpg``)                1.40x
==========================================  ==========================================  ======

at histories of 20 and 200 messages (the cache window holds 50).  Messages are ~200 B
(user) and ~800 B (assistant), as in the default workload.  The store runs with
instrumentation off (what ``open_store`` returns); ``--instrumented`` wraps it in
``InstrumentedStore`` (metrics, no tracer) to show that wrapper's share.

``--profile`` runs each store operation under cProfile and prints where its time goes,
by component (validation, cache rules and store code, driver encode, driver decode and
I/O plumbing, socket waits, message decode and objects, instrumentation, event loop),
in microseconds per call.  cProfile slows Python code more than it slows waiting, so the
breakdown shows shares, not the absolute cost of an unprofiled call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sessionbench.bench.harness.floors import AsyncpgFloor, HybridFloor, RedisFloor
from sessionbench.bench.harness.runner import payload
from sessionbench.bench.servers import MODES, open_servers
from sessionbench.store import open_store
from sessionbench.store.protocol import SessionStore

Op = Callable[[], Awaitable[Any]]

TARGETS = {"hybrid read.hit": 1.25, "hybrid append": 1.25, "postgres read": 1.25, "postgres append": 1.40}


@dataclass(frozen=True, slots=True)
class Pair:
    """One store operation and its floor, as p50 microseconds per call over every block."""

    name: str
    history: int
    store_us: float
    floor_us: float

    @property
    def ratio(self) -> float:
        return self.store_us / self.floor_us

    @property
    def target(self) -> float:
        return TARGETS[self.name]


async def _block(op: Op, n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await op()
        out.append((time.perf_counter_ns() - t0) / 1000)


async def paired(store_op: Op, floor_op: Op, *, rounds: int, block: int) -> tuple[float, float]:
    """p50 of ``store_op`` and of ``floor_op`` over ``rounds`` alternating blocks of ``block`` calls."""
    for op in (store_op, floor_op):  # warm: connections open, scripts loaded, statements prepared
        await _block(op, 50, [])
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        first, second = (store_op, a), (floor_op, b)
        if i % 2:
            first, second = second, first
        await _block(first[0], block, first[1])
        await _block(second[0], block, second[1])
    return statistics.median(a), statistics.median(b)


class _Texts:
    """Payloads of the workload's sizes, a new one for every call (as the runner makes them)."""

    def __init__(self) -> None:
        self.salt = 0

    def next(self, size: int) -> str:
        self.salt += 1
        return payload(size, self.salt)


async def _history(store: SessionStore, sid: str, n: int, texts: _Texts) -> None:
    for _ in range(0, n, 2):
        await store.add_messages(
            sid, [{"role": "user", "content": texts.next(200)}, {"role": "assistant", "content": texts.next(800)}]
        )


async def measure(
    database_url: str, redis_url: str, *, histories: Sequence[int], rounds: int, block: int, instrumented: bool
) -> list[Pair]:
    texts = _Texts()
    hybrid = await _open("hybrid", database_url, redis_url, instrumented)
    postgres = await _open("postgres", database_url, redis_url, instrumented)
    floor = await HybridFloor.open(database_url, redis_url)
    pg_floor = AsyncpgFloor(await AsyncpgFloor.create_pool(database_url))
    redis_floor = RedisFloor(floor.cache.redis, prefix="floorhot")
    pairs: list[Pair] = []
    try:
        for history in histories:
            ops = await _operations(hybrid, postgres, floor, pg_floor, redis_floor, history, texts)
            for name, (store_op, floor_op) in ops.items():
                s, f = await paired(store_op, floor_op, rounds=rounds, block=block)
                pairs.append(Pair(name, history, s, f))
    finally:
        await hybrid.close()
        await postgres.close()
        await floor.close()
        await pg_floor.close()
    return pairs


async def _operations(
    hybrid: SessionStore, postgres: SessionStore, floor: HybridFloor, pg_floor: AsyncpgFloor, redis_floor: RedisFloor,
    history: int, texts: _Texts,
) -> dict[str, tuple[Op, Op]]:  # fmt: skip
    """Sessions of ``history`` messages on every side, and the store and floor call of each operation."""
    sid = str(uuid.uuid4())
    await _history(hybrid, sid, history, texts)
    await hybrid.get_messages(sid)  # the miss that fills the cache
    if (await hybrid.read(sid)).cache != "hit":
        raise RuntimeError("the hybrid store did not cache the window; is Redis reachable?")
    key = f"floorhot:{{{uuid.uuid4()}}}"
    entries = [m.to_dict() for m in await hybrid.get_messages(sid, limit=50)]
    await redis_floor.redis.rpush(key, *(_encoded(e) for e in entries))
    pg_sid = str(uuid.uuid4())
    await _history(postgres, pg_sid, history, texts)
    floor_sid = "hot-" + uuid.uuid4().hex
    for i in range(history):
        await pg_floor.insert(floor_sid, i + 1, "u" if i % 2 == 0 else "a", [texts.next(200)])
    append_sid = str(uuid.uuid4())
    await _history(hybrid, append_sid, history, texts)
    await hybrid.get_messages(append_sid)
    floor_key = f"{{{sid}}}"
    next_seq = [10**9]

    async def hybrid_read() -> None:
        await hybrid.read(sid, 20)

    async def lrange() -> None:
        await redis_floor.redis.lrange(key, -20, -1)

    async def postgres_read() -> None:
        await postgres.read(pg_sid, 20)

    async def asyncpg_read() -> None:
        await pg_floor.read(floor_sid, 20, None)

    async def hybrid_append() -> None:
        await hybrid.add_message(append_sid, "user", texts.next(200))

    async def floor_append() -> None:
        next_seq[0] += 1
        contents = [texts.next(200)]
        await floor.database.insert(floor_key, next_seq[0], "u", contents)
        await floor.cache.push(floor_key, next_seq[0], "u", contents)

    async def postgres_append() -> None:
        await postgres.add_message(pg_sid, "user", texts.next(200))

    async def asyncpg_append() -> None:
        next_seq[0] += 1
        await pg_floor.insert(floor_sid, next_seq[0], "u", [texts.next(200)])

    return {
        "hybrid read.hit": (hybrid_read, lrange),
        "hybrid append": (hybrid_append, floor_append),
        "postgres read": (postgres_read, asyncpg_read),
        "postgres append": (postgres_append, asyncpg_append),
    }


async def measure_turns(
    database_url: str, redis_url: str, *, histories: Sequence[int], rounds: int, block: int, instrumented: bool
) -> list[tuple[str, int, float, float]]:
    """Per backend and history: p50 of a chat turn written message at a time (``add_message`` of the
    user's, ``read`` of the last 20, ``add_message`` of the answer) and turn-shaped (``add_and_read``
    of the user's, then ``add_message`` of the answer), in alternating blocks on two sessions alike."""
    texts = _Texts()
    out: list[tuple[str, int, float, float]] = []
    for backend in ("hybrid", "postgres"):
        store = await _open(backend, database_url, redis_url, instrumented)
        try:
            for history in histories:
                one, shaped = str(uuid.uuid4()), str(uuid.uuid4())
                for sid in (one, shaped):
                    await _history(store, sid, history, texts)
                    await store.read(sid, 20)  # the hybrid caches the window

                turn_shaped, message_at_a_time = _turn_ops(store, shaped, one, texts)
                shaped_us, one_us = await paired(turn_shaped, message_at_a_time, rounds=rounds, block=block)
                out.append((backend, history, shaped_us, one_us))
        finally:
            await store.close()
    return out


def _turn_ops(store: SessionStore, shaped: str, one: str, texts: _Texts) -> tuple[Op, Op]:
    """The turn-shaped turn on session ``shaped`` and the message-at-a-time one on ``one``."""

    async def turn_shaped() -> None:
        await store.add_and_read(shaped, [{"role": "user", "content": texts.next(200)}], 20)
        await store.add_message(shaped, "assistant", texts.next(800))

    async def message_at_a_time() -> None:
        await store.add_message(one, "user", texts.next(200))
        await store.read(one, 20)
        await store.add_message(one, "assistant", texts.next(800))

    return turn_shaped, message_at_a_time


def format_turns(rows: Sequence[tuple[str, int, float, float]]) -> str:
    lines = [
        "a chat turn, p50 µs: add_and_read + add_message against add_message + read + add_message",
        f"{'backend':10s} {'history':>7s} {'turn-shaped':>12s} {'message at a time':>18s} {'ratio':>7s}",
    ]
    lines += [f"{b:10s} {h:7d} {s:12.1f} {o:18.1f} {s / o:6.2f}x" for b, h, s, o in rows]
    return "\n".join(lines)


def _encoded(entry: dict[str, Any]) -> str:
    from sessionbench.store.backends.hybrid.codec import encode_message
    from sessionbench.store.models import Message

    return encode_message(Message.from_dict(entry)).decode()


async def _open(backend: str, database_url: str, redis_url: str, instrumented: bool) -> SessionStore:
    store = await open_store(backend, database_url=database_url, redis_url=redis_url)
    if not instrumented:
        return store
    from prometheus_client import CollectorRegistry

    from sessionbench.store.instrumentation.wrapper import InstrumentedStore

    return InstrumentedStore(store, backend=backend, registry=CollectorRegistry())


def format_pairs(pairs: Sequence[Pair]) -> str:
    head = f"{'operation':18s} {'history':>7s} {'store p50 µs':>13s} {'floor p50 µs':>13s} {'ratio':>7s} {'target':>7s}"
    lines = [head, "-" * len(head)]
    for p in pairs:
        verdict = "met" if p.ratio <= p.target else f"missed by {p.ratio / p.target - 1:.0%}"
        lines.append(
            f"{p.name:18s} {p.history:7d} {p.store_us:13.1f} {p.floor_us:13.1f} {p.ratio:6.2f}x {p.target:6.2f}x"
            f"  {verdict}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- other Redis clients

#: Async Redis clients that ``--redis-clients`` sets beside redis-py (the ``clients`` extra).
REDIS_CLIENTS: tuple[str, ...] = ("coredis", "valkey-glide")


@dataclass(frozen=True, slots=True)
class ClientFloor:
    """``LRANGE`` of one window with another client against redis-py, paired blocks (p50 µs)."""

    client: str
    history: int
    client_us: float
    redis_py_us: float

    @property
    def ratio(self) -> float:
        return self.client_us / self.redis_py_us


async def _client_lrange(name: str, host: str, port: int) -> tuple[Callable[[str], Awaitable[list[Any]]], Op]:
    """``(lrange(key) -> entries, close)`` for client ``name``; ImportError when it is not installed."""
    if name == "coredis":
        import coredis

        stack = contextlib.AsyncExitStack()
        cd: Any = await stack.enter_async_context(coredis.Redis(host=host, port=port))  # coredis 6 connects here
        return (lambda key: cd.lrange(key, -20, -1)), stack.aclose
    if name == "valkey-glide":
        import glide

        config = glide.GlideClientConfiguration([glide.NodeAddress(host, port)], request_timeout=250)
        gl: Any = await glide.GlideClient.create(config)
        return (lambda key: gl.lrange(key, -20, -1)), gl.close
    raise ValueError(f"unknown Redis client {name!r}; one of {', '.join(REDIS_CLIENTS)}")


def _entries(texts: _Texts, n: int) -> list[str]:
    """``n`` cache entries as the store encodes them (user ~200 B, assistant ~800 B)."""
    sid = str(uuid.uuid4())
    return [
        _encoded({"session_id": sid, "seq": i + 1, "role": "user" if i % 2 == 0 else "assistant",
                  "content": texts.next(200 if i % 2 == 0 else 800), "created_at": "2026-01-01T00:00:00+00:00",
                  "metadata": {}})
        for i in range(n)
    ]  # fmt: skip


async def measure_clients(
    redis_url: str, *, histories: Sequence[int], rounds: int, block: int, clients: Sequence[str] = REDIS_CLIENTS
) -> tuple[list[ClientFloor], list[str]]:
    """The floor-redis read (``LRANGE`` of the last 20 of a window of up to 50 entries, as the
    store encodes them) with each other client beside redis-py; also the clients not installed.
    Each client must return the same entries as redis-py."""
    from urllib.parse import urlsplit

    import redis.asyncio as aioredis

    url = urlsplit(redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    reference = aioredis.Redis.from_url(redis_url, socket_timeout=0.25)  # the store's default timeout
    texts = _Texts()
    results: list[ClientFloor] = []
    missing: list[str] = []
    keys = {history: f"floorclients:{{{uuid.uuid4()}}}" for history in histories}
    try:
        for history, key in keys.items():
            await reference.rpush(key, *_entries(texts, min(history, 50)))
        for name in clients:
            try:
                lrange, close = await _client_lrange(name, host, port)
            except ImportError:
                missing.append(name)
                continue
            try:
                for history, key in keys.items():
                    want = await reference.lrange(key, -20, -1)
                    got = [x if isinstance(x, bytes) else str(x).encode() for x in await lrange(key)]
                    if got != want:
                        raise RuntimeError(f"{name} returned another window than redis-py for LRANGE {key}")
                    c, r = await paired(_call(lrange, key), _call(reference.lrange, key, -20, -1),
                                        rounds=rounds, block=block)  # fmt: skip
                    results.append(ClientFloor(name, history, c, r))
            finally:
                await close()
    finally:
        await reference.delete(*keys.values())
        await reference.aclose()
    return results, missing


def _call(fn: Callable[..., Awaitable[Any]], *args: Any) -> Op:
    async def op() -> None:
        await fn(*args)

    return op


def format_clients(results: Sequence[ClientFloor], missing: Sequence[str]) -> str:
    head = f"{'LRANGE of 20 with':18s} {'history':>7s} {'client p50 µs':>14s} {'redis-py p50 µs':>16s} {'ratio':>7s}"
    lines = [head, "-" * len(head)]
    lines += [
        f"{r.client:18s} {r.history:7d} {r.client_us:14.1f} {r.redis_py_us:16.1f} {r.ratio:6.2f}x" for r in results
    ]
    lines += [f"{name}: not installed (pip install 'sessionbench[clients]')" for name in missing]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the profile

#: (component, predicate on "file:function") in order; the first match wins.
COMPONENTS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("validation", lambda f: "sessionbench/store/validation.py" in f or "uuid.py" in f),
    ("instrumentation", lambda f: "sessionbench/store/instrumentation/" in f or "prometheus_client" in f),
    (
        "message decode and objects",
        lambda f: (
            "codec.py" in f
            or "orjson" in f
            or "sessionbench/store/models.py" in f
            or "fromisoformat" in f
            or "json/" in f
        ),
    ),
    ("store code (base, cache rules, sync)", lambda f: "/store/" in f),
    (
        "driver encode",
        lambda f: "pack_command" in f or "encoders.py" in f or ("asyncpg/protocol" in f and "encode" in f),
    ),
    (
        "socket waits (select/send/recv)",
        lambda f: "select.epoll" in f or "'send'" in f or "'recv'" in f or "sock_" in f,
    ),
    ("event loop, tasks and timers", lambda f: "asyncio/" in f or "contextvars" in f),
    ("driver (redis-py / asyncpg), rest", lambda f: "/redis/" in f or "asyncpg" in f or "hiredis" in f),
)


def breakdown(stats: pstats.Stats, calls: int) -> list[tuple[str, float]]:
    """Own time per component, in microseconds per operation."""
    totals: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{function}"
        component = next((name for name, match in COMPONENTS if match(where)), "other")
        totals[component] = totals.get(component, 0.0) + tottime
    return sorted(((k, v / calls * 1e6) for k, v in totals.items()), key=lambda kv: -kv[1])


async def profile(database_url: str, redis_url: str, *, calls: int, instrumented: bool) -> str:
    texts = _Texts()
    hybrid = await _open("hybrid", database_url, redis_url, instrumented)
    out: list[str] = []
    try:
        sid = str(uuid.uuid4())
        await _history(hybrid, sid, 20, texts)
        await hybrid.get_messages(sid)
        other = str(uuid.uuid4())
        await _history(hybrid, other, 20, texts)
        await hybrid.get_messages(other)

        async def read() -> None:
            await hybrid.read(sid, 20)

        async def append() -> None:
            await hybrid.add_message(other, "user", texts.next(200))

        for name, op in (("hybrid read.hit", read), ("hybrid append", append)):
            await _block(op, 100, [])
            profiler = cProfile.Profile()
            profiler.enable()
            await _block(op, calls, [])
            profiler.disable()
            stats = pstats.Stats(profiler)
            parts = breakdown(stats, calls)
            total = sum(v for _, v in parts)
            out.append(f"{name}: {total:.1f} µs per call under cProfile")
            out += [f"  {k:38s} {v:7.1f} µs  {v / total:5.1%}" for k, v in parts]
    finally:
        await hybrid.close()
    return "\n".join(out)


# ----------------------------------------------------------------------------- the command


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hotpath",
        help="one client: each store operation's p50 against the bare-driver floor of its round trips",
        description=(
            "One client, on the same servers, in alternating blocks: hybrid cache-hit read vs LRANGE, hybrid "
            "append vs INSERT + one Redis pipeline, postgres read and append vs bare asyncpg. Prints p50 per "
            "call in microseconds, the ratio and its target. --profile adds a breakdown of where a hybrid read "
            "and append spend their time; --turns times a chat turn message at a time against add_and_read; "
            "--redis-clients times the same LRANGE with other async Redis clients."
        ),
    )
    p.add_argument("--servers", choices=MODES, default="auto", help="where servers come from (default: auto)")
    p.add_argument("--histories", default="20,200", metavar="N,N", help="session lengths to measure (20,200)")
    p.add_argument("--rounds", type=int, default=20, metavar="N", help="alternating blocks per side (20)")
    p.add_argument("--block", type=int, default=100, metavar="CALLS", help="calls per block (100)")
    p.add_argument("--instrumented", action="store_true", help="wrap the stores in InstrumentedStore (metrics)")
    p.add_argument("--profile", action="store_true", help="also profile a hybrid read and append (cProfile)")
    p.add_argument(
        "--turns",
        action="store_true",
        help="also time a chat turn message at a time against the turn-shaped add_and_read, per backend",
    )
    p.add_argument("--redis-clients", action="store_true",
                   help="also time the floor-redis LRANGE with coredis and valkey-glide beside redis-py, paired "
                   "blocks (the clients extra)")  # fmt: skip
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    try:
        histories = [int(x) for x in args.histories.split(",") if x.strip()]
    except ValueError:
        histories = []
    if not histories or not all(2 <= h <= 10_000 for h in histories):
        raise ValueError("--histories must be a comma-separated list of session lengths from 2 to 10000")
    if not 2 <= args.rounds <= 1000 or not 10 <= args.block <= 10_000:
        raise ValueError("--rounds must be 2 to 1000 and --block 10 to 10000")
    with open_servers(args.servers) as servers:
        print(f"servers: {servers.describe()}", flush=True)
        pairs = asyncio.run(
            measure(servers.database_url, servers.redis_url, histories=histories, rounds=args.rounds,
                    block=args.block, instrumented=args.instrumented)
        )  # fmt: skip
        print(format_pairs(pairs), flush=True)
        if args.profile:
            print(asyncio.run(profile(servers.database_url, servers.redis_url, calls=3000,
                                      instrumented=args.instrumented)))  # fmt: skip
        if args.turns:
            turns = asyncio.run(
                measure_turns(servers.database_url, servers.redis_url, histories=histories, rounds=args.rounds,
                              block=args.block, instrumented=args.instrumented)
            )  # fmt: skip
            print(format_turns(turns), flush=True)
        if args.redis_clients:
            results, missing = asyncio.run(
                measure_clients(servers.redis_url, histories=histories, rounds=args.rounds, block=args.block)
            )
            print(format_clients(results, missing), flush=True)
    return 0
