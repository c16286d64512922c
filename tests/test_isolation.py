"""Users stay isolated: another user's token is a 404 on every route, tokens compare in constant time, no ids leak.

Complements ``tests/test_api.py`` (one backend, cold cache): here every backend, a warm cache,
a check that the route table has no route this file does not exercise, the token
comparison itself, and what metrics and logs reveal.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import logging
import re
import textwrap
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, generate_latest

from sessionbench.store.backends.postgres import PostgresStore, create_pool
from sessionbench.store.http import Authenticator, ServiceSettings, create_app
from sessionbench.store.http.middleware import _Edge
from sessionbench.store.instrumentation.metrics import Metrics
from sessionbench.store.settings import Settings
from tests.sources import parse_source

# user names that cannot occur by chance in metric names, label values or log text
OWNER, INTRUDER = "ownerqzx", "intruderqzx"
AS_OWNER = {"Authorization": f"Bearer dev-{OWNER}"}
AS_INTRUDER = {"Authorization": f"Bearer dev-{INTRUDER}"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@contextlib.asynccontextmanager
async def serve(settings: Settings, registry: CollectorRegistry | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running and dev auth, behind an in-process httpx client."""
    app = create_app(settings, registry=registry or CollectorRegistry(), service=ServiceSettings(dev_auth=True))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        http.app = app  # type: ignore[attr-defined]
        yield http


@pytest.fixture(params=["memory", "postgres", "hybrid"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Each backend in turn, on the session's real (emptied) servers."""
    if request.param == "memory":
        return Settings(backend="memory")
    database_url = request.getfixturevalue("database_url")
    redis_url = request.getfixturevalue("redis_url") if request.param == "hybrid" else None
    return Settings(backend=request.param, database_url=database_url, redis_url=redis_url)


def session_routes(sid: str) -> list[tuple[str, str, str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(template, method, path, json, params) for every /v1 route that names a session, as the intruder sends it."""
    return [
        ("/v1/sessions", "POST", "/v1/sessions", {"session_id": sid}, None),
        ("/v1/sessions/{session_id}", "GET", f"/v1/sessions/{sid}", None, None),
        ("/v1/sessions/{session_id}/messages", "GET", f"/v1/sessions/{sid}/messages", None, {"limit": 5}),
        ("/v1/sessions/{session_id}/messages", "GET", f"/v1/sessions/{sid}/messages", None, {"before_seq": 3}),
        ("/v1/sessions/{session_id}/messages", "POST", f"/v1/sessions/{sid}/messages",
         {"role": "user", "content": "intruder was here"}, None),
        ("/v1/sessions/{session_id}/messages", "POST", f"/v1/sessions/{sid}/messages",
         {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, None),
        ("/v1/sessions/{session_id}/export", "GET", f"/v1/sessions/{sid}/export", None, {"format": "csv"}),
        ("/v1/sessions/{session_id}", "DELETE", f"/v1/sessions/{sid}", None, None),
    ]  # fmt: skip


LISTING_ROUTES = {("/v1/sessions", "GET"), ("/v1/search", "GET")}


async def test_another_users_token_is_404_on_every_route_of_every_backend(settings: Settings) -> None:
    """On each backend, owner's window cached, the intruder gets a missing session's 404 and changes nothing."""
    async with serve(settings) as http:
        sid = str(uuid.uuid4())
        turn = {"messages": [{"role": "user", "content": "owner zebra plan"}, {"role": "assistant", "content": "ok"}]}
        assert (await http.post(f"/v1/sessions/{sid}/messages", json=turn, headers=AS_OWNER)).status_code == 201
        for _ in range(2):  # a miss that populates the cache, then a hit: both paths are checked below
            assert (await http.get(f"/v1/sessions/{sid}/messages", headers=AS_OWNER)).status_code == 200
        missing = await http.get(f"/v1/sessions/{uuid.uuid4()}", headers=AS_INTRUDER)
        assert missing.status_code == 404

        covered = set(LISTING_ROUTES)
        for template, method, path, body, params in session_routes(sid):
            r = await http.request(method, path, json=body, params=params, headers=AS_INTRUDER)
            assert r.status_code == 404, (settings.backend, method, path, r.text)
            assert r.json() == missing.json(), (method, path)  # indistinguishable from a missing session
            covered.add((template, method))
        listed = await http.get("/v1/sessions", headers=AS_INTRUDER)
        assert listed.json()["sessions"] == []
        found = await http.get("/v1/search", params={"q": "zebra"}, headers=AS_INTRUDER)
        assert found.json()["messages"] == []

        app = http.app  # type: ignore[attr-defined]
        v1 = {(route.path, method) for route in app.routes if isinstance(route, APIRoute)
              if route.path.startswith("/v1") for method in route.methods}  # fmt: skip
        assert v1 <= covered, f"routes without an isolation check: {sorted(v1 - covered)}"

        mine = await http.get(f"/v1/sessions/{sid}/messages", headers=AS_OWNER)
        assert [m["content"] for m in mine.json()["messages"]] == ["owner zebra plan", "ok"]
        assert (await http.get(f"/v1/sessions/{sid}", headers=AS_OWNER)).json()["last_seq"] == 2
        search = await http.get("/v1/search", params={"q": "zebra"}, headers=AS_OWNER)
        assert [m["session_id"] for m in search.json()["messages"]] == [sid]


# ----------------------------------------------------------------------------- tokens


def test_tokens_are_compared_with_hmac_compare_digest_and_never_looked_up() -> None:
    """``Authenticator.user_for`` compares every configured token with hmac.compare_digest, never with == or a dict."""
    tree = parse_source(textwrap.dedent(inspect.getsource(Authenticator.user_for)))
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "hmac.compare_digest" in calls
    token_names = {"token", "raw"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):  # no == / != / in on the presented token
            operands = {ast.unparse(n) for n in [node.left, *node.comparators]}
            assert not operands & token_names, ast.unparse(node)
        if isinstance(node, ast.Subscript):  # no tokens[token] lookup
            assert ast.unparse(node.slice) not in token_names, ast.unparse(node)
    assert "break" not in {type(n).__name__.lower() for n in ast.walk(tree)}  # every token is compared


async def test_wrong_token_of_the_same_length_is_rejected() -> None:
    """A token differing from a configured one in one character (same length) is 401; the right one is accepted."""
    settings = Settings(backend="memory")
    token = "s3cret-token-for-owner-0123456789"
    service = ServiceSettings(tokens={token: OWNER})
    app = create_app(settings, registry=CollectorRegistry(), service=service)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        for wrong in (token[:-1] + "8", "t" + token[1:], token[:10] + "X" + token[11:], token.upper()):
            assert len(wrong) == len(token)
            r = await http.get("/v1/sessions", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, wrong
        # dev tokens are off unless asked for
        assert (await http.get("/v1/sessions", headers=AS_OWNER)).status_code == 401


# ----------------------------------------------------------------------------- what metrics and logs reveal


async def test_no_session_or_user_id_in_metric_labels_or_info_logs(
    database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After traffic with hits, misses, 404s, 422s and a 503, /metrics and info-level logs name no session or user."""
    registry = CollectorRegistry()
    settings = Settings(backend="hybrid", database_url=database_url, redis_url=redis_url)
    sids = [str(uuid.uuid4()) for _ in range(3)]
    caplog.set_level(logging.INFO)
    async with serve(settings, registry) as http:
        for sid in sids:
            await http.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "hello"}, headers=AS_OWNER)
            await http.get(f"/v1/sessions/{sid}/messages", headers=AS_OWNER)  # miss
            await http.get(f"/v1/sessions/{sid}/messages", headers=AS_OWNER)  # hit
            await http.get(f"/v1/sessions/{sid}/messages", params={"limit": 999}, headers=AS_OWNER)  # bypass
            await http.get(f"/v1/sessions/{sid}", headers=AS_INTRUDER)  # 404
            await http.get(f"/v1/sessions/{sid}/messages", params={"limit": 0}, headers=AS_OWNER)  # 422
            await http.get(f"/v1/sessions/{sid}/export", headers=AS_OWNER)
        await http.get("/v1/search", params={"q": "hello"}, headers=AS_OWNER)
        await http.get("/v1/sessions/not-a-uuid", headers=AS_OWNER)
        await http.get(f"/v1/nowhere/{sids[0]}", headers=AS_OWNER)
        scraped = (await http.get("/metrics")).text
        templates = {route.path for route in http.app.routes if isinstance(route, APIRoute)}  # type: ignore[attr-defined]
    pool_registry = CollectorRegistry()
    sids.append(await _a_503_through_an_exhausted_pool(database_url, pool_registry))
    scraped += generate_latest(pool_registry).decode()

    service_logs = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not the client's
    for text, where in ((scraped, "metrics"), ("\n".join(r.getMessage() for r in service_logs), "logs")):
        assert not UUID.findall(text), where
        assert OWNER not in text, where
        assert INTRUDER not in text, where
        assert "not-a-uuid" not in text, where
    assert any(r.levelno >= logging.WARNING for r in service_logs)  # the 503 was logged, without ids
    routes = set(re.findall(r'route="([^"]*)"', scraped))
    assert routes
    assert routes <= templates | {"unmatched"}, routes  # route templates, never raw paths


async def _a_503_through_an_exhausted_pool(database_url: str, registry: CollectorRegistry) -> str:
    """Answer one append with 503 (the only pooled connection is held); return the session id it named."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    sid = str(uuid.uuid4())
    try:

        async def factory(events: Any) -> Any:
            return PostgresStore(pool, acquire_timeout=0.1, events=events)

        app = create_app(factory, backend="postgres", registry=registry, service=ServiceSettings(dev_auth=True))
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://t")
        async with app.router.lifespan_context(app), client as h, pool.acquire():
            r = await h.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "x"}, headers=AS_OWNER)
        assert r.status_code == 503
    finally:
        await pool.close()
    return sid


async def test_an_unhandled_error_is_logged_without_the_session_id(caplog: pytest.LogCaptureFixture) -> None:
    """The log line of a 500 names the route template, not the session id in the path."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app = create_app(Settings(backend="memory"), registry=CollectorRegistry())
    edge = _Edge(broken, fastapi=app, metrics=Metrics.for_registry(CollectorRegistry()), tracer=None, max_body=1024)
    sid = str(uuid.uuid4())
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://t") as http:
        assert (await http.get(f"/v1/sessions/{sid}/messages", headers=AS_OWNER)).status_code == 500
    service_logs = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert service_logs
    assert sid not in "\n".join(r.getMessage() for r in service_logs)
