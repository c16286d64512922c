"""``sessionbench compare``: the same workload against every configuration, one after another.

For each configuration, on the same servers: drop every table and ``FLUSHALL``, open
the target, replay the workload (open model by default, ``--clients N`` for a closed
model), close it, and read the servers' counters.  Then write
``results/<timestamp>/result.json`` (raw figures, :mod:`sessionbench.bench.harness.results`) and render the
table and ``report.html`` from that file alone (:mod:`sessionbench.bench.harness.report`).

Every store column is also divided by the bare-driver floor that makes the same round
trips (hybrid hit reads by ``floor-redis``, hybrid appends by ``floor-hybrid``, postgres
by ``floor-asyncpg``; :data:`sessionbench.bench.harness.floors.FLOOR_OF`): the "÷ its floor" rows.

``--closed-turns`` runs the fixed-turn benchmark instead: 16 clients doing whole turns
(append ~200 B, read the last 20, append ~800 B) on sessions with 20 and 200
messages of history, for every configuration including the bare-driver floors, and
prints the target ratios with pass/miss (:data:`sessionbench.bench.harness.report.TARGETS`).

``--generator-check`` measures the load generator itself with a no-op store: the
highest operation rate it can schedule on one core, and its CPU use at the chosen
workload.

**On a network.**  ``--pg-rtt 2ms --redis-rtt 0.3ms [--jitter 10%]``, a named
``--topology`` (:data:`sessionbench.bench.harness.topology.TOPOLOGIES`), ``--pooler pgbouncer`` and
per-configuration options (``postgres@pg_rtt=2ms``, ``hybrid@pg_rtt=2ms,redis_rtt=0.3ms``)
place the servers across a network: a :class:`sessionbench.bench.harness.relay.Relay` (its own process)
in front of each server delays every round trip.  Each such configuration is also run
with nothing added first (a ``local`` run, unless ``--no-projection``), and the table
prints, beside each measured p50, the local p50 projected onto the network
(:mod:`sessionbench.bench.harness.topology`).  ``--sweep pg_rtt=0,0.5,1,2,5,10ms`` (or ``redis_rtt=``)
runs every configuration at each value; ``--sweep history=20,200,2000,10000`` runs the
closed-turn benchmark at each history size.  The report draws read p50, turn p50 and
PostgreSQL queries per second against the swept value.  ``--relay-check`` proves the
relay's RTT with a ping-pong.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import itertools
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sessionbench.bench.harness import peers, report
from sessionbench.bench.harness import results as measure
from sessionbench.bench.harness.floors import FLOORS, open_floor
from sessionbench.bench.harness.relay import Relay, RelayFigures, RelayStats, render_self_test, self_test, target_of
from sessionbench.bench.harness.results import CountingTarget, ResultFile, RoundTrips, RunRecord, TurnSettings
from sessionbench.bench.harness.runner import (
    NoopTarget,
    RunOptions,
    RunResult,
    StoreTarget,
    Target,
    prefill,
    run_closed,
    run_open,
    run_turns,
)
from sessionbench.bench.harness.topology import (
    NETWORK_KEYS,
    POOLERS,
    TOPOLOGIES,
    Network,
    Projection,
    parse_fraction,
    parse_ms,
    project,
    topology,
)
from sessionbench.bench.harness.workload import Workload, events_per_second, generate
from sessionbench.bench.servers import MODES, REDIS_SPEC_HELP, ServerError, Servers, open_servers, parse_redis_spec
from sessionbench.store import open_store
from sessionbench.store.accesslog import TraceEvent, read_trace, write_trace
from sessionbench.store.settings import BACKENDS, Settings

DEFAULT_CONFIGS = ("memory", "postgres", "hybrid", "seed", "floor-asyncpg", "floor-redis", "floor-hybrid")
#: ``--sweep`` without ``--configs``: the architectures of the crossover picture, and the hybrid's floor.
SWEEP_CONFIGS = ("memory", "postgres", "hybrid", "seed", "floor-hybrid")
SWEEP_AXES = ("pg_rtt", "redis_rtt", "history")
#: Replay seconds per run of a sweep (it runs every configuration at every point).
SWEEP_DURATION = 8.0
SEED_MODULE = "sessionbench.bench.harness.seed"
#: Replay seconds per configuration: seven columns of 17 s take about as long as six of 20 s did.
DEFAULT_DURATION = 17.0
QUICK_DURATION = 3.0
QUICK_TURN_SECONDS = 1.5
HISTORIES_DEFAULT = "20,200"

DESCRIPTION = """\
The same seeded chat workload against every configuration, one after another, on the same
servers with a fresh schema each (tables dropped, FLUSHALL). Prints one column per
configuration with ratios against a reference column, a legend and a conclusion, and writes
results/<UTC time>/result.json (raw figures) and report.html, both rendered from the JSON
alone (sessionbench report re-renders them).

Columns: store specs (memory, postgres, hybrid, e.g. 'hybrid?cache_size=20'), the seed's
design (seed), and the bare-driver floors: floor-asyncpg (one INSERT or SELECT), floor-redis
(RPUSH+LTRIM or LRANGE) and floor-hybrid (INSERT then one RPUSH+LTRIM+PEXPIRE pipeline, or
LRANGE). Each store column is also divided by the floor that makes the same round trips
(hybrid hit reads by floor-redis, hybrid appends by floor-hybrid, postgres by floor-asyncpg).

Open model by default (operations start on the workload's schedule; latency counts from
when each was due); --clients N for a closed model; --closed-turns for the fixed-turn
benchmark (16 clients, histories 20 and 200) with its target ratios; --generator-check
measures the load generator itself.

Across a network: --pg-rtt / --redis-rtt / --jitter, a named --topology, --pooler pgbouncer,
or per configuration 'postgres@pg_rtt=2ms'. A latency relay (a process of its own) in front
of each server delays every round trip; each such configuration also runs locally first, and
the table sets the local p50 plus round trips x RTT beside each measured p50. --sweep
pg_rtt=0,0.5,1,2,5,10ms (or history=20,200,2000,10000) runs every configuration at each value
and draws the crossover picture in report.html.
"""


@dataclass(frozen=True, slots=True)
class Config:
    """One column of the comparison: a store spec, the seed baseline, a floor, or ``noop``.

    ``name`` is the column as given; after an ``@`` it may carry network options
    (``postgres@pg_rtt=2ms``, ``hybrid@pg_rtt=2ms,redis_rtt=0.3ms,pooler=pgbouncer``),
    which override the run's ``--pg-rtt`` / ``--redis-rtt`` / ``--jitter`` / ``--pooler``.
    """

    name: str
    kind: str  # "store" | "seed" | "floor" | "peer" | "noop"
    spec: str = ""
    """``name`` without its network options."""
    network: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, name: str) -> Config:
        name = name.strip()
        spec, at, rest = name.partition("@")
        spec = spec.strip()
        options: list[tuple[str, str]] = []
        if at:
            for item in (x for x in rest.replace("&", ",").split(",") if x.strip()):
                key, eq, value = item.partition("=")
                if not eq or key.strip() not in NETWORK_KEYS:
                    raise ValueError(
                        f"configuration {name!r}: {item.strip()!r} is not a network option "
                        f"(use {', '.join(k + '=...' for k in NETWORK_KEYS)})"
                    )
                options.append((key.strip(), value.strip()))
            Network().with_options(dict(options))  # validates the values now, not mid-run
        if spec == "seed":
            kind = "seed"
        elif spec == "noop":
            kind = "noop"
        elif spec in FLOORS:
            kind = "floor"
        elif spec in peers.PEERS:
            if missing := peers.missing_packages(spec):
                raise ValueError(f"{spec} needs the peers extra (missing {', '.join(missing)}): {peers.PEER_EXTRA}")
            kind = "peer"
        elif spec.partition("?")[0] in BACKENDS:
            Settings.from_spec(spec)  # validates the spec now, not mid-run
            kind = "store"
        else:
            raise ValueError(
                f"unknown configuration {name!r}: use a store spec ({', '.join(BACKENDS)}, e.g. "
                f"'hybrid?cache_size=20'), 'seed', {', '.join(repr(f) for f in FLOORS)}, "
                f"{', '.join(repr(p) for p in peers.PEERS)} or 'noop', optionally "
                "followed by network options such as '@pg_rtt=2ms,redis_rtt=0.3ms'"
            )
        return cls(name, kind, spec, tuple(options))

    def network_on(self, base: Network) -> Network:
        """``base`` (the run's network) with this configuration's own options applied."""
        return base.with_options(dict(self.network))


def split_configs(text: str) -> list[str]:
    """``--configs``: split on commas, except between one configuration's network options.

    ``postgres@pg_rtt=2ms,hybrid@pg_rtt=2ms,redis_rtt=0.3ms`` is two configurations: an item
    that is ``key=value`` with a network key continues the ``@`` options before it.
    """
    out: list[str] = []
    for item in text.split(","):
        key = item.partition("=")[0].strip()
        if out and "@" in out[-1] and "@" not in item and "=" in item and key in NETWORK_KEYS:
            out[-1] += "," + item
        else:
            out.append(item)
    return [x for x in out if x.strip()]


def seed_available() -> bool:
    """Whether the seed baseline module (``sessionbench/bench/baselines/seed_naive.py``) is installed."""
    try:
        return importlib.util.find_spec(SEED_MODULE) is not None
    except ModuleNotFoundError:
        return False


def _store_settings(spec: str, *, cache_size: int | None, ttl_replay: float, pooled: bool = False) -> Settings:
    settings = Settings.from_spec(spec)
    query = spec.partition("?")[2]
    options: dict[str, Any] = {}
    if pooled and "statement_cache_size" not in query:
        options["postgres.statement_cache_size"] = 0  # PgBouncer in transaction mode shares server connections
    if "ttl" not in query:
        options["cache.ttl"] = ttl_replay
        options["memory.idle_ttl"] = ttl_replay
    if cache_size is not None and "cache_size" not in query and "cache.size" not in query:
        options["cache.size"] = cache_size
    return settings.with_options(options)


def _describe_settings(settings: Settings) -> dict[str, Any]:
    data = asdict(settings)
    data.pop("database_url", None)
    data.pop("redis_url", None)
    return data


async def open_target(
    config: Config,
    database_url: str,
    redis_url: str,
    *,
    cache_size: int | None,
    ttl_replay: float,
    pooled: bool = False,
) -> tuple[Target, dict[str, Any]]:
    """Open the target for ``config``; return it and the settings it runs with.

    ``pooled``: ``database_url`` goes through PgBouncer in transaction mode, so every asyncpg
    pool runs with ``statement_cache_size=0``.
    """
    spec = config.spec or config.name
    cache = 0 if pooled else 100
    if config.kind == "noop":
        return NoopTarget(), {}
    if config.kind == "floor":
        floor = await open_floor(
            spec, database_url, redis_url, window=cache_size, ttl=ttl_replay, statement_cache_size=cache
        )
        return floor, {"floor": spec, **({"statement_cache_size": 0} if pooled else {})}
    if config.kind == "peer":
        return await peers.open_peer(spec, database_url, redis_url), peers.describe(spec)
    if config.kind == "seed":
        module = importlib.import_module(SEED_MODULE)
        seed = await module.open_seed_baseline(database_url, redis_url, statement_cache_size=cache)
        described = {"seed": "the seed's SessionManager (keep 50, 24 h SETEX, unscaled)"}
        return StoreTarget(seed, "seed", create_first=True), described
    settings = _store_settings(spec, cache_size=cache_size, ttl_replay=ttl_replay, pooled=pooled)
    store = await open_store(settings, database_url=database_url, redis_url=redis_url)
    return StoreTarget(store, config.name, cached=settings.backend == "hybrid"), _describe_settings(settings)


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Overall progress on stderr: configuration k of n, elapsed time, estimated time left.

    On a terminal one line is rewritten in place about once a second; otherwise (CI, a
    pipe, ``| tee``) one line is printed as each configuration finishes, so a long run
    is never silent.  The estimate scales the wall time so far by the planned replay
    seconds still to run (set-up and prefill included in the scale).
    """

    def __init__(self, total: int, planned_s: float, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.total = total
        self.planned_each = planned_s
        self.done = 0
        self.t0 = time.monotonic()
        self._label = ""
        self._config_t0 = self.t0
        self._width = 0

    def _remaining(self, current_s: float) -> float | None:
        progressed = self.done * self.planned_each + min(current_s, self.planned_each)
        if progressed <= 0:
            return None
        rate = (time.monotonic() - self.t0) / progressed
        return rate * (self.total * self.planned_each - progressed)

    def _status(self, current_s: float) -> str:
        if self.done >= self.total:
            return f"elapsed {_clock(time.monotonic() - self.t0)}"
        left = self._remaining(current_s)
        eta = f"about {_clock(left)} left" if left is not None else "estimating time left"
        return f"elapsed {_clock(time.monotonic() - self.t0)} · {eta}"

    def _write_live(self, text: str) -> None:
        pad = " " * max(0, self._width - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._width = len(text)

    def begin(self) -> None:
        if self.enabled and not self.live:
            total = _clock(self.total * self.planned_each)
            print(f"compare: {self.total} runs of {self.planned_each:g} s each ({total} of replay)", file=self.stream)

    def start(self, label: str) -> Callable[[float], None]:
        """A configuration starts; returns the runner's progress callback (replay seconds so far)."""
        self._label = label
        self._config_t0 = time.monotonic()

        def update(t: float) -> None:
            if self.live:
                k = f"[{self.done + 1}/{self.total}]"
                self._write_live(f"{k} {label} {t:.0f}/{self.planned_each:.0f} s · {self._status(t)}")

        update(0.0)
        return update

    def finish(self) -> None:
        """The configuration that started last is done."""
        self.done += 1
        took = time.monotonic() - self._config_t0
        text = f"[{self.done}/{self.total}] {self._label} done in {took:.1f} s · {self._status(0.0)}"
        if self.live:
            self._write_live(text)
        elif self.enabled:
            print(text, file=self.stream, flush=True)

    def end(self) -> None:
        if not self.enabled:
            return
        text = f"compare: {self.done} of {self.total} runs in {_clock(time.monotonic() - self.t0)}"
        if self.live:
            self._write_live(text)
            self.stream.write("\n")
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the servers answer: PostgreSQL directly and (when started) through PgBouncer, and Redis."""

    postgres: str
    redis: str
    pooled: str | None = None

    @classmethod
    def of(cls, servers: Servers) -> Endpoints:
        if servers.pgbouncer is not None and servers.postgres is not None:
            return cls(servers.postgres.url, servers.redis_url, servers.pgbouncer.url)
        return cls(servers.database_url, servers.redis_url)

    def database_url(self, network: Network) -> str:
        if network.pooler == "none":
            return self.postgres
        if self.pooled is None:
            raise ValueError(f"pooler {network.pooler!r} asked for, but no pooler was started")
        return self.pooled


class Relays:
    """The latency relays of a compare run, one process per server address, reused between runs."""

    def __init__(self) -> None:
        self._relays: dict[tuple[str, int], Relay] = {}

    def get(self, url: str, rtt_ms: float, jitter: float) -> Relay:
        target = target_of(url)
        relay = self._relays.get(target)
        if relay is None or not relay.running:
            relay = self._relays[target] = Relay(target, rtt_ms=rtt_ms, jitter=jitter, seed=len(self._relays)).start()
        else:
            relay.set(rtt_ms, jitter)
        return relay

    def close(self) -> None:
        for relay in self._relays.values():
            relay.stop()
        self._relays.clear()


@dataclass(frozen=True, slots=True)
class Run:
    """One entry of the plan: a configuration on a network (at a sweep point, or its local run)."""

    config: Config
    network: Network
    role: str = "measured"
    point: float | None = None
    history: int | None = None

    @property
    def label(self) -> str:
        bits = [self.config.name]
        if self.role == "local":
            bits.append("local")
        elif not self.network.local:
            bits.append(self.network.label())
        if self.history is not None:
            bits.append(f"h={self.history}")
        return " · ".join(bits)


def plan(
    configs: list[Config],
    base: Network,
    *,
    sweep: tuple[str, list[float]] | None = None,
    histories: list[int] | None = None,
    projections: bool = True,
) -> list[Run]:
    """Every run, in order: per history, per configuration, its local run first (when it runs
    across a network and no point of the sweep is local), then each point."""
    out: list[Run] = []
    levels: list[int | None] = list(histories) if histories else [None]
    for history in levels:
        for config in configs:
            own = config.network_on(base)
            if sweep is not None and sweep[0] == "pg_rtt":
                points: list[tuple[float | None, Network]] = [(v, replace(own, pg_rtt_ms=v)) for v in sweep[1]]
            elif sweep is not None and sweep[0] == "redis_rtt":
                points = [(v, replace(own, redis_rtt_ms=v)) for v in sweep[1]]
            else:
                points = [(None, own)]
            if projections and any(not n.local for _, n in points) and not any(n.local for _, n in points):
                out.append(Run(config, own.zeroed(), "local", None, history))
            out += [Run(config, n, "measured", v, history) for v, n in points]
    return out


async def _measure(
    run_plan: Run,
    endpoints: Endpoints,
    relays: Relays,
    run: Callable[[Target], Any],
    *,
    cache_size: int | None,
    ttl_replay: float,
    prepare: Callable[[Target], Any] | None = None,
) -> RunRecord:
    """Fresh schema, relays set, open, (prepare), run with round trips counted, read sizes, close."""
    config, network = run_plan.config, run_plan.network
    admin_db, rd = endpoints.postgres, endpoints.redis
    db = endpoints.database_url(network)
    await measure.reset_servers(admin_db, rd)
    active: dict[str, Relay] = {}
    if network.pg_rtt_ms > 0:
        active["postgres"] = relays.get(db, network.pg_rtt_ms, network.jitter)
    if network.redis_rtt_ms > 0:
        active["redis"] = relays.get(rd, network.redis_rtt_ms, network.jitter)
    target_db = active["postgres"].url(db) if "postgres" in active else db
    target_rd = active["redis"].url(rd) if "redis" in active else rd
    target, settings = await open_target(
        config, target_db, target_rd, cache_size=cache_size, ttl_replay=ttl_replay, pooled=network.pooler != "none"
    )
    trips = RoundTrips()
    figures: dict[str, RelayFigures] = {}
    try:
        if prepare is not None:
            await prepare(target)
        before = await measure.snapshot(admin_db, rd)
        marks: dict[str, RelayStats] = {name: relay.stats() for name, relay in active.items()}
        with measure.DriverCallCounter() as calls, peers.PsycopgRoundTrips(calls):
            result: RunResult = await run(CountingTarget(target, trips))
        figures = {name: relay.figures(marks[name]) for name, relay in active.items()}
        after = await measure.snapshot(admin_db, rd, key_memory=True)
    finally:
        await target.close()
    return RunRecord.from_run(
        config.name,
        result,
        kind=config.kind,
        settings=settings,
        before=before,
        after=after,
        calls=calls,
        history=run_plan.history,
        trips=trips,
        network=network,
        role=run_plan.role,
        point=run_plan.point,
        relays=figures,
    )


# ----------------------------------------------------------------------------- workload compare


def _events(workload: Workload, trace: Path | None) -> Callable[[], Iterator[TraceEvent]]:
    if trace is not None:
        return lambda: read_trace(trace, compression=workload.time_compression)  # replay seconds
    return lambda: generate(workload)


async def compare_workload(
    runs: list[Run],
    endpoints: Endpoints,
    workload: Workload,
    *,
    clients: int | None,
    trace: Path | None,
    cache_size: int | None,
    ttl: float,
    max_lag_ms: float,
    progress: Progress,
    result: ResultFile,
) -> None:
    """Run every entry of the plan; append one record per run to ``result.configs``."""
    events = _events(workload, trace)
    ttl_replay = workload.replay_seconds(ttl)
    relays = Relays()
    try:
        for entry in runs:
            update = progress.start(entry.label)

            async def run(target: Target, update: Callable[[float], None] = update) -> RunResult:
                if clients:
                    many = replace(workload, duration=workload.duration * 1000)
                    stream = (
                        read_trace(trace, compression=workload.time_compression)
                        if trace is not None
                        else generate(many)
                    )
                    return await run_closed(
                        target, stream, clients=clients, duration=workload.duration, progress=update
                    )
                options = RunOptions(duration=workload.duration, max_lag_ms=max_lag_ms)
                return await run_open(target, events(), options, progress=update)

            record = await _measure(entry, endpoints, relays, run, cache_size=cache_size, ttl_replay=ttl_replay)
            progress.finish()
            result.configs.append(record)
    finally:
        relays.close()


# ----------------------------------------------------------------------------- the fixed-turn benchmark


async def compare_turns(
    runs: list[Run],
    endpoints: Endpoints,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    cache_size: int | None,
    progress: Progress,
    result: ResultFile,
    shaped: bool = False,
) -> None:
    """The fixed-turn benchmark: closed loop of whole turns per plan entry (configuration, history, network);
    ``shaped``: each turn's user append and read are one turn-shaped call."""
    sessions = [f"h{i}" for i in range(clients * 2)]
    relays = Relays()
    try:
        for entry in runs:
            update = progress.start(entry.label)
            history = entry.history or 0

            async def prepare(target: Target, history: int = history) -> None:
                await prefill(target, sessions, history, concurrency=clients)
                for key in sessions:  # warm the caches: the benchmark measures hits
                    await target.read(key, 20, None)

            async def run(target: Target, update: Callable[[float], None] = update) -> RunResult:
                return await run_turns(
                    target, sessions, clients=clients, duration=seconds, warmup=warmup, progress=update, shaped=shaped
                )

            record = await _measure(
                entry, endpoints, relays, run, cache_size=cache_size, ttl_replay=24 * 3600.0, prepare=prepare
            )
            progress.finish()
            result.configs.append(record)
    finally:
        relays.close()


# ----------------------------------------------------------------------------- projection check


class TwinTarget:
    """Runs every operation on two targets at once, each under its own copy of the session key.

    The twins see the same operations, message sizes and schedule at the same moments (the
    sessions are ``L:<key>`` on the first and ``R:<key>`` on the second, so they never share one);
    a seeded coin decides which starts first.
    """

    def __init__(self, a: Target, b: Target, *, seed: int = 0) -> None:
        self.twins = (a, b)
        self.name = a.name
        self._coin = random.Random(seed)

    async def _both(self, first: Awaitable[Any], second: Awaitable[Any]) -> Any:
        # Whichever starts first runs first on the loop.  A seeded coin decides, per operation: strict
        # turns would line up with the workload's own rhythm (append, read, append) and favour one twin.
        if self._coin.random() < 0.5:
            return (await asyncio.gather(first, second))[0]
        return (await asyncio.gather(second, first))[1]

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        a, b = self.twins
        await self._both(a.append("L:" + session, roles, sizes), b.append("R:" + session, roles, sizes))

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        a, b = self.twins
        cache: str | None = await self._both(
            a.read("L:" + session, limit, before), b.read("R:" + session, limit, before)
        )
        return cache

    async def close(self) -> None:
        try:
            await self.twins[0].close()
        finally:
            await self.twins[1].close()


@dataclass(frozen=True, slots=True)
class PairedProjection:
    """One operation of one configuration: the loopback twin projected onto the network, beside the relayed twin."""

    config: str
    projection: Projection
    measured_ms: float
    """p50 service time of the twin that ran through the relays."""

    @property
    def ratio(self) -> float:
        return self.measured_ms / self.projection.predicted_ms if self.projection.predicted_ms else math.inf


async def projection_check(
    config: Config,
    endpoints: Endpoints,
    network: Network,
    workload: Workload,
    *,
    ops: Sequence[str] = ("append", "read"),
    cache_size: int | None = None,
    ttl: float = 24 * 3600.0,
) -> list[PairedProjection]:
    """Projection against measurement with both sides measured at the same moment.

    Two copies of the configuration run together, one on loopback and one through the
    relays, and every operation of the workload runs on both at once (:class:`TwinTarget`),
    so the twins share one schedule and one state of the machine: a busy moment slows both.
    Per operation: the loopback twin's p50 service time and round trips projected onto
    ``network``, beside the relayed twin's p50 service time.
    """
    ttl_replay = workload.replay_seconds(ttl)
    db = endpoints.database_url(network)
    await measure.reset_servers(endpoints.postgres, endpoints.redis)
    relays = Relays()
    try:
        relayed_db, relayed_rd = db, endpoints.redis
        if network.pg_rtt_ms > 0:
            relayed_db = relays.get(db, network.pg_rtt_ms, network.jitter).url(db)
        if network.redis_rtt_ms > 0:
            relayed_rd = relays.get(endpoints.redis, network.redis_rtt_ms, network.jitter).url(endpoints.redis)
        pooled = network.pooler != "none"
        local, _ = await open_target(
            config, db, endpoints.redis, cache_size=cache_size, ttl_replay=ttl_replay, pooled=pooled
        )
        try:
            remote, _ = await open_target(
                config, relayed_db, relayed_rd, cache_size=cache_size, ttl_replay=ttl_replay, pooled=pooled
            )
        except BaseException:
            await local.close()
            raise
        near, far = RoundTrips(), RoundTrips()
        split = TwinTarget(CountingTarget(local, near), CountingTarget(remote, far), seed=workload.seed)
        try:
            with measure.DriverCallCounter():
                options = RunOptions(duration=workload.duration, max_lag_ms=1000.0)
                await run_open(split, generate(workload), options)
        finally:
            await split.close()
    finally:
        relays.close()
    out: list[PairedProjection] = []
    for op in ops:
        projection = project(op, near.service_p50_ms(op), near.to_json().get(op), network)
        measured = far.service_p50_ms(op)
        if projection is not None and measured is not None:
            out.append(PairedProjection(config.name, projection, measured))
    return out


def render_projection_check(rows: Sequence[PairedProjection], network: Network) -> str:
    lines = [
        f"projection check at {network.label()}: each configuration runs as twins, one on loopback and one through"
        " the relays, every operation on both at once; predicted = loopback p50 + PG trips x PG RTT + Redis trips"
        " x Redis RTT",
        f"{'configuration':<16}{'op':<8}{'loopback p50':>13}{'PG+Redis trips':>16}{'predicted':>11}"
        f"{'measured':>10}{'measured/predicted':>20}",
    ]
    for r in rows:
        p = r.projection
        trips = f"{p.pg_trips:g}+{p.redis_trips:g}" if p.exact else f"{p.pg_trips:.2f}+{p.redis_trips:.2f}"
        lines.append(
            f"{r.config:<16}{p.op:<8}{p.local_p50_ms:>13.3f}{trips:>16}{p.predicted_ms:>11.3f}"
            f"{r.measured_ms:>10.3f}{r.ratio:>19.2f}x"
        )
    lines.append("(milliseconds; service time per call, from the call to its return)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- generator check


async def generator_check(workload: Workload, *, events: int) -> dict[str, Any]:
    """The generator's capacity (no-op store, everything due at once) and its CPU use on schedule."""
    stream = generate(replace(workload, duration=workload.duration * 10_000))
    capped = itertools.islice(stream, events)
    asap = await run_open(NoopTarget(), capped, RunOptions(asap=True))
    paced = await run_open(NoopTarget(), generate(workload), RunOptions(duration=workload.duration))
    return {
        "capacity_ops_per_s": asap.throughput,
        "capacity_operations": asap.operations,
        "capacity_cpu_cores": asap.cpu_fraction,
        "capacity_ops_per_cpu_s": asap.operations / asap.cpu_s if asap.cpu_s else 0.0,
        "workload_ops_per_s": paced.throughput,
        "workload_cpu_cores": paced.cpu_fraction,
        "workload_scheduler_busy_fraction": paced.scheduler_busy_s / paced.elapsed_s if paced.elapsed_s else 0.0,
        "workload_lag_p99_ms": paced.lag.get_value_at_percentile(99) / 1000,
        "workload_lag_max_ms": paced.lag.get_max_value() / 1000,
        "workload_valid": paced.valid,
        "workload_invalid": paced.invalid,
    }


# ----------------------------------------------------------------------------- command line


def _workload(args: argparse.Namespace) -> Workload:
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.duration is not None:
        overrides["duration"] = args.duration
    elif args.quick:
        overrides["duration"] = QUICK_DURATION
    else:
        overrides["duration"] = SWEEP_DURATION if args.sweep else DEFAULT_DURATION
    if args.rate is not None:
        overrides["new_sessions_per_s"] = args.rate
    if args.compression is not None:
        overrides["time_compression"] = args.compression
    return replace(Workload(), **overrides)


def _configs(args: argparse.Namespace) -> tuple[list[Config], list[str]]:
    default = SWEEP_CONFIGS if args.sweep else DEFAULT_CONFIGS
    names = split_configs(args.configs) if args.configs is not None else list(default)
    if not names:
        raise ValueError(f"--configs {args.configs!r} names no configuration (e.g. --configs memory,hybrid)")
    configs = [Config.parse(n) for n in names]
    if len({c.name for c in configs}) != len(configs):
        raise ValueError("each configuration may appear once")
    notes: list[str] = []
    if any(c.kind == "seed" for c in configs) and not seed_available():
        configs = [c for c in configs if c.kind != "seed"]
        notes.append(f"note: the seed baseline ({SEED_MODULE}) is not installed; skipping 'seed'")
    if parse_redis_spec(args.redis) is not None:
        single = [c.name for c in configs if not _cluster_ready(c)]
        if single and args.configs is not None:
            raise ValueError(
                f"{', '.join(single)} use single-server Redis clients and cannot run on --redis {args.redis}"
            )
        if single:
            notes.append(f"note: on a Redis Cluster, skipping {', '.join(single)} (they use single-server clients)")
        configs = [c for c in configs if _cluster_ready(c)]
    if getattr(args, "turn_shaped", False):
        plain = [c.name for c in configs if not _turn_shaped_ready(c)]
        if plain and args.configs is not None:
            raise ValueError(f"{', '.join(plain)} have no turn-shaped call (--turn-shaped: stores and floors)")
        if plain:
            notes.append(f"note: --turn-shaped: skipping {', '.join(plain)} (no turn-shaped call)")
        configs = [c for c in configs if _turn_shaped_ready(c)]
    if not configs:
        raise ValueError("no configuration left to run")
    return configs, notes


def _turn_shaped_ready(config: Config) -> bool:
    """Whether a configuration has a turn-shaped call: the stores (``add_and_read``) and the floors."""
    return config.kind in ("store", "floor")


def _redis_topology(text: str) -> str:
    try:
        parse_redis_spec(text)
    except ServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _cluster_ready(config: Config) -> bool:
    """Whether a configuration runs on a Redis Cluster: the stores do (they detect it); the seed, the
    Redis floors and the Redis peer use single-server clients."""
    return (
        config.kind in ("store", "noop")
        or config.spec in ("floor-asyncpg",)
        or config.spec
        in (
            "peer-langchain-postgres",
            "peer-langgraph-postgres",
        )
    )


def _histories(text: str) -> list[int]:
    try:
        histories = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise ValueError(f"--histories {text!r}: give message counts separated by commas, e.g. 20,200") from None
    if not histories or min(histories) < 0:
        raise ValueError(f"--histories {text!r}: give message counts (0 or more) separated by commas, e.g. 20,200")
    return histories


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """``pg_rtt=0,0.5,1,2,5,10ms`` -> ("pg_rtt", [0, 0.5, ...]) in ms (a unit on the last value applies to
    every value without one); ``history=20,200`` -> ("history", [20, 200])."""
    axis, eq, values = text.partition("=")
    axis = axis.strip()
    if not eq or axis not in SWEEP_AXES:
        raise ValueError(f"--sweep {text!r}: give {' or '.join(a + '=V1,V2,...' for a in SWEEP_AXES)}")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise ValueError(f"--sweep {text!r}: no values")
    if axis == "history":
        return axis, [float(h) for h in _histories(",".join(items))]
    unit = next((u for u in ("ms", "us", "µs", "s") if items[-1].endswith(u)), "ms")
    out = [parse_ms(v if v[-1:].isalpha() else v + unit, what=f"--sweep {axis} value") for v in items]
    if len(set(out)) != len(out):
        raise ValueError(f"--sweep {text!r}: each value may appear once")
    return axis, out


def _network(args: argparse.Namespace) -> tuple[Network, str | None]:
    """The run's network: the topology's, then --pg-rtt / --redis-rtt / --jitter / --pooler over it."""
    base = topology(args.topology).network if args.topology else Network()
    options = {}
    if args.pg_rtt is not None:
        options["pg_rtt"] = args.pg_rtt
    if args.redis_rtt is not None:
        options["redis_rtt"] = args.redis_rtt
    if args.jitter is not None:
        options["jitter"] = args.jitter
    if args.pooler is not None:
        options["pooler"] = args.pooler
    return base.with_options(options), args.topology


def _reference(args: argparse.Namespace, configs: list[Config], turns: bool) -> str:
    names = [c.name for c in configs]
    if args.reference:
        if args.reference not in names:
            raise ValueError(f"--reference {args.reference!r} is not one of the configurations: {', '.join(names)}")
        return str(args.reference)
    for preferred in ("floor-asyncpg", "postgres") if turns else ("seed", "postgres"):
        if preferred in names:
            return preferred
    return names[0]


def cmd_relay_check() -> int:
    rows, info = self_test()
    print(render_self_test(rows, info))
    return 0 if all(r.ok for r in rows) else 1


def cmd_projection_check(args: argparse.Namespace, configs: list[Config], base: Network, workload: Workload) -> int:
    if base.local:
        raise ValueError("--projection-check needs a network: give --pg-rtt/--redis-rtt or --topology")
    pooler = next((c.network_on(base).pooler for c in configs if c.network_on(base).pooler != "none"), "none")
    rows: list[PairedProjection] = []
    with open_servers(args.servers, pooler=pooler, redis=args.redis) as servers:
        endpoints = Endpoints.of(servers)
        for config in configs:
            print(f"[{configs.index(config) + 1}/{len(configs)}] {config.name}", file=sys.stderr, flush=True)
            rows += asyncio.run(projection_check(config, endpoints, config.network_on(base), workload))
    print(render_projection_check(rows, base))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if args.relay_check:
        return cmd_relay_check()
    sweep = parse_sweep(args.sweep) if args.sweep else None
    if sweep is not None and sweep[0] == "history":
        if args.histories != HISTORIES_DEFAULT:
            raise ValueError("--sweep history=... sets the histories; leave out --histories")
        if args.clients or args.trace:
            raise ValueError("--sweep history=... runs the closed-turn benchmark: leave out --clients and --trace")
        args.closed_turns = True
        args.histories = ",".join(f"{v:g}" for v in sweep[1])
    if args.turn_shaped and not args.closed_turns:
        raise ValueError("--turn-shaped applies to --closed-turns (the workload replays its own operations)")
    workload = _workload(args)
    if args.write_trace:
        n = write_trace(args.write_trace, generate(workload), compression=workload.time_compression)
        print(f"wrote {n} events to {args.write_trace}")
        return 0
    if args.generator_check:
        figures = asyncio.run(generator_check(workload, events=args.generator_events))
        print(report.render_generator_check(figures, workload))
        return 0
    base, topology_name = _network(args)
    configs, notes = _configs(args)
    for note in notes:
        print(note, file=sys.stderr)
    if args.projection_check:
        return cmd_projection_check(args, configs, base, workload)
    reference = _reference(args, configs, args.closed_turns)
    command = ["sessionbench", *sys.argv[1:]] if "sessionbench" in sys.argv[0] else ["sessionbench", "compare"]
    histories = _histories(args.histories) if args.closed_turns else []
    ttl = args.ttl if args.ttl is not None else Settings().cache.ttl
    runs = plan(configs, base, sweep=sweep, histories=histories or None, projections=not args.no_projection)
    networked = topology_name is not None or any(not r.network.local or r.network.pooler != "none" for r in runs)
    pooler = next((r.network.pooler for r in runs if r.network.pooler != "none"), "none")
    if args.closed_turns:
        seconds = args.turn_seconds or (QUICK_TURN_SECONDS if args.quick else 5.0)
        progress = Progress(len(runs), seconds, enabled=not args.no_progress)
    else:
        progress = Progress(len(runs), workload.duration, enabled=not args.no_progress)
    if parse_redis_spec(args.redis) is not None and any(r.network.redis_rtt_ms for r in runs):
        raise ValueError(f"--redis {args.redis} cannot go through the latency relay (its redirects name node "
                         "addresses): leave out --redis-rtt")  # fmt: skip
    with open_servers(args.servers, pooler=pooler, redis=args.redis) as servers:
        endpoints = Endpoints.of(servers)
        urls = (endpoints.postgres, endpoints.redis)
        server_cfg = asyncio.run(measure.server_config(*urls))
        server_cfg.update(
            {
                "mode": servers.mode,
                "info": servers.info,
                "postgres_flags": servers.postgres.settings() if servers.postgres else None,
                "redis_flags": servers.redis.settings() if servers.redis else None,
                "pgbouncer_flags": servers.pgbouncer.settings() if servers.pgbouncer else None,
            }
        )
        where = measure.topology_of(*urls, servers.mode)
        if any(not r.network.local for r in runs):
            where += "; round-trip times added per configuration by latency relays (one process per server)"
        if topology_name:
            where += f"; topology {topology_name}: {TOPOLOGIES[topology_name].summary}"
        common: dict[str, Any] = {
            "command": command,
            "reference": reference,
            "servers": server_cfg,
            "notes": notes,
            "topology": where,
            "network": {"topology": topology_name, **base.to_json()} if networked else None,
            "sweep": {"axis": sweep[0], "values": sweep[1]} if sweep else None,
        }
        progress.begin()
        if args.closed_turns:
            warmup = 0.3 if args.quick else 0.5
            turns = TurnSettings(
                clients=args.turn_clients, histories=histories, seconds=seconds, warmup=warmup, shaped=args.turn_shaped
            )
            result = ResultFile.new("turns", seed=args.seed, turns=turns, **common)
            asyncio.run(
                compare_turns(
                    runs,
                    endpoints,
                    clients=args.turn_clients,
                    seconds=seconds,
                    warmup=warmup,
                    cache_size=args.cache_size,
                    progress=progress,
                    result=result,
                    shaped=args.turn_shaped,
                )
            )
        else:
            result = ResultFile.new(
                "workload",
                seed=workload.seed,
                workload=workload.to_dict(),
                trace=str(args.trace) if args.trace else None,
                load_model=f"closed ({args.clients} clients)" if args.clients else "open",
                ttl_traffic_s=ttl,
                ttl_replay_s=workload.replay_seconds(ttl),
                estimated_events_per_s=events_per_second(workload),
                **common,
            )
            asyncio.run(
                compare_workload(
                    runs,
                    endpoints,
                    workload,
                    clients=args.clients,
                    trace=args.trace,
                    cache_size=args.cache_size,
                    ttl=ttl,
                    max_lag_ms=args.max_lag_ms,
                    progress=progress,
                    result=result,
                )
            )
        progress.end()
    result.attach_overheads()
    result.attach_projections()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(args.output) / stamp
    path = result.write(directory)
    data = ResultFile.load(path)  # the report reads only the file
    print(report.render_table(data, reference=reference))
    if not args.no_html:
        html = report.write_html(data, directory / "report.html", reference=reference)
        print(f"\nwrote {path} and {html}")
    else:
        print(f"\nwrote {path}")
    return 0


def _checked(parse: Callable[..., float], option: str) -> Callable[[str], str]:
    """argparse type: validate with ``parse`` now (one readable line), keep the text."""

    def check(text: str) -> str:
        try:
            parse(text, what=option)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run one seeded workload against memory, postgres, hybrid, the seed and the floors; table + report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("what to compare")
    g.add_argument(
        "--configs",
        metavar="LIST",
        help="comma-separated configurations, in column order: store specs (memory, postgres, hybrid, "
        "e.g. 'hybrid?cache_size=20'), seed, floor-asyncpg, floor-redis, floor-hybrid, noop and, with the peers "
        "extra, peer-langchain-postgres, peer-langchain-redis, peer-langgraph-postgres; each optionally "
        "with network options after @ ('postgres@pg_rtt=2ms', 'hybrid@pg_rtt=2ms,redis_rtt=0.3ms', "
        "'postgres@pooler=pgbouncer'; rtt= sets both) "
        f"(default: {','.join(DEFAULT_CONFIGS)}; "
        "seed is skipped with a note if not installed)",
    )
    g.add_argument(
        "--reference",
        metavar="NAME",
        help="column the ratios are computed against (default: seed, else postgres; floor-asyncpg with --closed-turns)",
    )
    g.add_argument(
        "--servers",
        choices=MODES,
        default="auto",
        help="where PostgreSQL and Redis come from: embedded, or external when DATABASE_URL and "
        "REDIS_URL are set (auto, the default), or docker",
    )
    g = p.add_argument_group(
        "network (latency relays in front of the servers; each such configuration is also run locally for"
        " its projection)"
    )
    g.add_argument(
        "--pg-rtt",
        type=_checked(parse_ms, "--pg-rtt"),
        metavar="MS",
        help="round-trip time added to every PostgreSQL round trip, e.g. 2ms or 300us (default: 0, loopback)",
    )
    g.add_argument(
        "--redis-rtt",
        type=_checked(parse_ms, "--redis-rtt"),
        metavar="MS",
        help="round-trip time added to every Redis round trip, e.g. 0.3ms (default: 0)",
    )
    g.add_argument(
        "--jitter",
        type=_checked(parse_fraction, "--jitter"),
        metavar="PERCENT",
        help="each delay is drawn uniformly within rtt/2 plus or minus this fraction, e.g. 10%% (default: 0)",
    )
    g.add_argument(
        "--topology",
        choices=tuple(TOPOLOGIES),
        help="a named placement that sets the RTTs, jitter and pooler (illustrative defaults, see the README): "
        + "; ".join(f"{t.name}: {t.network.label()}" for t in TOPOLOGIES.values()).replace("%", "%%")
        + "; --pg-rtt/--redis-rtt/--jitter/--pooler override it",
    )
    g.add_argument(
        "--redis",
        type=_redis_topology,
        default="single",
        metavar="TOPOLOGY",
        help=f"{REDIS_SPEC_HELP}; default: single (embedded servers; the stores detect the cluster, and "
        "configurations with single-server Redis clients (seed, floor-redis, floor-hybrid) are skipped)",
    )
    g.add_argument(
        "--pooler",
        choices=POOLERS,
        help="pgbouncer: reach PostgreSQL through PgBouncer in transaction mode (embedded servers only; "
        "asyncpg then runs with statement_cache_size=0); per configuration: 'postgres@pooler=pgbouncer'",
    )
    g.add_argument(
        "--sweep",
        metavar="AXIS=LIST",
        help="run every configuration at each value: pg_rtt=0,0.5,1,2,5,10ms or redis_rtt=... (the open "
        "workload, or --closed-turns), or history=20,200,2000,10000 (the closed-turn benchmark); the report "
        f"draws read p50, turn p50 and PG queries/s against it (default configurations: {','.join(SWEEP_CONFIGS)}; "
        f"{SWEEP_DURATION:g} s each unless --duration)",
    )
    g.add_argument(
        "--no-projection",
        action="store_true",
        help="skip the local run of each configuration that runs across a network (then no predicted figures)",
    )
    g.add_argument(
        "--projection-check",
        action="store_true",
        help="instead of the table: run each configuration as twins, one on loopback and one through the relays, "
        "every operation on both at once, and print the relayed twin's append and read p50 beside the loopback "
        "twin's projection (measured at the same moments, so a busy machine slows both alike)",
    )
    g.add_argument(
        "--relay-check",
        action="store_true",
        help="ping-pong through the latency relay at 0.2 to 20 ms and print how close the added RTT is to the "
        "asked one (within 10%% or 50 us passes); needs no servers; exit 1 if a row misses",
    )
    g = p.add_argument_group("workload (see sessionbench/bench/harness/workload.py for every default)")
    g.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    g.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"replay seconds per configuration (default: {DEFAULT_DURATION:g}; --quick: {QUICK_DURATION:g})",
    )
    g.add_argument(
        "--quick",
        action="store_true",
        help="a short run for CI: under 40 s in all (shorter replay, and shorter turn runs)",
    )
    g.add_argument(
        "--rate",
        type=float,
        metavar="N",
        help=f"new sessions per traffic second (default: {Workload().new_sessions_per_s:g})",
    )
    g.add_argument(
        "--compression",
        type=float,
        metavar="X",
        help=f"traffic seconds per replay second (default: {Workload().time_compression:g}); "
        "TTLs are divided by it too",
    )
    g.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="replay this access-trace file (sessionbench trace, or --write-trace) instead of generating one",
    )
    g.add_argument(
        "--write-trace",
        type=Path,
        metavar="FILE",
        help="write the generated workload to FILE (.gz compresses) and exit",
    )
    g = p.add_argument_group("cache")
    g.add_argument(
        "--cache-size", type=int, metavar="N", help="messages cached per session by hybrid (default: the store's, 50)"
    )
    g.add_argument(
        "--ttl",
        type=float,
        metavar="S",
        help="cache TTL in traffic seconds, divided by --compression for the replay (default: the store's, 86400)",
    )
    g = p.add_argument_group("load model")
    g.add_argument(
        "--clients",
        type=int,
        metavar="N",
        help="closed model: N clients run the workload back to back for --duration s "
        "(peak throughput); default: open model on the workload's schedule",
    )
    g.add_argument(
        "--max-lag-ms",
        type=float,
        default=10.0,
        metavar="MS",
        help="open model: flag a run invalid when the generator's p99 lag exceeds this (default: 10)",
    )
    g.add_argument(
        "--closed-turns",
        action="store_true",
        help="the fixed-turn benchmark instead of the workload: --turn-clients clients doing whole turns "
        "(append 200 B, read 20, append 800 B) at each --histories size; prints the target ratios "
        f"(hybrid turns/s >= {report.TARGETS['hybrid_floor']:g}x floor-hybrid, >= {report.TARGETS['seed']:g}x "
        f"the seed and >= {report.TARGETS['peer']:g}x every peer-* column; hit read <= "
        f"{report.TARGETS['lrange']:g}x floor-redis)",
    )
    g.add_argument("--turn-clients", type=int, default=16, metavar="N", help="clients for --closed-turns (default: 16)")
    g.add_argument(
        "--turn-shaped",
        action="store_true",
        help="with --closed-turns: each turn's user message and read are one call (add_and_read; the floors' "
        "least work for it: floor-hybrid INSERT then one pipeline with the LRANGE), then the answer's append; "
        "configurations without such a call (seed, peers) are skipped",
    )
    g.add_argument(
        "--histories",
        default=HISTORIES_DEFAULT,
        metavar="LIST",
        help=f"history sizes for --closed-turns (default: {HISTORIES_DEFAULT})",
    )
    g.add_argument(
        "--turn-seconds",
        type=float,
        metavar="S",
        help="measured seconds per configuration and history with --closed-turns (default: 5; --quick: 1.5)",
    )
    g.add_argument(
        "--generator-check",
        action="store_true",
        help="measure the load generator with a no-op store: its maximum schedulable rate on one core "
        "and its CPU use at this workload; needs no servers",
    )
    g.add_argument(
        "--generator-events",
        type=int,
        default=200_000,
        metavar="N",
        help="events for the capacity part of --generator-check (default: 200000)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        default="results",
        metavar="DIR",
        help="results go to DIR/<timestamp>/result.json and report.html (default: results)",
    )
    g.add_argument("--no-html", action="store_true", help="skip report.html")
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (by default: one live line on a terminal, one line per configuration otherwise)",
    )
    p.set_defaults(func=cmd_compare)
