"""Where the servers are: round-trip times, named topologies, and projecting a run onto them.

A :class:`Network` says what a configuration of ``sessionbench compare`` runs through:
the round-trip time added to every PostgreSQL and every Redis round trip (by a
:mod:`sessionbench.bench.harness.relay` in front of each server), the jitter of those delays, and
whether PostgreSQL is reached through PgBouncer.  It is built from the command line
(``--pg-rtt 2ms --redis-rtt 0.3ms --jitter 10% --pooler pgbouncer``), from a named
topology (:data:`TOPOLOGIES`, ``--topology serverless-pooled``) and from a
configuration's own options (``postgres@pg_rtt=2ms``, ``hybrid@pg_rtt=2ms,redis_rtt=0.3ms``).

:func:`project` is the arithmetic the report prints beside every measurement::

    predicted p50 = local p50 + PG round trips × PG RTT + Redis round trips × Redis RTT

where "local" is the same configuration measured with nothing added (loopback) and the
round trips are those the operations around the median made, counted client-side
(:class:`sessionbench.bench.harness.results.RoundTrips`): the round trips most operations of that kind
made when that is more than half of them, their mean otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "NETWORK_KEYS",
    "POOLERS",
    "TOPOLOGIES",
    "Network",
    "Projection",
    "Topology",
    "parse_fraction",
    "parse_ms",
    "project",
    "typical_trips",
]

POOLERS: tuple[str, ...] = ("none", "pgbouncer")
#: Option names a configuration may carry after ``@`` (``rtt`` sets both round-trip times).
NETWORK_KEYS: tuple[str, ...] = ("pg_rtt", "redis_rtt", "rtt", "jitter", "pooler")

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s)?\s*$")
_UNITS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3, None: 1.0}


def parse_ms(text: str, *, what: str = "a round-trip time") -> float:
    """``"2ms"``, ``"300us"``, ``"0.3"`` (milliseconds), ``"0.002s"`` → milliseconds (0 to 10 s)."""
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"{what} {text!r}: give a duration such as 2ms, 0.3ms or 300us")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value > 10_000:
        raise ValueError(f"{what} {text!r}: at most 10 s")
    return value


def parse_fraction(text: str, *, what: str = "jitter") -> float:
    """``"10%"`` or ``"0.1"`` → 0.1 (0 to 100%)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{what} {text!r}: give a fraction such as 10% or 0.1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} {text!r}: between 0% and 100%")
    return value


def _fmt_ms(ms: float) -> str:
    return f"{ms:g} ms" if ms >= 0.1 or ms == 0 else f"{ms * 1000:g} µs"


@dataclass(frozen=True, slots=True)
class Network:
    """What one configuration runs through: added round-trip times, their jitter, a pooler."""

    pg_rtt_ms: float = 0.0
    redis_rtt_ms: float = 0.0
    jitter: float = 0.0
    """Each delay is drawn uniformly from ``rtt/2 × [1 - jitter, 1 + jitter]``."""
    pooler: str = "none"
    """``pgbouncer``: PostgreSQL is reached through PgBouncer in transaction mode."""

    def __post_init__(self) -> None:
        if self.pg_rtt_ms < 0 or self.redis_rtt_ms < 0:
            raise ValueError("round-trip times cannot be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter {self.jitter} is outside 0..1")
        if self.pooler not in POOLERS:
            raise ValueError(f"unknown pooler {self.pooler!r}; choose one of {', '.join(POOLERS)}")

    @property
    def local(self) -> bool:
        """Nothing added: both servers on loopback as they are (a pooler may still be in between)."""
        return self.pg_rtt_ms == 0 and self.redis_rtt_ms == 0

    def zeroed(self) -> Network:
        """The same network with nothing added: the local run a projection starts from."""
        return replace(self, pg_rtt_ms=0.0, redis_rtt_ms=0.0, jitter=0.0)

    def with_options(self, options: Mapping[str, str]) -> Network:
        """A copy with ``pg_rtt``, ``redis_rtt``, ``rtt`` (both), ``jitter``, ``pooler`` applied."""
        out = self
        for key, value in options.items():
            if key == "rtt":
                ms = parse_ms(value, what=f"rtt={value}")
                out = replace(out, pg_rtt_ms=ms, redis_rtt_ms=ms)
            elif key == "pg_rtt":
                out = replace(out, pg_rtt_ms=parse_ms(value, what=f"pg_rtt={value}"))
            elif key == "redis_rtt":
                out = replace(out, redis_rtt_ms=parse_ms(value, what=f"redis_rtt={value}"))
            elif key == "jitter":
                out = replace(out, jitter=parse_fraction(value, what=f"jitter={value}"))
            elif key == "pooler":
                out = replace(out, pooler=value)
            else:
                raise ValueError(f"unknown network option {key!r}; use {', '.join(NETWORK_KEYS)}")
        return out

    def label(self) -> str:
        """``PG RTT 2 ms · Redis RTT 0.3 ms · jitter 10% · via PgBouncer``, or ``loopback``."""
        parts = []
        if not self.local:
            parts += [f"PG RTT {_fmt_ms(self.pg_rtt_ms)}", f"Redis RTT {_fmt_ms(self.redis_rtt_ms)}"]
            if self.jitter:
                parts.append(f"jitter {self.jitter:.0%}")
        else:
            parts.append("loopback")
        if self.pooler == "pgbouncer":
            parts.append("via PgBouncer")
        return " · ".join(parts)

    def options(self) -> str:
        """The ``@`` options that rebuild this network from nothing (``pg_rtt=2ms,...``)."""
        bits = []
        if self.pg_rtt_ms:
            bits.append(f"pg_rtt={self.pg_rtt_ms:g}ms")
        if self.redis_rtt_ms:
            bits.append(f"redis_rtt={self.redis_rtt_ms:g}ms")
        if self.jitter:
            bits.append(f"jitter={self.jitter:.0%}")
        if self.pooler != "none":
            bits.append(f"pooler={self.pooler}")
        return ",".join(bits)

    def to_json(self) -> dict[str, Any]:
        return {"pg_rtt_ms": self.pg_rtt_ms, "redis_rtt_ms": self.redis_rtt_ms, "jitter": self.jitter,
                "pooler": self.pooler}  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> Network:
        if not d:
            return cls()
        return cls(
            pg_rtt_ms=float(d.get("pg_rtt_ms") or 0.0),
            redis_rtt_ms=float(d.get("redis_rtt_ms") or 0.0),
            jitter=float(d.get("jitter") or 0.0),
            pooler=str(d.get("pooler") or "none"),
        )


@dataclass(frozen=True, slots=True)
class Topology:
    """A named placement of the application, PostgreSQL and Redis, with where its figures come from."""

    name: str
    network: Network
    summary: str
    basis: str
    """Where the round-trip times come from, and whether they are measurements or illustrative defaults."""


#: ``--topology NAME``.  Every RTT here is an illustrative default chosen inside published
#: ranges, not a measurement of any particular deployment: measure yours (ping the database
#: host from the application host; ``SELECT 1`` timed from the application) and pass
#: ``--pg-rtt``/``--redis-rtt``.
TOPOLOGIES: dict[str, Topology] = {
    t.name: t
    for t in (
        Topology(
            "same-host",
            Network(),
            "application, PostgreSQL and Redis on one machine: loopback, nothing added",
            "No figure: loopback as this machine measures it (what compare always measured).",
        ),
        Topology(
            "same-zone",
            Network(pg_rtt_ms=0.25, redis_rtt_ms=0.25, jitter=0.1),
            "application, PostgreSQL and Redis in one availability zone",
            "Illustrative default, 0.25 ms each. A 2014 ping test between instances in one EC2 zone"
            " averaged 0.45 ms (gist.github.com/josephmisiti/10312241, ICMP, older instance types);"
            " TCP between current instances with enhanced networking is typically lower.",
        ),
        Topology(
            "cross-zone",
            Network(pg_rtt_ms=1.0, redis_rtt_ms=0.25, jitter=0.1),
            "the PostgreSQL primary in another zone of the region; Redis in the application's zone",
            "Illustrative default: PG 1 ms, Redis 0.25 ms (as same-zone). AWS commits only to"
            " 'single-digit millisecond latency' between the zones of a region; measured zone pairs differ"
            " (FlashGrid, 'Latencies between AWS availability zones', 2023, contrasts 0.5 ms and 1.5 ms"
            " pairs; the 2014 gist above measured 1.3 and 2.1 ms); Google's air-gapped Distributed Cloud"
            " requires under 1 ms physical-layer RTT between the zones of a region, modelled on Google"
            " Cloud's regions.",
        ),
        Topology(
            "serverless-pooled",
            Network(pg_rtt_ms=2.0, redis_rtt_ms=0.3, jitter=0.1, pooler="pgbouncer"),
            "a managed serverless PostgreSQL (Neon-like) in the same cloud region, reached through its"
            " PgBouncer (transaction mode); Redis nearby",
            "Illustrative default: PG 2 ms through PgBouncer, Redis 0.3 ms. Neon's pooled connection string"
            " goes through PgBouncer in transaction mode (Neon docs, 'Connection pooling'); the 2 ms stands"
            " for a warm query from the same region across the provider's proxy and pooler, not a"
            " published measurement (Neon's open latency benchmark runs its client in the same AWS"
            " region; its guide to benchmarking latency says a cold start adds a few hundred"
            " milliseconds, which is not modelled here).",
        ),
    )
}


def topology(name: str) -> Topology:
    try:
        return TOPOLOGIES[name]
    except KeyError:
        raise ValueError(f"unknown topology {name!r}; choose one of {', '.join(TOPOLOGIES)}") from None


# ----------------------------------------------------------------------------- projection


def typical_trips(signatures: Mapping[str, int]) -> tuple[float, float, bool] | None:
    """(PG, Redis) round trips of a typical operation from counts of ``"pg+redis"`` signatures.

    The signature more than half of the operations made (exact, integer), flagged True;
    else the mean over all of them, flagged False.  None when nothing was counted.
    """
    total = sum(signatures.values())
    if not total:
        return None
    key, count = max(signatures.items(), key=lambda kv: kv[1])
    if count * 2 > total:
        pg, rd = (int(x) for x in key.split("+"))
        return float(pg), float(rd), True
    pg_sum = rd_sum = 0.0
    for sig, n in signatures.items():
        pg, rd = (int(x) for x in sig.split("+"))
        pg_sum += pg * n
        rd_sum += rd * n
    return pg_sum / total, rd_sum / total, False


@dataclass(frozen=True, slots=True)
class Projection:
    """predicted p50 = local p50 + PG round trips × PG RTT + Redis round trips × Redis RTT."""

    op: str
    local_p50_ms: float
    pg_trips: float
    redis_trips: float
    pg_rtt_ms: float
    redis_rtt_ms: float
    exact: bool = True
    """The round trips are what most operations made (False: a mean over mixed operations)."""

    @property
    def predicted_ms(self) -> float:
        return self.local_p50_ms + self.pg_trips * self.pg_rtt_ms + self.redis_trips * self.redis_rtt_ms

    def error(self, measured_ms: float | None) -> float | None:
        """(measured - predicted) / predicted: above 0 the network cost more than its round trips."""
        if measured_ms is None or not self.predicted_ms:
            return None
        return (measured_ms - self.predicted_ms) / self.predicted_ms

    def formula(self) -> str:
        trips = f"{self.pg_trips:g}" if self.exact else f"{self.pg_trips:.2f}"
        rtrips = f"{self.redis_trips:g}" if self.exact else f"{self.redis_trips:.2f}"
        return (
            f"{self.local_p50_ms:.3f} + {trips} × {self.pg_rtt_ms:g} + {rtrips} × {self.redis_rtt_ms:g}"
            f" = {self.predicted_ms:.3f} ms"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "local_p50_ms": self.local_p50_ms,
            "pg_trips": self.pg_trips,
            "redis_trips": self.redis_trips,
            "pg_rtt_ms": self.pg_rtt_ms,
            "redis_rtt_ms": self.redis_rtt_ms,
            "exact": self.exact,
            "predicted_ms": self.predicted_ms,  # derived
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Projection:
        return cls(
            op=str(d["op"]),
            local_p50_ms=float(d["local_p50_ms"]),
            pg_trips=float(d["pg_trips"]),
            redis_trips=float(d["redis_trips"]),
            pg_rtt_ms=float(d["pg_rtt_ms"]),
            redis_rtt_ms=float(d["redis_rtt_ms"]),
            exact=bool(d.get("exact", True)),
        )


def project(
    op: str, local_p50_ms: float | None, signatures: Mapping[str, int] | None, network: Network
) -> Projection | None:
    """The projection of ``op`` onto ``network`` from its local p50 and round-trip signatures."""
    if local_p50_ms is None or not signatures:
        return None
    trips = typical_trips(signatures)
    if trips is None:
        return None
    pg, rd, exact = trips
    return Projection(op, local_p50_ms, pg, rd, network.pg_rtt_ms, network.redis_rtt_ms, exact)
