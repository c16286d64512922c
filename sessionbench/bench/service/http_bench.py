"""``sessionbench http-bench``: requests/s and latency of the HTTP service, 16 connections.

Starts ``sessionbench serve`` (``--backend``, embedded servers, 127.0.0.1, a free port)
as a child process, or targets ``--url``.  Each of ``--connections`` workers acts as its
own dev user with its own session, pre-filled with 40 messages.  Two closed-loop phases,
each bounded by ``--requests`` and ``--seconds``:

* ``read-last-20``: ``GET /v1/sessions/{id}/messages?limit=20`` (hybrid: cache hits);
* ``append``: ``POST /v1/sessions/{id}/messages`` with one message.

Prints requests/s, p50/p90/p99/max from the client's clock, the ``X-Cache`` tally, and
the CPU used by the load generator itself (a saturated generator understates the
service), and CPU time per request of the service process (``svc µs/r``, the share
spent in the kernel in ``in sys``) and of the
embedded PostgreSQL + Redis it started (``db µs/r``), which, unlike requests/s, hardly
depends on what else the machine is running.  ``--profile`` samples the service with py-spy (a dev tool: ``pip install
py-spy``) during each phase and prints where its time goes, by package.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sessionbench.bench.service.process import ServiceProcess


@dataclass
class Phase:
    name: str
    latencies_ns: list[int] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    cache: collections.Counter[str] = field(default_factory=collections.Counter)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    service_cpu_s: float | None = None
    service_sys_s: float | None = None
    servers_cpu_s: float | None = None

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] / 1e6

    def line(self) -> str:
        n = len(self.latencies_ns)
        rps = n / self.wall_s if self.wall_s else 0.0
        errors = sum(c for s, c in self.statuses.items() if s >= 400)
        cache = " ".join(f"{k}={v}" for k, v in sorted(self.cache.items())) or "-"
        return (
            f"{self.name:<14}{n:>7}{rps:>9.0f}{self.percentile_ms(50):>8.2f}{self.percentile_ms(90):>8.2f}"
            f"{self.percentile_ms(99):>8.2f}{max(self.latencies_ns, default=0) / 1e6:>8.1f}{errors:>7}"
            f"{self.client_cpu_s / self.wall_s * 100 if self.wall_s else 0:>8.0f}%{self._cpu_per_request(n)}  {cache}"
        )

    def _cpu_per_request(self, n: int) -> str:
        if self.service_cpu_s is None or self.servers_cpu_s is None or self.service_sys_s is None or not n:
            return f"{'-':>10}{'-':>8}{'-':>10}"
        kernel = self.service_sys_s / self.service_cpu_s * 100 if self.service_cpu_s else 0.0
        return f"{self.service_cpu_s / n * 1e6:>10.0f}{kernel:>7.0f}%{self.servers_cpu_s / n * 1e6:>10.0f}"


HEADER = (
    f"{'phase':<14}{'reqs':>7}{'req/s':>9}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>7}"
    f"{'gen CPU':>9}{'svc µs/r':>10}{'in sys':>8}{'db µs/r':>10}  X-Cache"
)


async def _worker(
    client: httpx.AsyncClient, phase: Phase, method: str, path: str, headers: dict[str, str],
    body: dict[str, str] | None, budget: list[int], deadline: float,
) -> None:  # fmt: skip
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        start = time.perf_counter_ns()
        r = await client.request(method, path, headers=headers, json=body)
        phase.latencies_ns.append(time.perf_counter_ns() - start)
        phase.statuses[r.status_code] += 1
        if "x-cache" in r.headers:
            phase.cache[r.headers["x-cache"]] += 1


CpuProbe = Callable[[], tuple[float, float, float]]


def cpu_probe(pid: int) -> CpuProbe:
    """CPU seconds of the service process (total, kernel) and of its children (the embedded
    PostgreSQL with its backends and Redis): CPU per request does not depend on how
    busy the rest of the machine is, unlike requests/s."""
    import psutil

    service_proc = psutil.Process(pid)

    def probe() -> tuple[float, float, float]:
        own = service_proc.cpu_times()
        children = 0.0
        for child in service_proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                children += t.user + t.system
        return own.user + own.system, own.system, children

    return probe


async def run_phases(
    url: str, *, connections: int, requests: int, seconds: float, probe: CpuProbe | None = None
) -> list[Phase]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        users = [({"Authorization": f"Bearer dev-bench{i}"}, str(uuid.uuid4())) for i in range(connections)]
        for headers, sid in users:
            turn = {"messages": [{"role": "user" if j % 2 == 0 else "assistant", "content": f"prefill {j} " * 20}
                                 for j in range(40)]}  # fmt: skip
            r = await client.post(f"/v1/sessions/{sid}/messages", json=turn, headers=headers)
            r.raise_for_status()
            await client.get(f"/v1/sessions/{sid}/messages", params={"limit": 20}, headers=headers)  # warm
        phases = []
        for name, method, suffix, body in (
            ("read-last-20", "GET", "/messages?limit=20", None),
            ("append", "POST", "/messages", {"role": "user", "content": "a new message of ordinary length " * 4}),
        ):
            phase = Phase(name)
            budget = [requests]
            before = probe() if probe is not None else None
            cpu0, t0 = time.process_time(), time.perf_counter()
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(
                _worker(client, phase, method, f"/v1/sessions/{sid}{suffix}", headers, body, budget, deadline)
                for headers, sid in users
            ))  # fmt: skip
            phase.wall_s = time.perf_counter() - t0
            phase.client_cpu_s = time.process_time() - cpu0
            if probe is not None and before is not None:
                after = probe()
                phase.service_cpu_s, phase.service_sys_s, phase.servers_cpu_s = (
                    a - b for a, b in zip(after, before, strict=True)
                )
            phases.append(phase)
        return phases


# ----------------------------------------------------------------------------- the service


@contextlib.contextmanager
def service(backend: str, servers: str, log: Path) -> Iterator[tuple[str, int]]:
    """``sessionbench serve`` as our child (:class:`~.process.ServiceProcess`): its URL and PID."""
    with ServiceProcess(backend, servers=servers, log_path=log) as proc:
        yield proc.url, proc.pid


# ----------------------------------------------------------------------------- profile

BUCKETS = (
    ("uvicorn/h11 (HTTP protocol)", ("uvicorn", "h11", "httptools")),
    ("starlette/fastapi (routing, deps)", ("starlette", "fastapi")),
    ("pydantic (validation)", ("pydantic",)),
    ("redis client", ("redis/", "hiredis")),
    ("asyncpg", ("asyncpg",)),
    ("prometheus_client", ("prometheus_client",)),
    ("opentelemetry", ("opentelemetry",)),
    ("sessionbench.store (this project)", ("(sessionbench/store/", "/sessionbench/store/")),
    ("json", ("json/",)),
    ("asyncio event loop + I/O", ("asyncio", "selectors", "socket")),
    ("other stdlib (typing, contextlib, enum...)", ("<frozen", "typing.py", "contextlib.py", "enum.py", "functools")),
)


def summarize_profile(raw: Path) -> str:
    """Self time by package from py-spy's collapsed stacks ("frame;frame;leaf count")."""
    totals: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        bucket = next((name for name, keys in BUCKETS if any(k in leaf for k in keys)), "other")
        totals[bucket] += int(count)
        functions[leaf] += int(count)
    total = sum(totals.values()) or 1
    out = [f"  {share / total * 100:5.1f}%  {name}" for name, share in totals.most_common()]
    out.append("  top self functions:")
    out += [f"  {n / total * 100:5.1f}%  {leaf[:110]}" for leaf, n in functions.most_common(8)]
    return "\n".join(out)


def profiled(url: str, pid: int, raw: Path, args: argparse.Namespace) -> tuple[list[Phase], list[str]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy (a dev tool): pip install py-spy")
    raw.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "-p", str(pid), "-f", "raw", "-r", "200", "-o", str(raw), "--nonblocking", "--gil"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        phases = asyncio.run(
            run_phases(url, connections=args.connections, requests=args.requests, seconds=args.seconds,
                       probe=cpu_probe(pid))
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    title = f"service profile (py-spy --gil: samples holding the GIL, i.e. Python CPU; both phases, self time): {raw}"
    return phases, [title, summarize_profile(raw)]


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="an already running service (dev auth on); default: start one")
    parser.add_argument("--backend", default="hybrid", choices=["hybrid", "postgres", "memory"],
                        help="the backend of the service started here (default: hybrid)")  # fmt: skip
    parser.add_argument("--servers", default="auto", choices=["auto", "embedded", "external"],
                        help="where servers come from (default: auto)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=16, metavar="N", help="concurrent connections (16)")
    parser.add_argument("--requests", type=int, default=5000, metavar="N", help="requests per phase, at most (5000)")
    parser.add_argument("--seconds", type=float, default=20.0, metavar="S", help="seconds per phase, at most (20)")
    parser.add_argument("--profile", nargs="?", const="results/http_bench.collapsed", metavar="FILE",
                        help="py-spy the service into FILE (default results/http_bench.collapsed)")  # fmt: skip
    parser.set_defaults(func=_command)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "http-bench",
        help="requests/s and latency of the HTTP service per route, closed loop (16 connections)",
        description=__doc__.split("\n\n")[0],
    )
    _arguments(p)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionbench http-bench", description=__doc__.split("\n\n")[0])
    _arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _command(args: argparse.Namespace) -> int:
    if args.connections < 1 or args.requests < 1 or not args.seconds > 0:
        raise ValueError("--connections and --requests must be at least 1 and --seconds above 0")
    with tempfile.TemporaryDirectory(prefix="sessionbench-http-") as tmp:
        out_dir = Path(tmp)
        notes: list[str] = []
        if args.url:
            phases = asyncio.run(run_phases(args.url, connections=args.connections, requests=args.requests,
                                            seconds=args.seconds))  # fmt: skip
            where = args.url
        else:
            with service(args.backend, args.servers, out_dir / "serve.log") as (url, pid):
                if args.profile:
                    phases, notes = profiled(url, pid, Path(args.profile), args)
                else:
                    phases = asyncio.run(run_phases(url, connections=args.connections, requests=args.requests,
                                                    seconds=args.seconds, probe=cpu_probe(pid)))  # fmt: skip
            where = f"sessionbench serve --backend {args.backend} on {url}"
        print(f"HTTP service: {where}; {args.connections} connections, closed loop, httpx client")
        print(HEADER)
        for phase in phases:
            print(phase.line())
        for note in notes:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
