"""OpenTelemetry spans of the instrumented store, captured with the SDK's in-memory exporter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from sessionbench.bench.servers import free_port
from sessionbench.store import open_store
from sessionbench.store.http import ServiceSettings, create_app
from sessionbench.store.instrumentation.telemetry import configure_tracing, traces_endpoint
from sessionbench.store.instrumentation.wrapper import InstrumentedStore, sql_operation, trace_redis
from sessionbench.store.settings import Settings

DB_ATTRIBUTES = ("db.system.name", "db.operation.name", "db.namespace", "server.address", "server.port")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test, in order."""
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """An SDK provider exporting synchronously to ``exporter`` (never installed globally)."""
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    yield sdk
    sdk.shutdown()


@pytest.fixture
async def hybrid(database_url: str, redis_url: str, provider: TracerProvider) -> AsyncIterator[InstrumentedStore]:
    """A traced hybrid store on the real servers."""
    inner = await open_store("hybrid", database_url=database_url, redis_url=redis_url)
    store = InstrumentedStore(inner, backend="hybrid", registry=CollectorRegistry(), tracer=provider.get_tracer("test"))
    yield store
    await store.close()


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def only_op_span(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def by_system(spans: list[ReadableSpan], system: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("db.system.name") == system]


async def test_cache_hit_has_one_redis_child_and_no_postgres_child(
    hybrid: InstrumentedStore, exporter: InMemorySpanExporter
) -> None:
    """A hybrid cache hit is one store span with cache.result=hit and exactly one Redis CLIENT child."""
    sid = str(uuid.uuid4())
    await hybrid.add_message(sid, "user", "hello")
    await hybrid.get_messages(sid)  # miss: populates the cache
    exporter.clear()
    await hybrid.get_messages(sid)
    spans = exporter.get_finished_spans()
    op = only_op_span(spans, "sessionstore.get_messages")
    assert op.parent is None
    assert (op.attributes or {})["cache.result"] == "hit"
    kids = children(spans, op)
    assert len(by_system(kids, "redis")) == 1
    assert by_system(kids, "postgresql") == []
    assert len(kids) == 1
    redis_span = kids[0]
    assert redis_span.kind is SpanKind.CLIENT
    attributes = redis_span.attributes or {}
    assert all(key in attributes for key in DB_ATTRIBUTES), attributes
    assert attributes["db.operation.name"] == "EVALSHA"
    assert attributes["server.address"] == "127.0.0.1"
    assert "error.type" not in attributes


async def test_cache_miss_has_redis_and_postgres_children(
    hybrid: InstrumentedStore, exporter: InMemorySpanExporter, database_url: str
) -> None:
    """A miss has the Redis lookup, one PostgreSQL SELECT and the Redis populate as children."""
    sid = str(uuid.uuid4())
    await hybrid.add_message(sid, "user", "hello")
    exporter.clear()
    await hybrid.get_messages(sid)
    spans = exporter.get_finished_spans()
    op = only_op_span(spans, "sessionstore.get_messages")
    assert (op.attributes or {})["cache.result"] == "miss"
    kids = children(spans, op)
    pg = by_system(kids, "postgresql")
    assert len(pg) == 1
    assert len(by_system(kids, "redis")) == 2
    attributes = pg[0].attributes or {}
    assert all(key in attributes for key in DB_ATTRIBUTES), attributes
    assert attributes["db.operation.name"] == "SELECT"
    assert attributes["db.namespace"] == database_url.rsplit("/", 1)[1].split("?")[0]
    assert pg[0].name == f"SELECT {attributes['db.namespace']}"


async def test_append_is_one_insert_then_one_redis_call(
    hybrid: InstrumentedStore, exporter: InMemorySpanExporter
) -> None:
    """An append traces one PostgreSQL INSERT followed by one Redis script, both under the store span."""
    sid = str(uuid.uuid4())
    await hybrid.add_message(sid, "user", "hello")
    exporter.clear()
    await hybrid.add_messages(sid, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    spans = exporter.get_finished_spans()
    kids = children(spans, only_op_span(spans, "sessionstore.add_messages"))
    assert [(s.attributes or {})["db.system.name"] for s in kids] == ["postgresql", "redis"]
    assert (kids[0].attributes or {})["db.operation.name"] == "INSERT"


async def test_postgres_backend_export_traces_its_cursor(
    database_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The PostgreSQL backend (wrapped by open_store) gets query spans, and an export span holds its cursor."""
    inner = await open_store("postgres", database_url=database_url)
    store = InstrumentedStore(inner, backend="postgres", registry=CollectorRegistry(), tracer=provider.get_tracer("t"))
    try:
        sid = str(uuid.uuid4())
        await store.add_message(sid, "user", "hello")
        exporter.clear()
        text = "".join([chunk async for chunk in store.export(sid, "jsonl")])
        assert '"content": "hello"' in text
        spans = exporter.get_finished_spans()
        op = only_op_span(spans, "sessionstore.export")
        kids = children(spans, op)
        assert {(s.attributes or {})["db.operation.name"] for s in kids} == {"SELECT"}
        assert len(kids) == 2  # the ownership check and the cursor
    finally:
        await store.close()


async def test_failed_redis_call_sets_error_type(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A Redis command that cannot connect ends its span with status ERROR and error.type set."""
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    trace_redis(client, provider.get_tracer("t"))
    try:
        with pytest.raises(Exception, match=r"(?i)connect"):
            await client.get("k")
    finally:
        await client.aclose()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "redis.exceptions.ConnectionError"
    assert (span.attributes or {})["db.operation.name"] == "GET"


async def test_no_tracer_means_no_db_wrapping(database_url: str, redis_url: str) -> None:
    """Without a tracer the Redis client and the pool are left untouched (no per-call cost)."""
    inner = await open_store("hybrid", database_url=database_url, redis_url=redis_url)
    store = InstrumentedStore(inner, backend="hybrid", registry=CollectorRegistry())
    try:
        assert "execute_command" not in vars(inner.redis)  # type: ignore[attr-defined]
        assert type(inner.durable.pool).__module__.startswith("asyncpg")  # type: ignore[attr-defined]
    finally:
        await store.close()


def test_sql_operation_finds_the_first_statement_verb() -> None:
    """A CTE that inserts is an INSERT; a plain read is a SELECT."""
    assert sql_operation("WITH s AS (\n INSERT INTO t VALUES (1) RETURNING x) SELECT 1") == "INSERT"
    assert sql_operation("select 1") == "SELECT"


def test_tracing_is_configured_only_when_an_endpoint_is_set() -> None:
    """No OTLP endpoint configures nothing; an endpoint yields a provider exporting to <endpoint>/v1/traces."""
    assert configure_tracing({}) is None
    assert (
        configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}) is None
    )
    assert (
        traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}) == "http://127.0.0.1:4318/v1/traces"
    )
    provider = configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert isinstance(provider, TracerProvider)
    provider.shutdown()


async def test_service_request_is_a_server_span_continuing_the_callers_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An HTTP read is a SERVER span named by its route template, in the caller's trace, parent of the store span."""
    app = create_app(
        Settings(backend="memory"), registry=CollectorRegistry(), service=ServiceSettings(dev_auth=True),
        tracer=provider.get_tracer("t"),
    )  # fmt: skip
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"Authorization": "Bearer dev-alice", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    sid = str(uuid.uuid4())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "hi"}, headers=headers)
        exporter.clear()
        r = await http.get(f"/v1/sessions/{sid}/messages", headers=headers)
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    server = only_op_span(spans, "GET /v1/sessions/{session_id}/messages")
    assert server.kind is SpanKind.SERVER
    assert server.context is not None
    assert format(server.context.trace_id, "032x") == trace_id
    assert (server.attributes or {})["http.route"] == "/v1/sessions/{session_id}/messages"
    assert (server.attributes or {})["http.response.status_code"] == 200
    store_span = only_op_span(spans, "sessionstore.get_messages")
    assert store_span.parent is not None
    assert store_span.parent.span_id == server.context.span_id
    assert (store_span.attributes or {})["cache.result"] == "hit"
