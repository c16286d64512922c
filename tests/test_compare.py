"""``sessionbench compare`` end to end on the session's real servers, and ``sessionbench report``."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from sessionbench.bench.cli import build_parser, main
from sessionbench.bench.harness import compare, report
from sessionbench.bench.harness.results import ResultFile
from sessionbench.bench.servers import Servers
from tests.conftest import result_dir

V1_RESULT = Path(__file__).parent / "data" / "compare_result_v1.json"


def test_quick_compare_writes_result_and_report_and_tables_every_config(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compare --quick` runs every default config, prints them side by side and writes result.json + report.html."""
    assert main(["compare", "--quick", "--servers", "external", "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    directory = result_dir(tmp_path)
    data = json.loads((directory / "result.json").read_text())
    assert data["format"] == "sessionbench-result v2"
    expected = [c for c in compare.DEFAULT_CONFIGS if c != "seed" or compare.seed_available()]
    assert "floor-hybrid" in expected
    assert [c["name"] for c in data["configs"]] == expected
    header = next(line for line in out.splitlines() if "memory" in line and "hybrid" in line)
    for name in expected:
        assert name in header
    if compare.seed_available():
        assert "reference: seed design" in header
        assert "(ref)" not in header
    for row in ("completed (ops/s)", "completed / offered", "append p99.9 (ms)", "read max (ms)", "cache hit ratio",
                "append p50 ÷ its floor", "read p50 ÷ its floor",
                "PG round trips/turn", "Redis round trips/turn", "Redis memory (keys)", "PostgreSQL size"):  # fmt: skip
        assert row in out
    assert "throughput (ops/s)" not in out  # the open model's offered rate is not a per-column figure
    assert "offered load:" in out
    words = " ".join(out.split())  # the conclusion paragraph is wrapped
    assert "In this run:" in words
    assert "Caveat: servers on loopback" in words
    # What ran is recorded.
    for key in ("machine", "versions", "servers", "workload", "seed", "created", "topology"):
        assert key in data
    assert data["workload"]["duration"] == compare.QUICK_DURATION
    by_name = {c["name"]: c for c in data["configs"]}
    hybrid = by_name["hybrid"]
    assert hybrid["counts"]["read"] > 0
    assert hybrid["cache"].get("hit", 0) > 0
    assert hybrid["servers"]["redis_round_trips_per_turn"] > 0
    assert hybrid["offered_operations"] >= hybrid["operations"] > 0
    # Overhead ratios against the floor of the same round trips, in the JSON.
    assert {op: o["floor"] for op, o in hybrid["overhead"].items()} == {
        "read.hit": "floor-redis",
        "append": "floor-hybrid",
    }
    assert {op: o["floor"] for op, o in by_name["postgres"]["overhead"].items()} == {
        "read": "floor-asyncpg",
        "append": "floor-asyncpg",
    }
    for o in [*hybrid["overhead"].values(), *by_name["postgres"]["overhead"].values()]:
        assert o["ratio"] == pytest.approx(o["p50_ms"] / o["floor_p50_ms"])
    assert not by_name["memory"]["overhead"]
    assert not by_name["floor-hybrid"]["overhead"]
    html = (directory / "report.html").read_text()
    assert html.count("<svg") >= 3
    assert "hit ratio" in html
    assert "How to read this" in html
    assert "÷ its floor" in html
    assert "In this run:" in html
    assert "<script" not in html
    result = ResultFile.from_json(data)
    # No plot of identical lines: throughput over time is drawn only when the columns differ.
    assert ("throughput over time" in html) != report.same_throughput(result.configs)
    # The report is rendered from the JSON alone: re-rendering the file gives the same table.
    assert main(["report", str(directory / "result.json")]) == 0
    again = capsys.readouterr().out
    assert again.strip() in out


def test_closed_turns_mode_prints_the_target_ratios(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--closed-turns` runs whole turns per history size and reports the target ratios (n/a for absent configs)."""
    argv = ["compare", "--closed-turns", "--configs", "memory,floor-redis,floor-asyncpg,floor-hybrid",
            "--histories", "20,40",
            "--turn-seconds", "0.3", "--turn-clients", "4", "--servers", "external", "--output", str(tmp_path),
            "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "history 20" in out
    assert "history 40" in out
    assert "turns/s" in out
    assert "targets (measured ratio" in out
    assert "hit-read p50" in out
    assert "hybrid turns/s ≥ 0.8× floor-hybrid" in out
    assert "n/a" in out
    data = json.loads((result_dir(tmp_path) / "result.json").read_text())
    names = ("memory", "floor-redis", "floor-asyncpg", "floor-hybrid")
    assert {(c["name"], c["history"]) for c in data["configs"]} == {(n, h) for n in names for h in (20, 40)}
    floor = next(c for c in data["configs"] if c["name"] == "floor-asyncpg")
    assert floor["servers"]["pg_round_trips_per_turn"] == pytest.approx(3.0, abs=0.05)
    hybrid_floor = next(c for c in data["configs"] if c["name"] == "floor-hybrid")
    assert hybrid_floor["servers"]["pg_round_trips_per_turn"] == pytest.approx(2.0, abs=0.05)
    assert hybrid_floor["servers"]["redis_round_trips_per_turn"] == pytest.approx(3.0, abs=0.05)
    _check_turn_targets(ResultFile.from_json(data))


def _check_turn_targets(result: ResultFile) -> None:
    """The targets judge the ratios they name: from the run's own records, renamed and given turn counts."""
    floor = result.find("floor-hybrid", 20)
    assert floor is not None
    assert floor.turns > 0
    records = {
        "hybrid": replace(floor, name="hybrid", turns=floor.turns),  # 1.00x floor-hybrid: pass
        "seed": replace(floor, name="seed", turns=floor.turns // 3),  # hybrid ~3x the seed: pass
        "peer-fast": replace(floor, name="peer-fast", turns=floor.turns),  # 1x, below 2x: MISS
        "peer-slow": replace(floor, name="peer-slow", turns=floor.turns // 4),  # ~4x: pass
    }
    result = replace(result, configs=[*result.configs, *records.values()])
    checks = dict(report.turn_target_checks(result))
    assert checks["h=20: hybrid turns/s ≥ 0.8× floor-hybrid"] == "1.00× pass"
    assert checks["h=20: hybrid turns/s ≥ 2× seed"].endswith(" pass")
    assert checks["h=20: hybrid turns/s ≥ 2× peer-fast"] == "1.00× MISS"
    assert checks["h=20: hybrid turns/s ≥ 2× peer-slow"].endswith(" pass")
    assert checks["h=40: hybrid turns/s ≥ 2× peer-fast"] == "n/a"  # no hybrid record at h=40
    assert checks["h=20: hybrid hit-read p50 ≤ 1.25× bare LRANGE p50"] == "n/a"  # the copy has no read.hit


def test_closed_model_with_clients(external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--clients N` replays the workload as fast as N clients can, and says so."""
    argv = ["compare", "--configs", "memory", "--clients", "2", "--duration", "0.5", "--servers", "external",
            "--output", str(tmp_path), "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((result_dir(tmp_path) / "result.json").read_text())
    assert data["load_model"] == "closed (2 clients)"
    assert data["configs"][0]["mode"] == "closed"
    assert data["configs"][0]["operations"] > 100


def test_a_missing_seed_baseline_is_skipped_with_a_note(
    external: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without sessionbench/bench/baselines/seed_naive.py the seed column is dropped and a note says why."""
    monkeypatch.setattr(compare, "seed_available", lambda: False)
    argv = ["compare", "--configs", "memory,seed", "--duration", "0.3", "--servers", "external",
            "--output", str(tmp_path), "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipping 'seed'" in captured.err
    data = json.loads((result_dir(tmp_path) / "result.json").read_text())
    assert [c["name"] for c in data["configs"]] == ["memory"]


def test_unknown_configuration_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --configs fails before any server starts, listing what is accepted."""
    assert main(["compare", "--configs", "memroy"]) == 2
    assert "unknown configuration 'memroy'" in capsys.readouterr().err


def _no_servers(*args: object, **kwargs: object) -> None:
    raise AssertionError("servers were started for arguments that should have been refused")


@pytest.mark.parametrize("configs", ["", " ", ",", " , ,"])
def test_empty_configs_is_a_one_line_error_before_any_server_starts(
    configs: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--configs ''` (or only blanks and commas) exits 2 with one line instead of running the defaults."""
    monkeypatch.setattr(compare, "open_servers", _no_servers)
    assert main(["compare", "--configs", configs]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "names no configuration" in lines[0]
    assert captured.out == ""


def test_bad_histories_are_refused_before_any_server_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--closed-turns --histories 20,x` exits 2 with one readable line and starts nothing."""
    monkeypatch.setattr(compare, "open_servers", _no_servers)
    assert main(["compare", "--closed-turns", "--histories", "20,x"]) == 2
    assert "--histories '20,x'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--turn-shaped"], "--turn-shaped applies to --closed-turns"),
        (["--closed-turns", "--turn-shaped", "--configs", "hybrid,seed"], "have no turn-shaped call"),
    ],
)
def test_turn_shaped_needs_closed_turns_and_configurations_that_have_the_call(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--turn-shaped` without `--closed-turns`, or naming a configuration without the call, exits 2 in one line."""
    monkeypatch.setattr(compare, "open_servers", _no_servers)
    assert main(["compare", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]


def test_turn_shaped_closed_turns_make_one_redis_round_trip_fewer_per_turn(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--closed-turns --turn-shaped`: the user's message and the read are one call; the hybrid and floor-hybrid
    make 2 PG + 2 Redis round trips a turn (against 2 + 3), postgres 3 PG, and the calls are hits."""
    argv = ["compare", "--closed-turns", "--turn-shaped", "--configs", "hybrid,postgres,floor-hybrid,floor-asyncpg",
            "--histories", "20", "--turn-seconds", "0.3", "--turn-clients", "4", "--servers", "external",
            "--output", str(tmp_path), "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "read last 20 in one call (turn-shaped)" in out
    assert "append_read p50" in out
    data = json.loads((result_dir(tmp_path) / "result.json").read_text())
    assert data["turns"]["turn_shaped"] is True
    result = ResultFile.from_json(data)
    assert result.turns is not None
    assert result.turns.shaped
    trips = {c["name"]: c["servers"] for c in data["configs"]}
    for name, pg, redis in (("hybrid", 2, 2), ("floor-hybrid", 2, 2), ("postgres", 3, 0), ("floor-asyncpg", 3, 0)):
        assert trips[name]["pg_round_trips_per_turn"] == pytest.approx(pg, abs=0.05), name
        assert trips[name]["redis_round_trips_per_turn"] == pytest.approx(redis, abs=0.05), name
    hybrid = result.find("hybrid", 20)
    assert hybrid is not None
    assert hybrid.counts.get("append_read.hit", 0) == hybrid.counts.get("append_read", -1) > 0
    assert hybrid.counts.get("read", 0) == 0
    assert hybrid.operations >= 2 * hybrid.turns  # a turn-shaped turn is two operations


def test_progress_prints_one_line_per_configuration_when_not_a_terminal(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal, progress is a plan line, one 'k of n' line per configuration with time left, and a total."""
    argv = ["compare", "--configs", "memory,noop", "--duration", "0.3", "--servers", "external",
            "--output", str(tmp_path), "--no-html"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("compare: 2 runs of 0.3 s each")
    assert lines[1].startswith("[1/2] memory done in ")
    assert "elapsed 0:0" in lines[1]
    assert "left" in lines[1]
    assert lines[2].startswith("[2/2] noop done in ")
    assert lines[3].startswith("compare: 2 of 2 runs in ")
    assert len(lines) == 4


def test_progress_line_is_rewritten_in_place_on_a_terminal() -> None:
    """On a terminal the progress is one line, rewritten with carriage returns, ended by one newline."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = compare.Progress(2, 1.0, stream=stream)
    progress.begin()
    update = progress.start("memory")
    update(0.5)
    progress.finish()
    progress.start("postgres")
    progress.finish()
    progress.end()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert "[1/2] memory 0/1 s" in text
    assert "[2/2] postgres done in" in text
    assert text.rstrip("\n").split("\r")[-1].startswith("compare: 2 of 2 runs in ")


def test_disabled_progress_prints_nothing() -> None:
    """--no-progress: the progress object writes nothing at all."""
    import io

    stream = io.StringIO()
    progress = compare.Progress(1, 1.0, enabled=False, stream=stream)
    progress.begin()
    progress.start("memory")(0.5)
    progress.finish()
    progress.end()
    assert stream.getvalue() == ""


def test_a_v1_result_file_still_renders_with_the_new_table(capsys: pytest.CaptureFixture[str]) -> None:
    """A result.json written before the v2 format renders: named reference, derived overheads, a conclusion."""
    assert main(["report", str(V1_RESULT)]) == 0
    out = capsys.readouterr().out
    assert "reference: seed design" in out
    assert "read p50 ÷ its floor" in out
    words = " ".join(out.split())
    assert "In this run:" in words
    assert "Caveat: servers on loopback" in words
    result = ResultFile.load(V1_RESULT)
    postgres = result.find("postgres")
    assert postgres is not None
    assert set(postgres.overhead) == {"read", "append"}
    assert postgres.overhead["read"].floor == "floor-asyncpg"


def test_result_records_round_trip_through_json_without_loss() -> None:
    """ResultFile.from_json(to_json()) gives an equal object, and writing it again gives the same JSON."""
    result = ResultFile.load(V1_RESULT)
    data = json.loads(json.dumps(result.to_json()))
    again = ResultFile.from_json(data)
    assert again == result
    assert json.loads(json.dumps(again.to_json())) == data
    assert data["format"] == "sessionbench-result v2"


def test_report_of_a_file_that_is_not_a_result_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report garbage.tsv` exits 2 with one line that names the file, not a bare decoder message."""
    garbage = tmp_path / "garbage.tsv"
    garbage.write_text("a\tb\n1\t2\n")
    assert main(["report", str(garbage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(garbage) in err
    other = tmp_path / "other.json"
    other.write_text('{"format": "something else"}')
    assert main(["report", str(other)]) == 2
    assert "not a sessionbench result" in capsys.readouterr().err


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

    from sessionbench.bench.harness.workload import Workload

    figures = asyncio.run(compare.generator_check(Workload(duration=1.5), events=20_000))
    assert figures["capacity_operations"] == 20_000
    assert figures["capacity_ops_per_cpu_s"] > 20 * figures["workload_ops_per_s"] > 0
    assert figures["workload_cpu_cores"] < 0.5


def test_html_draws_no_plot_of_identical_throughput_lines(tmp_path: Path) -> None:
    """When every column completed the offered load, the HTML replaces throughput-over-time by the read tail."""
    result = ResultFile.load(V1_RESULT)
    assert report.same_throughput(result.configs)
    html = report.write_html(result, tmp_path / "same.html").read_text()
    assert "throughput over time" not in html
    assert "Read tail latency over time" in html
    slow = result.configs[2]
    slow.series = [replace(s, ops={k: v // 2 for k, v in s.ops.items()}) for s in slow.series]
    assert not report.same_throughput(result.configs)
    html = report.write_html(result, tmp_path / "differ.html").read_text()
    assert "throughput over time" in html


def test_every_metric_of_the_registry_is_defined_once_with_a_unit_and_a_direction() -> None:
    """Registry names are unique, every unit has a format, and the gated metrics carry repeated samples."""
    from sessionbench.bench.harness.metrics import FORMATS, REGISTRY

    names = [m.name for m in REGISTRY]
    assert len(names) == len(set(names))
    assert {m.unit for m in REGISTRY} <= set(FORMATS)
    assert {m.better for m in REGISTRY} <= {"lower", "higher", None}
    for m in REGISTRY:
        assert (m.gate is None) == (m.samples is None), m.name
    rows = [(m.label, kind, mode) for m in REGISTRY for kind in m.kinds for mode in m.modes or ("any",)]
    assert len(rows) == len(set(rows))  # no row label twice in one kind of table


def test_help_is_plain_text() -> None:
    """No subcommand's --help shows Sphinx roles, double backticks or ** emphasis (their
    descriptions are module docstrings); overhead is a subcommand."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"compare", "report", "regress", "overhead", "faults", "bounds", "trace", "cleanup"} <= set(sub.choices)
    for command, parser in sub.choices.items():
        text = parser.format_help()
        for markup in ("``", "**", ":class:", ":mod:", ":func:", ":data:", ":meth:"):
            assert markup not in text, (command, markup)
