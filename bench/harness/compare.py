"""``sessionbench compare``: the same workload against every configuration, one after another.

For each configuration, on the same servers: drop every table and ``FLUSHALL``, open
the target, replay the workload (open model by default, ``--clients N`` for a closed
model), close it, and read the servers' counters.  Then write
``results/<timestamp>/result.json`` (raw figures, :mod:`bench.harness.results`) and render the
table and ``report.html`` from that file alone (:mod:`bench.harness.report`).

Every store column is also divided by the bare-driver floor that makes the same round
trips (hybrid hit reads by ``floor-redis``, hybrid appends by ``floor-hybrid``, postgres
by ``floor-asyncpg``; :data:`bench.harness.floors.FLOOR_OF`): the "÷ its floor" rows.

``--closed-turns`` runs issue 3's benchmark instead: 16 clients doing whole turns
(append ~200 B, read the last 20, append ~800 B) on sessions with 20 and 200
messages of history, for every configuration including the bare-driver floors, and
prints the target ratios with pass/miss.

``--generator-check`` measures the load generator itself with a no-op store: the
highest operation rate it can schedule on one core, and its CPU use at the chosen
workload.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bench.harness import report
from bench.harness import results as measure
from bench.harness.floors import FLOORS, open_floor
from bench.harness.results import ResultFile, RunRecord, TurnSettings
from bench.harness.runner import (
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
from bench.harness.workload import Workload, events_per_second, generate
from bench.servers import MODES, open_servers
from store import open_store
from store.accesslog import TraceEvent, read_trace, write_trace
from store.settings import BACKENDS, Settings

DEFAULT_CONFIGS = ("memory", "postgres", "hybrid", "seed", "floor-asyncpg", "floor-redis", "floor-hybrid")
SEED_MODULE = "bench.harness.seed"
#: Replay seconds per configuration: seven columns of 17 s take about as long as six of 20 s did.
DEFAULT_DURATION = 17.0
QUICK_DURATION = 3.0
QUICK_TURN_SECONDS = 1.5

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
"""


@dataclass(frozen=True, slots=True)
class Config:
    """One column of the comparison: a store spec, the seed baseline, a floor, or ``noop``."""

    name: str
    kind: str  # "store" | "seed" | "floor" | "noop"

    @classmethod
    def parse(cls, name: str) -> Config:
        name = name.strip()
        if name == "seed":
            return cls(name, "seed")
        if name == "noop":
            return cls(name, "noop")
        if name in FLOORS:
            return cls(name, "floor")
        if name.partition("?")[0] in BACKENDS:
            Settings.from_spec(name)  # validates the spec now, not mid-run
            return cls(name, "store")
        raise ValueError(
            f"unknown configuration {name!r}: use a store spec ({', '.join(BACKENDS)}, e.g. 'hybrid?cache_size=20'), "
            f"'seed', {', '.join(repr(f) for f in FLOORS)} or 'noop'"
        )


def seed_available() -> bool:
    """Whether the seed baseline module (``bench/baselines/seed_naive.py``) is installed."""
    try:
        return importlib.util.find_spec(SEED_MODULE) is not None
    except ModuleNotFoundError:
        return False


def _store_settings(spec: str, *, cache_size: int | None, ttl_replay: float) -> Settings:
    settings = Settings.from_spec(spec)
    query = spec.partition("?")[2]
    options: dict[str, Any] = {}
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
    config: Config, database_url: str, redis_url: str, *, cache_size: int | None, ttl_replay: float
) -> tuple[Target, dict[str, Any]]:
    """Open the target for ``config``; return it and the settings it runs with."""
    if config.kind == "noop":
        return NoopTarget(), {}
    if config.kind == "floor":
        floor = await open_floor(config.name, database_url, redis_url, window=cache_size, ttl=ttl_replay)
        return floor, {"floor": config.name}
    if config.kind == "seed":
        module = importlib.import_module(SEED_MODULE)
        seed = await module.open_seed_baseline(database_url, redis_url)
        described = {"seed": "the seed's SessionManager (keep 50, 24 h SETEX, unscaled)"}
        return StoreTarget(seed, "seed", create_first=True), described
    settings = _store_settings(config.name, cache_size=cache_size, ttl_replay=ttl_replay)
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


async def _measure(
    config: Config,
    urls: tuple[str, str],
    run: Callable[[Target], Any],
    *,
    cache_size: int | None,
    ttl_replay: float,
    prepare: Callable[[Target], Any] | None = None,
    history: int | None = None,
) -> RunRecord:
    """Fresh schema, open, (prepare), run with driver calls counted, read sizes, close."""
    db, rd = urls
    await measure.reset_servers(db, rd)
    target, settings = await open_target(config, db, rd, cache_size=cache_size, ttl_replay=ttl_replay)
    try:
        if prepare is not None:
            await prepare(target)
        before = await measure.snapshot(db, rd)
        with measure.DriverCallCounter() as calls:
            result: RunResult = await run(target)
        after = await measure.snapshot(db, rd, key_memory=True)
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
        history=history,
    )


# ----------------------------------------------------------------------------- workload compare


def _events(workload: Workload, trace: Path | None) -> Callable[[], Iterator[TraceEvent]]:
    if trace is not None:
        return lambda: read_trace(trace)
    return lambda: generate(workload)


async def compare_workload(
    configs: list[Config],
    urls: tuple[str, str],
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
    """Run every configuration; append one record per configuration to ``result.configs``."""
    events = _events(workload, trace)
    ttl_replay = workload.replay_seconds(ttl)
    for config in configs:
        update = progress.start(config.name)

        async def run(target: Target, update: Callable[[float], None] = update) -> RunResult:
            if clients:
                many = replace(workload, duration=workload.duration * 1000)
                stream = read_trace(trace) if trace is not None else generate(many)
                return await run_closed(target, stream, clients=clients, duration=workload.duration, progress=update)
            options = RunOptions(duration=workload.duration, max_lag_ms=max_lag_ms)
            return await run_open(target, events(), options, progress=update)

        record = await _measure(config, urls, run, cache_size=cache_size, ttl_replay=ttl_replay)
        progress.finish()
        result.configs.append(record)


# ----------------------------------------------------------------------------- issue 3's turns


async def compare_turns(
    configs: list[Config],
    urls: tuple[str, str],
    *,
    histories: list[int],
    clients: int,
    seconds: float,
    warmup: float,
    cache_size: int | None,
    progress: Progress,
    result: ResultFile,
) -> None:
    """Issue 3's benchmark: closed loop of whole turns per configuration and history size."""
    sessions = [f"h{i}" for i in range(clients * 2)]
    for history in histories:
        for config in configs:
            update = progress.start(f"{config.name} h={history}")

            async def prepare(target: Target, history: int = history) -> None:
                await prefill(target, sessions, history, concurrency=clients)
                for key in sessions:  # warm the caches: the benchmark measures hits
                    await target.read(key, 20, None)

            async def run(target: Target, update: Callable[[float], None] = update) -> RunResult:
                return await run_turns(
                    target, sessions, clients=clients, duration=seconds, warmup=warmup, progress=update
                )

            record = await _measure(
                config, urls, run, cache_size=cache_size, ttl_replay=24 * 3600.0, prepare=prepare, history=history
            )
            progress.finish()
            result.configs.append(record)


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
    else:
        overrides["duration"] = QUICK_DURATION if args.quick else DEFAULT_DURATION
    if args.rate is not None:
        overrides["new_sessions_per_s"] = args.rate
    if args.compression is not None:
        overrides["time_compression"] = args.compression
    return replace(Workload(), **overrides)


def _configs(args: argparse.Namespace) -> tuple[list[Config], list[str]]:
    names = [n for n in (args.configs.split(",") if args.configs is not None else DEFAULT_CONFIGS) if n.strip()]
    if not names:
        raise ValueError(f"--configs {args.configs!r} names no configuration (e.g. --configs memory,hybrid)")
    configs = [Config.parse(n) for n in names]
    if len({c.name for c in configs}) != len(configs):
        raise ValueError("each configuration may appear once")
    notes: list[str] = []
    if any(c.kind == "seed" for c in configs) and not seed_available():
        configs = [c for c in configs if c.kind != "seed"]
        notes.append(f"note: the seed baseline ({SEED_MODULE}) is not installed; skipping 'seed'")
    if not configs:
        raise ValueError("no configuration left to run")
    return configs, notes


def _histories(text: str) -> list[int]:
    try:
        histories = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise ValueError(f"--histories {text!r}: give message counts separated by commas, e.g. 20,200") from None
    if not histories or min(histories) < 0:
        raise ValueError(f"--histories {text!r}: give message counts (0 or more) separated by commas, e.g. 20,200")
    return histories


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


def cmd_compare(args: argparse.Namespace) -> int:
    workload = _workload(args)
    if args.write_trace:
        n = write_trace(args.write_trace, generate(workload))
        print(f"wrote {n} events to {args.write_trace}")
        return 0
    if args.generator_check:
        figures = asyncio.run(generator_check(workload, events=args.generator_events))
        print(report.render_generator_check(figures, workload))
        return 0
    configs, notes = _configs(args)
    for note in notes:
        print(note, file=sys.stderr)
    reference = _reference(args, configs, args.closed_turns)
    command = ["sessionbench", *sys.argv[1:]] if "sessionbench" in sys.argv[0] else ["sessionbench", "compare"]
    histories = _histories(args.histories) if args.closed_turns else []
    ttl = args.ttl if args.ttl is not None else Settings().cache.ttl
    if args.closed_turns:
        seconds = args.turn_seconds or (QUICK_TURN_SECONDS if args.quick else 5.0)
        progress = Progress(len(configs) * len(histories), seconds, enabled=not args.no_progress)
    else:
        progress = Progress(len(configs), workload.duration, enabled=not args.no_progress)
    with open_servers(args.servers) as servers:
        urls = (servers.database_url, servers.redis_url)
        server_cfg = asyncio.run(measure.server_config(*urls))
        server_cfg.update(
            {
                "mode": servers.mode,
                "info": servers.info,
                "postgres_flags": servers.postgres.settings() if servers.postgres else None,
                "redis_flags": servers.redis.settings() if servers.redis else None,
            }
        )
        common: dict[str, Any] = {
            "command": command,
            "reference": reference,
            "servers": server_cfg,
            "notes": notes,
            "topology": measure.topology_of(*urls, servers.mode),
        }
        progress.begin()
        if args.closed_turns:
            warmup = 0.3 if args.quick else 0.5
            turns = TurnSettings(clients=args.turn_clients, histories=histories, seconds=seconds, warmup=warmup)
            result = ResultFile.new("turns", seed=args.seed, turns=turns, **common)
            asyncio.run(
                compare_turns(
                    configs,
                    urls,
                    histories=histories,
                    clients=args.turn_clients,
                    seconds=seconds,
                    warmup=warmup,
                    cache_size=args.cache_size,
                    progress=progress,
                    result=result,
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
                    configs,
                    urls,
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
        "e.g. 'hybrid?cache_size=20'), seed, floor-asyncpg, floor-redis, floor-hybrid, noop "
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
    g = p.add_argument_group("workload (see bench/workload.py for every default)")
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
        help="issue 3's benchmark instead of the workload: --turn-clients clients doing whole turns "
        "(append 200 B, read 20, append 800 B) at each --histories size; "
        "prints the target ratios",
    )
    g.add_argument("--turn-clients", type=int, default=16, metavar="N", help="clients for --closed-turns (default: 16)")
    g.add_argument(
        "--histories", default="20,200", metavar="LIST", help="history sizes for --closed-turns (default: 20,200)"
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
