"""``sessionbench loadtest``: the HTTP service on embedded servers + a short headless Locust run.

One configuration (``--backend hybrid``, the default) or several in turn
(``--compare memory,postgres,hybrid``).  For each configuration, in order:

1. reset the servers as ``compare`` does (drop every table in PostgreSQL's ``public``
   schema, which the service migrates again on start, and ``FLUSHALL`` Redis);
2. start ``sessionbench serve --backend B`` on 127.0.0.1 and a free port, against
   the same embedded PostgreSQL and Redis (``--servers external``);
3. run Locust headless on the shipped locustfile (``--locustfile`` prints its path;
   the package ``loadtests``) against it (same seed, users,
   duration and think scale for every configuration; bounded users and time; the
   process is stopped if it overruns), sampling the CPU of Locust, the service,
   PostgreSQL and Redis with psutil;
4. scrape the service's ``/metrics`` (its own cache hit ratio and latency), stop it.

Then one side-by-side table: Locust's client-side figures (requests/s, failures,
p50/p95/p99 per request group, client ``X-Cache`` hit ratio) next to the service's
hit ratio and latency percentiles estimated from its Prometheus histograms, and the
CPU each process used (a generator near one full core is saturated and the run's
throughput says more about Locust than about the service).

Everything binds and targets 127.0.0.1.  Locust's CSV, HTML, JSON summary and each
``/metrics`` scrape are written under ``--out`` (default ``results/loadtest-<time>/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from sessionbench.bench.harness.results import reset_servers
from sessionbench.bench.servers import Servers, open_servers
from sessionbench.bench.service.process import ServiceError, ServiceProcess
from sessionbench.store.settings import BACKENDS

MAX_USERS = 1000
MAX_DURATION = 900.0
SATURATED = 0.9  # cores: a single-threaded process above this is the bottleneck
MEMORY_NOTE = (
    "note: the memory configuration keeps sessions inside one service process; it only makes sense with a "
    "single service process (no replicas or worker processes behind a load balancer), and loses everything "
    "on restart."
)
OPERATIONAL_ROUTES = frozenset({"/readyz", "/healthz", "/metrics"})  # probes and scrapes, not load
_LOCUST_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class LoadtestError(ServiceError):
    """Locust (or the service, :class:`ServiceError`) could not be started or did not finish in time."""


# --------------------------------------------------------------------------- options


def parse_duration(text: str) -> float:
    """``-t``: plain seconds (``15``, ``2.5``) or Locust's form (``20s``, ``2m``, ``1h30m``) -> seconds.

    ``ValueError`` (one line naming the option) for anything else.
    """
    value = text.strip()
    with contextlib.suppress(ValueError):
        return float(value)
    match = _LOCUST_DURATION.fullmatch(value)
    if value and match:
        hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return float(hours * 3600 + minutes * 60 + seconds)
    raise ValueError(f"-t/--duration: {text!r} is not a duration: give seconds (15, 2.5) or Locust's 20s, 2m, 1h30m")


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    users: int = 10
    spawn_rate: float = 10.0
    duration: float = 15.0
    seed: int = 0
    think_scale: float = 1.0
    workload: str = ""
    processes: int = 0
    locust_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.users <= MAX_USERS:
            raise ValueError(f"--users must be between 1 and {MAX_USERS}")
        if not 1 <= self.duration <= MAX_DURATION:
            raise ValueError(f"--duration must be between 1 and {MAX_DURATION:g} seconds")
        if self.spawn_rate <= 0 or self.think_scale < 0 or self.processes < 0:
            raise ValueError("--spawn-rate must be > 0, --think-scale and --processes >= 0")
        from sessionbench.loadtests.chat_model import workload_from

        workload_from(self.workload)  # what the locustfile will build: out-of-range values fail here, before any server


# --------------------------------------------------------------------------- the service


def locustfile() -> Path:
    """The locustfile shipped in the distribution (package ``loadtests``, beside ``bench`` and ``store``)."""
    try:
        from sessionbench.loadtests import LOCUSTFILE
    except ImportError:
        raise FileNotFoundError(
            "the Locust files (package loadtests) are not installed: reinstall sessionbench"
        ) from None
    if not LOCUSTFILE.is_file():
        raise FileNotFoundError(f"{LOCUSTFILE} is missing: reinstall sessionbench")
    return LOCUSTFILE


# --------------------------------------------------------------------------- Locust


@dataclass
class CpuSampler:
    """Cumulative CPU seconds of process trees, sampled while they run (children may exit early)."""

    roots: dict[str, int]
    _first: dict[tuple[str, int], float] = field(default_factory=dict)
    _last: dict[tuple[str, int], float] = field(default_factory=dict)

    def sample(self) -> None:
        for label, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                key = (label, p.pid)
                self._first.setdefault(key, t.user + t.system)
                self._last[key] = t.user + t.system

    def seconds(self) -> dict[str, float]:
        """CPU seconds per label (the whole process tree)."""
        used = dict.fromkeys(self.roots, 0.0)
        for key, last in self._last.items():
            used[key[0]] += last - self._first[key]
        return used

    def busiest(self) -> dict[str, float]:
        """CPU seconds of the busiest single process per label (what saturates a single-threaded server)."""
        top = dict.fromkeys(self.roots, 0.0)
        for key, last in self._last.items():
            top[key[0]] = max(top[key[0]], last - self._first[key])
        return top


@dataclass
class LocustRun:
    exit_code: int
    wall_seconds: float
    summary: dict[str, Any]
    cpu_seconds: dict[str, float]  # per label, whole process tree
    busiest_seconds: dict[str, float]  # per label, the busiest single process
    output_tail: str
    machine_busy: float = 0.0  # fraction of all CPUs busy (anything running on the machine)

    def cores(self, label: str) -> float:
        """Average cores the label's process tree used over the run."""
        return self.cpu_seconds.get(label, 0.0) / self.wall_seconds if self.wall_seconds else 0.0

    def busiest_cores(self, label: str) -> float:
        return self.busiest_seconds.get(label, 0.0) / self.wall_seconds if self.wall_seconds else 0.0


def locust_command(host: str, options: LoadtestOptions, out_prefix: Path, summary: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless", "--host", host,
        "-u", str(options.users), "-r", f"{options.spawn_rate:g}", "-t", f"{math.ceil(options.duration)}s",
        "--only-summary", "--seed", str(options.seed), "--think-scale", f"{options.think_scale:g}",
        "--summary-file", str(summary), "--csv", str(out_prefix), "--html", f"{out_prefix}.html",
    ]  # fmt: skip
    if options.workload:
        cmd += ["--workload", options.workload]
    if options.processes:
        cmd += ["--processes", str(options.processes)]
    return [*cmd, *options.locust_args]


def run_locust(
    host: str,
    options: LoadtestOptions,
    out_prefix: Path,
    *,
    watch: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> LocustRun:
    """Run Locust headless against ``host``; bounded by ``duration`` + 60 s, then stopped by PID."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    summary_path = out_prefix.with_name(out_prefix.name + "_summary.json")
    log_path = out_prefix.with_name(out_prefix.name + "_locust.log")
    cmd = locust_command(host, options, out_prefix, summary_path)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )  # fmt: skip
        sampler = CpuSampler({"locust": proc.pid, **(watch or {})})
        launched = time.monotonic()
        deadline = launched + options.duration + 60.0
        # CPU is counted from the moment users start (Locust's imports and start-up are not load).
        t0: float | None = None
        machine0 = psutil.cpu_times()
        try:
            while proc.poll() is None:
                if t0 is None and (_load_started(log_path) or time.monotonic() - launched > 10):
                    t0, machine0 = time.perf_counter(), psutil.cpu_times()
                if t0 is not None:
                    sampler.sample()
                if time.monotonic() > deadline:
                    raise LoadtestError(f"Locust did not finish within {options.duration + 60:.0f} s (see {log_path})")
                time.sleep(0.25)
        except BaseException:  # overrun or Ctrl-C: Locust runs in its own session, so stop it here
            _stop_group(proc)
            raise
    wall = time.perf_counter() - (t0 if t0 is not None else time.perf_counter())
    machine1 = psutil.cpu_times()
    total = sum(machine1) - sum(machine0)
    busy = 1.0 - (machine1.idle - machine0.idle) / total if total > 0 else 0.0
    tail = log_path.read_text(errors="replace")[-4000:]
    try:
        summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LoadtestError(f"Locust exited with code {proc.returncode} and wrote no summary:\n{tail}") from None
    return LocustRun(proc.returncode, wall, summary, sampler.seconds(), sampler.busiest(), tail, busy)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT the process group this module created for Locust (its workers too), SIGKILL after 10 s."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _load_started(log_path: Path) -> bool:
    """Locust logged that it is starting users (local run, master, or --processes)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return False
    return "Ramping to" in text or "Sending spawn jobs" in text


# --------------------------------------------------------------------------- service metrics


@dataclass
class ServiceFigures:
    """What the service says about itself in ``/metrics``."""

    cache: dict[str, float] = field(default_factory=dict)  # result -> requests
    operations: dict[str, tuple[float, ...]] = field(default_factory=dict)  # op -> (count, p50, p95, p99) seconds
    routes: dict[str, tuple[float, ...]] = field(default_factory=dict)  # "GET /route" -> (count, p50, p95, p99)

    @property
    def hit_ratio(self) -> float | None:
        from sessionbench.loadtests.groups import hit_ratio

        return hit_ratio(self.cache)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile``: linear interpolation inside cumulative ``(le, count)`` buckets."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the highest finite bound, as Prometheus does
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return ordered[-1][0]


def parse_service_metrics(text: str) -> ServiceFigures:
    """Cache results and latency percentiles (from histogram buckets) in a ``/metrics`` scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    figures = ServiceFigures()
    op_buckets: dict[str, dict[float, float]] = {}
    route_buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "sessionstore_cache_requests_total":
                result = s.labels.get("result", "")
                figures.cache[result] = figures.cache.get(result, 0.0) + s.value
            elif s.name == "sessionstore_operation_duration_seconds_bucket":
                per_op = op_buckets.setdefault(s.labels.get("operation", "?"), {})
                le = float(s.labels["le"])
                per_op[le] = per_op.get(le, 0.0) + s.value
            elif s.name == "sessionstore_http_request_duration_seconds_bucket":
                key = f"{s.labels.get('method', '?')} {s.labels.get('route', '?')}"
                per_route = route_buckets.setdefault(key, {})
                le = float(s.labels["le"])
                per_route[le] = per_route.get(le, 0.0) + s.value
    for target, source in ((figures.operations, op_buckets), (figures.routes, route_buckets)):
        for name, per_le in sorted(source.items()):
            buckets = sorted(per_le.items())
            count = buckets[-1][1] if buckets else 0.0
            if count:
                target[name] = (count, *(histogram_quantile(q, buckets) for q in (0.5, 0.95, 0.99)))
    return figures


# --------------------------------------------------------------------------- one configuration


@dataclass
class ConfigResult:
    backend: str
    run: LocustRun
    service: ServiceFigures


def run_configuration(
    backend: str, servers: Servers, options: LoadtestOptions, out_dir: Path, *, log: IO[str] = sys.stdout
) -> ConfigResult:
    """Reset the servers, start the service with ``backend``, run Locust against it, scrape, stop."""
    asyncio.run(reset_servers(servers.database_url, servers.redis_url))
    service = ServiceProcess(
        backend,
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        log_path=out_dir / f"{backend}_service.log",
    )
    with service:
        watch = {"service": service.pid}
        if servers.postgres is not None and servers.postgres.pid is not None:
            watch["postgres"] = servers.postgres.pid
        if servers.redis is not None and servers.redis.pid is not None:
            watch["redis"] = servers.redis.pid
        print(f"[{backend}] service on {service.url} (pid {service.pid}); Locust for {options.duration:g} s ...",
              file=log, flush=True)  # fmt: skip
        run = run_locust(service.url, options, out_dir / backend, watch=watch)
        scrape = service.scrape()
    (out_dir / f"{backend}_metrics.txt").write_text(scrape, encoding="utf-8")
    return ConfigResult(backend, run, parse_service_metrics(scrape))


# --------------------------------------------------------------------------- the table


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def _triple(values: Sequence[float]) -> str:
    return "/".join("-" if math.isnan(v) else f"{v:g}" for v in values)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(results: Sequence[ConfigResult]) -> str:
    """One row per figure, one column per configuration."""
    from sessionbench.loadtests.groups import CACHE_RESULTS, GROUPS

    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append((label, values))

    summaries = [r.run.summary for r in results]
    row("Locust exit code", [str(r.run.exit_code) for r in results])
    row("requests/s (client)", [f"{s['total']['rps']:.1f}" for s in summaries])
    row("requests / failures", [f"{s['total']['count']} / {s['total']['failures']}" for s in summaries])
    row("hit ratio: client X-Cache", [_ratio(s.get("hit_ratio")) for s in summaries])
    row("hit ratio: service /metrics", [_ratio(r.service.hit_ratio) for r in results])
    row(
        f"X-Cache {'/'.join(CACHE_RESULTS)}",
        ["/".join(str(s["cache"].get(k, 0)) for k in CACHE_RESULTS) for s in summaries],
    )
    groups = [g for g in GROUPS if any(g in s["groups"] for s in summaries)]
    groups += sorted({g for s in summaries for g in s["groups"]} - set(groups))
    for g in groups:
        values = []
        for s in summaries:
            entry = s["groups"].get(g)
            pct = entry["percentiles_ms"] if entry else None
            values.append(_triple([pct["p50"], pct["p95"], pct["p99"]]) if pct else "-")
        row(f"client {g} p50/p95/p99 ms", values)
    ops = sorted({op for r in results for op in r.service.operations})
    for op in ops:
        values = []
        for r in results:
            figures = r.service.operations.get(op)
            values.append("/".join(_ms(v) for v in figures[1:]) if figures else "-")
        row(f"service {op} p50/p95/p99 ms ~", values)
    routes = sorted({rt for r in results for rt in r.service.routes if rt.split(" ")[-1] not in OPERATIONAL_ROUTES})
    for rt in routes:
        values = []
        for r in results:
            figures = r.service.routes.get(rt)
            values.append("/".join(_ms(v) for v in figures[1:]) if figures else "-")
        row(f"http {rt} p50/p95/p99 ms ~", values)
    for label in ("locust", "service", "postgres", "redis"):
        if any(label in r.run.cpu_seconds for r in results):
            row(f"CPU cores used: {label}", [f"{r.run.cores(label):.2f}" for r in results])
    for label in ("locust", "service"):
        row(f"CPU ms per request: {label}", [f"{cpu_ms_per_request(r.run, label):.2f}" for r in results])
        row(f"req/s one {label} process could drive at 100% CPU",
            [f"{one_core_ceiling(r.run, label):.0f}" for r in results])  # fmt: skip
    row("CPU busy, whole machine", [f"{r.run.machine_busy:.0%}" for r in results])
    row("saturated first", [saturation(r.run) for r in results])

    width = max(len(label) for label, _ in rows)
    col = max(12, *(len(v) for _, values in rows for v in values), *(len(r.backend) for r in results))
    lines = [f"{'':<{width}}  " + "  ".join(f"{r.backend:>{col}}" for r in results)]
    lines += [f"{label:<{width}}  " + "  ".join(f"{v:>{col}}" for v in values) for label, values in rows]
    lines.append("~ estimated from the service's Prometheus histogram buckets (bucket resolution)")
    return "\n".join(lines)


def cpu_ms_per_request(run: LocustRun, label: str) -> float:
    """CPU milliseconds the label's processes spent per client request (independent of contention)."""
    count = int(run.summary.get("total", {}).get("count", 0))
    return run.cpu_seconds.get(label, 0.0) * 1000.0 / count if count else math.nan


def one_core_ceiling(run: LocustRun, label: str) -> float:
    """Requests/s at which the label's busiest single process would use a whole core (the first to saturate)."""
    count = int(run.summary.get("total", {}).get("count", 0))
    busiest = run.busiest_seconds.get(label, 0.0)
    return count / busiest if busiest > 0 else math.nan


def saturation(run: LocustRun) -> str:
    """What ran out of CPU first: ``GENERATOR`` (the figures measure Locust), ``service``, the ``machine``
    (other processes took the CPU: neither ours was near a full core), or ``neither``."""
    generator = run.busiest_cores("locust")
    service = run.busiest_cores("service")
    if generator >= SATURATED and generator >= service:
        return "GENERATOR"
    if service >= SATURATED:
        return "service"
    if run.machine_busy >= SATURATED:
        return "machine"
    return "neither"


# --------------------------------------------------------------------------- the command


def register(sub: Any) -> None:
    p = sub.add_parser(
        "loadtest",
        help="the HTTP service on embedded servers + a short headless Locust run (or --compare configurations)",
        description="The HTTP service on embedded servers and a short headless Locust run against it, for one "
        "configuration or several in turn (--compare); one side-by-side table at the end.",
    )
    p.add_argument(
        "--locustfile",
        action="store_true",
        help='print the path of the locustfile shipped with sessionbench and exit: locust -f "$(sessionbench '
        'loadtest --locustfile)"',
    )
    p.add_argument("--backend", choices=BACKENDS, default="hybrid", help="service configuration (default hybrid)")
    p.add_argument(
        "--compare",
        default=None,
        metavar="LIST",
        help="comma-separated configurations run in turn, e.g. memory,postgres,hybrid",
    )
    p.add_argument(
        "-u", "--users", type=int, default=10, metavar="N", help=f"simulated users (default 10, at most {MAX_USERS})"
    )
    p.add_argument(
        "-r",
        "--spawn-rate",
        type=float,
        default=None,
        metavar="USERS_PER_S",
        help="users started per second (default: all at once)",
    )
    p.add_argument(
        "-t",
        "--duration",
        default="15",
        metavar="S|XhYmZs",
        help=f"load per configuration: seconds (15, 2.5) or Locust's form (20s, 2m, 1h30m); "
        f"default 15 s, at most {MAX_DURATION:g} s",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="workload seed, the same for every configuration")
    p.add_argument(
        "--think-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply the workload's waits (default 1; 0: no waits, closed loop)",
    )
    p.add_argument(
        "--workload",
        default="",
        metavar="NAME=VALUE,...",
        help="workload overrides (fields of sessionbench.bench.harness.workload.Workload), e.g. think_time_median=10",
    )
    p.add_argument(
        "--processes", type=int, default=0, metavar="N", help="Locust worker processes (default 0: one process)"
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default results/loadtest-<time>/)"
    )
    p.add_argument(
        "locust_args", nargs=argparse.REMAINDER, help="after '--': more Locust options, e.g. -- --p95 '*=500'"
    )
    p.set_defaults(func=_cmd_loadtest)


def _cmd_loadtest(args: argparse.Namespace) -> int:
    shipped = locustfile()  # first: the options below are checked with the package's own model
    if args.locustfile:
        print(shipped)
        return 0
    configs = [c.strip() for c in (args.compare or args.backend).split(",") if c.strip()]
    unknown = [c for c in configs if c not in BACKENDS]
    if unknown or not configs:
        raise ValueError(
            f"unknown configuration(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(BACKENDS)}"
        )
    extra = list(args.locust_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    options = LoadtestOptions(
        users=args.users, spawn_rate=args.spawn_rate or float(args.users), duration=parse_duration(args.duration),
        seed=args.seed, think_scale=args.think_scale, workload=args.workload, processes=args.processes,
        locust_args=tuple(extra),
    )  # fmt: skip
    out_dir = args.out or Path("results") / time.strftime("loadtest-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    if "memory" in configs:
        print(MEMORY_NOTE)
    results: list[ConfigResult] = []
    with open_servers("embedded") as servers:
        print(f"servers: {servers.describe()}")
        for backend in configs:
            results.append(run_configuration(backend, servers, options, out_dir))
    print()
    print(
        f"{options.users} users, {options.duration:g} s per configuration, seed {options.seed}, "
        f"think scale {options.think_scale:g}, Locust processes {options.processes or 1}"
    )
    print(format_table(results))
    if "memory" in configs:
        print(MEMORY_NOTE)
    for r in results:
        if saturation(r.run) == "GENERATOR":
            print(f"warning: [{r.backend}] Locust used a full core: add --processes or the figures measure Locust")
    (out_dir / "loadtest.json").write_text(
        json.dumps(
            {
                "options": {k: getattr(options, k) for k in LoadtestOptions.__dataclass_fields__},
                "servers": servers.info,
                "results": [
                    {
                        "backend": r.backend,
                        "exit_code": r.run.exit_code,
                        "wall_seconds": r.run.wall_seconds,
                        "cpu_seconds": r.run.cpu_seconds,
                        "client": r.run.summary,
                        "service": {"cache": r.service.cache, "hit_ratio": r.service.hit_ratio,
                                    "operations": r.service.operations, "routes": r.service.routes},
                    }
                    for r in results
                ],
            },
            indent=2,
            default=str,
        )
        + "\n",
        encoding="utf-8",
    )  # fmt: skip
    print(f"written: {out_dir}/ (Locust CSV, HTML, summaries, /metrics scrapes, loadtest.json)")
    return max((r.run.exit_code for r in results), default=0)
