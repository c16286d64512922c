"""Pass/fail thresholds for a Locust run, evaluated on a plain statistics snapshot.

No Locust import here: the locustfile turns Locust's statistics into a
:class:`Snapshot` (see ``snapshot_from_stats`` in ``locustfile.py``) and this module
decides.  Thresholds come from command-line options or a small TOML / JSON file::

    # thresholds.toml
    max_fail_ratio = 0.0        # failed requests / all requests
    min_rps = 20                # requests per second over the whole run
    min_hit_ratio = 0.5         # X-Cache hit / (hit + miss + bypass)
    [p95_ms]
    "messages.read" = 250       # one request group
    "*" = 1000                  # every request group that ran
    [p99_ms]
    Aggregated = 2000           # all requests together

Percentile keys are ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``, ``p999_ms`` and
``max_ms``.  A group named explicitly that saw no request fails (it catches typos
and tasks that never ran).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .groups import hit_ratio

#: percentile key -> quantile (``max`` is the largest response time seen).
PERCENTILES: dict[str, float] = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999, "max": 1.0}
SCALARS = ("max_fail_ratio", "min_rps", "min_hit_ratio")
EVERY_GROUP = "*"
AGGREGATED = "Aggregated"


class ThresholdError(ValueError):
    """A threshold option or file could not be read (the message says where)."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """One limit: ``kind`` is a percentile key (``p95``) or one of :data:`SCALARS`."""

    kind: str
    limit: float
    group: str | None = None  # percentile thresholds only

    def describe(self) -> str:
        if self.kind in PERCENTILES:
            return f"{self.kind} {self.group} <= {self.limit:g} ms"
        op = "<=" if self.kind.startswith("max_") else ">="
        return f"{self.kind} {op} {self.limit:g}"


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Client-side figures of one request group (or of all requests: ``Aggregated``)."""

    count: int
    failures: int
    rps: float
    percentiles_ms: Mapping[str, float]  # keys of PERCENTILES


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What thresholds are checked against; also the JSON summary of a run."""

    groups: Mapping[str, GroupStats]
    total: GroupStats
    cache: Mapping[str, int] = field(default_factory=dict)  # X-Cache value -> reads

    @property
    def fail_ratio(self) -> float:
        return self.total.failures / self.total.count if self.total.count else 0.0

    @property
    def hit_ratio(self) -> float | None:
        """hit / (hit + miss + bypass); ``None`` when no read carried an ``X-Cache`` header."""
        return hit_ratio(self.cache)

    def to_json(self) -> dict[str, Any]:
        def group(g: GroupStats) -> dict[str, Any]:
            return {"count": g.count, "failures": g.failures, "rps": g.rps, "percentiles_ms": dict(g.percentiles_ms)}

        return {
            "groups": {name: group(g) for name, g in self.groups.items()},
            "total": group(self.total),
            "cache": dict(self.cache),
            "hit_ratio": self.hit_ratio,
            "fail_ratio": self.fail_ratio,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    threshold: Threshold
    ok: bool
    line: str


# --------------------------------------------------------------------------- parsing


def parse_percentile_option(kind: str, text: str) -> list[Threshold]:
    """``--p95 "messages.read=250,*=1000"``; a bare number means every group (``*``)."""
    result: list[Threshold] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        group, sep, value = item.rpartition("=")
        if not sep:
            group, value = EVERY_GROUP, item
        result.append(Threshold(kind, _number(f"--{kind}", value), group.strip()))
    return result


def from_mapping(data: Mapping[str, Any], *, source: str) -> list[Threshold]:
    """Thresholds from a parsed TOML / JSON document (see the module docstring)."""
    result: list[Threshold] = []
    for key, value in data.items():
        if key in SCALARS:
            result.append(Threshold(key, _number(f"{source}: {key}", value)))
        elif key.endswith("_ms") and key[: -len("_ms")] in PERCENTILES:
            if not isinstance(value, Mapping):
                raise ThresholdError(f"{source}: {key} must be a table of group = milliseconds")
            kind = key[: -len("_ms")]
            result.extend(Threshold(kind, _number(f"{source}: {key}.{g}", v), str(g)) for g, v in value.items())
        else:
            known = ", ".join([*SCALARS, *(f"{k}_ms" for k in PERCENTILES)])
            raise ThresholdError(f"{source}: unknown threshold {key!r} (known: {known})")
    return result


def load_file(path: str | Path) -> list[Threshold]:
    """Read ``.toml`` or ``.json`` thresholds."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ThresholdError(f"{p}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ThresholdError(f"{p}: expected a table of thresholds")
    return from_mapping(data, source=str(p))


def _number(where: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ThresholdError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ThresholdError(f"{where}: {value!r} must be a finite number >= 0")
    return number


# --------------------------------------------------------------------------- evaluation


def evaluate(thresholds: Iterable[Threshold], snap: Snapshot) -> list[Outcome]:
    """Check every threshold; one :class:`Outcome` per checked figure, in order."""
    outcomes: list[Outcome] = []
    for t in thresholds:
        if t.kind in PERCENTILES:
            outcomes.extend(_percentile(t, snap))
        elif t.kind == "max_fail_ratio":
            v = snap.fail_ratio
            ok = v <= t.limit
            outcomes.append(Outcome(t, ok, f"failure ratio {v:.4f} {'<=' if ok else '>'} {t.limit:g}"))
        elif t.kind == "min_rps":
            v = snap.total.rps
            ok = v >= t.limit
            outcomes.append(Outcome(t, ok, f"request rate {v:.1f} req/s {'>=' if ok else '<'} {t.limit:g} req/s"))
        elif t.kind == "min_hit_ratio":
            ratio = snap.hit_ratio
            if ratio is None:
                outcomes.append(
                    Outcome(t, False, f"hit ratio: no read carried an X-Cache header (need >= {t.limit:g})")
                )
            else:
                ok = ratio >= t.limit
                outcomes.append(Outcome(t, ok, f"X-Cache hit ratio {ratio:.3f} {'>=' if ok else '<'} {t.limit:g}"))
        else:  # constructed by hand with a typo
            outcomes.append(Outcome(t, False, f"unknown threshold kind {t.kind!r}"))
    return outcomes


def _percentile(t: Threshold, snap: Snapshot) -> list[Outcome]:
    if t.group == EVERY_GROUP:
        targets = [(name, g) for name, g in sorted(snap.groups.items()) if g.count]
        if not targets:
            return [Outcome(t, False, f"{t.kind} of every group: no requests were made")]
    elif t.group == AGGREGATED:
        targets = [(AGGREGATED, snap.total)]
    else:
        group = snap.groups.get(t.group or "")
        if group is None or not group.count:
            known = ", ".join(sorted(snap.groups)) or "none"
            return [Outcome(t, False, f"{t.kind} {t.group}: no requests in this group (groups seen: {known})")]
        targets = [(t.group or "", group)]
    outcomes = []
    for name, g in targets:
        v = g.percentiles_ms.get(t.kind)
        if v is None:
            outcomes.append(Outcome(t, False, f"{t.kind} {name}: not measured"))
            continue
        ok = v <= t.limit
        outcomes.append(Outcome(t, ok, f"{t.kind} {name} {v:g} ms {'<=' if ok else '>'} {t.limit:g} ms"))
    return outcomes
