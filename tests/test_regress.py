"""The regression gate: fails on a real slowdown, passes on identical or merely noisy inputs."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from sessionbench.bench.cli import main
from sessionbench.bench.harness.regress import compare, load, mann_whitney, merge

OPS = ("append", "read_hit", "turn")
CONFIGS = {"floor-asyncpg": 1.0, "hybrid": 1.2, "postgres": 2.0, "memory": 0.1}


def _pytest_benchmark(seed: int, *, slow: dict[str, float] | None = None, rounds: int = 40) -> dict[str, Any]:
    """A pytest-benchmark JSON shaped like tests/benchmarks' output, with log-normal round times."""
    rng = random.Random(seed)
    slow = slow or {}
    benchmarks = []
    for op in OPS:
        for config, factor in CONFIGS.items():
            name = f"test_scenario[{config}-{op}]"
            ref = [0.0005 * rng.lognormvariate(0, 0.08) for _ in range(rounds)]
            data = [r * factor * slow.get(name, 1.0) * rng.lognormvariate(0, 0.08) for r in ref]
            extra: dict[str, Any] = {"reference": f"test_scenario[floor-asyncpg-{op}]", "config": config}
            if config != "floor-asyncpg":
                extra["reference_data"] = ref
            benchmarks.append(
                {"name": name, "group": op, "stats": {"data": data, "median": sorted(data)[rounds // 2]},
                 "extra_info": extra}
            )  # fmt: skip
    return {"machine_info": {}, "benchmarks": benchmarks}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_identical_inputs_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same run against itself is no regression (exit 0)."""
    run = _write(tmp_path / "run.json", _pytest_benchmark(1))
    assert main(["regress", str(run), str(run)]) == 0
    assert "0 regression(s)" in capsys.readouterr().out


def test_a_synthetic_30_percent_slowdown_fails_with_a_readable_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One scenario 30% slower than in the baseline fails the gate and is named first in the diff."""
    base = _write(tmp_path / "base.json", _pytest_benchmark(1))
    data = _pytest_benchmark(1, slow={"test_scenario[hybrid-turn]": 1.3})
    current = _write(tmp_path / "current.json", data)
    assert main(["regress", str(base), str(current)]) == 1
    out = capsys.readouterr().out
    first_row = out.splitlines()[2]
    assert "test_scenario[hybrid-turn]" in first_row
    assert "REGRESSION" in first_row
    assert "+30" in first_row
    assert "1 regression(s)" in out


def test_run_to_run_noise_passes(tmp_path: Path) -> None:
    """A fresh run with different random noise (same true ratios) does not fail."""
    base = _write(tmp_path / "base.json", _pytest_benchmark(1))
    current = _write(tmp_path / "current.json", _pytest_benchmark(2))
    assert main(["regress", str(base), str(current)]) == 0


def test_a_uniformly_slower_machine_is_not_a_regression(tmp_path: Path) -> None:
    """Everything 30% slower, references included, leaves the ratios alone: the gate passes."""
    data = _pytest_benchmark(1)
    slower = copy.deepcopy(data)
    for b in slower["benchmarks"]:
        b["stats"]["data"] = [x * 1.3 for x in b["stats"]["data"]]
        if "reference_data" in b["extra_info"]:
            b["extra_info"]["reference_data"] = [x * 1.3 for x in b["extra_info"]["reference_data"]]
    assert main(["regress", str(_write(tmp_path / "a.json", data)), str(_write(tmp_path / "b.json", slower))]) == 0


def test_saved_baseline_from_several_runs_widens_the_limit_by_their_noise(tmp_path: Path) -> None:
    """A baseline saved from runs that disagree by 20% tolerates a 30% change there, not elsewhere."""
    runs = [_pytest_benchmark(s, slow={"test_scenario[postgres-append]": f}) for s, f in ((1, 1.0), (2, 1.2))]
    paths = [_write(tmp_path / f"r{i}.json", r) for i, r in enumerate(runs)]
    baseline = tmp_path / "ratios.json"
    assert main(["regress", "--save", str(baseline), *map(str, paths)]) == 0
    saved = json.loads(baseline.read_text())
    assert saved["format"] == "sessionbench-ratios v1"
    assert saved["scenarios"]["test_scenario[postgres-append]"]["noise"] > 0.05
    slow = {"test_scenario[postgres-append]": 1.4, "test_scenario[hybrid-append]": 1.4}
    current = _write(tmp_path / "c.json", _pytest_benchmark(3, slow=slow))
    verdicts = {v.name: v for v in compare(load(baseline), load(current))}
    assert verdicts["test_scenario[postgres-append]"].status == "ok"
    assert verdicts["test_scenario[hybrid-append]"].status == "REGRESSION"


def test_unpaired_pytest_benchmark_json_uses_the_reference_benchmark_median(tmp_path: Path) -> None:
    """Without per-round reference data, --reference picks the floor in each group and medians divide."""
    data = _pytest_benchmark(1)
    for b in data["benchmarks"]:
        b["extra_info"] = {}
    scenarios = load(_write(tmp_path / "u.json", data), reference="floor-asyncpg")
    assert set(scenarios) == {f"test_scenario[{c}-{op}]" for op in OPS for c in CONFIGS if c != "floor-asyncpg"}
    assert scenarios["test_scenario[postgres-turn]"].ratio == pytest.approx(2.0, rel=0.1)
    slower = copy.deepcopy(data)
    for b in slower["benchmarks"]:
        if b["name"] == "test_scenario[memory-read_hit]":
            b["stats"]["data"] = [x * 1.3 for x in b["stats"]["data"]]
    verdicts = compare(scenarios, load(_write(tmp_path / "s.json", slower), reference="floor-asyncpg"))
    assert [v.name for v in verdicts if v.status == "REGRESSION"] == ["test_scenario[memory-read_hit]"]


def test_mann_whitney_p_values_behave() -> None:
    """Identical samples give p = 1; clearly shifted samples give a tiny p."""
    rng = random.Random(0)
    a = [rng.gauss(1, 0.05) for _ in range(30)]
    assert mann_whitney(a, a) == pytest.approx(1.0, abs=0.05)
    assert mann_whitney(a, [x * 1.3 for x in a]) < 1e-6
    assert mann_whitney([], a) == 1.0


def test_merge_keeps_only_scenarios_every_run_has() -> None:
    """A baseline combines the scenarios present in all its runs."""
    one = load_from(_pytest_benchmark(1))
    two = {k: v for k, v in load_from(_pytest_benchmark(2)).items() if "memory" not in k}
    merged = merge([one, two])
    assert merged
    assert not any("memory" in k for k in merged)
    assert all(len(s.run_medians) == 2 for s in merged.values())


def load_from(data: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return load(_write(Path(d) / "x.json", data))


def test_unusable_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not benchmark JSON exits 2 with a readable message."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    assert main(["regress", str(bad), str(bad)]) == 2
    assert "neither pytest-benchmark JSON" in capsys.readouterr().err


def test_instruments_are_reported_but_never_fail_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A floor or baseline scenario marked gate=False that slows down is listed as 'slower', exit 0."""
    data = _pytest_benchmark(1)
    for b in data["benchmarks"]:
        b["extra_info"]["gate"] = b["extra_info"]["config"] != "postgres"
    base = _write(tmp_path / "base.json", data)
    slow = _pytest_benchmark(1, slow={"test_scenario[postgres-turn]": 1.5})
    for b in slow["benchmarks"]:
        b["extra_info"]["gate"] = b["extra_info"]["config"] != "postgres"
    assert main(["regress", str(base), str(_write(tmp_path / "slow.json", slow))]) == 0
    assert "slower" in capsys.readouterr().out


V1_RESULT = Path(__file__).parent / "data" / "compare_result_v1.json"


def test_compare_results_are_gated_on_the_registry_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A compare result.json against itself passes; its hybrid reads 60% slower per second fail the gate."""
    from sessionbench.bench.harness.metrics import REGISTRY

    scenarios = load(V1_RESULT)
    gated = {m.gate for m in REGISTRY if m.gate}
    assert gated == {"append", "read", "read.hit", "turn"}
    # The reference (seed) has no cache-hit histogram, so read.hit is only gated against a column that has one.
    assert {"hybrid:read", "hybrid:append", "postgres:read", "floor-asyncpg:append"} <= set(scenarios)
    assert "hybrid:read.hit" not in scenarios
    assert all(s.reference == f"seed:{name.split(':')[1]}" for name, s in scenarios.items())
    assert main(["regress", str(V1_RESULT), str(V1_RESULT)]) == 0
    # A longer run: the fixture's 3 s repeated, so the per-second samples can be significant.
    data = json.loads(V1_RESULT.read_text())
    for c in data["configs"]:
        c["series"] = [{**s, "t": s["t"] + 3 * k} for k in range(8) for s in c["series"]]
    base = _write(tmp_path / "base.json", data)
    hybrid = next(c for c in data["configs"] if c["name"] == "hybrid")
    for interval in hybrid["series"]:
        if "read" in interval["p50_ms"]:
            interval["p50_ms"]["read"] *= 1.6
    slower = _write(tmp_path / "slower.json", data)
    capsys.readouterr()
    assert main(["regress", "--threshold", "0.25", str(base), str(slower)]) == 1
    first_row = capsys.readouterr().out.splitlines()[2]
    assert first_row.startswith("hybrid:read ")
    assert "REGRESSION" in first_row


def test_a_v2_result_gives_the_same_scenarios_as_the_v1_file_it_was_read_from(tmp_path: Path) -> None:
    """Re-writing a v1 result in the current format changes no scenario ratio of the gate."""
    from sessionbench.bench.harness.results import ResultFile

    v2 = _write(tmp_path / "v2.json", ResultFile.load(V1_RESULT).to_json())
    old, new = load(V1_RESULT), load(v2)
    assert set(old) == set(new)
    for name, scenario in old.items():
        assert new[name].samples == pytest.approx(scenario.samples)
