"""``InstrumentedStore``: metrics and traces around any :class:`~sessionbench.store.protocol.SessionStore`.

The wrapper implements the same Protocol (like httpx's wrapping transports): each call
is timed inside the async wrapper (never ``@hist.time()`` on an ``async def``, which
would time only the creation of the coroutine) into
``sessionstore_operation_duration_seconds{backend, operation, outcome}``, and, when a
tracer is given, runs inside one span per operation with a ``cache.result`` attribute on
reads.  What happens *inside* a backend (cache results, populates, invalidations,
dependency errors, breaker state) arrives through the events sink
(:class:`sessionbench.store.instrumentation.metrics.PrometheusEvents`), which the entry point passes to
``open_store(..., events=...)``.

Database spans.  With a tracer, :func:`trace_clients` also gives every Redis command or
pipeline and every PostgreSQL query of the wrapped store a CLIENT child span with the
database semantic conventions: ``db.system.name``, ``db.operation.name``,
``db.namespace``, ``server.address``, ``server.port``, ``error.type`` on failure (and
``db.query.text`` for PostgreSQL, whose statements are constant, parameterised SQL; Redis
arguments carry message contents and are never recorded).  It wraps the *instances* the
store was given — ``execute_command``/``pipeline`` of that one Redis client, and the
store's ``pool`` attribute — so nothing process-wide is patched and an untraced store in
the same process pays nothing.  (The maintained opentelemetry-instrumentation-redis and
-asyncpg packages patch the driver classes globally, emit ``db.operation.name`` for
neither driver, and emit the stable attribute names only under
``OTEL_SEMCONV_STABILITY_OPT_IN=database``.)

Without a tracer (no SDK configured: see :mod:`sessionbench.store.instrumentation.telemetry`) there are no spans at
all, so the uninstrumented overhead is a ``perf_counter`` pair and a histogram observe.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from prometheus_client import CollectorRegistry

from sessionbench.store.errors import SessionNotFound, StoreClosed, StoreUnavailable, ValidationError
from sessionbench.store.events import last_cache_result
from sessionbench.store.instrumentation.metrics import Metrics
from sessionbench.store.models import Message, NewMessage, ReadResult, Session, TextExportFormat, Turn
from sessionbench.store.protocol import SessionStore

T = TypeVar("T")


def outcome_of(exc: BaseException) -> str:
    """The bounded ``outcome`` label of a failed operation."""
    if isinstance(exc, ValidationError):
        return "invalid"
    if isinstance(exc, SessionNotFound):
        return "not_found"
    if isinstance(exc, StoreUnavailable):
        return "unavailable"
    if isinstance(exc, StoreClosed):
        return "closed"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _fail(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", _error_type(exc))
    span.set_status(StatusCode.ERROR, type(exc).__name__)


# ----------------------------------------------------------------------------- client spans


def unwrap(store: Any) -> Any:
    """The backend under any :class:`InstrumentedStore` wrappers (each has a public ``inner``)."""
    while isinstance(store, InstrumentedStore):
        store = store.inner
    return store


def store_clients(store: Any) -> tuple[Any, Any]:
    """``(asyncpg pool or None, redis client or None)`` of a backend, by their public names."""
    backend = unwrap(store)
    durable = getattr(backend, "durable", backend)
    pool = getattr(durable, "pool", None)
    if isinstance(pool, TracedPool):
        pool = pool.pool
    return pool, getattr(backend, "redis", None)


def trace_clients(store: Any, tracer: Tracer) -> None:
    """Give each Redis and PostgreSQL call of ``store`` a CLIENT span (idempotent)."""
    backend = unwrap(store)
    redis = getattr(backend, "redis", None)
    if redis is not None:
        trace_redis(redis, tracer)
    durable = getattr(backend, "durable", backend)
    pool = getattr(durable, "pool", None)
    if pool is not None and not isinstance(pool, TracedPool):
        durable.pool = TracedPool(pool, tracer)


def trace_redis(client: Any, tracer: Tracer) -> None:
    """Wrap one ``redis.asyncio.Redis`` instance's commands and pipelines in spans."""
    if getattr(client, "_sessionstore_traced", False):
        return
    kwargs = client.connection_pool.connection_kwargs
    base: dict[str, Any] = {"db.system.name": "redis", "db.namespace": str(kwargs.get("db", 0))}
    if "path" in kwargs:
        base["server.address"] = str(kwargs["path"])
    else:
        base["server.address"] = str(kwargs.get("host", "localhost"))
        base["server.port"] = int(kwargs.get("port", 6379))
    execute_command = client.execute_command
    make_pipeline = client.pipeline

    async def traced_execute_command(*args: Any, **options: Any) -> Any:
        op = str(args[0]).upper() if args else "UNKNOWN"
        with tracer.start_as_current_span(
            op, kind=SpanKind.CLIENT, attributes={**base, "db.operation.name": op},
            record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            try:
                return await execute_command(*args, **options)
            except BaseException as exc:
                _fail(span, exc)
                raise

    def traced_pipeline(*args: Any, **kw: Any) -> Any:
        pipe = make_pipeline(*args, **kw)
        run = pipe.execute

        async def execute(raise_on_error: bool = True) -> Any:
            ops = {str(cmd[0][0]).upper() for cmd in pipe.command_stack if cmd[0]}
            name = f"BATCH {ops.pop()}" if len(ops) == 1 else "BATCH"
            attributes = {**base, "db.operation.name": name, "db.operation.batch.size": len(pipe.command_stack)}
            with tracer.start_as_current_span(
                name, kind=SpanKind.CLIENT, attributes=attributes,
                record_exception=False, set_status_on_exception=False,
            ) as span:  # fmt: skip
                try:
                    return await run(raise_on_error=raise_on_error)
                except BaseException as exc:
                    _fail(span, exc)
                    raise

        pipe.execute = execute
        return pipe

    client.execute_command = traced_execute_command
    client.pipeline = traced_pipeline
    client._sessionstore_traced = True


_SQL_OPERATION = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|MERGE|CREATE|ALTER|DROP|TRUNCATE|COPY|BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE
)


@functools.lru_cache(maxsize=256)
def sql_operation(query: str) -> str:
    """The first SQL operation in ``query`` (``WITH s AS (INSERT ...) ...`` is an INSERT)."""
    match = _SQL_OPERATION.search(query)
    return match.group(1).upper() if match else "UNKNOWN"


class TracedPool:
    """An asyncpg pool whose acquired connections trace ``fetch*``/``execute``/``cursor``.

    ``await pool.acquire()`` (then ``pool.release(conn)``) and ``async with pool.acquire()``
    hand out traced connections; every other attribute is the pool's own.
    """

    def __init__(self, pool: Any, tracer: Tracer) -> None:
        self.pool = pool
        self.tracer = tracer
        self._base: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    def acquire(self, *, timeout: float | None = None) -> _TracedAcquire:
        return _TracedAcquire(self, self.pool.acquire(timeout=timeout))

    async def release(self, conn: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        inner = conn._conn if isinstance(conn, _TracedConnection) else conn
        await self.pool.release(inner, timeout=timeout)

    def attributes(self, conn: Any) -> dict[str, Any]:
        if self._base is None:
            # asyncpg keeps the target on the connection (the same fields its own
            # instrumentation reads); every connection of a pool has the same one.
            base: dict[str, Any] = {"db.system.name": "postgresql"}
            database = getattr(getattr(conn, "_params", None), "database", None)
            addr = getattr(conn, "_addr", None)
            if database:
                base["db.namespace"] = str(database)
            if isinstance(addr, tuple):
                base["server.address"], base["server.port"] = str(addr[0]), int(addr[1])
            elif isinstance(addr, str):
                base["server.address"] = addr
            self._base = base
        return self._base


class _TracedAcquire:
    def __init__(self, owner: TracedPool, ctx: Any) -> None:
        self._owner = owner
        self._ctx = ctx

    async def __aenter__(self) -> _TracedConnection:
        conn = await self._ctx.__aenter__()
        return _TracedConnection(conn, self._owner.tracer, self._owner.attributes(conn))

    def __await__(self) -> Generator[Any, None, _TracedConnection]:
        conn = yield from self._ctx.__await__()
        return _TracedConnection(conn, self._owner.tracer, self._owner.attributes(conn))

    async def __aexit__(self, *exc: object) -> None:
        await self._ctx.__aexit__(*exc)


class _TracedConnection:
    def __init__(self, conn: Any, tracer: Tracer, base: dict[str, Any]) -> None:
        self._conn = conn
        self._tracer = tracer
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _start(self, query: str) -> tuple[str, dict[str, Any]]:
        op = sql_operation(query)
        ns = self._base.get("db.namespace")
        attributes = {**self._base, "db.operation.name": op, "db.query.text": query}
        return (f"{op} {ns}" if ns else op), attributes

    async def _traced(self, call: Callable[..., Awaitable[T]], query: str, *args: Any, **kwargs: Any) -> T:
        name, attributes = self._start(query)
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                return await call(query, *args, **kwargs)
            except BaseException as exc:
                _fail(span, exc)
                raise

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(self._conn.fetch, query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(self._conn.fetchrow, query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(self._conn.fetchval, query, *args, **kwargs)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(self._conn.execute, query, *args, **kwargs)

    async def executemany(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(self._conn.executemany, query, *args, **kwargs)

    def cursor(self, query: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """One span for the whole iteration (each prefetch is a round trip inside it)."""
        return self._iterate(self._conn.cursor(query, *args, **kwargs), query)

    async def _iterate(self, factory: Any, query: str) -> AsyncIterator[Any]:
        name, attributes = self._start(query)
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        try:
            async for row in factory:
                yield row
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                _fail(span, exc)
            raise
        finally:
            span.end()


# ----------------------------------------------------------------------------- the wrapper


class InstrumentedStore:
    """A :class:`SessionStore` that times, counts and traces every call to ``inner``.

    ``backend`` labels every series (``memory``, ``postgres``, ``hybrid``); ``registry``
    is where the metrics live (a fresh ``CollectorRegistry()`` in tests); ``tracer`` is
    ``None`` when no tracing SDK is configured, and then no span is ever created.  With
    a tracer and ``db_spans`` (the default), Redis and PostgreSQL calls get child spans
    (:func:`trace_clients`).  The pool gauge follows the store's asyncpg pool, if any.
    ``close()`` closes ``inner``.
    """

    def __init__(
        self,
        inner: SessionStore,
        *,
        backend: str,
        registry: CollectorRegistry,
        tracer: Tracer | None = None,
        db_spans: bool = True,
    ) -> None:
        self.inner = inner
        self.backend = backend
        self.metrics = Metrics.for_registry(registry)
        self.tracer = tracer
        self._children: dict[tuple[str, str], Any] = {}
        self._internal: dict[str, Any] = {}
        self._attributes = {"sessionstore.backend": backend}
        pool, _redis = store_clients(inner)
        if pool is not None and hasattr(pool, "get_idle_size"):
            self.metrics.watch_pool(backend, pool)
        if tracer is not None and db_spans:
            trace_clients(inner, tracer)

    # -- plumbing ------------------------------------------------------------------------
    def _observe(self, operation: str, outcome: str, seconds: float) -> None:
        child = self._children.get((operation, outcome))
        if child is None:
            child = self.metrics.operation_duration.labels(self.backend, operation, outcome)
            self._children[(operation, outcome)] = child
        child.observe(seconds)
        if outcome == "error":
            counter = self._internal.get(operation)
            if counter is None:
                counter = self._internal[operation] = self.metrics.errors.labels(self.backend, operation, "internal")
            counter.inc()

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        if self.tracer is None:
            start = time.perf_counter()
            outcome = "ok"
            try:
                return await call
            except BaseException as exc:
                outcome = outcome_of(exc)
                raise
            finally:
                self._observe(operation, outcome, time.perf_counter() - start)
        with self.tracer.start_as_current_span(
            f"sessionstore.{operation}", attributes=self._attributes, record_exception=False,
            set_status_on_exception=False,
        ) as span:  # fmt: skip
            start = time.perf_counter()
            outcome = "ok"
            result: object = None
            try:
                result = await call
                return result
            except BaseException as exc:
                outcome = outcome_of(exc)
                if outcome not in ("not_found", "cancelled"):
                    _fail(span, exc)
                raise
            finally:
                self._observe(operation, outcome, time.perf_counter() - start)
                span.set_attribute("sessionstore.outcome", outcome)
                if isinstance(result, ReadResult):
                    span.set_attribute("cache.result", result.cache)

    # -- the Protocol --------------------------------------------------------------------
    async def create_session(
        self,
        session_id: str | uuid.UUID | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        return await self._call("create_session", self.inner.create_session(session_id, user_id, metadata))

    async def add_message(
        self,
        session_id: str | uuid.UUID,
        role: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
    ) -> Message:
        call = self.inner.add_message(session_id, role, content, metadata, user_id=user_id)
        return await self._call("add_message", call)

    async def add_messages(
        self,
        session_id: str | uuid.UUID,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        *,
        user_id: str | None = None,
    ) -> list[Message]:
        return await self._call("add_messages", self.inner.add_messages(session_id, messages, user_id=user_id))

    async def add_and_read(
        self,
        session_id: str | uuid.UUID,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        limit: int = 20,
        *,
        user_id: str | None = None,
    ) -> Turn:
        return await self._call("add_and_read", self.inner.add_and_read(session_id, messages, limit, user_id=user_id))

    async def read(
        self,
        session_id: str | uuid.UUID,
        limit: int = 20,
        before_seq: int | None = None,
        *,
        user_id: str | None = None,
    ) -> ReadResult:
        """Timed as ``get_messages`` (one operation, whichever method the caller used)."""
        return await self._call("get_messages", self.inner.read(session_id, limit, before_seq, user_id=user_id))

    async def get_messages(
        self,
        session_id: str | uuid.UUID,
        limit: int = 20,
        before_seq: int | None = None,
        *,
        user_id: str | None = None,
    ) -> list[Message]:
        result = await self.read(session_id, limit, before_seq, user_id=user_id)
        last_cache_result.set(result.cache)
        return result.messages

    async def get_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> Session:
        return await self._call("get_session", self.inner.get_session(session_id, user_id=user_id))

    async def list_sessions(
        self, user_id: str | None, limit: int = 20, before: datetime | None = None
    ) -> list[Session]:
        return await self._call("list_sessions", self.inner.list_sessions(user_id, limit, before))

    async def search(self, query: str, user_id: str | None = None, limit: int = 20) -> list[Message]:
        return await self._call("search", self.inner.search(query, user_id, limit))

    @overload
    def export(
        self, session_id: str | uuid.UUID, format: TextExportFormat = "jsonl", *, user_id: str | None = None
    ) -> AsyncIterator[str]: ...

    @overload
    def export(
        self, session_id: str | uuid.UUID, format: Literal["pdf"], *, user_id: str | None = None
    ) -> AsyncIterator[bytes]: ...

    @overload
    def export(
        self, session_id: str | uuid.UUID, format: str, *, user_id: str | None = None
    ) -> AsyncIterator[str] | AsyncIterator[bytes]: ...

    async def export(
        self, session_id: str | uuid.UUID, format: str = "jsonl", *, user_id: str | None = None
    ) -> AsyncIterator[str | bytes]:
        """Timed and traced over the whole stream.  The span is current only while the
        inner iterator runs, never while the consumer handles a chunk."""
        span = (
            None if self.tracer is None else self.tracer.start_span("sessionstore.export", attributes=self._attributes)
        )
        start = time.perf_counter()
        outcome = "ok"
        inner = self.inner.export(session_id, format, user_id=user_id).__aiter__()
        try:
            while True:
                try:
                    if span is None:
                        chunk = await inner.__anext__()
                    else:
                        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                            chunk = await inner.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk
        except GeneratorExit:
            outcome = "cancelled"
            raise
        except BaseException as exc:
            outcome = outcome_of(exc)
            if span is not None and outcome not in ("not_found", "cancelled"):
                _fail(span, exc)
            raise
        finally:
            self._observe("export", outcome, time.perf_counter() - start)
            aclose = getattr(inner, "aclose", None)
            if aclose is not None and outcome != "ok":
                await aclose()
            if span is not None:
                span.set_attribute("sessionstore.outcome", outcome)
                span.end()

    async def delete_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> bool:
        return await self._call("delete_session", self.inner.delete_session(session_id, user_id=user_id))

    async def pop_message(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> Message | None:
        return await self._call("pop_message", self.inner.pop_message(session_id, user_id=user_id))

    async def cleanup_inactive(self, older_than: float, batch_size: int = 1000) -> int:
        return await self._call("cleanup_inactive", self.inner.cleanup_inactive(older_than, batch_size))

    async def health(self, seconds: float = 1.0) -> dict[str, str]:
        return await self.inner.health(seconds)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


__all__ = [
    "InstrumentedStore",
    "TracedPool",
    "outcome_of",
    "sql_operation",
    "store_clients",
    "trace_clients",
    "trace_redis",
]
