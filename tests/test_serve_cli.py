"""``sessionbench serve`` checks its arguments before anything starts: one line, exit 2; loopback names are accepted."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from sessionbench.bench.cli import build_parser
from sessionbench.bench.service.serve import check_bind


def _env() -> dict[str, str]:
    """The environment without service settings or server URLs (so ``--servers external`` cannot start)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SESSIONSTORE_", "OTEL_")) and k not in ("DATABASE_URL", "REDIS_URL")}  # fmt: skip


def _serve(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``sessionbench serve`` with the hybrid backend on external servers that are not configured."""
    cmd = [
        sys.executable,
        "-m",
        "sessionbench.bench.cli",
        "serve",
        "--backend",
        "hybrid",
        "--servers",
        "external",
        *argv,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_out_of_range_port_is_one_line_and_exit_2_before_any_server(port: str) -> None:
    """A port outside 0-65535 exits 2 with one line naming --port, before servers are looked for (no URL error)."""
    done = _serve("--port", port)
    assert done.returncode == 2, done
    assert done.stdout == ""  # no start-up banner
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sessionbench: error: --port must be a TCP port number from 0 to 65535")
    assert lines[0].endswith(f"not {port}")


@pytest.mark.parametrize("host", ["192.0.2.1", ""])
def test_non_loopback_host_without_tokens_is_one_line_and_exit_2(host: str) -> None:
    """A documentation-range address or all interfaces (empty host), with no tokens, exits 2 with one line."""
    done = _serve("--host", host, "--port", "0")
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"no bearer tokens configured for {host}, which is not a loopback address" in lines[0]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                ("localhost", True), ("192.0.2.1", False), ("", False)])  # fmt: skip
def test_check_bind_resolves_loopback_names(host: str, loopback: bool) -> None:
    """Loopback addresses and ``localhost`` (resolved) count as loopback; other addresses and all-interfaces do not."""
    assert check_bind(host, 8000) is loopback


def test_check_bind_rejects_ports_outside_the_tcp_range() -> None:
    """Ports 0 and 65535 pass; -1 and 65536 are ValueErrors naming --port."""
    assert check_bind("127.0.0.1", 0)
    assert check_bind("127.0.0.1", 65535)
    for bad in (-1, 65536):
        with pytest.raises(ValueError, match="--port"):
            check_bind("127.0.0.1", bad)


def test_localhost_is_accepted_with_dev_auth_and_serves() -> None:
    """``--host localhost`` is loopback: dev auth is enabled, the service answers on 127.0.0.1, Ctrl-C exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionbench.bench.cli", "serve", "--backend", "memory", "--host", "localhost",
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not any("listening on" in x for x in lines):
            lines.append(proc.stdout.readline())
        banner = "".join(lines)
        assert "dev auth enabled because the service binds localhost" in banner, banner
        port = re.search(r"listening on http://localhost:(\d+)", banner)
        assert port is not None, banner
        r = httpx.post(f"http://127.0.0.1:{port.group(1)}/v1/sessions", json={},
                       headers={"Authorization": "Bearer dev-alice"}, timeout=5)  # fmt: skip
        assert r.json()["user_id"] == "alice"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, out
    assert "sessionbench serve: stopped" in out


def test_help_is_plain_text_with_units() -> None:
    """serve --help has no Sphinx markup, documents every option, and names the port's range and the address."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["serve"]
    assert [a.option_strings for a in parser._actions if a.option_strings and not a.help] == []
    text = parser.format_help()
    for markup in ("``", ":mod:", ":meth:", ":func:", ":class:"):
        assert markup not in text
    assert "--host ADDRESS" in text
    assert "--port PORT" in text
    assert "0 to 65535" in text
    assert "localhost" in text
