"""The registry of metrics: every figure of a run record, defined once.

A :class:`Metric` names a figure, says how to get it from a
:class:`~sessionbench.bench.harness.results.RunRecord`, its unit and which direction is better.
The text table and the HTML report (:mod:`sessionbench.bench.harness.report`) print the metrics
of :data:`REGISTRY` in order, and the regression gate (:mod:`sessionbench.bench.harness.regress`)
reads those marked ``gate`` from a ``compare`` result, so a figure changes in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from sessionbench.bench.harness.results import PERCENTILES, RunRecord

__all__ = ["REGISTRY", "Metric", "by_name", "fmt_value", "table_metrics"]

Better = Literal["lower", "higher"] | None
KINDS = frozenset({"workload", "turns"})
WORKLOAD = frozenset({"workload"})
TURNS = frozenset({"turns"})
MiB = 1024 * 1024


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


#: How a value of each unit is printed.
FORMATS: dict[str, Callable[[float], str]] = {
    "ms": _num,
    "ops/s": _num,
    "turns/s": _num,
    "per turn": _num,
    "cores": _num,
    "µs": _num,
    "queries/s": _num,
    "fraction": lambda x: f"{100 * x:.1f}%",
    "bytes": lambda x: f"{x / MiB:.2f} MiB",
    "count": lambda x: f"{x:.0f}",
    "×": lambda x: f"{x:.2f}×",
}


def fmt_value(unit: str, value: float) -> str:
    return FORMATS[unit](value)


@dataclass(frozen=True, slots=True)
class Metric:
    """One figure of a run record."""

    name: str
    """Stable identifier (``read.hit.p50``, ``turns_per_s``, ``overhead.append``)."""
    label: str
    """The table's row label."""
    unit: str
    """A key of :data:`FORMATS`."""
    better: Better
    """Which direction is better (None: descriptive, such as the generator's CPU)."""
    value: Callable[[RunRecord], float | None]
    kinds: frozenset[str] = KINDS
    """Result kinds the metric belongs to (``workload``, ``turns``)."""
    modes: frozenset[str] | None = None
    """Load models it applies to (``open``, ``closed``, ``turns``); None: every one."""
    ratio: bool = True
    """Print ``(0.50×)`` against the reference column."""
    gate: str | None = None
    """The scenario suffix under which the regression gate checks it (None: not gated)."""
    samples: Callable[[RunRecord], list[float]] | None = None
    """Repeated measurements of the same figure within a run (per-interval values), for the gate."""

    def fmt(self, value: float) -> str:
        return fmt_value(self.unit, value)

    def applies(self, kind: str, mode: str) -> bool:
        return kind in self.kinds and (self.modes is None or mode in self.modes)


def _latency(op: str, point: str, kinds: frozenset[str]) -> Metric:
    gated = point == "p50" and op in ("append", "read", "read.hit", "turn")
    return Metric(
        name=f"{op}.{point}",
        label=f"{op} {point} (ms)",
        unit="ms",
        better="lower",
        value=lambda r: r.latency_ms(op, point),
        kinds=kinds,
        gate=op if gated else None,
        samples=(lambda r: r.interval_p50_ms(op)) if gated else None,
    )


def _latencies() -> Iterator[Metric]:
    """Latency rows: the workload table's ops by every percentile (its turn, the sum of a turn's
    store calls, by p50 and p99), the turn table's by p50 and p99."""
    every = (*(f"p{p:g}" for p in PERCENTILES), "max")
    points: dict[str, dict[str, tuple[str, ...]]] = {
        "workload": {"append": every, "read": every, "read.hit": every, "read.miss": every, "turn": ("p50", "p99")},
        "turns": {
            op: ("p50", "p99") for op in ("turn", "append", "read", "read.hit", "append_read", "append_read.hit")
        },
    }
    for op in ("turn", "append", "read", "read.hit", "read.miss", "append_read", "append_read.hit"):
        for point in every:
            kinds = frozenset(k for k in KINDS if point in points[k].get(op, ()))
            if kinds:
                yield _latency(op, point, kinds)


def _predicted(op: str) -> Callable[[RunRecord], float | None]:
    def value(r: RunRecord) -> float | None:
        p = r.projections.get(op)
        return p.predicted_ms if p is not None else None

    return value


def _measured_over_predicted(op: str) -> Callable[[RunRecord], float | None]:
    def value(r: RunRecord) -> float | None:
        p, measured = r.projections.get(op), r.latency_ms(op, "p50")
        return measured / p.predicted_ms if p is not None and measured is not None and p.predicted_ms else None

    return value


def _projections() -> Iterator[Metric]:
    """Beside each measured p50 across a network: the local p50 projected onto it, and measured ÷ that."""
    for op in ("turn", "append", "read"):
        kinds = TURNS | WORKLOAD
        yield Metric(f"{op}.p50.predicted", f"{op} p50 predicted (ms)", "ms", "lower", _predicted(op), kinds=kinds)
        yield Metric(
            f"{op}.p50.vs_predicted",
            f"{op} p50 measured ÷ predicted",
            "×",
            None,
            _measured_over_predicted(op),
            kinds=kinds,
            ratio=False,
        )


def _rtt(get: Callable[[RunRecord], float]) -> Callable[[RunRecord], float | None]:
    def value(r: RunRecord) -> float | None:
        return None if r.network.local else get(r)

    return value


def _relay_late_p99(r: RunRecord) -> float | None:
    values = [v for f in r.relays.values() if (v := f.late_percentile_us(99)) is not None]
    return max(values) if values else None


def _overhead(op: str) -> Callable[[RunRecord], float | None]:
    def value(r: RunRecord) -> float | None:
        o = r.overhead.get(op) or (r.overhead.get("read.hit") if op == "read" else None)
        return o.ratio if o is not None else None

    return value


def _server(get: Callable[[RunRecord], float | int | None]) -> Callable[[RunRecord], float | None]:
    def value(r: RunRecord) -> float | None:
        v = get(r)
        return None if v is None else float(v)

    return value


#: Every metric, in table order.
REGISTRY: tuple[Metric, ...] = (
    Metric("turns_per_s", "turns/s", "turns/s", "higher", lambda r: r.turns_per_s, kinds=TURNS),
    Metric(
        "completed_ops_per_s",
        "completed (ops/s)",
        "ops/s",
        "higher",
        lambda r: r.ops_per_s,
        kinds=WORKLOAD,
        modes=frozenset({"open"}),
        ratio=False,
    ),
    Metric(
        "completed_of_offered",
        "completed / offered",
        "fraction",
        "higher",
        lambda r: r.operations / r.offered_operations if r.offered_operations else None,
        kinds=WORKLOAD,
        modes=frozenset({"open"}),
        ratio=False,
    ),
    Metric("throughput", "throughput (ops/s)", "ops/s", "higher", lambda r: r.ops_per_s, modes=frozenset({"closed"})),
    *_latencies(),
    *_projections(),
    Metric("overhead.append", "append p50 ÷ its floor", "×", "lower", _overhead("append"), ratio=False),
    Metric("overhead.read", "read p50 ÷ its floor", "×", "lower", _overhead("read"), ratio=False),
    Metric("overhead.turn", "turn p50 ÷ its floor", "×", "lower", _overhead("turn"), kinds=TURNS, ratio=False),
    Metric("hit_ratio", "cache hit ratio", "fraction", "higher", lambda r: r.hit_ratio),
    Metric("pg_round_trips", "PG round trips/turn", "per turn", "lower", lambda r: r.servers.pg_round_trips_per_turn),
    Metric(
        "redis_round_trips",
        "Redis round trips/turn",
        "per turn",
        "lower",
        lambda r: r.servers.redis_round_trips_per_turn,
    ),
    Metric("pg_queries_per_s", "PG queries/s", "queries/s", "lower", lambda r: r.pg_queries_per_s),
    Metric("pg_rtt", "PG RTT added (ms)", "ms", None, _rtt(lambda r: r.network.pg_rtt_ms), ratio=False),
    Metric("redis_rtt", "Redis RTT added (ms)", "ms", None, _rtt(lambda r: r.network.redis_rtt_ms), ratio=False),
    Metric(
        "relay_cpu_per_request",
        "relay CPU/request (µs)",
        "µs",
        "lower",
        lambda r: r.relay_cpu_per_request_us,
        ratio=False,
    ),
    Metric(
        "relay_cpu",
        "relay CPU (cores)",
        "cores",
        None,
        lambda r: sum(f.cpu_cores for f in r.relays.values()) if r.relays else None,
        ratio=False,
    ),
    Metric("relay_late_p99", "relay late p99 (µs)", "µs", "lower", _relay_late_p99, ratio=False),
    Metric("redis_key_bytes", "Redis memory (keys)", "bytes", "lower", _server(lambda r: r.servers.redis_key_bytes)),
    Metric("pg_size", "PostgreSQL size", "bytes", "lower", _server(lambda r: r.servers.pg_size_bytes)),
    Metric("errors", "errors", "count", "lower", lambda r: float(r.error_count), ratio=False),
    Metric("generator_cpu", "generator CPU (cores)", "cores", None, lambda r: r.generator.cpu_cores, ratio=False),
    Metric(
        "schedule_lag_p99",
        "schedule lag p99 (ms)",
        "ms",
        "lower",
        lambda r: r.generator.lag_p99_ms,
        kinds=WORKLOAD,
        modes=frozenset({"open"}),
        ratio=False,
    ),
)

_BY_NAME = {m.name: m for m in REGISTRY}


def by_name(name: str) -> Metric:
    return _BY_NAME[name]


def table_metrics(kind: str, records: Sequence[RunRecord]) -> list[tuple[Metric, list[float | None]]]:
    """The metrics of a table of ``records`` with their values, skipping rows no column has."""
    mode = records[0].mode if records else "open"
    out: list[tuple[Metric, list[float | None]]] = []
    for metric in REGISTRY:
        if not metric.applies(kind, mode):
            continue
        values = [metric.value(r) for r in records]
        if any(v is not None for v in values):
            out.append((metric, values))
    return out
