"""The HTTP service on real stores: every route, isolation, bad input, faults, metrics, access log, OpenAPI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sessionbench.bench.servers import EmbeddedPostgres, EmbeddedRedis
from sessionbench.store.accesslog import read_trace
from sessionbench.store.http import AccessLog, ServiceSettings, create_app, openapi_document
from sessionbench.store.http.middleware import _Edge
from sessionbench.store.instrumentation.metrics import Metrics
from sessionbench.store.settings import Settings

ALICE = {"Authorization": "Bearer dev-alice"}
BOB = {"Authorization": "Bearer dev-bob"}
JSON_ALICE = {**ALICE, "content-type": "application/json"}
MESSAGES = "/v1/sessions/{}/messages"


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, service: ServiceSettings | None = None, registry: CollectorRegistry | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process httpx client."""
    app = create_app(
        settings, registry=registry or CollectorRegistry(), service=service or ServiceSettings(dev_auth=True)
    )
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    """Hybrid settings on the session's real, emptied servers."""
    return Settings(backend="hybrid", database_url=database_url, redis_url=redis_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the hybrid service with dev auth."""
    async with serve(settings) as http:
        yield http


async def new_session(http: httpx.AsyncClient, headers: dict[str, str], *contents: str) -> str:
    sid = str(uuid.uuid4())
    for text in contents:
        r = await http.post(MESSAGES.format(sid), json={"role": "user", "content": text}, headers=headers)
        assert r.status_code == 201, r.text
    return sid


def error_of(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "field"}
    return body["error"]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- routes


async def test_every_route_round_trip(client: httpx.AsyncClient) -> None:
    """Create, append (one and a turn), read with X-Cache, page, get, list, search, export and delete all work."""
    r = await client.post("/v1/sessions", json={"metadata": {"topic": "tea"}}, headers=ALICE)
    assert r.status_code == 201
    session = r.json()
    sid = session["session_id"]
    assert session["user_id"] == "alice"
    assert session["metadata"] == {"topic": "tea"}
    again = await client.post("/v1/sessions", json={"session_id": sid}, headers=ALICE)
    assert again.status_code == 200
    assert again.json()["created_at"] == session["created_at"]

    r = await client.post(MESSAGES.format(sid), json={"role": "system", "content": "be brief"}, headers=ALICE)
    assert r.status_code == 201
    assert [m["seq"] for m in r.json()["messages"]] == [1]
    turn = {"messages": [{"role": "user", "content": "green tea?"}, {"role": "assistant", "content": "yes, green"}]}
    r = await client.post(MESSAGES.format(sid), json=turn, headers=ALICE)
    assert [m["seq"] for m in r.json()["messages"]] == [2, 3]

    first = await client.get(MESSAGES.format(sid), params={"limit": 2}, headers=ALICE)
    assert first.status_code == 200
    assert first.headers["x-cache"] == "miss"
    assert [m["content"] for m in first.json()["messages"]] == ["green tea?", "yes, green"]
    second = await client.get(MESSAGES.format(sid), params={"limit": 2}, headers=ALICE)
    assert second.headers["x-cache"] == "hit"
    assert second.json() == first.json()
    page = await client.get(MESSAGES.format(sid), params={"limit": 5, "before_seq": 2}, headers=ALICE)
    assert [m["seq"] for m in page.json()["messages"]] == [1]

    got = await client.get(f"/v1/sessions/{sid}", headers=ALICE)
    assert got.status_code == 200
    assert got.json()["last_seq"] == 3
    listed = await client.get("/v1/sessions", params={"limit": 5}, headers=ALICE)
    assert [s["session_id"] for s in listed.json()["sessions"]] == [sid]
    found = await client.get("/v1/search", params={"q": "green"}, headers=ALICE)
    assert {m["seq"] for m in found.json()["messages"]} == {2, 3}

    for fmt, media, needle in (("jsonl", "application/x-ndjson", '"seq": 3'), ("csv", "text/csv", "seq,role"),
                               ("markdown", "text/markdown", "# Session")):  # fmt: skip
        r = await client.get(f"/v1/sessions/{sid}/export", params={"format": fmt}, headers=ALICE)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media)
        assert needle in r.text
        assert "be brief" in r.text

    assert (await client.delete(f"/v1/sessions/{sid}", headers=ALICE)).status_code == 204
    assert (await client.get(f"/v1/sessions/{sid}", headers=ALICE)).status_code == 404
    assert (await client.get(MESSAGES.format(sid), headers=ALICE)).status_code == 404


async def test_append_with_window_returns_the_turns_context(client: httpx.AsyncClient) -> None:
    """``POST .../messages?window=N`` appends and returns the last N as ``GET ?limit=N`` would, with
    X-Cache; without it the body is as before; a bad window is a 422 naming ``window``."""
    sid = await new_session(client, ALICE, "one", "two", "three")
    await client.get(MESSAGES.format(sid), headers=ALICE)  # cached now
    r = await client.post(MESSAGES.format(sid), params={"window": 3}, json={"role": "user", "content": "four"},
                          headers=ALICE)  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    assert [m["seq"] for m in body["messages"]] == [4]
    assert [m["content"] for m in body["window"]] == ["two", "three", "four"]
    assert r.headers["x-cache"] == "hit"
    read = await client.get(MESSAGES.format(sid), params={"limit": 3}, headers=ALICE)
    assert body["window"] == read.json()["messages"]
    plain = await client.post(MESSAGES.format(sid), json={"role": "assistant", "content": "five"}, headers=ALICE)
    assert set(plain.json()) == {"messages"}
    assert "x-cache" not in plain.headers
    for params, body_json, field in (({"window": 0}, {"role": "user", "content": "x"}, "window"),
                                     ({"window": 5}, {"role": "user", "content": ""}, "content")):  # fmt: skip
        bad = await client.post(MESSAGES.format(sid), params=params, json=body_json, headers=ALICE)
        assert bad.status_code == 422, bad.text
        assert error_of(bad)["field"] == field
    assert (await client.get(f"/v1/sessions/{sid}", headers=ALICE)).json()["last_seq"] == 5  # nothing written
    other = await client.post(MESSAGES.format(sid), params={"window": 3}, json={"role": "user", "content": "x"},
                              headers=BOB)  # fmt: skip
    assert other.status_code == 404


@pytest.mark.parametrize(("backend", "expected"), [("memory", ["hit", "hit"]), ("postgres", ["bypass", "bypass"]),
                                                   ("hybrid", ["miss", "hit"])])  # fmt: skip
async def test_x_cache_header_per_backend(settings: Settings, backend: str, expected: list[str]) -> None:
    """Reads say hit for memory, bypass for PostgreSQL alone, and the real miss-then-hit for the hybrid."""
    cfg = Settings(backend=backend, database_url=settings.database_url, redis_url=settings.redis_url)
    async with serve(cfg) as http:
        sid = await new_session(http, ALICE, "hello")
        got = [(await http.get(MESSAGES.format(sid), headers=ALICE)).headers["x-cache"] for _ in range(2)]
    assert got == expected


# ----------------------------------------------------------------------------- isolation


async def test_other_users_session_is_404_on_every_route(client: httpx.AsyncClient) -> None:
    """Bob gets exactly a missing session's 404 on each of Alice's session routes, and changes nothing."""
    sid = await new_session(client, ALICE, "alice secret plan")
    missing = (await client.get(f"/v1/sessions/{uuid.uuid4()}", headers=BOB)).json()
    routes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/v1/sessions", {"session_id": sid}),
        ("GET", f"/v1/sessions/{sid}", None),
        ("DELETE", f"/v1/sessions/{sid}", None),
        ("POST", MESSAGES.format(sid), {"role": "user", "content": "bob was here"}),
        ("GET", MESSAGES.format(sid), None),
        ("GET", f"/v1/sessions/{sid}/export", None),
    ]
    for method, path, body in routes:
        theirs = await client.request(method, path, json=body, headers=BOB)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.json() == missing, (method, path)
    listed = (await client.get("/v1/sessions", headers=BOB)).json()["sessions"]
    assert sid not in {s["session_id"] for s in listed}
    assert (await client.get("/v1/search", params={"q": "secret"}, headers=BOB)).json()["messages"] == []
    mine = await client.get(MESSAGES.format(sid), headers=ALICE)
    assert [m["content"] for m in mine.json()["messages"]] == ["alice secret plan"]


async def test_configured_tokens_map_to_users_and_dev_tokens_need_dev_mode(settings: Settings, tmp_path: Path) -> None:
    """A token from the file or the variable acts as its user; without dev mode dev-<name> is 401."""
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"file-token": "carol"}))
    service = ServiceSettings.from_env(
        {"SESSIONSTORE_TOKENS": "env-token=dave", "SESSIONSTORE_TOKENS_FILE": str(tokens_file)}
    )
    assert not service.dev_auth
    async with serve(settings, service) as http:
        r = await http.post("/v1/sessions", json={}, headers={"Authorization": "Bearer file-token"})
        assert r.json()["user_id"] == "carol"
        r = await http.post("/v1/sessions", json={}, headers={"Authorization": "Bearer env-token"})
        assert r.json()["user_id"] == "dave"
        for header in ("Bearer dev-alice", "Bearer env-tokenx", "Basic env-token", "Bearer "):
            r = await http.get("/v1/sessions", headers={"Authorization": header})
            assert r.status_code == 401, header
            assert error_of(r)["type"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"


# ----------------------------------------------------------------------------- bad input


async def test_each_kind_of_bad_input_is_a_json_4xx_naming_the_field(client: httpx.AsyncClient) -> None:
    """Missing token, malformed ids, bad limits, roles, contents, bodies, formats and dates each get their 4xx."""
    sid = await new_session(client, ALICE, "hi")
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        ("GET", MESSAGES.format(sid), {"headers": {}}, 401, None),
        ("GET", "/v1/sessions/not-a-uuid", {}, 422, "session_id"),
        ("GET", MESSAGES.format(sid), {"params": {"limit": 0}}, 422, "limit"),
        ("GET", MESSAGES.format(sid), {"params": {"limit": "ten"}}, 422, "limit"),
        ("GET", MESSAGES.format(sid), {"params": {"before_seq": -1}}, 422, "before_seq"),
        ("POST", MESSAGES.format(sid), {"json": {"role": "robot", "content": "x"}}, 422, "role"),
        ("POST", MESSAGES.format(sid), {"json": {"role": "user", "content": ""}}, 422, "content"),
        ("POST", MESSAGES.format(sid), {"json": {"role": "user"}}, 422, "content"),
        ("POST", MESSAGES.format(sid), {"json": {"role": "user", "content": "x", "metadata": [1]}}, 422, "metadata"),
        ("POST", MESSAGES.format(sid), {"json": {"messages": [{"role": "user", "content": 5}]}}, 422,
         "messages[0].content"),
        ("POST", MESSAGES.format(sid), {"json": {"messages": []}}, 422, "messages"),
        ("POST", MESSAGES.format(sid), {"json": {"messages": [], "role": "user"}}, 422, "messages"),
        ("POST", MESSAGES.format(sid), {"json": {"role": "user", "content": "x", "colour": "red"}}, 422, "colour"),
        ("POST", MESSAGES.format(sid), {"content": b"{not json", "headers": JSON_ALICE}, 422, "body"),
        ("POST", "/v1/sessions", {"json": {"session_id": "nope"}}, 422, "session_id"),
        ("GET", f"/v1/sessions/{sid}/export", {"params": {"format": "xml"}}, 422, "format"),
        ("GET", "/v1/search", {}, 422, "q"),
        ("GET", "/v1/search", {"params": {"q": "x" * 1000}}, 422, "q"),
        ("GET", "/v1/sessions", {"params": {"before": "2024-01-01T00:00:00"}}, 422, "before"),
        ("GET", "/v1/sessions", {"params": {"before": "yesterday"}}, 422, "before"),
        ("GET", "/v1/nothing-here", {}, 404, None),
        ("PUT", "/v1/sessions", {}, 405, None),
    ]  # fmt: skip
    for method, path, kwargs, status, field in cases:
        kwargs.setdefault("headers", ALICE)
        r = await client.request(method, path, **kwargs)
        assert r.status_code == status, (method, path, kwargs, r.text)
        error = error_of(r)
        assert error["field"] == field, (method, path, error)
        assert "Traceback" not in r.text
    assert len((await client.get(MESSAGES.format(sid), headers=ALICE)).json()["messages"]) == 1


async def test_oversized_body_is_413_before_it_is_read(settings: Settings) -> None:
    """A body over the limit is refused with 413, by Content-Length or while streaming, and nothing is stored."""
    async with serve(settings, ServiceSettings(dev_auth=True, max_body_bytes=4096)) as http:
        sid = str(uuid.uuid4())
        big = {"role": "user", "content": "x" * 5000}
        r = await http.post(MESSAGES.format(sid), json=big, headers=ALICE)
        assert r.status_code == 413
        assert error_of(r)["type"] == "payload_too_large"
        chunks_sent = 0

        async def chunked() -> AsyncIterator[bytes]:
            nonlocal chunks_sent
            for part in (b'{"role": "user", "content": "', b"y" * 3000, b"y" * 3000, b"y" * 3000, b'"}'):
                chunks_sent += 1
                yield part

        r = await http.post(
            MESSAGES.format(sid), content=chunked(), headers={**ALICE, "content-type": "application/json"}
        )
        assert r.status_code == 413
        assert chunks_sent < 5  # the rest of the body was never read
        assert (await http.get(MESSAGES.format(sid), headers=ALICE)).status_code == 404


async def test_unhandled_exception_is_a_json_500_without_internals() -> None:
    """Whatever escapes the routes becomes a JSON 500 that names no exception and shows no traceback."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret internal detail")

    app = create_app(Settings(backend="memory"), registry=CollectorRegistry())
    edge = _Edge(broken, fastapi=app, metrics=Metrics.for_registry(CollectorRegistry()), tracer=None, max_body=10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://t") as http:
        r = await http.get("/v1/sessions")
    assert r.status_code == 500
    assert error_of(r) == {"type": "internal", "message": "internal error", "field": None}
    assert "secret" not in r.text


# ----------------------------------------------------------------------------- faults


async def test_request_while_redis_is_killed_succeeds_degraded_and_is_counted(
    settings: Settings, embedded_redis: EmbeddedRedis
) -> None:
    """With Redis killed, reads (X-Cache bypass) and writes still succeed, /readyz says degraded, metrics count it."""
    registry = CollectorRegistry()
    async with serve(settings, registry=registry) as http:
        sid = await new_session(http, ALICE, "before the outage")
        assert (await http.get(MESSAGES.format(sid), headers=ALICE)).headers["x-cache"] == "miss"
        try:
            embedded_redis.kill()
            read = await http.get(MESSAGES.format(sid), headers=ALICE)
            assert read.status_code == 200
            assert read.headers["x-cache"] == "bypass"
            write = await http.post(MESSAGES.format(sid), json={"role": "user", "content": "during"}, headers=ALICE)
            assert write.status_code == 201
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["postgres"] == "ok"
            assert ready.json()["checks"]["redis"].startswith("unavailable")
            scraped = (await http.get("/metrics")).text
        finally:
            embedded_redis.restart()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(scraped)
            for s in family.samples
        }
        assert samples[("sessionstore_cache_requests_total", (("backend", "hybrid"), ("result", "error")))] == 1.0
        redis_errors = sum(
            v for (name, labels), v in samples.items()
            if name == "sessionstore_errors_total" and dict(labels)["kind"].startswith("redis_")
        )  # fmt: skip
        assert redis_errors >= 2  # the read and the write
        after = await http.get(MESSAGES.format(sid), headers=ALICE)
        assert [m["content"] for m in after.json()["messages"]] == ["before the outage", "during"]


async def test_readyz_is_ok_then_503_with_retry_after_when_postgres_is_down(
    settings: Settings, embedded_postgres: EmbeddedPostgres
) -> None:
    """/readyz is 200 ok with both servers up; with PostgreSQL killed it and writes are 503 with Retry-After."""
    async with serve(settings) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "backend": "hybrid",
                                "checks": {"postgres": "ok", "redis": "ok", "cache_breaker": "closed"}}  # fmt: skip
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        try:
            embedded_postgres.kill()
            down = await http.get("/readyz")
            assert down.status_code == 503
            assert down.headers["retry-after"] == "1"
            assert down.json()["status"] == "unavailable"
            write = await http.post(MESSAGES.format(uuid.uuid4()), json={"role": "user", "content": "x"}, headers=ALICE)
            assert write.status_code == 503
            assert write.headers["retry-after"] == "1"
            assert error_of(write)["type"] == "unavailable"
            assert (await http.get("/healthz")).status_code == 200
        finally:
            embedded_postgres.restart()


# ----------------------------------------------------------------------------- metrics, log, schema


async def test_metrics_endpoint_counts_hits_and_labels_routes_by_template(settings: Settings) -> None:
    """After one miss and two hits over HTTP, /metrics shows exactly those and route templates, never raw ids."""
    async with serve(settings) as http:
        sid = await new_session(http, ALICE, "a", "b")
        for _ in range(3):
            await http.get(MESSAGES.format(sid), headers=ALICE)
        text = (await http.get("/metrics")).text
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def cache(result: str) -> float:
        return values[("sessionstore_cache_requests_total", (("backend", "hybrid"), ("result", result)))]

    assert (cache("hit"), cache("miss"), cache("bypass"), cache("error")) == (2.0, 1.0, 0.0, 0.0)
    route = (("method", "GET"), ("route", "/v1/sessions/{session_id}/messages"), ("status", "200"))
    assert values[("sessionstore_http_request_duration_seconds_count", route)] == 3.0
    assert sid not in text
    assert "sessionstore_db_pool_connections" in text


async def test_access_log_records_trace_events_without_ids_or_contents(settings: Settings, tmp_path: Path) -> None:
    """Appends and reads land in the trace format under a salted key that survives a restart; no content, no user."""
    path = tmp_path / "access.trace"
    service = ServiceSettings(dev_auth=True, access_log=str(path))
    async with serve(settings, service) as http:
        sid = await new_session(http, ALICE, "confidential words")
        await http.get(MESSAGES.format(sid), params={"limit": 5}, headers=ALICE)
    async with serve(settings, service) as http:
        await http.get(MESSAGES.format(sid), params={"limit": 7, "before_seq": 2}, headers=ALICE)
    events = list(read_trace(path))
    assert [(e.op, e.roles, e.sizes, e.limit, e.before) for e in events] == [
        ("append", "u", (18,), 0, None), ("read", "", (), 5, None), ("read", "", (), 7, 2)]  # fmt: skip
    assert len({e.session for e in events}) == 1
    reopened = AccessLog(path)
    assert events[0].session == reopened.session_key(sid)
    reopened.close()
    raw = path.read_text()
    assert sid not in raw
    assert "confidential" not in raw
    assert "alice" not in raw
    assert oct(os.stat(f"{path}.key").st_mode & 0o777) == "0o600"


def test_committed_openapi_schema_is_current() -> None:
    """The committed openapi.json equals the schema the app serves (regenerate: see Makefile openapi)."""
    committed = (Path(__file__).parents[1] / "sessionbench" / "store" / "http" / "openapi.json").read_text(
        encoding="utf-8"
    )
    assert committed == openapi_document()


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    """/openapi.json serves the same paths as the committed file."""
    served = (await client.get("/openapi.json")).json()
    assert served["paths"].keys() == json.loads(openapi_document())["paths"].keys()


@pytest.fixture(autouse=True)
def _no_leaked_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Service settings in these tests come from arguments, never from the developer's environment."""
    for name in ("SESSIONSTORE_TOKENS", "SESSIONSTORE_TOKENS_FILE", "SESSIONSTORE_DEV_AUTH", "SESSIONSTORE_ACCESS_LOG"):
        monkeypatch.delenv(name, raising=False)
    yield


# ----------------------------------------------------------------------------- sessionbench serve


def test_serve_starts_says_how_and_stops_cleanly_on_ctrl_c() -> None:
    """`sessionbench serve` prints backend, auth mode and URL, answers, and exits 0 after SIGINT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONSTORE_", "OTEL_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionbench.bench.cli", "serve", "--backend", "memory", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("listening on" in line for line in lines):
            lines.append(proc.stdout.readline())
        banner = "".join(lines)
        assert "backend memory" in banner
        assert "dev auth enabled because the service binds 127.0.0.1" in banner
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert url is not None, banner
        assert httpx.get(url.group(1) + "/healthz", timeout=5).json() == {"status": "ok"}
        r = httpx.post(url.group(1) + "/v1/sessions", json={}, headers=ALICE, timeout=5)
        assert r.json()["user_id"] == "alice"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert "sessionbench serve: stopped" in out


def test_serve_refuses_a_non_loopback_bind_without_tokens() -> None:
    """Binding beyond 127.0.0.1 with no tokens configured is refused before anything starts."""
    from sessionbench.bench.cli import build_parser
    from sessionbench.bench.service.serve import run

    args = build_parser().parse_args(["serve", "--backend", "memory", "--host", "0.0.0.0"])  # noqa: S104 - never bound
    with pytest.raises(ValueError, match="no bearer tokens configured"):
        run(args, environ={})
