"""Operations routes: ``/healthz`` (the process is up), ``/readyz`` (the servers are) and ``/metrics``.

Readiness is the store's own :meth:`~sessionbench.store.protocol.SessionStore.health` (each server
checked within ``ready_timeout`` seconds): 200 ``ok``; 200 ``degraded`` when only Redis
is down (the hybrid still serves from PostgreSQL); 503 ``unavailable`` with
``Retry-After`` when PostgreSQL is down or the store is not open yet.
"""

from __future__ import annotations

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sessionbench.store.http.schemas import ReadyOut, json_response
from sessionbench.store.http.state import RouteTable, Shared

table = RouteTable()


@table.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about the servers)."""
    return {"status": "ok"}


@table.get("/readyz", response_model=ReadyOut, tags=["operations"],
            responses={503: {"model": ReadyOut, "description": "PostgreSQL unreachable"}})  # fmt: skip
async def readyz(shared: Shared) -> Response:
    """PostgreSQL reachable: 200 (``degraded`` when only Redis is down); otherwise 503."""
    cfg = shared.settings
    checks: dict[str, str] = (
        {"store": "starting"} if shared.store is None else await shared.store.health(cfg.ready_timeout)
    )
    if checks.get("postgres", "ok") != "ok" or "store" in checks:
        status, code = "unavailable", 503
    elif checks.get("redis", "ok") != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    headers = {"Retry-After": str(cfg.retry_after)} if code == 503 else None
    return json_response({"status": status, "backend": shared.backend, "checks": checks}, code, headers)


@table.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})  # fmt: skip
async def prometheus_metrics(shared: Shared) -> Response:
    """Prometheus metrics of the store and the service."""
    return Response(generate_latest(shared.registry), media_type=CONTENT_TYPE_LATEST)
