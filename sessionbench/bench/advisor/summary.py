"""The advisor's result as typed records that own their JSON round trip, and how it is computed.

:func:`summarise` turns a :class:`sessionbench.bench.advisor.curves.Pass` into a :class:`Summary`:
curves by TTL (sliding and fixed) and cache size, the recommendation, the knees, and
(:func:`add_maxmemory`) hit ratio by ``maxmemory`` per eviction policy.  A sampled pass
is scaled to the whole trace (memory, sessions and PostgreSQL reads by 1 / rate) and
every curve gets a 95% band: the jackknife over 16 session-hash buckets for the TTL
and size curves, the per-session (cluster) variance for the maxmemory curves.

Round trip: ``Summary.from_json(json.loads(json.dumps(s.to_json())))`` equals ``s``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sessionbench.bench.advisor import curves, lru
from sessionbench.bench.advisor.curves import NEED_CAP, Pass

F64 = npt.NDArray[np.float64]
T = TypeVar("T")


def _load(cls: type[T], data: Any) -> T:
    """A dataclass (nested dataclasses, lists and optionals of them) from its :func:`dataclasses.asdict`."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _value(hints[f.name], data[f.name])
    return cls(**kwargs)


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        (arg,) = typing.get_args(hint)
        return [_value(arg, v) for v in value]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _load(hint, value)
    return value


class Record:
    """JSON round trip for the dataclasses below."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
        return _load(cls, data)


@dataclass(frozen=True)
class RedisModel(Record):
    """Valkey ``used_memory`` of a cache entry: a hash, a list of ``n`` messages, and the server's own."""

    hash_bytes: float
    list_bytes: float
    """The list key without its messages."""
    per_message: float
    """Per cached message, its content excluded (the encoding, the list node)."""
    baseline_bytes: float
    """``used_memory`` of the server with the store connected and nothing cached: part of ``maxmemory``."""
    source: str

    @property
    def per_entry(self) -> float:
        return self.hash_bytes + self.list_bytes

    def costs(self) -> lru.KeyCosts:
        return lru.KeyCosts(self.hash_bytes, self.list_bytes, self.per_message)


@dataclass(frozen=True)
class TraceStats(Record):
    events: int
    reads: int
    appends: int
    sessions: int
    """Sessions in the trace (estimated from the sample when sampled)."""
    messages: int
    content_bytes: int
    duration_s: float
    mean_message_bytes: float
    cold_read_ratio: float
    """Reads that miss at every setting (no earlier populating read in their session)."""
    events_per_s: float
    reads_per_s: float


@dataclass(frozen=True)
class ModeCurves(Record):
    """Curves by TTL for one TTL mode; ``[j][k]`` is cache size ``sizes[j]``, TTL ``ttls[k]`` (None: ∞)."""

    ttls: list[float | None]
    hit_ratio: list[list[float]]
    hit_band: list[list[float]]
    """Half-width of the 95% band of ``hit_ratio`` (0 for an exact pass)."""
    bypass_ratio: list[list[float]]
    memory_mean_bytes: list[list[float]]
    memory_band: list[list[float]]
    memory_peak_bytes: list[list[float]]
    memory_end_bytes: list[list[float]]
    pg_reads_per_s: list[list[float]]
    mean_sessions: list[float]
    peak_sessions: list[float]


@dataclass(frozen=True)
class SizeCurve(Record):
    """Reads the window can answer (TTL ∞) by cache size, every size from 1."""

    sizes: list[int]
    answerable_ratio: list[float]
    band: list[float]
    need_histogram: dict[str, int]


@dataclass(frozen=True)
class Setting(Record):
    mode: str
    ttl_s: float | None
    size: int
    hit_ratio: float
    memory_mean_bytes: float
    peak_sessions: float
    pg_reads_per_s: float
    exact_min_ttl_s: float | None = None


@dataclass(frozen=True)
class Recommendation(Record):
    target: float
    """The hit ratio asked for (``--target``; by default 95% of the ceiling)."""
    target_given: bool
    ceiling: float
    """The best hit ratio any setting reaches: every read but the cold ones."""
    effective_target: float
    target_reachable: bool
    smallest_size: int | None
    sliding: Setting | None
    fixed: Setting | None


@dataclass(frozen=True)
class Knees(Record):
    sliding_ttl_s: float | None
    fixed_ttl_s: float | None
    size: int | None


@dataclass(frozen=True)
class MaxmemoryCurve(Record):
    """Hit ratio by ``maxmemory`` under one policy at the recommended TTL and size."""

    policy: str
    ttl_s: float | None
    size: int
    sliding: bool
    keys_bytes: list[float]
    """Budgets for the cache's keys (``maxmemory`` minus the baseline)."""
    maxmemory_bytes: list[float]
    hit_ratio: list[float]
    band: list[float]
    error_ratio: list[float]
    """Reads answered around the cache (OOM refusals, the breaker open)."""
    evictions_per_s: list[float]
    footprint_bytes: float
    """Peak bytes of keys with no limit: from there on nothing is evicted."""
    unbounded_hit_ratio: float
    sample_rate: float
    events: int
    """Events simulated (of the sampled sessions)."""


@dataclass(frozen=True)
class ValidationPoint(Record):
    """One replay on real Valkey beside the advisor's prediction for it."""

    curve: str
    label: str
    ttl_s: float | None
    replay_ttl_s: float
    size: int
    sliding: bool
    policy: str | None
    budget_bytes: float | None
    maxmemory_bytes: float | None
    compression: float
    events: int
    reads: int
    predicted_hit_ratio: float
    as_replayed_hit_ratio: float
    measured_hit_ratio: float
    predicted_memory_bytes: float
    as_replayed_memory_bytes: float
    measured_memory_bytes: float
    cache: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    lag_p99_ms: float = 0.0
    invalid: list[str] = field(default_factory=list)

    @property
    def hit_error(self) -> float:
        """Measured minus predicted-as-replayed hit ratio."""
        return self.measured_hit_ratio - self.as_replayed_hit_ratio

    @property
    def memory_error(self) -> float:
        """(Measured - predicted-as-replayed) mean memory, relative to the prediction, or to the
        budget at a maxmemory point (where the keys fill the budget, whatever their number)."""
        scale = self.budget_bytes if self.budget_bytes is not None else self.as_replayed_memory_bytes
        return (self.measured_memory_bytes - self.as_replayed_memory_bytes) / max(scale, 1.0)

    def within(self, hit: float = 0.03, memory: float = 0.10) -> bool:
        return abs(self.hit_error) <= hit and abs(self.memory_error) <= memory


@dataclass(frozen=True)
class Summary(Record):
    source: str
    trace: TraceStats
    redis_model: RedisModel
    sample_rate: float
    sizes: list[int]
    size_for_ttl_curves: int
    sliding: ModeCurves
    fixed: ModeCurves
    by_size: SizeCurve
    recommendation: Recommendation
    knees: Knees
    maxmemory: list[MaxmemoryCurve] = field(default_factory=list)
    validation: list[ValidationPoint] = field(default_factory=list)
    performance: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- computing it


def knee(x: Sequence[float], y: Sequence[float], *, log_x: bool = True) -> int | None:
    """Index of the knee of an increasing, concave-ish curve (Kneedle: farthest above the chord)."""
    xs = np.log(np.asarray(x, float)) if log_x else np.asarray(x, float)
    ys = np.asarray(y, float)
    if xs.size < 3 or ys[-1] - ys[0] <= 0 or xs[-1] - xs[0] <= 0:
        return None
    d = (ys - ys[0]) / (ys[-1] - ys[0]) - (xs - xs[0]) / (xs[-1] - xs[0])
    i = int(np.argmax(d))
    return i if d[i] > 0 else None


def _ttl_json(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _jackknife(full: F64, parts: list[F64], ratio: bool, full_den: F64 | None = None,
               dens: list[F64] | None = None, rate: float = 1.0) -> F64:  # fmt: skip
    """Half-width of a 95% band from delete-one-bucket estimates (0 when there are no buckets)."""
    if len(parts) < 2:
        return np.zeros_like(full, dtype=float)
    b = len(parts)
    if ratio:
        assert full_den is not None
        assert dens is not None
        est = [(full - p) / np.maximum(full_den - d, 1e-12) for p, d in zip(parts, dens, strict=True)]
    else:
        est = [(full - p) * b / (b - 1) for p in parts]
    stack = np.stack(est)
    var = (b - 1) / b * ((stack - stack.mean(axis=0)) ** 2).sum(axis=0)
    out: F64 = 1.96 * np.sqrt(var * (1 - rate))
    return out


def _cost(model: RedisModel, table: F64, size: int) -> F64:
    e, m, b = curves.memory_components(table, size)
    out: F64 = model.per_entry * e + model.per_message * m + b
    return out


def _mode(p: Pass, mode: str, model: RedisModel, sizes: Sequence[int]) -> ModeCurves:
    a = p.analysis
    sliding = mode == "sliding"
    grid = a.ttls if sliding else a.fixed_ttls
    hits: F64 = (a.sliding_hits if sliding else a.fixed_hits).astype(float)
    mem = a.mem_sliding if sliding else a.mem_fixed
    end = a.end_sliding if sliding else a.end_fixed
    peak = (a.peak_sliding if sliding else a.peak_fixed).astype(float)
    scale = 1.0 / p.rate
    reads = max(a.reads, 1)
    bh = [(b.sliding_hits if sliding else b.fixed_hits).astype(float) for b in p.buckets]
    br = [np.full(hits.shape[0], float(b.reads)) for b in p.buckets]
    present = hits[:, NEED_CAP]
    out: dict[str, list[list[float]]] = {k: [] for k in ("hit_ratio", "hit_band", "bypass_ratio", "memory_mean_bytes",
                                                        "memory_band", "memory_peak_bytes", "memory_end_bytes",
                                                        "pg_reads_per_s")}  # fmt: skip
    for s in sizes:
        c = min(s, NEED_CAP)
        h = hits[:, c]
        mean_bytes = _cost(model, mem, s)
        e = curves.memory_components(mem, s)[0]
        per_entry = np.where(e > 0, mean_bytes / np.maximum(e, 1e-12), 0.0)
        out["hit_ratio"].append((h / reads).tolist())
        out["hit_band"].append(_jackknife(h, [x[:, c] for x in bh], True, np.full(h.shape, float(a.reads)), br,
                                          p.rate).tolist())  # fmt: skip
        out["bypass_ratio"].append(((present - h) / reads).tolist())
        out["memory_mean_bytes"].append((mean_bytes * scale).tolist())
        parts = [_cost(model, b.mem_sliding if sliding else b.mem_fixed, s) * scale for b in p.buckets]
        out["memory_band"].append(_jackknife(mean_bytes * scale, parts, False, rate=p.rate).tolist())
        out["memory_peak_bytes"].append((per_entry * peak * scale).tolist())
        out["memory_end_bytes"].append((_cost(model, end, s) * scale).tolist())
        out["pg_reads_per_s"].append(((a.reads - h) * scale / a.duration).tolist())
    e0 = curves.memory_components(mem, 1)[0]
    return ModeCurves(ttls=[_ttl_json(x) for x in grid], mean_sessions=(e0 * scale).tolist(),
                      peak_sessions=(peak * scale).tolist(), **out)  # fmt: skip


def _setting(p: Pass, mode: str, model: RedisModel, k: int, size: int) -> Setting:
    a = p.analysis
    sliding = mode == "sliding"
    hits = (a.sliding_hits if sliding else a.fixed_hits)[k, min(size, NEED_CAP)]
    grid = a.ttls if sliding else a.fixed_ttls
    return Setting(
        mode=mode, ttl_s=_ttl_json(grid[k]), size=size, hit_ratio=float(hits / max(a.reads, 1)),
        memory_mean_bytes=float(_cost(model, a.mem_sliding if sliding else a.mem_fixed, size)[k] / p.rate),
        peak_sessions=float((a.peak_sliding if sliding else a.peak_fixed)[k] / p.rate),
        pg_reads_per_s=float((a.reads - hits) / p.rate / a.duration),
    )  # fmt: skip


def summarise(
    p: Pass, model: RedisModel, *, target: float | None = None, sizes: Sequence[int] = curves.DEFAULT_SIZES,
    cache_size: int | None = None, source: str = "",
) -> Summary:  # fmt: skip
    """Curves, recommendation and knees (no maxmemory curves: :func:`add_maxmemory`).

    ``target`` is the hit ratio to reach, in (0, 1]; None aims at 95% of the ceiling
    (the reads that are not cold).  When a given target is above the ceiling the
    recommendation aims at ``target x ceiling`` instead and says so.
    """
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    a = p.analysis
    reads = max(a.reads, 1)
    inf_row = a.sliding_hits[-1]
    ceiling = float(inf_row[NEED_CAP] / reads)
    goal = 0.95 * ceiling if target is None else target
    effective = goal if goal <= ceiling else goal * ceiling
    need_hits = math.ceil(effective * a.reads - 1e-9)
    reach = np.flatnonzero(inf_row >= need_hits)
    min_size = max(1, int(reach[0])) if reach.size and a.reads else None
    max_need = int(np.flatnonzero(a.need_counts)[-1]) if a.need_counts.any() else 1
    recs: dict[str, Setting | None] = {"sliding": None, "fixed": None}
    if min_size is not None:
        modes = (("sliding", a.sliding_hits, a.mem_sliding), ("fixed", a.fixed_hits, a.mem_fixed))
        candidates = sorted({min_size, *[x for x in sizes if x > min_size], 2 * min_size})
        for mode, hits, mem in modes:
            best: tuple[float, int, int] | None = None
            for s in candidates:
                cost = _cost(model, mem, s)
                for k in np.flatnonzero(hits[:, min(s, NEED_CAP)] >= need_hits):
                    cand = (float(cost[k]), int(k), s)
                    if best is None or cand < best:
                        best = cand
            if best is not None:
                setting = _setting(p, mode, model, best[1], best[2])
                if mode == "sliding":
                    setting = dataclasses.replace(
                        setting, exact_min_ttl_s=curves.min_sliding_ttl(a, best[2], effective)
                    )
                recs[mode] = setting
    chosen = recs["sliding"] or recs["fixed"]
    size_for_ttl = cache_size or (chosen.size if chosen else None) or min_size or max(sizes)
    shown = sorted({int(s) for s in sizes if s >= 1} | {size_for_ttl} | ({min_size} if min_size else set()))
    by_size = list(range(1, min(max(max_need, max(shown)), NEED_CAP) + 1))
    dens = [np.full(inf_row.shape, float(b.reads)) for b in p.buckets]
    parts = [b.sliding_hits[-1].astype(float) for b in p.buckets]
    bands = _jackknife(inf_row.astype(float), parts, True, np.full(inf_row.shape, float(a.reads)), dens, p.rate)
    knees: dict[str, float | None] = {}
    for mode, grid, hits in (("sliding", a.ttls, a.sliding_hits), ("fixed", a.fixed_ttls, a.fixed_hits)):
        fin = [i for i, x in enumerate(grid) if math.isfinite(x)]
        kk = knee([grid[i] for i in fin], [float(hits[i, min(size_for_ttl, NEED_CAP)]) for i in fin])
        knees[mode] = None if kk is None else float(grid[fin[kk]])
    ks = knee(by_size, [float(inf_row[s]) for s in by_size])
    scale = 1.0 / p.rate
    return Summary(
        source=source,
        trace=TraceStats(
            events=p.events, reads=p.reads, appends=p.events - p.reads, sessions=round(a.sessions * scale),
            messages=round(a.messages * scale), content_bytes=round(a.content_bytes * scale),
            duration_s=a.duration, mean_message_bytes=a.content_bytes / max(a.messages, 1),
            cold_read_ratio=a.cold_reads / reads, events_per_s=p.events / a.duration, reads_per_s=p.reads / a.duration,
        ),
        redis_model=model,
        sample_rate=p.rate,
        sizes=shown,
        size_for_ttl_curves=size_for_ttl,
        sliding=_mode(p, "sliding", model, shown),
        fixed=_mode(p, "fixed", model, shown),
        by_size=SizeCurve(
            sizes=by_size, answerable_ratio=(inf_row[by_size] / reads).tolist(), band=bands[by_size].tolist(),
            need_histogram={str(i): int(c) for i, c in enumerate(a.need_counts) if c},
        ),
        recommendation=Recommendation(
            target=goal, target_given=target is not None, ceiling=ceiling, effective_target=effective,
            target_reachable=goal <= ceiling, smallest_size=min_size, sliding=recs["sliding"], fixed=recs["fixed"],
        ),
        knees=Knees(knees["sliding"], knees["fixed"], None if ks is None else by_size[ks]),
    )  # fmt: skip


def add_maxmemory(summary: Summary, p: Pass, *, policies: Sequence[str] = lru.POLICIES, points: int = 7) -> Summary:
    """The summary with hit ratio by ``maxmemory`` per policy at the recommended sliding (else fixed) setting.

    Simulated on the pass's nested session sample with budgets scaled by its rate (SHARDS).
    """
    rec = summary.recommendation.sliding or summary.recommendation.fixed
    if rec is None or not p.lru_sample.events:
        return summary
    ttl = math.inf if rec.ttl_s is None else rec.ttl_s
    sliding = rec.mode == "sliding"
    ev = lru.prepare(p.lru_sample, p.span)
    costs = summary.redis_model.costs()
    rate = p.lru_rate
    free = lru.simulate(ev, ttl=ttl, sliding=sliding, size=rec.size, budget=math.inf, policy="volatile-lru",
                        costs=costs)  # fmt: skip
    budgets = lru.budgets_for(free.peak_bytes, points)
    duration = max(summary.trace.duration_s, 1e-9)
    out: list[MaxmemoryCurve] = []
    # The band of a sampled curve: the larger of the per-session (cluster) variance and the spread
    # of 4 disjoint quarter samples (each simulated at a quarter of the budget), scaled to the sample.
    quarters = [lru.prepare(p.lru_sample.select((p.lru_sample.session & np.uint64(3)) == q), p.span) for q in range(4)]
    for policy in policies:
        runs = lru.curve(ev, budgets, policy=policy, ttl=ttl, sliding=sliding, size=rec.size, costs=costs).results
        keys = [b / rate for b in budgets]
        bands = [r.band(rate) for r in runs]
        if rate < 1:
            for i, b in enumerate(budgets):
                hs = [lru.simulate(qev, ttl=ttl, sliding=sliding, size=rec.size, budget=b / 4, policy=policy,
                                   costs=costs).hit_ratio for qev in quarters if qev.events]  # fmt: skip
                if len(hs) > 1:
                    bands[i] = max(bands[i], 1.96 * float(np.std(hs, ddof=1)) / math.sqrt(len(hs)))
        out.append(
            MaxmemoryCurve(
                policy=policy,
                ttl_s=rec.ttl_s,
                size=rec.size,
                sliding=sliding,
                keys_bytes=keys,
                maxmemory_bytes=[k + summary.redis_model.baseline_bytes for k in keys],
                hit_ratio=[r.hit_ratio for r in runs],
                band=bands,
                error_ratio=[r.errors / max(r.reads, 1) for r in runs],
                evictions_per_s=[r.evicted_keys / rate / duration for r in runs],
                footprint_bytes=free.peak_bytes / rate,
                unbounded_hit_ratio=free.hit_ratio,
                sample_rate=rate,
                events=ev.events,
            )
        )
    return dataclasses.replace(summary, maxmemory=out)
