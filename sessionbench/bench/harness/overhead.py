"""``sessionbench overhead`` (``python -m sessionbench.bench.harness.overhead``): what instrumentation costs.

Compares, on the same servers and in the same process, a bare hybrid store with the
same store behind :class:`sessionbench.store.instrumentation.wrapper.InstrumentedStore` (Prometheus metrics via
the events sink; no tracer, as when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is unset) and,
for information, with an SDK tracer (spans created, nothing exported).  Two operations:
a cache-hit read of the last 20 messages (1 Redis round trip) and a one-message append
(1 PostgreSQL + 1 Redis round trip).

A second bare store (``bare A/A``) is measured like the others: its "overhead" is the
noise floor of the run.  Method: ``--rounds`` rounds; in each, every variant runs a block of ``--ops`` calls of
an operation, in a rotating order (so drift and noise from other processes hit every
variant alike); a block's mean is one sample; the overhead is the median over rounds
of the paired ratio ``variant / bare - 1``.  A second, server-free figure times the
wrapper around the in-process memory backend, which isolates its cost in µs per call.
Bounded by ``--rounds`` x ``--ops`` and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from sessionbench.bench.servers import MODES, open_servers
from sessionbench.store import SessionStore, open_store
from sessionbench.store.instrumentation.metrics import Metrics, PrometheusEvents
from sessionbench.store.instrumentation.wrapper import InstrumentedStore

Op = Callable[[], Awaitable[object]]

DESCRIPTION = """\
What the instrumentation wrapper costs, measured in one run on the same servers and in the
same process: a bare hybrid store against the same store behind the instrumentation wrapper
(Prometheus metrics; no tracer, as when OTEL_EXPORTER_OTLP_ENDPOINT is unset) and, for
information, with an SDK tracer (spans created, nothing exported). Two operations: a
cache-hit read of the last 20 messages (1 Redis round trip) and a one-message append
(1 PostgreSQL + 1 Redis round trip).

A second bare store (bare A/A) is measured like the others: its "overhead" is the noise
floor of the run. In each of --rounds rounds every variant runs a block of --ops calls, in
a rotating order; the overhead is the median over rounds of the paired ratio
variant / bare - 1. A server-free figure times the wrapper around the memory backend
(its cost in microseconds per call). Bounded by --rounds x --ops and --max-seconds.
"""


@dataclass
class Samples:
    """Per-block mean latencies (ns per call), one per round, per variant."""

    blocks: dict[str, list[float]] = field(default_factory=dict)

    def add(self, variant: str, ns_per_call: float) -> None:
        self.blocks.setdefault(variant, []).append(ns_per_call)

    def median_us(self, variant: str) -> float:
        return statistics.median(self.blocks[variant]) / 1000

    def min_us(self, variant: str) -> float:
        return min(self.blocks[variant]) / 1000

    def overhead_of_minima(self, variant: str, base: str = "bare") -> float:
        """Ratio of the best blocks: the least disturbed by other processes."""
        return min(self.blocks[variant]) / min(self.blocks[base]) - 1

    def overhead(self, variant: str, base: str = "bare") -> float:
        """Median over rounds of the paired ratio, as a fraction."""
        pairs = zip(self.blocks[variant], self.blocks[base], strict=True)
        return statistics.median(v / b - 1 for v, b in pairs)


async def _block(op: Op, n: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        await op()
    return (time.perf_counter_ns() - start) / n


async def measure(ops: dict[str, Op], *, rounds: int, n: int, deadline: float) -> Samples:
    names = list(ops)
    samples = Samples()
    for name in names:  # warm-up: connections, prepared statements, script cache
        await _block(ops[name], max(10, n // 10))
    for r in range(rounds):
        if time.monotonic() > deadline:
            break
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples.add(name, await _block(ops[name], n))
    return samples


def _instrumented(inner: SessionStore, backend: str, registry: CollectorRegistry, traced: bool) -> InstrumentedStore:
    tracer = None
    if traced:
        from opentelemetry.sdk.trace import TracerProvider

        tracer = TracerProvider().get_tracer(
            "sessionbench.bench.harness.overhead"
        )  # spans are recorded, never exported
    return InstrumentedStore(inner, backend=backend, registry=registry, tracer=tracer)


async def run(database_url: str, redis_url: str, *, rounds: int, n: int, max_seconds: float) -> str:
    deadline = time.monotonic() + max_seconds
    stores: dict[str, SessionStore] = {}
    closers: list[SessionStore] = []
    for variant in ("bare", "bare A/A", "metrics", "metrics+traces"):
        registry = CollectorRegistry()
        events = PrometheusEvents(Metrics.for_registry(registry), "hybrid") if "metrics" in variant else None
        kwargs = {"events": events} if events is not None else {}
        inner = await open_store("hybrid", database_url=database_url, redis_url=redis_url, **kwargs)
        closers.append(inner)
        bare = "metrics" not in variant
        stores[variant] = inner if bare else _instrumented(inner, "hybrid", registry, "traces" in variant)
    try:
        reads: dict[str, Op] = {}
        appends: dict[str, Op] = {}
        for variant, store in stores.items():
            read_sid, append_sid = str(uuid.uuid4()), str(uuid.uuid4())
            await store.add_messages(read_sid, [{"role": "user", "content": f"message {i} " * 8} for i in range(30)])
            await store.get_messages(read_sid, limit=20)  # populate: later reads are hits
            reads[variant] = _bind_read(store, read_sid)
            appends[variant] = _bind_append(store, append_sid)
        read = await measure(reads, rounds=rounds, n=n, deadline=deadline)
        append = await measure(appends, rounds=rounds, n=max(1, n // 2), deadline=deadline)
    finally:
        for inner in closers:
            await inner.close()

    memory_bare = await open_store("memory")
    memory_instr = InstrumentedStore(await open_store("memory"), backend="memory", registry=CollectorRegistry())
    sid_bare, sid_instr = str(uuid.uuid4()), str(uuid.uuid4())
    for s, sid in ((memory_bare, sid_bare), (memory_instr, sid_instr)):
        await s.add_messages(sid, [{"role": "user", "content": "x"} for _ in range(30)])
    wrapper = await measure(
        {"bare": _bind_read(memory_bare, sid_bare), "metrics": _bind_read(memory_instr, sid_instr)},
        rounds=rounds, n=n * 5, deadline=time.monotonic() + 30,
    )  # fmt: skip
    await memory_bare.close()
    await memory_instr.close()
    events = PrometheusEvents(Metrics.for_registry(CollectorRegistry()), "hybrid")
    start = time.perf_counter_ns()
    for _ in range(100_000):
        events.cache_result("hit")
    events_ns = (time.perf_counter_ns() - start) / 100_000
    return report(read, append, wrapper, events_ns, rounds=len(read.blocks["bare"]), n=n)


def _bind_read(store: SessionStore, sid: str) -> Op:
    async def op() -> object:
        return await store.get_messages(sid, limit=20)

    return op


def _bind_append(store: SessionStore, sid: str) -> Op:
    async def op() -> object:
        return await store.add_message(sid, "user", "one more message of ordinary length for the benchmark")

    return op


def report(read: Samples, append: Samples, wrapper: Samples, events_ns: float, *, rounds: int, n: int) -> str:
    lines = [
        f"instrumentation overhead, hybrid store, {rounds} rounds x {n} reads / {max(1, n // 2)} appends per variant",
        f"{'operation':<26}{'variant':<16}{'median µs/op':>13}{'overhead':>10}{'best µs/op':>12}{'overhead':>10}",
    ]
    for label, samples in (("read last 20 (cache hit)", read), ("append 1 message", append)):
        for variant in samples.blocks:
            paired = "" if variant == "bare" else f"{samples.overhead(variant) * 100:+9.1f}%"
            best = "" if variant == "bare" else f"{samples.overhead_of_minima(variant) * 100:+9.1f}%"
            lines.append(
                f"{label:<26}{variant:<16}{samples.median_us(variant):>13.1f}{paired:>10}"
                f"{samples.min_us(variant):>12.1f}{best:>10}"
            )
    cost = wrapper.median_us("metrics") - wrapper.median_us("bare")
    hit = read.median_us("bare")
    lines.append(
        f"wrapper alone (memory backend): {wrapper.median_us('bare'):.2f} -> {wrapper.median_us('metrics'):.2f} µs/op, "
        f"+{cost:.2f} µs = {cost / hit * 100:.1f}% of a bare hybrid hit ({hit:.1f} µs); "
        f"events sink {events_ns / 1000:.2f} µs per cache result"
    )
    noise = abs(read.overhead("bare A/A")) * 100
    lines.append(f"noise floor (two identical bare stores, A/A): {noise:.1f}% on reads")
    direct = (cost + events_ns / 1000) / hit * 100
    lines.append(
        f"budget: < 5% of a hybrid cache hit; direct cost (wrapper + events sink) {direct:.1f}% "
        f"({'ok' if direct < 5 else 'OVER'}); end to end {read.overhead('metrics') * 100:+.1f}% paired median "
        f"within a noise floor of {noise:.1f}% (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    return "\n".join(lines)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--servers",
        choices=MODES,
        default="auto",
        help="where PostgreSQL and Redis come from (default: auto: external when DATABASE_URL and REDIS_URL are set)",
    )
    parser.add_argument("--rounds", type=int, default=15, metavar="N", help="rounds of blocks (default: 15)")
    parser.add_argument(
        "--ops", type=int, default=400, metavar="N", help="reads per block; appends: half (default: 400)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        metavar="S",
        help="stop starting rounds after S seconds (default: 120)",
    )


def cmd_overhead(args: argparse.Namespace) -> int:
    for option, value in (("--rounds", args.rounds), ("--ops", args.ops)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, not {value}")
    if args.max_seconds <= 0:
        raise ValueError(f"--max-seconds must be positive, not {args.max_seconds:g}")
    with open_servers(args.servers) as servers:
        text = asyncio.run(
            run(servers.database_url, servers.redis_url, rounds=args.rounds, n=args.ops, max_seconds=args.max_seconds)
        )
    print(text)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "overhead",
        help="what the instrumentation wrapper costs on a hybrid cache hit and an append, measured in one run",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    p.set_defaults(func=cmd_overhead)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sessionbench.bench.harness.overhead``: the same as ``sessionbench overhead``."""
    from sessionbench.bench.cli import main as cli_main

    return cli_main(["overhead", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
