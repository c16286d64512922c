"""Dashboards and Prometheus rules, checked for real.

* The committed dashboard JSON is what ``dashboards/build.py`` generates.
* ``promtool check config`` and ``promtool test rules`` pass.
* Every PromQL expression of every panel, variable and rule is evaluated by a real
  Prometheus (Debian's ``prometheus`` package) that scraped two real service processes
  (``sessionbench serve``, one with a healthy Redis, one whose Redis is down) on
  127.0.0.1 during a short, bounded HTTP load: each ``sessionstore_*`` expression must
  return data.  Expressions over exporters are recognised by their metric prefix: they
  are validated when the exporter runs here (redis_exporter and postgres_exporter when
  their binaries are installed, on the same servers; a short headless Locust with its
  Prometheus exporter when ``sessionbench/loadtests/`` has one) and listed in a skip reason otherwise.
* Every SQL panel of the conversation-analytics dashboard runs on the real schema.

Without the Prometheus binaries the real-scrape tests are skipped with a reason,
except under ``CI=true`` where that is a failure (``.ci/run`` installs them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from sessionbench.bench.servers import Servers, free_port

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "dashboards" / "grafana"
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
PROVISIONED_DATASOURCES = ROOT / "dashboards" / "provisioning" / "datasources" / "datasources.yml"

#: metric-name prefix -> the exporter that emits it
EXPORTERS: dict[str, str] = {
    "redis_": "redis_exporter",
    "pg_": "postgres_exporter",
    "locust_": "locust",
}
#: exporter -> binary names (upstream's, then Debian's packages prometheus-*-exporter)
EXPORTER_BINARIES: dict[str, tuple[str, ...]] = {
    "redis_exporter": ("redis_exporter", "prometheus-redis-exporter"),
    "postgres_exporter": ("postgres_exporter", "prometheus-postgres-exporter"),
}
#: Grafana's built-in variables, as the test evaluates them (data spans well under a minute)
BUILTINS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "5s"}
#: values of the analytics dashboard's custom variables (their defaults)
SQL_VARIABLES = {"$retention": "30 days", "$resume_gap": "30 minutes"}
SCRAPE_INTERVAL = 1.0
CI = os.environ.get("CI", "").lower() == "true"


# ----------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expr:
    """One PromQL expression and where it is used."""

    where: str
    promql: str
    alert: bool = False

    @property
    def exporter(self) -> str | None:
        """The exporter the expression needs, from the prefix of the metric names it reads."""
        names = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", _strip_strings(self.promql))
        for prefix, exporter in EXPORTERS.items():
            if any(name.startswith(prefix) for name in names):
                return exporter
        return None

    def query(self) -> str:
        """The expression as Prometheus evaluates it: variables filled in, alert comparisons as ``bool``.

        An alert's comparison filters the series out while things are healthy; with
        ``bool`` it keeps every input series (0 or 1), so "returns data" means "its
        inputs exist".  ``label_values(selector, label)`` (a Grafana variable query)
        becomes ``group by (label) (selector)``.
        """
        text = self.promql
        for name, value in BUILTINS.items():
            text = text.replace(name, value)
        text = re.sub(r"\$\w+", ".*", text)  # multi-value variables set to All (allValue ".*")
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", text, re.DOTALL)
        if match:
            text = f"group by ({match.group(2)}) ({match.group(1)})"
        return _comparisons_as_bool(text) if self.alert else text


def _strip_strings(promql: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', promql)


def _comparisons_as_bool(promql: str) -> str:
    """Add ``bool`` to every comparison outside label matchers and strings."""
    out: list[str] = []
    depth, i, quote = 0, 0, ""
    comparison = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")
    while i < len(promql):
        char = promql[i]
        if quote:
            out.append(char)
            if char == "\\":
                out.append(promql[i + 1])
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
            out.append(char)
        elif char in "{}":
            depth += 1 if char == "{" else -1
            out.append(char)
        elif depth == 0 and (found := comparison.match(promql, i)):
            out.append(f"{found.group(1)} bool")
            i = found.end()
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def dashboard_expressions() -> list[Expr]:
    """Every Prometheus target and Prometheus variable query of the committed dashboards."""
    found = []
    for name, board in _dashboards().items():
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append(Expr(f"{name}: {panel['title']} [{target['refId']}]", target["expr"]))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query" and variable["datasource"]["type"] == "prometheus":
                found.append(Expr(f"{name}: variable ${variable['name']}", str(variable["query"])))
    return found


def rules() -> list[dict[str, Any]]:
    """Every rule of dashboards/prometheus/rules/*.yml, with ``file`` added."""
    found: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            found.extend({**rule, "file": path.name} for rule in group["rules"])
    return found


def rule_expressions() -> list[Expr]:
    return [
        Expr(f"{rule['file']}: {rule.get('alert') or rule['record']}", rule["expr"], alert="alert" in rule)
        for rule in rules()
    ]


def sql_queries() -> list[tuple[str, str]]:
    """(where, rawSql) of every PostgreSQL target."""
    return [
        (f"{name}: {panel['title']}", target["rawSql"])
        for name, board in _dashboards().items()
        for panel in _panels(board["panels"])
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


# ----------------------------------------------------------------------------- static checks


def test_committed_dashboards_are_generated_from_build_py() -> None:
    """dashboards/grafana/*.json equals what dashboards/build.py generates now (run `python -m dashboards.build`)."""
    from dashboards.build import render_all

    generated = render_all()
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARD_DIR.glob("*.json")}
    assert set(committed) == set(generated)
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, f"stale: {stale}; run `python -m dashboards.build`"


def test_dashboards_use_only_provisioned_datasources_and_have_a_backend_variable() -> None:
    """Every panel and target names a provisioned datasource uid; the Prometheus dashboards compare backends."""
    provisioned = {d["uid"]: d["type"] for d in yaml.safe_load(PROVISIONED_DATASOURCES.read_text())["datasources"]}
    for name, board in _dashboards().items():
        for panel in _panels(board["panels"]):
            if panel["type"] == "row":
                continue
            assert panel.get("description"), f"{name}: {panel['title']} has no description"
            for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert provisioned.get(ref["uid"]) == ref["type"], f"{name}: {panel['title']}: {ref}"
        variables = {v["name"] for v in board["templating"]["list"]}
        if any("expr" in t for p in _panels(board["panels"]) for t in p.get("targets", [])):
            assert "backend" in variables, name
    assert {name for name, _ in (q.split(":", 1) for q, _ in sql_queries())} == {"conversations.json"}


def test_every_store_metric_the_dashboards_read_is_one_the_store_declares() -> None:
    """Dashboards and rules read only the sessionstore_* names the store declares, or recorded series."""
    declared = set(
        re.findall(
            r'"(sessionstore_\w+)"', (ROOT / "sessionbench" / "store" / "instrumentation" / "metrics.py").read_text()
        )
    )
    assert declared, "sessionbench/store/instrumentation/metrics.py declares no sessionstore_* metric"
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    suffixes = ("_bucket", "_count", "_sum")
    for expr in dashboard_expressions() + rule_expressions():
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", _strip_strings(expr.promql)):
            if ":" in name:
                assert name in recorded, f"{expr.where}: {name} is not a recording rule"
            elif name.startswith("sessionstore_"):
                base = next((name.removesuffix(s) for s in suffixes if name.endswith(s)), name)
                assert base in declared, (
                    f"{expr.where}: {name} is not declared in sessionbench/store/instrumentation/metrics.py"
                )


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install Debian's prometheus package (.ci/run does)"
        if CI:
            pytest.fail(message + " -- required under CI=true")
        pytest.skip(message)
    return path


def test_promtool_check_config_accepts_the_compose_configuration() -> None:
    """`promtool check config` accepts dashboards/prometheus/prometheus.yml and the rule files it loads."""
    result = subprocess.run(
        [_binary("promtool"), "check", "config", "prometheus.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires on its bad series and not on the healthy one beside it."""
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    result = subprocess.run(
        [_binary("promtool"), "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for path in tests
        for case in yaml.safe_load(path.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}, "every alert needs a unit test"


# ----------------------------------------------------------------------------- the real scrape


@dataclass
class Scrape:
    """A running Prometheus that scraped the service(s) (and Locust, if present).

    Once the load is over, ``at`` pins the evaluation time: every test queries the same
    instant, whatever ran or stopped since, and answers are cached.
    """

    url: str
    exporters: set[str] = field(default_factory=set)
    at: float | None = None
    _answers: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def query(self, promql: str) -> tuple[str, list[dict[str, Any]]]:
        """(error, result) of an instant query at ``at`` (now while it is None); error is '' on success."""
        if promql in self._answers:
            return self._answers[promql]
        params: dict[str, str | float] = {"query": promql}
        if self.at is not None:
            params["time"] = self.at
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        if body["status"] != "success":
            answer: tuple[str, list[dict[str, Any]]] = (f"{body.get('errorType')}: {body.get('error')}", [])
        elif body["data"]["resultType"] == "scalar":
            answer = ("", [{"metric": {}, "value": body["data"]["result"]}])
        else:
            answer = ("", list(body["data"]["result"]))
        if self.at is not None:
            self._answers[promql] = answer
        return answer

    def problem(self, expr: Expr) -> str | None:
        """Why ``expr`` does not return data (None when it does: a series with a finite value)."""
        error, result = self.query(expr.query())
        if error:
            return f"{expr.where}: {error}\n    {expr.query()}"
        if not result:
            return f"{expr.where}: no data\n    {expr.query()}"
        values = [float(r["value"][1]) for r in result]
        if not any(math.isfinite(v) for v in values):
            return f"{expr.where}: only NaN/Inf ({len(values)} series)\n    {expr.query()}"
        return None


def _get_json(url: str) -> Any:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


def _wait(check: Any, what: str, timeout: float, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                log = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}:\n{log}")
        with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
            if check():
                return
        time.sleep(0.2)
    tails = {n: (logs / f"{n}.log").read_text(errors="replace")[-1500:] for n in procs}
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; logs: {tails}")


def _require_service_modules() -> None:
    missing = [
        m
        for m in ("sessionbench.store.http.app", "sessionbench.bench.service.serve")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        pytest.fail(f"the real-scrape test needs the HTTP service; missing modules: {missing}")


def _locust_present() -> str | None:
    """None when a Locust Prometheus exporter is available here, else why not."""
    if not (ROOT / "sessionbench" / "loadtests" / "locust_metrics.py").is_file():
        return "sessionbench/loadtests/locust_metrics.py (the Locust Prometheus exporter) does not exist"
    if not (ROOT / "sessionbench" / "loadtests" / "locustfile.py").is_file():
        return "sessionbench/loadtests/locustfile.py does not exist"
    if importlib.util.find_spec("locust") is None:
        return "locust is not installed"
    return None


def _without_ssl(url: str) -> str:
    """The URL with ``sslmode=disable`` (lib/pq, in postgres_exporter, insists on SSL by default)."""
    return url + ("&" if "?" in url else "?") + "sslmode=disable" if "sslmode=" not in url else url


def _exporter_binary(exporter: str) -> str | None:
    return next(filter(None, map(shutil.which, EXPORTER_BINARIES[exporter])), None)


def _load_round(client: httpx.Client, round_no: int) -> None:
    """One bounded round of every kind of request (about 45 requests)."""
    sessions = []
    for i in range(6):
        sid = str(uuid.uuid4())
        sessions.append(sid)
        client.post("/v1/sessions", json={"session_id": sid}).raise_for_status()
        turn = [{"role": "user", "content": f"hello {round_no} {i}"}, {"role": "assistant", "content": "hi " * 40}]
        client.post(f"/v1/sessions/{sid}/messages", json={"messages": turn}).raise_for_status()
        client.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "and again"}).raise_for_status()
        for _ in range(2):  # a miss that populates, then a hit
            client.get(f"/v1/sessions/{sid}/messages", params={"limit": 20}).raise_for_status()
        client.get(f"/v1/sessions/{sid}/messages", params={"limit": 500}).raise_for_status()  # beyond the window
        client.get(f"/v1/sessions/{sid}/messages", params={"limit": 2, "before_seq": 2}).raise_for_status()
    client.get(f"/v1/sessions/{sessions[0]}").raise_for_status()
    client.get("/v1/sessions", params={"limit": 10}).raise_for_status()
    client.get("/v1/search", params={"q": "hello"}).raise_for_status()
    client.get(f"/v1/sessions/{sessions[1]}/export", params={"format": "jsonl"}).raise_for_status()
    client.delete(f"/v1/sessions/{sessions[2]}").raise_for_status()
    assert client.get(f"/v1/sessions/{uuid.uuid4()}").status_code == 404
    assert client.post(f"/v1/sessions/{sessions[3]}/messages", json={"role": "nobody", "content": "x"}).status_code in {
        400,
        422,
    }


@pytest.fixture(scope="module")
def scrape(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """Two services + (Locust) + Prometheus on 127.0.0.1, after three rounds of load spread over scrapes."""
    prometheus = _binary("prometheus")
    _require_service_modules()
    work = tmp_path_factory.mktemp("scrape")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[Any] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (work / f"{name}.log").open("wb")
        logs.append(log)
        procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base_env["SESSIONSTORE_DEV_AUTH"] = "1"
    ports = {"healthy": free_port(), "redis-down": free_port()}
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: a real connection refusal
    try:
        for name, port in ports.items():
            env = {**base_env, "DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}
            if name == "redis-down":
                env["REDIS_URL"] = dead_redis
            argv = [
                sys.executable,
                "-m",
                "sessionbench.bench.cli",
                "serve",
                "--servers",
                "external",
                "--backend",
                "hybrid",
            ]
            start(name, [*argv, "--host", "127.0.0.1", "--port", str(port)], env)
        for name, port in ports.items():
            _wait(
                lambda port=port: _get_json(f"http://127.0.0.1:{port}/healthz") is not None,
                f"{name} service /healthz",
                60,
                procs,
                work,
            )

        exporters: set[str] = set()
        targets = {"sessionstore": [f"127.0.0.1:{p}" for p in ports.values()]}
        if _locust_present() is None:
            locust_port = free_port()
            locust = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless"]
            locust += ["-u", "3", "-r", "3", "-t", "120s", "--think-scale", "0.05", "--only-summary"]
            locust += ["--host", f"http://127.0.0.1:{ports['healthy']}", "--loglevel", "WARNING"]
            locust += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(locust_port)]
            start("locust", locust, {k: v for k, v in base_env.items() if k != "SESSIONBENCH_TOKENS"})
            targets["locust"] = [f"127.0.0.1:{locust_port}"]
            exporters.add("locust")

        # The exporters, where installed, on the same servers the services use.
        if (binary := _exporter_binary("redis_exporter")) is not None:
            port = free_port()
            start("redis_exporter", [binary, f"-redis.addr={servers.redis_url}",
                                     f"-web.listen-address=127.0.0.1:{port}"])  # fmt: skip
            targets["redis"] = [f"127.0.0.1:{port}"]
            exporters.add("redis_exporter")
        if (binary := _exporter_binary("postgres_exporter")) is not None:
            port = free_port()
            start("postgres_exporter", [binary, f"--web.listen-address=127.0.0.1:{port}"],
                  {**base_env, "DATA_SOURCE_NAME": _without_ssl(servers.database_url)})  # fmt: skip
            targets["postgres"] = [f"127.0.0.1:{port}"]
            exporters.add("postgres_exporter")

        prom_port = free_port()
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s", "evaluation_interval": f"{SCRAPE_INTERVAL:g}s"},
            "rule_files": [str(path) for path in RULE_FILES],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in targets.items()
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        start(
            "prometheus",
            [
                prometheus,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
        )
        scrape = Scrape(f"http://127.0.0.1:{prom_port}", exporters)

        def targets_up() -> bool:
            up = scrape.query("sum by (job) (up)")[1]
            return {r["metric"]["job"]: float(r["value"][1]) for r in up} == {
                job: float(len(hosts)) for job, hosts in targets.items()
            }

        _wait(targets_up, "Prometheus to scrape every target", 60, procs, work)

        # Three rounds a few scrapes apart: every counter and histogram series then has
        # samples before and after an increase, so rates are non-zero.
        for round_no in range(3):
            for port in ports.values():
                headers = {"Authorization": "Bearer dev-dashboards"}
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
                    _load_round(client, round_no)
            time.sleep(2.5 * SCRAPE_INTERVAL)
        if "locust" in exporters:
            _wait(
                lambda: bool(scrape.query("sum(rate(locust_requests_total[1m])) > 0")[1]),
                "Locust requests in Prometheus",
                40,
                procs,
                work,
            )
        time.sleep(2 * SCRAPE_INTERVAL)  # rules evaluated after the last scrape
        # A scrape that misses its timeout (the interval, 1 s: postgres_exporter runs its queries on a
        # busy machine) marks every series of its target stale. Pin the instant just after a scrape of
        # every target succeeded, so no exporter's metrics are hidden by one slow scrape.
        _wait(targets_up, "every target's latest scrape to succeed", 30, procs, work)
        scrape.at = time.time()
        for name in [n for n in procs if n != "prometheus"]:  # the load is over: free the CPU
            procs[name].terminate()
        yield scrape
    finally:
        for proc in procs.values():  # only what this fixture started, by its PID
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in logs:
            log.close()


def test_every_expression_is_valid_promql(scrape: Scrape) -> None:
    """Prometheus parses every expression of every panel, variable and rule (exporter ones included)."""
    errors = []
    for expr in dashboard_expressions() + rule_expressions():
        error, _ = scrape.query(expr.query())
        if error:
            errors.append(f"{expr.where}: {error}")
    assert not errors, "\n".join(errors)


def test_every_store_expression_returns_data(scrape: Scrape) -> None:
    """Each sessionstore expression of the dashboards and rules returns a finite value from the real scrape."""
    store_exprs = [e for e in dashboard_expressions() + rule_expressions() if e.exporter is None]
    assert len(store_exprs) >= 30, len(store_exprs)
    problems = [p for e in store_exprs if (p := scrape.problem(e)) is not None]
    assert not problems, f"{len(problems)} of {len(store_exprs)} expressions:\n" + "\n".join(problems)


def test_rules_evaluate_and_record_series(scrape: Scrape) -> None:
    """Prometheus evaluates every rule without error and every sessionstore recording rule records a series."""
    groups = _get_json(f"{scrape.url}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = {rule.get("alert") or rule["record"] for rule in rules()}
    assert set(loaded) == expected
    unhealthy = {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    assert not unhealthy, unhealthy
    for rule in rules():
        if "record" in rule:
            problem = scrape.problem(Expr(f"recorded {rule['record']}", rule["record"]))
            assert problem is None, problem


@pytest.mark.parametrize("exporter", sorted(set(EXPORTERS.values())))
def test_exporter_expressions_return_data_when_the_exporter_runs(scrape: Scrape, exporter: str) -> None:
    """Expressions over an exporter's metrics return data when it is scraped; otherwise the skip lists them."""
    exprs = [e for e in dashboard_expressions() + rule_expressions() if e.exporter == exporter]
    assert exprs, f"no expression reads {exporter} metrics"
    if exporter not in scrape.exporters:
        if exporter == "locust":
            reason = _locust_present()
        else:
            names = " or ".join(EXPORTER_BINARIES[exporter])
            reason = f"no {names} on PATH; Debian's prometheus-{exporter.replace('_', '-')} package provides it"
        listed = "; ".join(e.where for e in exprs)
        pytest.skip(f"needs exporter {exporter} ({reason}): {len(exprs)} expressions not validated: {listed}")
    problems = [p for e in exprs if (p := scrape.problem(e)) is not None]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- SQL panels


def _sql(raw: str) -> str:
    """Grafana's macros and the dashboard's variables, as Grafana would expand them for the last 30 days."""
    text = re.sub(r"\$__timeFilter\((\w+(?:\.\w+)?)\)", r"\1 BETWEEN now() - interval '30 days' AND now()", raw)
    for name, value in SQL_VARIABLES.items():
        text = text.replace(name, value)
    assert "$" not in text, f"unexpanded macro or variable in {raw}"
    return text


async def test_conversation_panels_run_on_the_real_schema(database_url: str) -> None:
    """Every SQL panel runs on the migrated schema and returns rows for a small, known history."""
    from sessionbench.store import open_store

    store = await open_store("postgres", database_url=database_url)  # applies the migrations
    await store.close()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        sessions = [
            (uuid.uuid4(), "alice", now - timedelta(days=3), now - timedelta(days=2), 4),
            (uuid.uuid4(), "bob", now - timedelta(days=1), now - timedelta(hours=1), 4),
            (uuid.uuid4(), "carol", now - timedelta(days=120), now - timedelta(days=100), 4),
        ]
        await conn.executemany(
            "INSERT INTO chat_sessions (session_id, user_id, created_at, last_message_at, last_seq)"
            " VALUES ($1, $2, $3, $4, $5)",
            sessions,
        )
        messages = []
        for sid, _user, created, last, count in sessions:
            for seq in range(1, count + 1):  # a pause of a day before the last message: a resume
                at = last if seq == count else created + timedelta(minutes=seq)
                messages.append((sid, seq, "user" if seq % 2 else "assistant", f"message {seq}", at))
        await conn.executemany(
            "INSERT INTO chat_messages (session_id, seq, role, content, created_at) VALUES ($1, $2, $3, $4, $5)",
            messages,
        )
        queries = sql_queries()
        assert len(queries) >= 8
        for where, raw in queries:
            rows = await conn.fetch(_sql(raw))
            assert rows, f"{where}: no rows"
            assert all(value is not None for value in rows[0].values()), f"{where}: {dict(rows[0])}"
        past = next(raw for where, raw in queries if "past the retention age" in where)
        assert (await conn.fetchval(_sql(past))) == 1  # carol's session only
    finally:
        await conn.close()
