"""Fault injection under load, with an acknowledged-write ledger: ``sessionbench faults``.

One scenario = the HTTP service (:mod:`sessionbench.store.http.app`, hybrid backend) under a bounded
concurrent load, one fault injected mid-run, then checks against PostgreSQL:

1. **Load** (:func:`run_load`): ``concurrency`` workers append (one message or a
   two-message turn) and read (``GET .../messages?limit=N``) over a fixed set of
   sessions, paced to ``rate`` requests/s in total, bounded in requests and seconds.
2. **Ledger**: every 2xx append is recorded client-side with the ``seq`` it returned.
   Every 200 read is checked on the spot: contiguous seqs, contents equal to the ledger,
   and read-your-acknowledged-writes (a read that starts after seq N was acknowledged
   must return N or later).  A read that fails a check is *stale*.
3. **Fault** (:class:`Fault`): Redis SIGKILL + restart on the same port, Redis
   SIGSTOP/SIGCONT, Redis ``CLIENT PAUSE``, PostgreSQL SIGKILL + restart, or the
   service itself SIGKILLed and restarted (:class:`sessionbench.bench.service.process.ServiceProcess`, a child we own).
4. **Checks** after the load stops: every acknowledged write is in PostgreSQL with its
   content (:func:`check_ledger`), a read of every session through the service equals
   PostgreSQL (:func:`sweep`), and every live cache window in Redis, decoded, is exactly
   PostgreSQL's suffix (:func:`check_cache`).

:func:`format_reports` prints the table: load held (requests/s), acknowledged writes,
lost writes, stale reads after recovery, errors, recovery time.  Every server and
process involved binds 127.0.0.1; only processes started here are signalled, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import redis.asyncio as aioredis

from sessionbench.bench.servers import EmbeddedPostgres, EmbeddedRedis, free_port, open_servers
from sessionbench.bench.service.process import ServiceProcess
from sessionbench.store.backends.hybrid import KeyLayout, decode_entries, servable
from sessionbench.store.backends.hybrid.keys import EPOCH, LAST
from sessionbench.store.models import Message

USER = "faults"
HEADERS = {"Authorization": f"Bearer dev-{USER}"}
_BREAKER = re.compile(r"^sessionstore_cache_breaker_state(?:\{[^}]*\})? (\S+)$", re.M)


# ----------------------------------------------------------------------------- options and records


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """The load: bounded in concurrency, rate, requests and time; seeded."""

    sessions: int = 24
    concurrency: int = 8
    rate: float = 250.0
    read_ratio: float = 0.5
    turn_ratio: float = 0.25
    read_limit: int = 10
    request_timeout: float = 5.0
    max_requests: int = 100_000
    max_seconds: float = 300.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Timeline:
    """Seconds of load before the fault, of the fault itself, and after recovery."""

    before: float = 1.5
    fault: float = 2.0
    after: float = 2.5


@dataclass(slots=True)
class Request:
    """One request of the load, as the client saw it."""

    op: str
    started: float
    seconds: float
    status: int = 0  # 0: no HTTP response (connection refused, reset, timeout)
    error: str = ""
    cache: str = ""
    stale: str = ""


class Ledger:
    """Acknowledged writes: session -> seq -> content, recorded on every 2xx append."""

    def __init__(self) -> None:
        self.acked: dict[str, dict[int, tuple[str, str]]] = {}
        self._top: dict[str, int] = {}

    def record(self, session_id: str, messages: Sequence[Mapping[str, Any]]) -> None:
        entries = self.acked.setdefault(session_id, {})
        for m in messages:
            entries[int(m["seq"])] = (str(m["role"]), str(m["content"]))
            self._top[session_id] = max(self._top.get(session_id, 0), int(m["seq"]))

    def floor(self, session_id: str) -> int:
        """The highest seq acknowledged for the session so far (0: none)."""
        return self._top.get(session_id, 0)

    def __len__(self) -> int:
        return sum(len(v) for v in self.acked.values())


def stale_reason(messages: Sequence[Mapping[str, Any]], ledger: Ledger, session_id: str, floor: int) -> str:
    """Why a 200 read (without ``before_seq``) contradicts the acknowledged writes ("" when it does not)."""
    seqs = [int(m["seq"]) for m in messages]
    if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        return f"not contiguous: {seqs}"
    known = ledger.acked.get(session_id, {})
    for m in messages:
        expected = known.get(int(m["seq"]))
        if expected is not None and expected != (m["role"], m["content"]):
            return f"seq {m['seq']} differs from the acknowledged write"
    if floor and (not seqs or seqs[-1] < floor):
        return f"ends at seq {seqs[-1] if seqs else 0}, but seq {floor} was acknowledged before the read"
    return ""


# ----------------------------------------------------------------------------- the load


async def run_load(
    client: httpx.AsyncClient,
    sessions: Sequence[str],
    ledger: Ledger,
    options: LoadOptions,
    stop: asyncio.Event,
    log: list[Request],
) -> None:
    """Run the workers until ``stop`` is set, ``max_requests`` were sent or ``max_seconds`` passed."""
    interval = options.concurrency / max(options.rate, 1e-3)
    deadline = time.perf_counter() + options.max_seconds

    async def worker(index: int) -> None:
        rng = random.Random(options.seed * 1000 + index)
        next_at = time.perf_counter() + rng.random() * interval
        n = 0
        while not stop.is_set() and len(log) < options.max_requests and time.perf_counter() < deadline:
            delay = next_at - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            next_at = max(next_at + interval, time.perf_counter() - interval)
            sid = rng.choice(sessions)
            n += 1
            if rng.random() < options.read_ratio:
                log.append(await _read(client, sid, ledger, options.read_limit))
            else:
                count = 2 if rng.random() < options.turn_ratio else 1
                log.append(await _append(client, sid, ledger, [f"w{index}-{n}-{k} {sid[:8]}" for k in range(count)]))

    await asyncio.gather(*(worker(i) for i in range(options.concurrency)))


async def _append(client: httpx.AsyncClient, sid: str, ledger: Ledger, contents: list[str]) -> Request:
    roles = ["user", "assistant"]
    if len(contents) == 1:
        body: dict[str, Any] = {"role": "user", "content": contents[0]}
    else:
        body = {"messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]}
    started = time.perf_counter()
    record = Request("append", started, 0.0)
    try:
        r = await client.post(f"/v1/sessions/{sid}/messages", json=body, headers=HEADERS)
        record.status = r.status_code
        if r.status_code == 201:
            stored = r.json()["messages"]
            if [m["content"] for m in stored] != contents:
                record.stale = "the acknowledgement does not echo what was written"
            ledger.record(sid, stored)
    except httpx.HTTPError as exc:
        record.error = type(exc).__name__
    record.seconds = time.perf_counter() - started
    return record


async def _read(client: httpx.AsyncClient, sid: str, ledger: Ledger, limit: int) -> Request:
    floor = ledger.floor(sid)
    started = time.perf_counter()
    record = Request("read", started, 0.0)
    try:
        r = await client.get(f"/v1/sessions/{sid}/messages", params={"limit": limit}, headers=HEADERS)
        record.status = r.status_code
        record.cache = r.headers.get("x-cache", "")
        if r.status_code == 200:
            record.stale = stale_reason(r.json()["messages"], ledger, sid, floor)
    except httpx.HTTPError as exc:
        record.error = type(exc).__name__
    record.seconds = time.perf_counter() - started
    return record


async def watch_breaker(
    client: httpx.AsyncClient, stop: asyncio.Event, samples: list[tuple[float, int | None]], every: float = 0.1
) -> None:
    """Sample the service's ``sessionstore_cache_breaker_state`` gauge (None when it does not answer)."""
    while not stop.is_set():
        state: int | None = None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get("/metrics", timeout=1.0)
            match = _BREAKER.search(r.text)
            state = int(float(match.group(1))) if match else None
        samples.append((time.perf_counter(), state))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


# ----------------------------------------------------------------------------- checks against PostgreSQL


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    acknowledged: int
    lost: int
    changed: int
    sessions_with_gaps: int
    examples: tuple[str, ...] = ()


async def check_ledger(database_url: str, ledger: Ledger) -> LedgerCheck:
    """Every acknowledged (session, seq) is in PostgreSQL with its role and content; seqs have no gaps."""
    sids = [uuid.UUID(s) for s in ledger.acked]
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT session_id, seq, role, content FROM chat_messages WHERE session_id = ANY($1::uuid[])", sids
        )
        shape = await conn.fetch(
            "SELECT s.session_id, s.last_seq, count(m.seq) AS n, coalesce(max(m.seq), 0) AS top "
            "FROM chat_sessions s LEFT JOIN chat_messages m USING (session_id) "
            "WHERE s.session_id = ANY($1::uuid[]) GROUP BY s.session_id, s.last_seq",
            sids,
        )
    finally:
        await conn.close()
    stored = {(str(r["session_id"]), r["seq"]): (r["role"], r["content"]) for r in rows}
    lost = changed = 0
    examples: list[str] = []
    for sid, entries in ledger.acked.items():
        for seq, expected in entries.items():
            found = stored.get((sid, seq))
            if found is None:
                lost += 1
                examples.append(f"lost {sid} seq {seq}")
            elif found != expected:
                changed += 1
                examples.append(f"changed {sid} seq {seq}")
    gaps = sum(1 for r in shape if not (r["n"] == r["top"] == r["last_seq"]))
    return LedgerCheck(len(ledger), lost, changed, gaps, tuple(examples[:5]))


async def _pg_windows(database_url: str, sessions: Sequence[str], limit: int) -> dict[str, list[tuple[int, str, str]]]:
    """PostgreSQL's last ``limit`` messages per session, oldest first, as (seq, role, content)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            """
            SELECT session_id, seq, role, content FROM (
                SELECT m.*, row_number() OVER (PARTITION BY session_id ORDER BY seq DESC) AS k
                FROM chat_messages m WHERE session_id = ANY($1::uuid[])
            ) t WHERE k <= $2 ORDER BY session_id, seq
            """,
            [uuid.UUID(s) for s in sessions],
            limit,
        )
    finally:
        await conn.close()
    out: dict[str, list[tuple[int, str, str]]] = {s: [] for s in sessions}
    for r in rows:
        out[str(r["session_id"])].append((r["seq"], r["role"], r["content"]))
    return out


async def sweep(client: httpx.AsyncClient, database_url: str, sessions: Sequence[str], limit: int) -> tuple[int, int]:
    """Read every session twice through the service (a miss or hit, then a hit) and compare with PostgreSQL.

    Returns ``(reads, stale)``; a read that fails or differs from PostgreSQL is stale.
    """
    truth = await _pg_windows(database_url, sessions, limit)
    reads = stale = 0
    for sid in sessions:
        for _ in range(2):
            reads += 1
            try:
                r = await client.get(f"/v1/sessions/{sid}/messages", params={"limit": limit}, headers=HEADERS)
            except httpx.HTTPError:
                stale += 1
                continue
            got = [(m["seq"], m["role"], m["content"]) for m in r.json().get("messages", [])] if r.is_success else None
            if got != truth[sid]:
                stale += 1
    return reads, stale


@dataclass(frozen=True, slots=True)
class CacheCheck:
    entries: int
    stale: int
    retired: int
    examples: tuple[str, ...] = ()


async def check_cache(database_url: str, redis_url: str, *, key_prefix: str = "sb") -> CacheCheck:
    """Decode every servable cache window in Redis and compare it with PostgreSQL.

    Servable is the read script's rule (:func:`sessionbench.store.backends.hybrid.servable`): the
    entry's epoch is the current one (PostgreSQL's ``sessionstore_cache_epoch``) and its
    list is present.  Such a window must be exactly PostgreSQL's last messages up to the
    session's ``last_seq``: contiguous, same roles and contents, and ending at
    ``last_seq`` (an entry that missed an append is stale).  Entries that are not
    servable, or whose session is recorded in ``sessionstore_cache_invalidations`` (no
    process trusts it until it is deleted), are never served: they count as ``retired``.
    """
    layout = KeyLayout(key_prefix)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        epoch = str(await conn.fetchval("SELECT epoch FROM sessionstore_cache_epoch"))
        pending = {str(r[0]) for r in await conn.fetch("SELECT session_id FROM sessionstore_cache_invalidations")}
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    windows: dict[str, tuple[int, list[Message]]] = {}
    retired = 0
    try:
        async for key in client.scan_iter(match=layout.pattern(), count=500):
            if not key.endswith(":h"):
                continue
            sid = key[len(key_prefix) + 2 : -3]
            keys = layout.session(sid)
            last, entry_epoch = await client.hmget(keys.meta, [LAST, EPOCH])
            if last is None:
                continue
            raw = await client.lrange(keys.messages, 0, -1)
            if (
                not servable(int(last), None if entry_epoch is None else str(entry_epoch), len(raw), epoch)
                or sid in pending
            ):
                retired += 1  # the store treats it as a miss: never served
                continue
            windows[sid] = (int(last), decode_entries(sid, [str(x) for x in raw]))
    finally:
        await client.aclose()
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        heads = {str(r["session_id"]): r["last_seq"] for r in await conn.fetch(
            "SELECT session_id, last_seq FROM chat_sessions WHERE session_id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in windows])}  # fmt: skip
    finally:
        await conn.close()
    truth = await _pg_windows(database_url, list(windows), max([len(w) for _, w in windows.values()], default=1) or 1)
    stale = 0
    examples: list[str] = []
    for sid, (top, entries) in windows.items():
        cached = [(m.seq, m.role, m.content) for m in entries]
        expected = truth.get(sid, [])[-len(cached) :] if cached else []
        problem = ""
        if sid not in heads:
            problem = "cached but not in PostgreSQL"
        elif top != heads[sid]:
            problem = f"cached up to seq {top}, PostgreSQL has {heads[sid]}"
        elif cached and cached[-1][0] != top:
            problem = "list does not end at the hash's last seq"
        elif cached != expected:
            problem = "contents differ from PostgreSQL"
        if problem:
            stale += 1
            examples.append(f"{sid}: {problem}")
    return CacheCheck(len(windows), stale, retired, tuple(examples[:5]))


# ----------------------------------------------------------------------------- faults


class Fault(Protocol):
    """Something to break and then repair; ``affects`` names the path whose recovery is timed."""

    name: str
    affects: str  # "cache" | "database" | "service"

    async def inject(self) -> None: ...

    async def recover(self) -> None: ...


@dataclass
class ServerKill:
    """SIGKILL of an embedded server (Redis, or the PostgreSQL postmaster's process group),
    then a restart on the same port: a crash and recovery."""

    server: EmbeddedRedis | EmbeddedPostgres
    name: str
    affects: str

    async def inject(self) -> None:
        await asyncio.to_thread(self.server.kill)

    async def recover(self) -> None:
        if self.server.pid is None:
            await asyncio.to_thread(self.server.restart)


def RedisKill(server: EmbeddedRedis) -> ServerKill:
    """``kill -9`` of the embedded Redis, then a restart on the same port (empty, as after a crash)."""
    return ServerKill(server, "redis kill -9 + restart", "cache")


def PostgresRestart(server: EmbeddedPostgres) -> ServerKill:
    """SIGKILL to the embedded postmaster's process group (an immediate crash), then a restart."""
    return ServerKill(server, "postgres kill -9 + restart", "database")


@dataclass
class RedisFreeze:
    """SIGSTOP the embedded Redis (it keeps its connections and data), then SIGCONT."""

    server: EmbeddedRedis
    name: str = "redis SIGSTOP/SIGCONT"
    affects: str = "cache"

    async def inject(self) -> None:
        self.server.freeze()

    async def recover(self) -> None:
        self.server.thaw()


@dataclass
class RedisPause:
    """``CLIENT PAUSE <ms> ALL``: Redis stops answering every client for ``seconds``, then resumes by itself."""

    redis_url: str
    seconds: float
    name: str = "redis CLIENT PAUSE"
    affects: str = "cache"
    _until: float = 0.0

    async def inject(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            await client.client_pause(int(self.seconds * 1000), all=True)
        finally:
            await client.aclose()
        self._until = time.perf_counter() + self.seconds

    async def recover(self) -> None:
        await asyncio.sleep(max(0.0, self._until - time.perf_counter()))
        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=10)
        try:
            await client.ping()  # answers once the pause is over
        finally:
            await client.aclose()


@dataclass
class ServiceKill:
    """SIGKILL to the ``sessionbench serve`` child process, then a new one on the same port."""

    service: ServiceProcess
    name: str = "service kill -9 + restart"
    affects: str = "service"

    async def inject(self) -> None:
        self.service.kill()

    async def recover(self) -> None:
        if not self.service.running:
            await self.service.astart()


# ----------------------------------------------------------------------------- the service


@contextlib.asynccontextmanager
async def in_process_service(database_url: str, redis_url: str, **options: Any) -> AsyncIterator[str]:
    """The service on uvicorn in this event loop, on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from sessionbench.store.http import ServiceSettings, create_app
    from sessionbench.store.settings import Settings

    settings = Settings(backend="hybrid", database_url=database_url, redis_url=redis_url).with_options(options)
    app = create_app(settings, registry=CollectorRegistry(), service=ServiceSettings(dev_auth=True))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("the in-process service did not start")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


# ----------------------------------------------------------------------------- one scenario


@dataclass(frozen=True, slots=True)
class FaultReport:
    """What one scenario measured; :func:`format_reports` prints these as a table."""

    fault: str
    seconds: float
    requests: int
    rps: float
    ok_rps: float
    rps_before: float
    rps_during: float
    acknowledged: int
    lost: int
    changed: int
    sessions_with_gaps: int
    stale_during: int
    stale_after: int
    stale_cache_entries: int
    cache_entries_checked: int
    sweep_reads: int
    statuses: dict[str, int]
    errors: dict[str, int]
    appends_during_ok: int
    appends_during_failed: int
    outage_statuses: dict[str, int]
    server_errors_other_than_503: int
    max_latency_during: float
    p99_latency_during: float
    breaker_opened: bool
    breaker_closed_at_end: bool
    outage_seconds: float
    recovery_seconds: float | None
    redis_clients_after: int
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.changed == 0 and self.stale_after == 0 and self.stale_cache_entries == 0


async def _connected_clients(redis_url: str) -> int:
    """Redis ``connected_clients`` right after the load (a pile-up of connections would show here)."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        info = await client.info("clients")
    finally:
        await client.aclose()
    return int(info["connected_clients"])


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _recovery(log: list[Request], affects: str, since: float) -> float | None:
    """Seconds from ``since`` (the fault's end) to the first success of the affected path."""
    if affects == "cache":
        done = [r.started + r.seconds for r in log if r.started >= since and r.op == "read" and r.cache == "hit"]
    elif affects == "database":
        done = [r.started + r.seconds for r in log if r.started >= since and r.op == "append" and r.status == 201]
    else:
        done = [r.started + r.seconds for r in log if r.started >= since and 200 <= r.status < 300]
    return min(done) - since if done else None


async def run_fault(
    fault: Fault,
    base_url: str | Callable[[], str],
    *,
    database_url: str,
    redis_url: str,
    load: LoadOptions = LoadOptions(),
    timeline: Timeline = Timeline(),
    key_prefix: str = "sb",
) -> FaultReport:
    """Load the service, inject ``fault`` after ``timeline.before`` s, recover it after ``timeline.fault`` s,
    keep loading for ``timeline.after`` s, then check the ledger and the cache against PostgreSQL.

    The fault is always recovered (servers restarted, thawed) even if the run fails.
    """
    url = base_url() if callable(base_url) else base_url
    rng = random.Random(f"{load.seed}:{fault.name}")
    sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(load.sessions)]
    ledger = Ledger()
    log: list[Request] = []
    samples: list[tuple[float, int | None]] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=load.concurrency + 2, max_keepalive_connections=load.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=load.request_timeout, limits=limits) as client:
        for sid in sessions:  # created up front, so a read before the first append is not a 404
            created = await client.post("/v1/sessions", json={"session_id": sid}, headers=HEADERS)
            created.raise_for_status()
        t_start = time.perf_counter()
        workers = asyncio.create_task(run_load(client, sessions, ledger, load, stop, log))
        monitor = asyncio.create_task(watch_breaker(client, stop, samples))
        injected = False
        try:
            await asyncio.sleep(timeline.before)
            t_fault = time.perf_counter()
            injected = True
            await fault.inject()
            t_down = time.perf_counter()
            await asyncio.sleep(timeline.fault)
        finally:
            t_up = time.perf_counter()
            if injected:
                await fault.recover()
        t_recovered = time.perf_counter()
        try:
            await asyncio.sleep(timeline.after)
        finally:
            stop.set()
            await asyncio.gather(workers, monitor)
        t_end = time.perf_counter()
        redis_clients = await _connected_clients(redis_url)
        reads, stale_sweep = await sweep(client, database_url, sessions, load.read_limit)
    ledger_check = await check_ledger(database_url, ledger)
    cache_check = await check_cache(database_url, redis_url, key_prefix=key_prefix)

    before = [r for r in log if r.started < t_fault]
    during = [r for r in log if t_fault <= r.started < t_recovered]
    outage = [r for r in log if t_down <= r.started and r.started + r.seconds <= t_up]
    after = [r for r in log if r.started >= t_recovered]
    statuses = Counter(str(r.status) if r.status else "none" for r in log)
    errors = Counter(r.error for r in log if r.error)
    breaker_states = [s for t, s in samples if t_fault <= t and s is not None]
    final_states = [s for _, s in samples if s is not None][-3:]
    stale_examples = [f"{r.op} at +{r.started - t_start:.2f}s: {r.stale}" for r in log if r.stale][:5]
    return FaultReport(
        fault=fault.name,
        seconds=t_end - t_start,
        requests=len(log),
        rps=len(log) / max(1e-9, t_end - t_start),
        ok_rps=sum(1 for r in log if 200 <= r.status < 300) / max(1e-9, t_end - t_start),
        rps_before=len(before) / max(1e-9, t_fault - t_start),
        rps_during=len(during) / max(1e-9, t_recovered - t_fault),
        acknowledged=ledger_check.acknowledged,
        lost=ledger_check.lost,
        changed=ledger_check.changed,
        sessions_with_gaps=ledger_check.sessions_with_gaps,
        stale_during=sum(1 for r in during if r.stale),
        stale_after=sum(1 for r in after if r.stale) + stale_sweep,
        stale_cache_entries=cache_check.stale,
        cache_entries_checked=cache_check.entries,
        sweep_reads=reads,
        statuses=dict(statuses),
        errors=dict(errors),
        appends_during_ok=sum(1 for r in during if r.op == "append" and r.status == 201),
        appends_during_failed=sum(1 for r in during if r.op == "append" and r.status != 201),
        outage_statuses=dict(Counter(f"{r.op} {r.status or r.error}" for r in outage)),
        server_errors_other_than_503=sum(1 for r in log if r.status >= 500 and r.status != 503),
        max_latency_during=max((r.seconds for r in during), default=0.0),
        p99_latency_during=_p99([r.seconds for r in during]),
        breaker_opened=any(s == 1 for s in breaker_states),
        breaker_closed_at_end=bool(final_states) and final_states[-1] == 0,
        outage_seconds=t_recovered - t_fault,
        recovery_seconds=_recovery(log, fault.affects, t_recovered),
        redis_clients_after=redis_clients,
        examples=[*ledger_check.examples, *cache_check.examples, *stale_examples],
    )


# ----------------------------------------------------------------------------- report


def format_reports(reports: Sequence[FaultReport]) -> str:
    """The table of faults: load held, acknowledged and lost writes, stale reads, errors, recovery."""
    head = ("fault", "load held req/s", "acked writes", "lost", "stale after", "stale cache", "errors (status: n)",
            "breaker", "outage s", "recovery s")  # fmt: skip
    rows = []
    for r in reports:
        errs = {k: v for k, v in sorted(r.statuses.items()) if not k.startswith("2")}
        errs.update({k: v for k, v in sorted(r.errors.items())})
        breaker = ("opened" if r.breaker_opened else "stayed closed") + (", closed" if r.breaker_closed_at_end else "")
        recovery = f"{r.recovery_seconds:.2f}" if r.recovery_seconds is not None else "never"
        held = f"{r.rps:.0f} ({r.ok_rps:.0f} 2xx, {r.rps_during:.0f} in fault)"
        errors = ", ".join(f"{k}: {v}" for k, v in errs.items()) or "none"
        cache = f"{r.stale_cache_entries}/{r.cache_entries_checked}"
        rows.append((r.fault, held, str(r.acknowledged), str(r.lost), str(r.stale_after), cache, errors, breaker,
                     f"{r.outage_seconds:.2f}", recovery))  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in reports:
        for example in r.examples:
            lines.append(f"  {r.fault}: {example}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command

FAULTS = ("redis-kill", "redis-freeze", "redis-pause", "postgres-restart", "service-kill")


async def run_all(
    names: Sequence[str], database_url: str, redis_url: str, postgres: EmbeddedPostgres, redis: EmbeddedRedis,
    load: LoadOptions, timeline: Timeline, *, log_dir: Path | None = None,
) -> list[FaultReport]:  # fmt: skip
    """Run the named scenarios one after another, each on a fresh service."""
    reports = []
    for name in names:
        kwargs = {"database_url": database_url, "redis_url": redis_url, "load": load, "timeline": timeline}
        if name == "service-kill":
            service = ServiceProcess(
                database_url=database_url, redis_url=redis_url, log_path=(log_dir / "serve.log") if log_dir else None
            )
            try:
                await service.astart()
                reports.append(await run_fault(ServiceKill(service), service.url, **kwargs))  # type: ignore[arg-type]
            finally:
                service.stop()
            continue
        fault: Fault
        if name == "redis-kill":
            fault = RedisKill(redis)
        elif name == "redis-freeze":
            fault = RedisFreeze(redis)
        elif name == "redis-pause":
            fault = RedisPause(redis_url, timeline.fault)
        elif name == "postgres-restart":
            fault = PostgresRestart(postgres)
        else:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
        async with in_process_service(database_url, redis_url) as url:
            reports.append(await run_fault(fault, url, **kwargs))  # type: ignore[arg-type]
    return reports


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "faults",
        help="inject faults (Redis/PostgreSQL/service kill, freeze, pause) under load; check acknowledged writes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", nargs="+", choices=FAULTS, default=list(FAULTS), help="scenarios to run (default: all)")
    p.add_argument("--before", type=float, default=3.0, help="seconds of load before the fault (3)")
    p.add_argument("--seconds", type=float, default=3.0, help="how long each fault lasts (3)")
    p.add_argument("--after", type=float, default=4.0, help="seconds of load after recovery (4)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients (8)")
    p.add_argument("--rate", type=float, default=250.0, help="requests/s in total, at most (250)")
    p.add_argument("--sessions", type=int, default=32, help="sessions the load writes to (32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the reports to this JSON file")
    p.add_argument(
        "--cycles",
        type=int,
        metavar="N",
        help="instead: repeated faults, 2N PostgreSQL kill -9 + restarts and 2N Redis kills/freezes (0.3 s each, "
        "0.7 s apart) under --concurrency clients, first calling the store directly, then over HTTP",
    )
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    # the in-process service warns once per refused request during an outage; the table counts them
    logging.basicConfig(level=logging.ERROR)
    if args.cycles is not None:
        return _cycles_command(args)
    load = LoadOptions(sessions=args.sessions, concurrency=args.concurrency, rate=args.rate, seed=args.seed)
    timeline = Timeline(before=args.before, fault=args.seconds, after=args.after)
    with open_servers("embedded") as servers:
        if servers.postgres is None or servers.redis is None:
            raise ValueError("fault injection needs embedded servers")
        print(f"servers: {servers.describe()}", flush=True)
        reports = asyncio.run(run_all(args.only, servers.database_url, servers.redis_url, servers.postgres,
                                      servers.redis, load, timeline))  # fmt: skip
    print(format_reports(reports))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2) + "\n")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":  # pragma: no cover
    from sessionbench.bench.cli import main

    sys.exit(main(["faults", *sys.argv[1:]]))


def _cycles_command(args: argparse.Namespace) -> int:
    from sessionbench.bench.reliability.cycles import format_store_cycles, run_both

    if not 1 <= args.cycles <= 1000 or not 1 <= args.concurrency <= 256:
        raise ValueError("--cycles must be 1 to 1000 and --concurrency 1 to 256")
    with open_servers("embedded") as servers:
        if servers.postgres is None or servers.redis is None:
            raise ValueError("fault injection needs embedded servers")
        print(f"servers: {servers.describe()}", flush=True)
        store_report, http_report = asyncio.run(
            run_both(servers.postgres, servers.redis, servers.database_url, servers.redis_url, cycles=args.cycles,
                     clients=args.concurrency, down=0.3, up=0.7)
        )  # fmt: skip
    print("store level:", format_store_cycles([store_report]))
    print("HTTP level:")
    print(format_reports([http_report]))
    print(f"HTTP 5xx other than 503: {http_report.server_errors_other_than_503}")
    if args.json:
        args.json.write_text(json.dumps({"store": asdict(store_report), "http": asdict(http_report)}, indent=2) + "\n")
    clean = store_report.clean and http_report.ok and http_report.server_errors_other_than_503 == 0
    return 0 if clean else 1
