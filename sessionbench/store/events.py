"""What a backend reports (cache results, populates, invalidations, errors, breaker state).

Backends report to a :class:`StoreEvents` sink, so instrumentation lives in a wrapper
(:mod:`sessionbench.store.instrumentation`) and backends never import Prometheus or OpenTelemetry.
"""

from __future__ import annotations

import contextvars
from typing import Literal, Protocol

from sessionbench.store.models import CacheResult


class StoreEvents(Protocol):
    """What a backend reports; the instrumentation wrapper turns it into metrics and spans.

    Calls are synchronous and must be cheap; the default :class:`NullEvents`
    does nothing.
    """

    def cache_result(self, result: CacheResult) -> None:
        """A read was answered from the cache (hit), filled it (miss), went around it
        (bypass: the cache cannot answer that range) or could not use it (error)."""

    def cache_populate(self, result: Literal["stored", "discarded"]) -> None:
        """A populate after a miss was stored, or discarded because it lost a race."""

    def cache_invalidation(self, reason: str) -> None:
        """A cache entry (or the whole namespace) was dropped; ``reason`` is a short constant."""

    def error(self, backend: str, operation: str, kind: str) -> None:
        """A dependency failed; ``kind`` is a short constant (``timeout``, ``connection``...)."""

    def breaker_state(self, state: int) -> None:
        """The Redis circuit breaker changed state: 0 closed, 1 open, 2 half-open."""


class NullEvents:
    """An events sink that ignores everything."""

    def cache_result(self, result: CacheResult) -> None:
        pass

    def cache_populate(self, result: Literal["stored", "discarded"]) -> None:
        pass

    def cache_invalidation(self, reason: str) -> None:
        pass

    def error(self, backend: str, operation: str, kind: str) -> None:
        pass

    def breaker_state(self, state: int) -> None:
        pass


NULL_EVENTS = NullEvents()

#: The cache result of the most recent read in the current task (``None`` for backends
#: without a cache).  The HTTP service turns it into the ``X-Cache`` header.
last_cache_result: contextvars.ContextVar[CacheResult | None] = contextvars.ContextVar(
    "sessionstore_last_cache_result", default=None
)
