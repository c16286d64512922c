"""The Locust load tests: real runs against the HTTP service on the session's servers.

Locust monkey-patches the standard library with gevent when it is imported, so it is
never imported here: every run is a ``locust`` subprocess, and the pure helper
modules in ``loadtests/`` (``chat_model``, ``thresholds``) are loaded from their files.
Every server binds 127.0.0.1; every run is bounded in users and seconds.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from bench.servers import Servers, free_port
from bench.service import loadtest

LOADTESTS = Path(__file__).resolve().parents[1] / "loadtests"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"loadtests_{name}", LOADTESTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[loadtest.ServiceProcess]:
    """The hybrid service (``sessionbench serve``) on 127.0.0.1 against the session's servers."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    with loadtest.ServiceProcess("hybrid", database_url=servers.database_url, redis_url=servers.redis_url,
                                 log_path=log) as svc:  # fmt: skip
        yield svc


def _locust(host: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOADTESTS / "locustfile.py"), "--headless", "--host", host,
           "--only-summary", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- pure parts


def test_fallback_defaults_equal_workload() -> None:
    """The locustfile's fallback copy of the workload defaults equals Workload's, field for field."""
    from bench.harness.workload import Workload

    chat_model = _load("chat_model")
    expected = {k: (type(v), v) for k, v in Workload().to_dict().items()}
    assert {k: (type(v), v) for k, v in chat_model.FALLBACK_DEFAULTS.items()} == expected
    defaults, source = chat_model.workload_defaults()
    assert source == "bench.harness.workload.Workload"
    assert defaults == Workload().to_dict()


def test_thresholds_file_and_options_decide_pass_and_fail(tmp_path: Path) -> None:
    """Thresholds from a TOML file and from options fail exactly the figures beyond their limits, naming them."""
    th = _load("thresholds")
    path = tmp_path / "t.toml"
    path.write_text('max_fail_ratio = 0.01\nmin_hit_ratio = 0.9\n[p95_ms]\n"messages.read" = 50\n"nope" = 1\n')
    checks = [*th.load_file(path), *th.parse_percentile_option("p99", "*=100"), th.Threshold("min_rps", 5.0)]

    def group(count: int, p95: float, p99: float) -> object:
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
    )
    assert loadtest.parse_service_metrics(text).hit_ratio == pytest.approx(0.75)


def test_shapes_follow_their_schedules() -> None:
    """Each load shape's user count over time (ramp, steps, spike, soak) and its end are as documented."""
    code = (
        "import json, shapes\n"
        "r = shapes.build('ramp', peak=10, ramp_up=10, ramp_down=5, duration=40)\n"
        "s = shapes.build('steps', peak=10, step_users=3, step_time=5)\n"
        "k = shapes.build('spike', peak=50, spike_base=5, spike_at=10, spike_length=5)\n"
        "o = shapes.build('soak', peak=4)\n"
        "print(json.dumps({'ramp': [r.users_at(t) for t in (0, 5, 10, 30, 37, 39.9)],\n"
        "  'steps': [s.users_at(t) for t in (0, 5, 10, 15, 99)], 'steps_end': s.duration,\n"
        "  'spike': [k.users_at(t) for t in (0, 9.9, 10, 14.9, 15)], 'soak_end': o.duration}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=LOADTESTS, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {
        "ramp": [1, 5, 10, 10, 6, 1],
        "steps": [3, 6, 9, 10, 10],
        "steps_end": 25.0,
        "spike": [5, 5, 50, 50, 5],
        "soak_end": 3630.0,
    }


# --------------------------------------------------------------------------- real runs


def test_headless_run_against_service(service: loadtest.ServiceProcess, tmp_path: Path) -> None:
    """A short headless run makes requests without failures, counts X-Cache outside Aggregated and exports metrics."""
    summary = tmp_path / "summary.json"
    port = free_port()
    cmd = [sys.executable, "-m", "locust", "-f", str(LOADTESTS / "locustfile.py"), "--headless",
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


def test_impossible_threshold_fails_the_run(service: loadtest.ServiceProcess) -> None:
    """A threshold no run can meet makes Locust exit with code 3 and a line naming the failed threshold."""
    done = _locust(service.url, "-u", "2", "-r", "2", "-t", "3s", "--min-rps", "1000000", "--p95", "messages.read=0")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "threshold FAILED: request rate" in done.stderr
    assert "< 1e+06 req/s" in done.stderr


def test_locustfile_runs_without_the_project(service: loadtest.ServiceProcess) -> None:
    """Without ``bench`` and ``store`` importable (staging: only Locust) the locustfile runs on fallback defaults."""
    code = (
        "import sys\n"
        "sys.modules['bench'] = None; sys.modules['store'] = None  # imports of them now fail\n"
        "from locust.main import main\n"
        f"sys.argv = ['locust', '-f', {str(LOADTESTS / 'locustfile.py')!r}, '--headless', '--only-summary',\n"
        f"            '--host', {service.url!r}, '-u', '2', '-r', '2', '-t', '2s', '--max-fail-ratio', '0']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "workload defaults from fallback copy of bench.harness.workload defaults" in done.stderr
    assert "threshold ok: failure ratio 0.0000 <= 0" in done.stderr


def test_distributed_master_and_worker_complete(service: loadtest.ServiceProcess, tmp_path: Path) -> None:
    """One master and one worker on 127.0.0.1 run the scenario to the end and the master sees the worker's reads."""
    port, summary = free_port(), tmp_path / "summary.json"
    master_cmd = [sys.executable, "-m", "locust", "-f", str(LOADTESTS / "locustfile.py"), "--headless", "--master",
                  "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "1",
                  "--expect-workers-max-wait", "30", "--host", service.url, "--only-summary", "-u", "3", "-r", "3",
                  "-t", "4s", "--summary-file", str(summary)]  # fmt: skip
    worker_cmd = [sys.executable, "-m", "locust", "-f", str(LOADTESTS / "locustfile.py"), "--worker",
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
    from bench.cli import main

    code = main(["loadtest", "--compare", "memory,postgres,hybrid", "-u", "3", "-t", "3", "--out", str(tmp_path)])
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
