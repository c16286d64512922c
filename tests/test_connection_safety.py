"""Connection safety: TLS URLs, servers that never answer, pool exhaustion, and every timeout a documented setting."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from sessionbench.store import StoreClosed, StoreUnavailable, open_store
from sessionbench.store.backends.hybrid import HybridStore, create_redis
from sessionbench.store.backends.postgres import PostgresStore, create_pool
from sessionbench.store.events import StoreEvents
from sessionbench.store.http import ServiceSettings, create_app
from sessionbench.store.protocol import SessionStore
from sessionbench.store.settings import CacheSettings, MemorySettings, PostgresSettings, RedisSettings, Settings
from tests.sources import parse_file

ROOT = Path(__file__).resolve().parent.parent
H = {"Authorization": "Bearer dev-alice"}


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections (the kernel's backlog) and never says a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


# ----------------------------------------------------------------------------- TLS URLs


async def test_rediss_url_selects_tls_and_fails_fast_against_a_plain_server(redis_url: str) -> None:
    """A ``rediss://`` URL makes a TLS client; against a server without TLS it fails within connect_timeout."""
    settings = RedisSettings(connect_timeout=0.25, socket_timeout=0.25)
    tls_url = redis_url.replace("redis://", "rediss://", 1) + "?ssl_cert_reqs=required&ssl_check_hostname=true"
    client = create_redis(tls_url, settings)
    try:
        pool_kwargs = client.connection_pool.connection_kwargs
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"
        assert pool_kwargs["ssl_cert_reqs"] == "required"
        t0 = time.perf_counter()
        with pytest.raises(Exception) as caught:  # noqa: PT011 - redis-py's error class depends on the handshake
            await client.ping()
        elapsed = time.perf_counter() - t0
    finally:
        await client.aclose()
    from redis.exceptions import RedisError

    assert isinstance(caught.value, RedisError | OSError), caught.value
    assert elapsed < 2.0, f"a TLS handshake against a plain server took {elapsed:.2f} s"


async def test_hybrid_with_rediss_against_a_plain_server_degrades_instead_of_hanging(
    database_url: str, redis_url: str
) -> None:
    """A hybrid store whose Redis does not speak TLS opens, writes to PostgreSQL and opens its breaker, fast."""
    t0 = time.perf_counter()
    store = await open_store(
        "hybrid", database_url=database_url, redis_url=redis_url.replace("redis://", "rediss://", 1)
    )
    try:
        sids = [str(uuid.uuid4()) for _ in range(4)]  # one session each: a failed one is not tried again
        for i, sid in enumerate(sids):
            await store.add_message(sid, "user", f"m{i}")
        assert [m.content for m in await store.get_messages(sids[0])] == ["m0"]
        breaker = store.breaker  # type: ignore[attr-defined]
        assert breaker.state == breaker.OPEN
    finally:
        await store.close()
    assert time.perf_counter() - t0 < 5.0


async def test_sslmode_require_against_a_plain_postgres_is_a_clear_store_unavailable(database_url: str) -> None:
    """``?sslmode=require`` against a server without TLS raises StoreUnavailable saying so, at once."""
    t0 = time.perf_counter()
    with pytest.raises(StoreUnavailable, match="SSL"):
        await open_store("postgres", database_url=with_query(database_url, "sslmode=require"))
    assert time.perf_counter() - t0 < 2.0
    store = await open_store("postgres", database_url=with_query(database_url, "sslmode=prefer"))
    await store.close()  # prefer falls back to plain TCP, as libpq does


# ----------------------------------------------------------------------------- servers that never answer


async def test_postgres_that_never_answers_fails_within_connect_timeout() -> None:
    """A PostgreSQL address that accepts TCP but never replies raises StoreUnavailable after connect_timeout."""
    with silent_server() as port:
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            await open_store(
                "postgres",
                database_url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
                **{"postgres.connect_timeout": 0.5},
            )
        elapsed = time.perf_counter() - t0
    assert 0.4 < elapsed < 2.5, elapsed


async def test_redis_that_never_answers_costs_each_write_at_most_the_socket_timeout(database_url: str) -> None:
    """Against a Redis that accepts TCP and never replies, appends succeed, each bounded, and the breaker opens."""
    with silent_server() as port:
        settings = RedisSettings(socket_timeout=0.2, connect_timeout=0.2, breaker_failures=2, breaker_reset=30)
        pool = await create_pool(database_url, min_size=1, max_size=2)
        redis = create_redis(f"redis://127.0.0.1:{port}/0", settings)
        try:
            store = HybridStore(redis, PostgresStore(pool), breaker=settings)
            sid = str(uuid.uuid4())
            durations = []
            for i in range(6):
                t0 = time.perf_counter()
                await store.add_message(sid, "user", f"m{i}")
                durations.append(time.perf_counter() - t0)
            assert store.breaker.state == store.breaker.OPEN
            assert max(durations) < 0.2 * 2 + 0.3, durations  # connect + one command at most
            assert sum(durations[3:]) < 0.2, durations  # breaker open: no more waiting on Redis
            assert [m.seq for m in await store.get_messages(sid)] == [1, 2, 3, 4, 5, 6]
        finally:
            await redis.aclose()
            await pool.close()


# ----------------------------------------------------------------------------- pool exhaustion


async def test_exhausted_postgres_pool_raises_store_unavailable_within_acquire_timeout(database_url: str) -> None:
    """With the only pooled connection held, an operation raises StoreUnavailable after acquire_timeout, not later."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    store = PostgresStore(pool, acquire_timeout=0.3)
    try:
        async with pool.acquire():
            for call in (store.add_message(str(uuid.uuid4()), "user", "x"), store.get_messages(str(uuid.uuid4()))):
                t0 = time.perf_counter()
                with pytest.raises(StoreUnavailable):
                    await call
                assert 0.25 < time.perf_counter() - t0 < 1.0
        assert (await store.add_message(str(uuid.uuid4()), "user", "after")).seq == 1  # released: works again
    finally:
        await pool.close()


async def test_close_with_a_borrowed_connection_terminates_it_after_close_timeout(database_url: str) -> None:
    """asyncpg's ``Pool.close()`` waits forever for a connection nobody gives back; the store's close
    waits ``postgres.close_timeout``, then terminates the pool (here a borrower that never returns)."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    store = PostgresStore(pool, close_timeout=0.3, owns_pool=True)
    conn = await pool.acquire()  # never released
    t0 = time.perf_counter()
    await store.close()
    assert 0.25 < time.perf_counter() - t0 < 3.0
    with pytest.raises(asyncpg.InterfaceError):  # the borrowed connection went with the pool
        await conn.fetchval("select 1")
    with pytest.raises(StoreClosed):
        await store.get_messages(str(uuid.uuid4()))


@contextlib.asynccontextmanager
async def service_on(pool: asyncpg.Pool, acquire_timeout: float) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP service over a PostgreSQL store on ``pool`` (which the caller owns), lifespan running."""

    async def factory(events: StoreEvents) -> SessionStore:
        return PostgresStore(pool, acquire_timeout=acquire_timeout, events=events)

    app = create_app(factory, backend="postgres", registry=CollectorRegistry(), service=ServiceSettings(dev_auth=True))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def test_exhausted_pool_answers_503_with_retry_after_quickly(database_url: str) -> None:
    """Through the service, a request that cannot get a pooled connection answers 503 + Retry-After in time."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with service_on(pool, acquire_timeout=0.3) as http:
            sid = str(uuid.uuid4())
            async with pool.acquire():
                t0 = time.perf_counter()
                r = await http.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "x"}, headers=H)
                elapsed = time.perf_counter() - t0
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "unavailable"
            assert int(r.headers["retry-after"]) >= 1
            assert elapsed < 1.0, elapsed
            r = await http.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "y"}, headers=H)
            assert r.status_code == 201
            assert r.json()["messages"][0]["seq"] == 1  # the refused append was not written
    finally:
        await pool.close()


async def test_pool_max_size_below_the_default_min_size_opens(database_url: str) -> None:
    """``SESSIONSTORE_PG_POOL_MAX=1`` alone (min_size left at its default) gives a working one-connection pool."""
    settings = Settings.from_env({"SESSIONSTORE_BACKEND": "postgres", "DATABASE_URL": database_url,
                                  "SESSIONSTORE_PG_POOL_MAX": "1"})  # fmt: skip
    store = await open_store(settings)
    try:
        assert (await store.add_message(str(uuid.uuid4()), "user", "x")).seq == 1
    finally:
        await store.close()


# ----------------------------------------------------------------------------- timeouts are settings

TIMEOUT_FIELD = re.compile(r"timeout|ttl|reset|retry_after")
GROUPS: dict[str, type[Any]] = {"cache": CacheSettings, "redis": RedisSettings, "postgres": PostgresSettings,
                                "memory": MemorySettings, "service": ServiceSettings}  # fmt: skip


def timeout_settings() -> dict[str, float]:
    """Every time-valued setting, ``group.field`` -> default, read from the dataclasses themselves."""
    out: dict[str, float] = {}
    for group, cls in GROUPS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            if TIMEOUT_FIELD.search(f.name):
                out[f"{group}.{f.name}"] = float(getattr(defaults, f.name))
    return out


def readme_timeouts() -> dict[str, tuple[float, str]]:
    """The README's timeout table: ``group.field`` -> (default seconds, environment variable or '')."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Timeouts", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[a-z]+\.[a-z_]+", cells[0]):
            rows[cells[0]] = (float(cells[1]), cells[2] if cells[2] != "—" else "")
    return rows


def test_readme_timeout_table_matches_the_settings() -> None:
    """The README's Reliability timeout table lists every time-valued setting with its real default and variable."""
    from sessionbench.store.settings import _ENV_KEYS

    env_of = {name: key for key, name in _ENV_KEYS.items()}
    actual = timeout_settings()
    documented = readme_timeouts()
    assert set(documented) == set(actual)
    for name, default in actual.items():
        assert documented[name][0] == default, name
        if not name.startswith("service."):
            assert documented[name][1] == env_of.get(name, ""), name


def test_timeout_defaults_are_sane() -> None:
    """Every timeout default is positive and finite; those a request waits on are short (at most 10 s)."""
    for name, default in timeout_settings().items():
        assert 0 < default < math.inf, name
        if "timeout" in name or name.endswith(".breaker_reset"):
            assert default <= 10.0, name
    redis = RedisSettings()
    assert redis.socket_timeout < PostgresSettings().acquire_timeout  # a dead cache costs less than a busy database


def test_no_hard_coded_timeouts_in_the_store() -> None:
    """No call in ``sessionbench/store/`` passes a literal number as a timeout: they all come from settings."""
    offenders = []
    for path in sorted((ROOT / "sessionbench" / "store").rglob("*.py")):
        tree = parse_file(path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            literal_kw = [
                k.arg
                for k in node.keywords
                if k.arg and "timeout" in k.arg and isinstance(k.value, ast.Constant)
                if type(k.value.value) in (int, float)
            ]
            name = ast.unparse(node.func)
            literal_pos = name in {"asyncio.timeout", "asyncio.wait_for"} and any(
                isinstance(a, ast.Constant) and isinstance(a.value, int | float) for a in node.args
            )
            if literal_kw or literal_pos:
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:80]}")
    assert offenders == []
