"""Repeated faults: many PostgreSQL and Redis crash cycles under load, at the store and over HTTP.

:class:`Cycles` is a :class:`~sessionbench.bench.reliability.faults.Fault` made of others: during its
fault phase it runs each of its faults ``cycles`` times in turn (inject, hold ``down``
seconds, recover, ``up`` seconds of service), so :func:`~sessionbench.bench.reliability.faults.run_fault`
drives it over HTTP like any single fault and reports 5xx statuses, acknowledged writes
lost and stale windows afterwards.

:func:`run_store_cycles` does the same one level down, on a :class:`~store.HybridStore`
with ``clients`` concurrent tasks calling it directly, and counts what a caller would
see: typed store errors (expected while a server is down), **escaped exceptions**
(anything else: a driver exception that leaked out of the store), acknowledged writes
that PostgreSQL lost, reads that missed an acknowledged write, and, after the load,
stale cache windows (:func:`~sessionbench.bench.reliability.faults.check_cache`) and stale reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sessionbench.bench.reliability.faults import (
    Fault,
    FaultReport,
    Ledger,
    LoadOptions,
    PostgresRestart,
    RedisFreeze,
    RedisKill,
    Timeline,
    check_cache,
    check_ledger,
    in_process_service,
    run_fault,
    stale_reason,
)
from sessionbench.bench.servers import EmbeddedPostgres, EmbeddedRedis
from sessionbench.store import StoreError, open_store
from sessionbench.store.protocol import SessionStore


@dataclass
class Cycles:
    """Each fault of ``faults`` ``cycles`` times in turn: inject, ``down`` s, recover, ``up`` s."""

    faults: Sequence[Fault]
    cycles: int
    down: float = 0.3
    up: float = 0.7
    name: str = ""
    affects: str = "database"
    done: int = 0
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.cycles} x ({' / '.join(f.name for f in self.faults)})"

    @property
    def seconds(self) -> float:
        """How long the cycling lasts (plus the time restarts take)."""
        return self.cycles * len(self.faults) * (self.down + self.up)

    async def inject(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for _ in range(self.cycles):
            for fault in self.faults:
                await fault.inject()
                try:
                    await asyncio.sleep(self.down)
                finally:
                    await fault.recover()
                self.done += 1
                await asyncio.sleep(self.up)

    async def recover(self) -> None:
        if self._task is not None:
            await self._task


@dataclass(slots=True)
class StoreCyclesReport:
    """What :func:`run_store_cycles` counted."""

    fault: str
    seconds: float
    calls: int
    ok: int
    store_errors: dict[str, int]
    escaped: dict[str, int]
    acknowledged: int
    lost: int
    stale_during: int
    stale_after: int
    stale_cache_entries: int
    cache_entries_checked: int
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        problems = (self.escaped, self.lost, self.stale_during, self.stale_after, self.stale_cache_entries)
        return not any(problems)


async def run_store_cycles(
    fault: Cycles,
    *,
    database_url: str,
    redis_url: str,
    clients: int = 16,
    sessions: int = 32,
    settle: float = 1.0,
    seed: int = 0,
    max_seconds: float = 600.0,
) -> StoreCyclesReport:
    """``clients`` tasks append and read on a hybrid store while ``fault`` cycles; then check everything.

    Bounded: the load stops when the cycles are done (or after ``max_seconds``).
    """
    rng = random.Random(seed)
    sids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(sessions)]
    ledger = Ledger()
    calls: Counter[str] = Counter()
    escaped: Counter[str] = Counter()
    examples: list[str] = []
    stale_during = 0
    stop = asyncio.Event()
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_url)

    async def client(index: int) -> None:
        nonlocal stale_during
        local = random.Random(seed * 1000 + index)
        n = 0
        while not stop.is_set():
            sid = local.choice(sids)
            n += 1
            try:
                if local.random() < 0.5:
                    floor = ledger.floor(sid)
                    messages = await store.get_messages(sid, limit=10)
                    reason = stale_reason([m.to_dict() for m in messages], ledger, sid, floor)
                    if reason:
                        stale_during += 1
                        examples.append(f"read during the faults: {reason}")
                else:
                    stored = await store.add_message(sid, "user", f"c{index}-{n} {sid[:8]}")
                    ledger.record(sid, [stored.to_dict()])
                calls["ok"] += 1
            except StoreError as exc:
                calls[type(exc).__name__] += 1
                await asyncio.sleep(0.01)  # a caller would back off a little
            except Exception as exc:  # noqa: BLE001 - exactly what this counts: exceptions that escaped the store
                escaped[f"{type(exc).__module__}.{type(exc).__qualname__}"] += 1
                if len(examples) < 20:
                    examples.append(f"escaped: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    try:
        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        try:
            await fault.inject()
            async with asyncio.timeout(max_seconds):
                await fault.recover()
            await asyncio.sleep(settle)  # recovered servers: load goes on while caches resync
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
        await asyncio.sleep(4 * 0.5 + 0.5)  # the cache sync bound (4 x sync_interval), then check
        stale_after = await _sweep(store, sids, ledger)
    finally:
        await store.close()
    ledger_check = await check_ledger(database_url, ledger)
    cache_check = await check_cache(database_url, redis_url)
    return StoreCyclesReport(
        fault=fault.name,
        seconds=seconds,
        calls=sum(calls.values()) + sum(escaped.values()),
        ok=calls["ok"],
        store_errors={k: v for k, v in calls.items() if k != "ok"},
        escaped=dict(escaped),
        acknowledged=ledger_check.acknowledged,
        lost=ledger_check.lost,
        stale_during=stale_during,
        stale_after=stale_after,
        stale_cache_entries=cache_check.stale,
        cache_entries_checked=cache_check.entries,
        examples=[*ledger_check.examples, *cache_check.examples, *examples[:10]],
    )


async def _sweep(store: SessionStore, sids: Sequence[str], ledger: Ledger) -> int:
    """Read every session twice (a miss then a hit); count reads that miss an acknowledged write."""
    stale = 0
    for sid in sids:
        for _ in range(2):
            with contextlib.suppress(StoreError):
                messages = await store.get_messages(sid, limit=10)
                if stale_reason([m.to_dict() for m in messages], ledger, sid, ledger.floor(sid)):
                    stale += 1
    return stale


def format_store_cycles(reports: Sequence[StoreCyclesReport]) -> str:
    lines = []
    for r in reports:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.store_errors.items())) or "none"
        lines.append(
            f"{r.fault}: {r.calls} calls in {r.seconds:.1f} s ({r.ok} ok; store errors {errors}); "
            f"escaped exceptions {sum(r.escaped.values())}; acknowledged writes {r.acknowledged}, lost {r.lost}; "
            f"stale reads during {r.stale_during}, after {r.stale_after}; "
            f"stale cache windows {r.stale_cache_entries}/{r.cache_entries_checked}"
        )
        lines += [f"  {e}" for e in r.examples[:10]]
    return "\n".join(lines)


def schedule(postgres: EmbeddedPostgres, redis: EmbeddedRedis, cycles: int, *, down: float, up: float) -> Cycles:
    """``2 x cycles`` PostgreSQL crashes and ``2 x cycles`` Redis faults (kill and freeze alternately)."""
    order: list[Fault] = [PostgresRestart(postgres), RedisKill(redis), PostgresRestart(postgres), RedisFreeze(redis)]
    return Cycles(order, cycles, down=down, up=up, name=f"{2 * cycles} postgres + {2 * cycles} redis faults")


async def run_both(
    postgres: EmbeddedPostgres, redis: EmbeddedRedis, database_url: str, redis_url: str, *,
    cycles: int, clients: int, down: float, up: float,
) -> tuple[StoreCyclesReport, FaultReport]:  # fmt: skip
    """The repeated faults at the store level, then over HTTP (an in-process service), on the same servers."""
    store_report = await run_store_cycles(
        schedule(postgres, redis, cycles, down=down, up=up), database_url=database_url, redis_url=redis_url,
        clients=clients,
    )  # fmt: skip
    http_fault = schedule(postgres, redis, cycles, down=down, up=up)
    load = LoadOptions(concurrency=clients, rate=400.0, sessions=32, max_seconds=http_fault.seconds * 3 + 120)
    async with in_process_service(database_url, redis_url) as url:
        http_report = await run_fault(
            http_fault, url, database_url=database_url, redis_url=redis_url, load=load,
            timeline=Timeline(before=1.0, fault=0.0, after=3.0),
        )  # fmt: skip
    return store_report, http_report
