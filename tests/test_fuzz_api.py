"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis): over 1,000 requests, no 5xx, no crash.

The app runs in-process (schemathesis's ASGI client, lifespan started once) on the hybrid
backend over the session's real PostgreSQL and Redis.  Every operation gets schema-valid
requests (random ids and ids of sessions that exist), schema-violating ones, and some
without a token.  Checks: no 5xx, documented content types, headers and response bodies,
and every ``/v1`` error is the JSON error shape.  Generation is derandomized so CI runs
are reproducible.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from sessionbench.store.http import ServiceSettings, create_app
from sessionbench.store.settings import Settings

AUTH = {"Authorization": "Bearer dev-fuzz"}
CHECKS = [not_a_server_error, content_type_conformance, response_headers_conformance, response_schema_conformance]
# (mode, with a token, pin session_id to an existing session, examples per operation)
ROUNDS = (
    (GenerationMode.POSITIVE, True, False, 70),
    (GenerationMode.POSITIVE, True, True, 30),
    (GenerationMode.NEGATIVE, True, False, 50),
    (GenerationMode.POSITIVE, False, False, 8),
)


@pytest.fixture
def app(database_url: str, redis_url: str) -> Iterator[FastAPI]:
    """The hybrid service with dev auth; its lifespan (started by schemathesis) is shut down afterwards."""
    settings = Settings(backend="hybrid", database_url=database_url, redis_url=redis_url)
    application = create_app(settings, registry=CollectorRegistry(), service=ServiceSettings(dev_auth=True))
    try:
        yield application
    finally:
        schemathesis_asgi.shutdown_lifespans()


def error_shape_problem(path: str, status: int, content_type: str, body: bytes) -> str:
    """Every 4xx/5xx under /v1 is ``{"error": {"type", "message", "field"}}`` JSON ("" when it is)."""
    if status < 400 or not path.startswith("/v1"):
        return ""
    if not content_type.startswith("application/json"):
        return f"{status} with content type {content_type!r}"
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return f"{status} with a body that is not JSON"
    if (
        not isinstance(payload, dict)
        or set(payload) != {"error"}
        or set(payload["error"]) != {"type", "message", "field"}
    ):
        return f"{status} with an unexpected error body {body[:200]!r}"
    return ""


def fuzz(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str] | None,
    path_parameters: dict[str, str] | None,
    examples: int,
    statuses: Counter[tuple[str, int]],
    problems: list[str],
) -> None:
    """Send ``examples`` generated requests to one operation; count statuses, collect problems."""
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # noqa: BLE001 - a crash of the app or the transport is what we count
            problems.append(f"{label}: crashed: {type(exc).__name__}: {exc}")
            return
        statuses[(label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except BaseException as failure:  # noqa: BLE001 - schemathesis raises FailureGroup, a BaseExceptionGroup
            problems.append(f"{label}: {str(failure)[:600]}")
        content_type = response.headers.get("content-type", [""])[0]
        problem = error_shape_problem(case.formatted_path, response.status_code, content_type, response.content)
        if problem:
            problems.append(f"{label}: {problem}")

    with contextlib.suppress(Unsatisfiable):  # every input of this operation was filtered out in this mode
        run()


def test_fuzz_every_operation_from_the_openapi_schema(app: FastAPI) -> None:
    """Over 1,000 generated requests to every operation answer without a 5xx, a crash or an undocumented body."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: Counter[tuple[str, int]] = Counter()
    problems: list[str] = []
    for operation in operations:
        has_input = bool(operation.path_parameters or operation.query or operation.body)
        for mode, with_token, pinned, examples in ROUNDS:
            if mode is GenerationMode.NEGATIVE and not has_input:
                continue
            if pinned and "{session_id}" not in operation.path:
                continue
            path_parameters = {"session_id": _existing_session(app)} if pinned else None
            fuzz(operation, mode, AUTH if with_token else None, path_parameters, examples, statuses, problems)

    total = sum(statuses.values())
    server_errors = {k: v for k, v in statuses.items() if k[1] >= 500}
    by_class = Counter(status // 100 * 100 for _, status in statuses.elements())
    print(f"\n{total} requests over {len(operations)} operations; by status class: {dict(sorted(by_class.items()))}")
    for (label, status), count in sorted(statuses.items()):
        print(f"  {label:45} {status}  {count}")
    assert server_errors == {}
    assert problems == []
    assert total >= 1000
    assert by_class[200] > 0  # accepted requests were generated ...
    assert by_class[400] > 0  # ... and rejected ones


def _existing_session(app: FastAPI) -> str:
    """A session of the fuzzing user with a turn of history, created through the app itself."""
    sid = str(uuid.uuid4())
    with schemathesis_asgi.get_client(app) as client:
        turn = {"messages": [{"role": "user", "content": "fuzz me"}, {"role": "assistant", "content": "ok"}]}
        response = client.post(f"/v1/sessions/{sid}/messages", json=turn, headers=AUTH)
        assert response.status_code == 201, response.text
    return sid


def test_undecodable_json_body_answers_a_documented_status(app: FastAPI) -> None:
    """A body that is not UTF-8 answers 422 like any other unparsable JSON body, not an undocumented 400."""
    sid = str(uuid.uuid4())
    headers = {**AUTH, "content-type": "application/json"}
    with schemathesis_asgi.get_client(app) as client:
        plain = client.post(f"/v1/sessions/{sid}/messages", data=b"{", headers=headers)
        garbled = client.post(f"/v1/sessions/{sid}/messages", data=b"\xff\xfe{", headers=headers)
    assert plain.status_code == 422
    assert error_shape_problem("/v1/x", garbled.status_code, garbled.headers["content-type"], garbled.content) == ""
    assert garbled.status_code == 422
