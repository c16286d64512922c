"""sessionbench hotpath: store operations beside their floors, and other Redis clients beside redis-py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sessionbench.bench.cli import main
from sessionbench.bench.harness import hotpath
from sessionbench.bench.servers import Servers


async def test_every_operation_is_paired_with_its_floor(database_url: str, redis_url: str) -> None:
    """A short run (2 rounds of 10 calls) gives each targeted operation a store and a floor p50."""
    pairs = await hotpath.measure(database_url, redis_url, histories=[20], rounds=2, block=10, instrumented=False)
    assert [p.name for p in pairs] == list(hotpath.TARGETS)
    assert all(p.history == 20 and p.store_us > 0 and p.floor_us > 0 for p in pairs)
    table = hotpath.format_pairs(pairs)
    assert "hybrid read.hit" in table
    assert "met" in table or "missed by" in table


async def test_turns_are_timed_both_ways_per_backend(database_url: str, redis_url: str) -> None:
    """``hotpath --turns``: each backend and history gets a turn-shaped and a message-at-a-time p50."""
    rows = await hotpath.measure_turns(database_url, redis_url, histories=[20], rounds=2, block=5, instrumented=False)
    assert [(b, h) for b, h, _, _ in rows] == [("hybrid", 20), ("postgres", 20)]
    assert all(shaped > 0 and one > 0 for _, _, shaped, one in rows)
    table = hotpath.format_turns(rows)
    assert "turn-shaped" in table
    assert sum(line.endswith("x") for line in table.splitlines()) == 2  # one ratio row per backend


def test_other_redis_clients_read_the_same_window_as_redis_py(servers: Servers) -> None:
    """``hotpath --redis-clients``: coredis and valkey-glide (the clients extra, which make test
    installs) each return redis-py's entries for the LRANGE and get a paired p50 beside it.

    In a child process: once glide is imported, hypothesis's scan of loaded modules trips over
    its deprecated lazy attributes (DeprecationWarning, an error in this suite)."""
    env = {**os.environ, "DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}
    argv = [sys.executable, "-m", "sessionbench.bench.cli", "hotpath", "--servers", "external", "--histories", "20,200",
            "--rounds", "2", "--block", "10", "--redis-clients"]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["coredis"], ["valkey-glide"])]
    assert {(r[0], int(r[1])) for r in rows} == {(c, h) for c in hotpath.REDIS_CLIENTS for h in (20, 200)}
    assert all(float(r[2]) > 0 and float(r[3]) > 0 and r[4].endswith("x") for r in rows)
    assert "not installed" not in out.stdout


def test_a_missing_client_is_named_with_its_extra() -> None:
    assert "coredis: not installed (pip install 'sessionbench[clients]')" in hotpath.format_clients([], ["coredis"])


@pytest.mark.parametrize("argv", [["--histories", "1"], ["--histories", "x"], ["--rounds", "1"], ["--block", "5"]])
def test_bad_arguments_exit_2_before_any_server_starts(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hotpath", "--servers", "external", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sessionbench: error: --")
    assert err.count("\n") == 1
