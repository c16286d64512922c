"""The HTTP package's boundaries: the store stays free of the web stack; its http package uses the public store API."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from sessionbench.store.http import ServiceSettings, create_app
from sessionbench.store.settings import Settings
from tests.sources import parse_file

HTTP_DIR = Path(__file__).parents[1] / "sessionbench" / "store" / "http"
WEB_STACK = ("fastapi", "starlette", "pydantic", "pydantic_core", "uvicorn")


def _top_level_modules_after(statement: str) -> set[str]:
    """The top-level packages in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"{statement}; import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout))


def test_import_store_loads_no_web_framework() -> None:
    """``import sessionbench.store`` imports neither FastAPI, Starlette, pydantic nor uvicorn (nor its http)."""
    loaded = _top_level_modules_after("import sessionbench.store")
    assert "sessionbench" in loaded
    assert not loaded & set(WEB_STACK), sorted(loaded & set(WEB_STACK))
    code = "import sessionbench.store, sys; print('sessionbench.store.http' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_import_store_http_loads_fastapi_but_not_uvicorn() -> None:
    """The service package needs FastAPI but not the server that runs it (only ``sessionbench serve`` does)."""
    loaded = _top_level_modules_after("import sessionbench.store.http")
    assert "fastapi" in loaded
    assert "uvicorn" not in loaded


def test_store_http_reads_no_private_attribute_of_another_object() -> None:
    """No module of the store's http package reads another object's ``_``-prefixed attribute or uses ``.inner``."""
    offending: list[str] = []
    modules = sorted(HTTP_DIR.glob("*.py"))
    assert len(modules) >= 10  # the package is split into its concerns
    for path in modules:
        for node in ast.walk(parse_file(path)):
            if not isinstance(node, ast.Attribute):
                continue
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if (private and not on_self) or node.attr == "inner":
                offending.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert offending == []


async def test_a_body_refused_before_routing_is_labelled_with_its_route_template() -> None:
    """A 413 answered on Content-Length (before routing) is counted under the route's template, not ``unmatched``."""
    registry = CollectorRegistry()
    app = create_app(Settings(backend="memory"), registry=registry,
                     service=ServiceSettings(dev_auth=True, max_body_bytes=64))  # fmt: skip
    assert all(isinstance(r, APIRoute) for r in app.routes if r.path != "/openapi.json")  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.post(f"/v1/sessions/{uuid.uuid4()}/messages", json={"role": "user", "content": "x" * 100},
                            headers={"Authorization": "Bearer dev-alice"})  # fmt: skip
    assert r.status_code == 413
    labels = {"route": "/v1/sessions/{session_id}/messages", "method": "POST", "status": "413"}
    assert registry.get_sample_value("sessionstore_http_request_duration_seconds_count", labels) == 1.0
