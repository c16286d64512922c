"""Every Prometheus metric of the store and the service, declared once, on an explicit registry.

Names and labels are the contract with ``dashboards/`` (the table below).  Base units,
``_total`` counters, and only bounded label values — never a session or user id:

=============================================  ====================================================
``sessionstore_operation_duration_seconds``    histogram ``{backend, operation, outcome}``;
                                               outcome ``ok|not_found|invalid|unavailable|error|
                                               cancelled``
``sessionstore_cache_requests_total``          ``{backend, result}``: ``hit|miss|bypass|error``
``sessionstore_cache_populates_total``         ``{backend, result}``: ``stored|discarded``
``sessionstore_cache_invalidations_total``     ``{backend, reason}``: short constants from the
                                               backend (``gap``, ``epoch``, ``outage``, ``delete``...)
``sessionstore_errors_total``                  ``{backend, operation, kind}``; kind is
                                               ``<dependency>_<kind>`` (``redis_timeout``,
                                               ``postgres_connection``...) or ``internal``
``sessionstore_db_pool_connections``           gauge ``{backend, state}``: ``idle|in_use|max``
``sessionstore_cache_breaker_state``           gauge ``{backend}``: 0 closed, 1 open, 2 half-open
``sessionstore_http_request_duration_seconds`` histogram ``{route, method, status}``; route is the
                                               template (``/v1/sessions/{session_id}``)
=============================================  ====================================================

Tests build a fresh ``CollectorRegistry()`` and pass it in; :meth:`Metrics.for_registry`
returns the one :class:`Metrics` of a registry, so the events sink, the store wrapper
and the service share the same metric objects.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sessionbench.store.models import CacheResult

#: 50 µs (a Redis hit on loopback) up to 5 s (a PostgreSQL acquire timeout and beyond).
DURATION_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
CACHE_RESULTS: tuple[CacheResult, ...] = ("hit", "miss", "bypass", "error")
POPULATE_RESULTS: tuple[str, ...] = ("stored", "discarded")

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()


class PoolLike(Protocol):
    """What the pool gauge reads: asyncpg's ``Pool`` has exactly these."""

    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...


class Metrics:
    """The metric objects of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.operation_duration = Histogram(
            "sessionstore_operation_duration_seconds",
            "Duration of store operations, by backend, operation and outcome.",
            ["backend", "operation", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.cache_requests = Counter(
            "sessionstore_cache_requests_total",
            "Reads by how the cache answered them: hit, miss, bypass (range not cached) or error.",
            ["backend", "result"],
            registry=registry,
        )
        self.cache_populates = Counter(
            "sessionstore_cache_populates_total",
            "Cache fills after a miss: stored, or discarded because a write raced with them.",
            ["backend", "result"],
            registry=registry,
        )
        self.cache_invalidations = Counter(
            "sessionstore_cache_invalidations_total",
            "Cache entries (or the whole namespace) dropped, by reason.",
            ["backend", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "sessionstore_errors_total",
            "Dependency failures (kind <dependency>_<kind>) and internal errors, by operation.",
            ["backend", "operation", "kind"],
            registry=registry,
        )
        self.pool_connections = Gauge(
            "sessionstore_db_pool_connections",
            "PostgreSQL pool connections: idle, in_use and the configured max.",
            ["backend", "state"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "sessionstore_cache_breaker_state",
            "Redis circuit breaker: 0 closed, 1 open, 2 half-open.",
            ["backend"],
            registry=registry,
        )
        self.http_request_duration = Histogram(
            "sessionstore_http_request_duration_seconds",
            "HTTP request duration by route template, method and status code.",
            ["route", "method", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> Metrics:
        """The :class:`Metrics` of ``registry``, created (and registered) on first use."""
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = cls(registry)
        return metrics

    def prime_cache(self, backend: str) -> None:
        """Create the zero-valued cache series of a cached backend, so rates start at 0."""
        for result in CACHE_RESULTS:
            self.cache_requests.labels(backend, result)
        for populate in POPULATE_RESULTS:
            self.cache_populates.labels(backend, populate)
        self.breaker_state.labels(backend).set(0)

    def watch_pool(self, backend: str, pool: PoolLike) -> None:
        """Report ``pool``'s connections at scrape time (idle, in_use, max)."""
        gauges: dict[str, Callable[[], float]] = {
            "idle": pool.get_idle_size,
            "in_use": lambda: pool.get_size() - pool.get_idle_size(),
            "max": pool.get_max_size,
        }
        for state, read in gauges.items():
            self.pool_connections.labels(backend, state).set_function(read)


class PrometheusEvents:
    """A :class:`sessionbench.store.events.StoreEvents` sink that counts what a backend reports.

    Pass it to ``open_store(..., events=PrometheusEvents(metrics, "hybrid"))``.  The
    ``backend`` label is the store's backend; the failing dependency (the first argument
    of :meth:`error`) goes into ``kind``.
    """

    def __init__(self, metrics: Metrics, backend: str) -> None:
        self.metrics = metrics
        self.backend = backend
        # children are resolved on first use (a labels() lookup takes a lock) and only then
        # exported, so backends without a cache export no cache series
        self._results: dict[str, Counter] = {}
        self._populates: dict[str, Counter] = {}

    def cache_result(self, result: CacheResult) -> None:
        child = self._results.get(result)
        if child is None:
            child = self._results[result] = self.metrics.cache_requests.labels(self.backend, result)
        child.inc()

    def cache_populate(self, result: Literal["stored", "discarded"]) -> None:
        child = self._populates.get(result)
        if child is None:
            child = self._populates[result] = self.metrics.cache_populates.labels(self.backend, result)
        child.inc()

    def cache_invalidation(self, reason: str) -> None:
        self.metrics.cache_invalidations.labels(self.backend, reason).inc()

    def error(self, backend: str, operation: str, kind: str) -> None:
        self.metrics.errors.labels(self.backend, operation, f"{backend}_{kind}").inc()

    def breaker_state(self, state: int) -> None:
        self.metrics.breaker_state.labels(self.backend).set(state)
