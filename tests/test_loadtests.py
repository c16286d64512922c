"""The Locust load tests: the shipped files, their workload model, and real runs against the HTTP service.

Locust monkey-patches the standard library with gevent when it is imported, so it is
never imported here: every run is a ``locust`` subprocess, and only the package's pure
modules (``chat_model``, ``fallback``, ``groups``, ``thresholds``) are imported.
Every server binds 127.0.0.1; every run is bounded in users and seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionbench import loadtests
from sessionbench.bench.cli import build_parser, main
from sessionbench.bench.harness import runner, workload
from sessionbench.bench.servers import Servers, free_port
from sessionbench.bench.service import loadtest
from sessionbench.bench.service.process import ServiceProcess
from sessionbench.loadtests import chat_model, fallback
from sessionbench.loadtests import thresholds as th

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = loadtest.locustfile()  # what `sessionbench loadtest --locustfile` prints

DRAWS = ("turns", "resume_probability", "think_time", "response_time", "resume_gap", "user_bytes", "assistant_bytes")
#: Workloads whose draws the fallback must reproduce: the defaults, no waits at all, and heavy tails with clipping.
DRAW_WORKLOADS: tuple[dict[str, Any], ...] = (
    {},
    {"think_time_median": 0.0, "response_time_median": 0.0, "resume_gap_median": 0.0},
    {"turns_tail": 0.7, "turns_max": 5, "popularity_skew": 0.9, "resume_probability": 1.0,
     "user_bytes_sigma": 3.0, "assistant_bytes_median": 40, "max_message_bytes": 50},
)  # fmt: skip


@pytest.fixture(scope="module")
def service(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The hybrid service (``sessionbench serve``) on 127.0.0.1 against the session's servers."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    with ServiceProcess("hybrid", database_url=servers.database_url, redis_url=servers.redis_url,
                                 log_path=log) as svc:  # fmt: skip
        yield svc


def _locust(host: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "--only-summary", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def _draw_sequence(draws: Any, seed: int, count: int = 700) -> tuple[list[tuple[str, float]], object]:
    """Every draw in turn from one seeded generator: the values and the generator's final state."""
    rng = random.Random(seed)
    values = [(name, float(getattr(draws, name)(rng))) for i in range(count) for name in (DRAWS[i % len(DRAWS)],)]
    return values, rng.getstate()


def _outcome(cls: Any, **fields: Any) -> tuple[str, Any]:
    try:
        return "ok", cls(**fields).to_dict()
    except ValueError as exc:
        return "rejected", str(exc)


# --------------------------------------------------------------------------- the model: one home, one checked copy


def test_locust_user_runs_the_project_model() -> None:
    """With the project installed, chat_model's Workload, draws and message text are bench's own, not the copy."""
    assert chat_model.SOURCE == "sessionbench.bench.harness.workload"
    assert chat_model.Workload is workload.Workload
    w = workload.Workload(think_time_median=12.0, time_compression=60.0)
    model = chat_model.ChatModel(w, think_scale=2.0)
    mine, theirs = random.Random(7), random.Random(7)
    draws = workload.Draws(w)
    for _ in range(50):
        assert model.turns(mine) == draws.turns(theirs)
        assert model.think_time(mine) == draws.think_time(theirs) / 60.0 * 2.0
        assert model.user_bytes(mine) == draws.user_bytes(theirs)
    assert chat_model.text(random.Random(3), 500) == runner.payload(500, random.Random(3).getrandbits(32))
    term = chat_model.search_term(random.Random(5))
    assert f" {term} " in runner.CORPUS


def test_fallback_workload_has_the_same_fields_types_and_defaults() -> None:
    """The fallback Workload has Workload's fields in order, with the same annotations and default values."""

    def spec(cls: Any) -> list[tuple[str, Any, Any]]:
        return [(f.name, f.type, f.default) for f in dataclasses.fields(cls)]

    assert spec(fallback.Workload) == spec(workload.Workload)
    expected = {k: (type(v), v) for k, v in workload.Workload().to_dict().items()}
    assert {k: (type(v), v) for k, v in fallback.Workload().to_dict().items()} == expected


def test_fallback_workload_has_the_same_range_checks() -> None:
    """Every field at boundary values is accepted or rejected alike, with the same message, by the copy and Workload."""
    for f in dataclasses.fields(workload.Workload):
        kind: Any = type(f.default)
        for raw in (-1, 0, 0.5, 1, 999, 1000, 1001):
            value = kind(raw)
            assert _outcome(fallback.Workload, **{f.name: value}) == _outcome(workload.Workload, **{f.name: value}), (
                f.name,
                value,
            )


@pytest.mark.parametrize("overrides", DRAW_WORKLOADS, ids=("defaults", "no-waits", "heavy-tails"))
def test_fallback_draws_the_same_sequence(overrides: dict[str, Any]) -> None:
    """From the same seed the copy draws the same turns, resume chances, waits and sizes as Draws, consuming alike."""
    for seed in (0, 1, 12345):
        real = _draw_sequence(workload.Draws(workload.Workload(**overrides)), seed)
        copy = _draw_sequence(fallback.Draws(fallback.Workload(**overrides)), seed)
        assert copy == real
    assert len({value for _, value in real[0]}) > 100  # the sequence really varies


def test_fallback_payload_is_the_runners_message_text() -> None:
    """The copy's corpus and payload() give the runner's message text for every size and salt, edges included."""
    assert fallback.CORPUS == runner.CORPUS
    for size in (0, 1, 2, 200, 800, 32_768, len(runner.CORPUS), 10**6):
        for salt in (0, 1, 7, 2**31 - 1, 2**32 + 5):
            assert fallback.payload(size, salt) == runner.payload(size, salt)


# --------------------------------------------------------------------------- pure parts


def test_thresholds_file_and_options_decide_pass_and_fail(tmp_path: Path) -> None:
    """Thresholds from a TOML file and from options fail exactly the figures beyond their limits, naming them."""
    path = tmp_path / "t.toml"
    path.write_text('max_fail_ratio = 0.01\nmin_hit_ratio = 0.9\n[p95_ms]\n"messages.read" = 50\n"nope" = 1\n')
    checks = [*th.load_file(path), *th.parse_percentile_option("p99", "*=100"), th.Threshold("min_rps", 5.0)]

    def group(count: int, p95: float, p99: float) -> th.GroupStats:
        return th.GroupStats(count, 0, 1.0, {"p50": 1.0, "p95": p95, "p99": p99})

    snap = th.Snapshot(
        groups={"messages.read": group(100, 40.0, 120.0), "search": group(3, 10.0, 20.0)},
        total=th.GroupStats(103, 2, 10.0, {"p95": 40.0, "p99": 120.0}),
        cache={"hit": 80, "miss": 20},
    )
    failed = sorted(o.line for o in th.evaluate(checks, snap) if not o.ok)
    assert failed == [
        "X-Cache hit ratio 0.800 < 0.9",
        "failure ratio 0.0194 > 0.01",
        "p95 nope: no requests in this group (groups seen: messages.read, search)",
        "p99 messages.read 120 ms > 100 ms",
    ]
    with pytest.raises(th.ThresholdError, match="unknown threshold 'p97_ms'"):
        th.from_mapping({"p97_ms": {"*": 1}}, source="x")


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    """Service latency percentiles are interpolated inside cumulative buckets like PromQL's histogram_quantile."""
    buckets = [(0.001, 0.0), (0.005, 50.0), (0.01, 90.0), (float("inf"), 100.0)]
    assert loadtest.histogram_quantile(0.5, buckets) == pytest.approx(0.005)
    assert loadtest.histogram_quantile(0.7, buckets) == pytest.approx(0.0075)
    assert loadtest.histogram_quantile(0.99, buckets) == pytest.approx(0.01)  # +Inf: the highest finite bound
    text = (
        'sessionstore_cache_requests_total{backend="hybrid",result="hit"} 30\n'
        'sessionstore_cache_requests_total{backend="hybrid",result="miss"} 10\n'
        'sessionstore_cache_requests_total{backend="hybrid",result="error"} 50\n'
    )
    assert loadtest.parse_service_metrics(text).hit_ratio == pytest.approx(0.75)


def test_shapes_follow_their_schedules() -> None:
    """Each load shape's user count over time (ramp, steps, spike, soak) and its end are as documented."""
    code = (
        "import json\n"
        "from sessionbench.loadtests import shapes\n"
        "r = shapes.build('ramp', peak=10, ramp_up=10, ramp_down=5, duration=40)\n"
        "s = shapes.build('steps', peak=10, step_users=3, step_time=5)\n"
        "k = shapes.build('spike', peak=50, spike_base=5, spike_at=10, spike_length=5)\n"
        "o = shapes.build('soak', peak=4)\n"
        "print(json.dumps({'ramp': [r.users_at(t) for t in (0, 5, 10, 30, 37, 39.9)],\n"
        "  'steps': [s.users_at(t) for t in (0, 5, 10, 15, 99)], 'steps_end': s.duration,\n"
        "  'spike': [k.users_at(t) for t in (0, 9.9, 10, 14.9, 15)], 'soak_end': o.duration}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {
        "ramp": [1, 5, 10, 10, 6, 1],
        "steps": [3, 6, 9, 10, 10],
        "steps_end": 25.0,
        "spike": [5, 5, 50, 50, 5],
        "soak_end": 3630.0,
    }


# --------------------------------------------------------------------------- the command


def test_locustfile_option_prints_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    """``loadtest --locustfile`` prints the locustfile of the installed package loadtests and exits 0."""
    assert main(["loadtest", "--locustfile"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == Path(loadtests.__file__).resolve().parent / "locustfile.py"
    assert printed == LOCUSTFILE
    assert printed.is_file()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15", 15.0), ("2.5", 2.5), ("20s", 20.0), ("2m", 120.0), ("1h", 3600.0), ("1h30m", 5400.0), ("1m5s", 65.0)],
)
def test_duration_takes_seconds_or_locusts_syntax(text: str, seconds: float) -> None:
    """``-t`` reads plain seconds and Locust's h/m/s form to the same seconds Locust would."""
    assert loadtest.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "m", "1m30", "30s1m", "1.5m", "1 h"])
def test_bad_duration_is_a_one_line_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A -t that is neither seconds nor Locust's form exits 2 with one line naming the option, before anything runs."""
    assert main(["loadtest", "-t", text, "--out", "/nonexistent/never-created"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"sessionbench: error: -t/--duration: {text!r} is not a duration")


def test_duration_beyond_the_bound_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    """A Locust-form duration above the 900 s bound is refused like a plain one."""
    assert main(["loadtest", "-t", "20m", "--out", "/nonexistent/never-created"]) == 2
    assert "--duration must be between 1 and 900 seconds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "message"),
    [("time_compression=0", "Workload.time_compression is out of range: 0.0"), ("nope=1", "--workload: 'nope=1'")],
)
def test_bad_workload_is_a_one_line_error(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --workload the locustfile would refuse exits 2 with one line from the command itself, before any server."""
    assert main(["loadtest", "--workload", spec, "--out", "/nonexistent/never-created"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"sessionbench: error: {message}")


def test_help_is_plain_text_with_units() -> None:
    """loadtest --help documents every option in plain text (no Sphinx markup) and gives -t's units."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["loadtest"]
    assert [a.option_strings for a in parser._actions if a.option_strings and not a.help] == []
    text = parser.format_help()
    for markup in ("``", ":mod:", ":meth:", ":func:", ":class:"):
        assert markup not in text
    assert "-t S|XhYmZs" in text
    assert "--locustfile" in text
    assert "20s, 2m, 1h30m" in " ".join(text.split())


# --------------------------------------------------------------------------- real runs


def test_headless_run_against_service(service: ServiceProcess, tmp_path: Path) -> None:
    """A short headless run makes requests without failures, counts X-Cache outside Aggregated and exports metrics."""
    summary = tmp_path / "summary.json"
    port = free_port()
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "--host", service.url, "--only-summary", "-u", "5", "-r", "5", "-t", "8s", "--summary-file", str(summary),
           "--prometheus-port", str(port), "--max-fail-ratio", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    scrape = ""
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and "locust_cache_hit_ratio" not in scrape:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    scrape = resp.read().decode()
            except OSError:
                continue
        output, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert "workload model from sessionbench.bench.harness.workload" in output
    data = json.loads(summary.read_text())
    assert data["total"]["count"] > 0
    assert data["total"]["failures"] == 0
    assert data["total"]["count"] == sum(g["count"] for g in data["groups"].values())  # X-Cache rows not counted
    assert data["cache"].get("hit", 0) > 0
    assert 0 < data["hit_ratio"] <= 1
    assert "client X-Cache hit ratio" in output
    assert "threshold ok: failure ratio 0.0000 <= 0" in output
    for name in ('locust_requests_total{method="POST",name="messages.append_user"}', "locust_users ",
                 'locust_cache_requests_total{result="hit"}', "locust_cache_hit_ratio ",
                 'locust_response_time_seconds{method="GET",name="messages.read",quantile="0.95"}'):  # fmt: skip
        assert name in scrape


def test_turn_shaped_run_reads_with_the_append(service: ServiceProcess, tmp_path: Path) -> None:
    """``--turn-shaped``: the user's message and the read are one request (``?window=``), its X-Cache
    is counted, and no separate read or user append is made; no failures."""
    summary = tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", service.url,
           "--only-summary", "-u", "4", "-r", "4", "-t", "5s", "--summary-file", str(summary),
           "--max-fail-ratio", "0", "--turn-shaped"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(summary.read_text())
    assert data["total"]["failures"] == 0
    assert data["groups"]["messages.append_read"]["count"] > 0
    assert "messages.read" not in data["groups"]
    assert "messages.append_user" not in data["groups"]
    assert data["groups"]["messages.append_assistant"]["count"] > 0
    assert data["cache"].get("hit", 0) > 0


def test_impossible_threshold_fails_the_run(service: ServiceProcess) -> None:
    """A threshold no run can meet makes Locust exit with code 3 and a line naming the failed threshold."""
    done = _locust(service.url, "-u", "2", "-r", "2", "-t", "3s", "--min-rps", "1000000", "--p95", "messages.read=0")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "threshold FAILED: request rate" in done.stderr
    assert "< 1e+06 req/s" in done.stderr


def test_bad_workload_override_stops_before_any_user(service: ServiceProcess) -> None:
    """A --workload value out of Workload's range ends Locust at start-up with the field named, no request made."""
    done = _locust(service.url, "-u", "1", "-t", "3s", "--workload", "time_compression=0")
    assert done.returncode != 0
    assert "sessionbench: Workload.time_compression is out of range: 0.0" in done.stderr
    assert "Ramping to" not in done.stderr


def test_locustfile_runs_on_a_bare_locust_machine(service: ServiceProcess, tmp_path: Path) -> None:
    """The folder copied alone, with sessionbench not importable, runs on the fallback model without failures."""
    copy = tmp_path / "loadtests"
    shutil.copytree(LOCUSTFILE.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys\n"
        "sys.modules['sessionbench'] = None  # imports of it now fail\n"
        "from locust.main import main\n"
        f"sys.argv = ['locust', '-f', 'loadtests/locustfile.py', '--headless', '--only-summary',\n"
        f"            '--host', {service.url!r}, '-u', '2', '-r', '2', '-t', '3s', '--max-fail-ratio', '0',\n"
        "            '--search-probability', '1']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "workload model from loadtests.fallback (sessionbench is not installed)" in done.stderr
    assert "threshold ok: failure ratio 0.0000 <= 0" in done.stderr
    assert " search " in done.stderr  # the search group ran, on terms drawn from the copied corpus


def test_distributed_master_and_worker_complete(service: ServiceProcess, tmp_path: Path) -> None:
    """One master and one worker on 127.0.0.1 run the scenario to the end and the master sees the worker's reads."""
    port, summary = free_port(), tmp_path / "summary.json"
    master_cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--master",
                  "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "1",
                  "--expect-workers-max-wait", "30", "--host", service.url, "--only-summary", "-u", "3", "-r", "3",
                  "-t", "4s", "--summary-file", str(summary)]  # fmt: skip
    worker_cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
                  "--master-host", "127.0.0.1", "--master-port", str(port)]  # fmt: skip
    master = subprocess.Popen(master_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = subprocess.Popen(worker_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        master_out, _ = master.communicate(timeout=60)
        worker_out, _ = worker.communicate(timeout=30)
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert master.returncode == 0, master_out[-3000:]
    assert worker.returncode == 0, worker_out[-3000:]
    assert "1 workers connected" in master_out
    data = json.loads(summary.read_text())
    assert data["total"]["count"] > 0
    assert data["total"]["failures"] == 0
    assert sum(data["cache"].values()) > 0


@pytest.mark.slow
def test_compare_runs_each_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``loadtest --compare`` runs each configuration on fresh state and prints one table with both hit ratios."""
    code = main(["loadtest", "--compare", "memory,postgres,hybrid", "-u", "3", "-t", "3s", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert loadtest.MEMORY_NOTE in out
    header = next(line for line in out.splitlines() if line.split() == ["memory", "postgres", "hybrid"])
    assert header
    rows = {line[: line.index("  ")].strip(): line.split() for line in out.splitlines() if "hit ratio:" in line}
    assert rows["hit ratio: client X-Cache"][-3:][:2] == ["1.000", "0.000"]  # memory: all hits, postgres: bypass
    assert rows["hit ratio: service /metrics"][-1] != "n/a"
    saved = json.loads((tmp_path / "loadtest.json").read_text())
    assert [r["backend"] for r in saved["results"]] == ["memory", "postgres", "hybrid"]
    assert all(r["client"]["total"]["failures"] == 0 and r["client"]["total"]["count"] > 0 for r in saved["results"])
