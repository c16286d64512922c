"""``sessionbench compare`` end to end on the session's real servers, and ``sessionbench report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench.cli import build_parser, main
from bench.harness import compare
from bench.servers import Servers


@pytest.fixture
def external(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Servers:
    """Point compare at the test session's servers (it drops their tables and flushes Redis)."""
    monkeypatch.setenv("DATABASE_URL", servers.database_url)
    monkeypatch.setenv("REDIS_URL", servers.redis_url)
    return servers


def _result_dir(root: Path) -> Path:
    (directory,) = [p for p in root.iterdir() if p.is_dir()]
    return directory


def test_quick_compare_writes_result_and_report_and_tables_every_config(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compare --quick` runs every default config, prints them side by side and writes result.json + report.html."""
    assert main(["compare", "--quick", "--servers", "external", "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    directory = _result_dir(tmp_path)
    data = json.loads((directory / "result.json").read_text())
    expected = [c for c in compare.DEFAULT_CONFIGS if c != "seed" or compare.seed_available()]
    assert [c["name"] for c in data["configs"]] == expected
    header = next(line for line in out.splitlines() if "memory" in line and "hybrid" in line)
    for name in expected:
        assert name in header
    for row in ("throughput (ops/s)", "append p99.9 (ms)", "read max (ms)", "cache hit ratio",
                "PG round trips/turn", "Redis round trips/turn", "Redis memory (keys)", "PostgreSQL size"):  # fmt: skip
        assert row in out
    # What ran is recorded.
    for key in ("machine", "versions", "servers", "workload", "seed", "created"):
        assert key in data
    assert data["workload"]["duration"] == compare.QUICK_DURATION
    hybrid = next(c for c in data["configs"] if c["name"] == "hybrid")
    assert hybrid["counts"]["read"] > 0
    assert hybrid["cache"].get("hit", 0) > 0
    assert hybrid["servers"]["redis_round_trips_per_turn"] > 0
    html = (directory / "report.html").read_text()
    assert html.count("<svg") >= 3
    assert "hit ratio" in html
    assert "<script" not in html
    # The report is rendered from the JSON alone: re-rendering the file gives the same table.
    assert main(["report", str(directory / "result.json")]) == 0
    again = capsys.readouterr().out
    assert again.strip() in out


def test_closed_turns_mode_prints_issue_3_ratios(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--closed-turns` runs whole turns per history size and reports the target ratios (n/a for absent configs)."""
    argv = ["compare", "--closed-turns", "--configs", "memory,floor-redis,floor-asyncpg", "--histories", "20,40",
            "--turn-seconds", "0.3", "--turn-clients", "4", "--servers", "external", "--output", str(tmp_path),
            "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "history 20" in out
    assert "history 40" in out
    assert "turns/s" in out
    assert "issue 3 targets" in out
    assert "hit-read p50" in out
    assert "n/a" in out
    data = json.loads((_result_dir(tmp_path) / "result.json").read_text())
    assert {(c["name"], c["history"]) for c in data["configs"]} == {
        (n, h) for n in ("memory", "floor-redis", "floor-asyncpg") for h in (20, 40)
    }
    floor = next(c for c in data["configs"] if c["name"] == "floor-asyncpg")
    assert floor["servers"]["pg_round_trips_per_turn"] == pytest.approx(3.0, abs=0.05)


def test_closed_model_with_clients(external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--clients N` replays the workload as fast as N clients can, and says so."""
    argv = ["compare", "--configs", "memory", "--clients", "2", "--duration", "0.5", "--servers", "external",
            "--output", str(tmp_path), "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((_result_dir(tmp_path) / "result.json").read_text())
    assert data["load_model"] == "closed (2 clients)"
    assert data["configs"][0]["mode"] == "closed"
    assert data["configs"][0]["operations"] > 100


def test_a_missing_seed_baseline_is_skipped_with_a_note(
    external: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without bench/baselines/seed_naive.py the seed column is dropped and a note says why."""
    monkeypatch.setattr(compare, "seed_available", lambda: False)
    argv = ["compare", "--configs", "memory,seed", "--duration", "0.3", "--servers", "external",
            "--output", str(tmp_path), "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipping 'seed'" in captured.err
    data = json.loads((_result_dir(tmp_path) / "result.json").read_text())
    assert [c["name"] for c in data["configs"]] == ["memory"]


def test_unknown_configuration_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --configs fails before any server starts, listing what is accepted."""
    assert main(["compare", "--configs", "memroy"]) == 2
    assert "unknown configuration 'memroy'" in capsys.readouterr().err


def test_help_explains_every_option() -> None:
    """Every compare option carries help text."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["compare"]
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert not undocumented
    text = parser.format_help()
    for option in ("--configs", "--reference", "--seed", "--duration", "--quick", "--cache-size", "--ttl",
                   "--clients", "--closed-turns", "--generator-check", "--servers", "--trace"):  # fmt: skip
        assert option in text


def test_generator_check_reports_capacity_far_above_the_default_rate_at_little_cpu() -> None:
    """The no-op generator schedules far more than the default workload needs, using under half a core for it."""
    import asyncio

    from bench.harness.workload import Workload

    figures = asyncio.run(compare.generator_check(Workload(duration=1.5), events=20_000))
    assert figures["capacity_operations"] == 20_000
    assert figures["capacity_ops_per_cpu_s"] > 20 * figures["workload_ops_per_s"] > 0
    assert figures["workload_cpu_cores"] < 0.5
