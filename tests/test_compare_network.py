"""``sessionbench compare`` across a network: sweeps, per-configuration RTTs, projections, PgBouncer.

Real servers and real relay processes throughout; runs are short (under a second each), so
the figures are only checked for presence and consistency, never for speed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sessionbench.bench.cli import main
from sessionbench.bench.harness import compare, report
from sessionbench.bench.harness.results import ResultFile
from sessionbench.bench.harness.topology import Network
from sessionbench.bench.harness.workload import Workload
from sessionbench.bench.servers import EmbeddedPgBouncer, Servers
from tests.conftest import result_dir


def test_a_pg_rtt_sweep_tables_and_draws_every_point_with_its_projection(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--sweep pg_rtt=0,1ms: a table per point, sweep tables with predictions, the crossover plot, relay figures."""
    argv = ["compare", "--sweep", "pg_rtt=0,1ms", "--configs", "memory,hybrid@redis_rtt=0.2ms", "--duration", "0.6",
            "--servers", "external", "--output", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    directory = result_dir(tmp_path)
    data = json.loads((directory / "result.json").read_text())
    assert data["sweep"] == {"axis": "pg_rtt", "values": [0.0, 1.0]}
    plan = [(c["name"], c["role"], c.get("point"), c["network"]["pg_rtt_ms"], c["network"]["redis_rtt_ms"])
            for c in data["configs"]]  # fmt: skip
    assert plan == [
        ("memory", "measured", 0.0, 0.0, 0.0),
        ("memory", "measured", 1.0, 1.0, 0.0),
        ("hybrid@redis_rtt=0.2ms", "local", None, 0.0, 0.0),
        ("hybrid@redis_rtt=0.2ms", "measured", 0.0, 0.0, 0.2),
        ("hybrid@redis_rtt=0.2ms", "measured", 1.0, 1.0, 0.2),
    ]
    hybrid = data["configs"][-1]
    assert set(hybrid["relays"]) == {"postgres", "redis"}
    assert hybrid["relays"]["redis"]["requests"] > 0
    assert hybrid["relays"]["redis"]["cpu_s"] > 0
    assert hybrid["round_trips"]["append"]  # "pg+redis" -> count
    projection = hybrid["projections"]["append"]
    local = data["configs"][2]
    assert projection["pg_rtt_ms"] == 1.0
    assert projection["redis_rtt_ms"] == 0.2
    assert projection["predicted_ms"] == pytest.approx(
        projection["local_p50_ms"] + projection["pg_trips"] * 1.0 + projection["redis_trips"] * 0.2
    )
    assert "turn" in local["histograms"]  # the open model's turn: its store calls summed
    for heading in ("sweep: read p50 (ms) by PG RTT added (ms)", "sweep: turn p50 (ms) by PG RTT added (ms)",
                    "sweep: PostgreSQL queries per second by PG RTT added (ms)"):  # fmt: skip
        assert heading in out
    assert "local: nothing added" in out
    assert "sweep point: PG RTT 1 ms" in out
    for row in ("append p50 predicted (ms)", "read p50 measured ÷ predicted", "relay CPU/request (µs)", "PG queries/s"):
        assert row in out
    html = (directory / "report.html").read_text()
    assert "Sweep: the crossover picture" in html
    assert html.count("<svg") >= 4
    # Any local run projects onto RTTs nobody ran.
    assert main(["report", str(directory / "result.json"), "--project", "pg_rtt=5ms,redis_rtt=0.5ms"]) == 0
    again = capsys.readouterr().out
    assert "projection of the local runs onto PG RTT 5 ms · Redis RTT 0.5 ms" in again
    result = ResultFile.load(directory / "result.json")
    assert ResultFile.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_a_named_topology_sets_the_network_and_says_where_its_figures_come_from(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--topology cross-zone runs each configuration locally and across it, with the topology's basis printed."""
    argv = ["compare", "--topology", "cross-zone", "--configs", "floor-asyncpg", "--duration", "0.5",
            "--servers", "external", "--output", str(tmp_path), "--no-progress", "--no-html"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "network: PG RTT 1 ms · Redis RTT 0.25 ms · jitter 10% (topology cross-zone)" in out
    assert "Illustrative default" in out
    data = json.loads((result_dir(tmp_path) / "result.json").read_text())
    assert data["network"]["topology"] == "cross-zone"
    assert [c["role"] for c in data["configs"]] == ["local", "measured"]
    assert data["configs"][1]["projections"]["read"]["pg_trips"] == 1.0


def test_through_pgbouncer_every_asyncpg_user_runs_without_a_statement_cache(
    servers: Servers, pgbouncer: EmbeddedPgBouncer, tmp_path: Path
) -> None:
    """pooler=pgbouncer: store, seed and floor run error-free with statement_cache_size=0; prepares are round trips."""
    endpoints = compare.Endpoints(servers.database_url, servers.redis_url, pooled=pgbouncer.url)
    names = ["postgres", "floor-asyncpg", *(["seed"] if compare.seed_available() else [])]
    runs = compare.plan([compare.Config.parse(n) for n in names], Network(pg_rtt_ms=0.5, pooler="pgbouncer"))
    workload = Workload(seed=5, duration=0.6)
    result = ResultFile.new("workload", command=["pytest"], seed=5, workload=workload.to_dict())
    progress = compare.Progress(len(runs), workload.duration, enabled=False)
    run = compare.compare_workload(
        runs, endpoints, workload, clients=None, trace=None, cache_size=None, ttl=86400.0, max_lag_ms=50.0,
        progress=progress, result=result,
    )  # fmt: skip
    asyncio.run(run)
    result.attach_projections()
    assert [(r.name, r.role, r.network.pooler) for r in result.configs] == [
        (n, role, "pgbouncer") for n in names for role in ("local", "measured")
    ]
    for record in result.configs:
        assert record.errors == {}, (record.name, record.errors)
        assert record.counts.get("append", 0) > 0, record.name
        assert record.servers.pg_prepares, record.name  # every statement is prepared again: one more round trip
    postgres = result.find("postgres")
    assert postgres is not None
    assert postgres.settings["postgres"]["statement_cache_size"] == 0
    assert postgres.projections["append"].pg_trips == 2.0  # the statement and its prepare
    text = report.render_table(result, reference="postgres")
    assert "via PgBouncer" in text


def test_a_history_sweep_runs_the_turn_benchmark_per_size_and_tables_it(
    external: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--sweep history=20,60: closed turns at each size, one sweep table per figure with history down the side."""
    argv = ["compare", "--sweep", "history=20,60", "--configs", "memory,postgres", "--turn-seconds", "0.3",
            "--turn-clients", "2", "--servers", "external", "--output", str(tmp_path), "--no-progress",
            "--no-html"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    data = json.loads((result_dir(tmp_path) / "result.json").read_text())
    assert data["kind"] == "turns"
    assert data["sweep"] == {"axis": "history", "values": [20.0, 60.0]}
    assert [(c["name"], c["history"]) for c in data["configs"]] == [
        ("memory", 20), ("postgres", 20), ("memory", 60), ("postgres", 60)
    ]  # fmt: skip
    assert "sweep: turn p50 (ms) by history (messages)" in out
    table = out[out.index("sweep: turn p50 (ms) by history (messages)") :]
    assert [line.split()[0] for line in table.splitlines()[3:5]] == ["20", "60"]


def test_help_names_the_network_options() -> None:
    """compare --help documents the RTT, jitter, topology, pooler, sweep and check options with units."""
    import argparse

    from sessionbench.bench.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["compare"].format_help()
    for option in ("--pg-rtt MS", "--redis-rtt MS", "--jitter PERCENT", "--topology", "--pooler", "--sweep AXIS=LIST",
                   "--no-projection", "--projection-check", "--relay-check"):  # fmt: skip
        assert option in text
    assert "serverless-pooled" in text
