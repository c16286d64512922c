"""Prometheus metrics of the instrumented store: exact counts per result and backend, on real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from sessionbench.store import SessionNotFound, ValidationError, open_store
from sessionbench.store.instrumentation.metrics import DURATION_BUCKETS, Metrics, PrometheusEvents
from sessionbench.store.instrumentation.wrapper import InstrumentedStore


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test, as prometheus client_python's own tests do."""
    return CollectorRegistry()


@pytest.fixture
async def hybrid(database_url: str, redis_url: str, registry: CollectorRegistry) -> AsyncIterator[InstrumentedStore]:
    """An instrumented hybrid store caching 2 messages per session, metrics in ``registry``."""
    events = PrometheusEvents(Metrics.for_registry(registry), "hybrid")
    inner = await open_store("hybrid", database_url=database_url, redis_url=redis_url, events=events, cache_size=2)
    store = InstrumentedStore(inner, backend="hybrid", registry=registry)
    yield store
    await store.close()


async def test_scripted_hybrid_sequence_counts_each_cache_result_exactly(
    hybrid: InstrumentedStore, registry: CollectorRegistry
) -> None:
    """Three appends, a miss, two hits and a bypass yield exactly miss=1, hit=2, bypass=1, error=0."""
    sid = str(uuid.uuid4())
    for i in range(3):
        await hybrid.add_message(sid, "user", f"m{i}")
    assert [m.seq for m in await hybrid.get_messages(sid, limit=2)] == [2, 3]  # miss, populates seqs 2..3
    await hybrid.get_messages(sid, limit=2)  # hit
    await hybrid.get_messages(sid, limit=1)  # hit
    assert [m.seq for m in await hybrid.get_messages(sid, limit=3)] == [1, 2, 3]  # seq 1 is not cached: bypass

    def cache(result: str) -> float | None:
        return value(registry, "sessionstore_cache_requests_total", backend="hybrid", result=result)

    assert (cache("hit"), cache("miss"), cache("bypass"), cache("error")) == (2.0, 1.0, 1.0, None)
    assert value(registry, "sessionstore_cache_populates_total", backend="hybrid", result="stored") == 1.0
    assert value(registry, "sessionstore_cache_populates_total", backend="hybrid", result="discarded") is None
    duration = "sessionstore_operation_duration_seconds_count"
    assert value(registry, duration, backend="hybrid", operation="get_messages", outcome="ok") == 4.0
    assert value(registry, duration, backend="hybrid", operation="add_message", outcome="ok") == 3.0
    assert (
        value(registry, "sessionstore_errors_total", backend="hybrid", operation="get_messages", kind="internal")
        is None
    )


async def test_outcomes_label_not_found_and_invalid(hybrid: InstrumentedStore, registry: CollectorRegistry) -> None:
    """A missing session counts as outcome=not_found and a malformed id as outcome=invalid, not ok."""
    with pytest.raises(SessionNotFound):
        await hybrid.get_session(str(uuid.uuid4()))
    with pytest.raises(ValidationError):
        await hybrid.get_messages("not-a-uuid")
    duration = "sessionstore_operation_duration_seconds_count"
    assert value(registry, duration, backend="hybrid", operation="get_session", outcome="not_found") == 1.0
    assert value(registry, duration, backend="hybrid", operation="get_session", outcome="ok") is None
    assert value(registry, duration, backend="hybrid", operation="get_messages", outcome="invalid") == 1.0


async def test_delete_counts_one_invalidation(hybrid: InstrumentedStore, registry: CollectorRegistry) -> None:
    """Deleting a session drops its cache entry and counts invalidations{reason=delete} once."""
    sid = str(uuid.uuid4())
    await hybrid.add_message(sid, "user", "hello")
    assert await hybrid.delete_session(sid)
    assert value(registry, "sessionstore_cache_invalidations_total", backend="hybrid", reason="delete") == 1.0


async def test_postgres_backend_has_no_cache_series_and_reports_its_pool(
    database_url: str, registry: CollectorRegistry
) -> None:
    """PostgreSQL alone exports durations and pool gauges under backend=postgres and no cache counters."""
    inner = await open_store(
        "postgres", database_url=database_url, events=PrometheusEvents(Metrics.for_registry(registry), "postgres")
    )
    store = InstrumentedStore(inner, backend="postgres", registry=registry)
    try:
        sid = str(uuid.uuid4())
        await store.add_message(sid, "user", "hello")
        await store.get_messages(sid)
        assert value(registry, "sessionstore_cache_requests_total", backend="postgres", result="bypass") is None
        duration = "sessionstore_operation_duration_seconds_count"
        assert value(registry, duration, backend="postgres", operation="get_messages", outcome="ok") == 1.0
        assert value(registry, "sessionstore_db_pool_connections", backend="postgres", state="max") == 20.0
        idle = value(registry, "sessionstore_db_pool_connections", backend="postgres", state="idle")
        in_use = value(registry, "sessionstore_db_pool_connections", backend="postgres", state="in_use")
        assert idle is not None
        assert idle >= 1
        assert in_use == 0.0
    finally:
        await store.close()


async def test_duration_buckets_resolve_sub_millisecond_hits(registry: CollectorRegistry) -> None:
    """The duration histogram starts at 50 µs and ends at 5 s, so Redis hits land in distinct buckets."""
    assert DURATION_BUCKETS[0] == 0.00005
    assert DURATION_BUCKETS[-1] == 5.0
    store = InstrumentedStore(await open_store("memory"), backend="memory", registry=registry)
    await store.add_message(str(uuid.uuid4()), "user", "hi")
    le = "sessionstore_operation_duration_seconds_bucket"
    assert value(registry, le, backend="memory", operation="add_message", outcome="ok", le="5e-05") is not None
    assert value(registry, le, backend="memory", operation="add_message", outcome="ok", le="5.0") == 1.0
    await store.close()


async def test_one_metrics_object_per_registry(registry: CollectorRegistry) -> None:
    """Two wrappers on one registry share its metrics instead of failing on duplicate registration."""
    assert Metrics.for_registry(registry) is Metrics.for_registry(registry)
    assert Metrics.for_registry(registry) is not Metrics.for_registry(CollectorRegistry())
