"""``sessionbench regress BASELINE CURRENT``: fail only on a slowdown larger than the noise.

Absolute timings move with the machine; ratios measured in the same run do not (as
much).  So every scenario is divided by a **reference scenario measured in the same
run** — by default the bare-driver floor for the same operation — and the gate
compares those ratios between the baseline and the current run:

* ``change = median(current ratios) / baseline ratio - 1``;
* **run-to-run noise** comes from the baseline itself: save it from several runs
  (``--save OUT RUN1 RUN2 RUN3``) and each scenario keeps every run's median ratio;
  ``noise`` is the largest relative distance of one run's median from their median
  (0 for a single run);
* a scenario **regresses** when ``change > threshold + noise`` *and* a two-sided
  Mann–Whitney U test on the per-round ratios says the runs differ (``p < alpha``), so a
  few slow rounds cannot fail the gate, and a scenario that wobbles from run to run on
  this machine needs a larger change than one that does not;
* faster by the same margin is reported as an improvement (exit 0: refresh the baseline);
* scenarios marked ``extra_info["gate"] = False`` (the floors and the seed baseline:
  instruments, not code under test) are reported as ``slower`` but never fail.

Inputs (either side, any mix):

* pytest-benchmark JSON (``--benchmark-json``; per-round timings in ``stats.data``).  A
  benchmark names its reference in ``extra_info["reference"]``; otherwise
  ``--reference TEXT`` picks, per group, the benchmark whose name contains TEXT.  When
  ``extra_info["reference_data"]`` holds the reference's time for every round (measured
  right before it, as ``tests/benchmarks`` does), ratios are taken round by round;
  otherwise each round is divided by the reference benchmark's median.
* a ratios file written by ``sessionbench regress --save OUT CURRENT`` (the committed
  baseline, ``sessionbench/bench/baselines/ratios.json``: ratios and their per-round samples only).
* a ``sessionbench compare`` ``result.json``: each configuration and gated metric of
  :data:`sessionbench.bench.harness.metrics.REGISTRY` (the p50 of append, read, read.hit and turn)
  against the run's reference column, with per-second p50s as the repeated samples.

Exit status: 0 no regression, 1 regression, 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sessionbench.bench.harness.metrics import REGISTRY
from sessionbench.bench.harness.results import ResultFile, environment, is_result

__all__ = ["Scenario", "Verdict", "compare", "load", "mann_whitney", "merge", "render", "save"]

RATIOS_FORMAT = "sessionbench-ratios v1"
DEFAULT_THRESHOLD = 0.25
DEFAULT_ALPHA = 0.01
MAX_SAMPLES = 200

DESCRIPTION = """\
Compare same-run ratios of a run against a baseline; fail only on a slowdown larger than the noise.

Every scenario is divided by a reference measured in the same run (by default the
bare-driver floor for the same operation), and the gate compares those ratios:
change = median(current ratios) / baseline ratio - 1. A scenario regresses when the change
exceeds the threshold plus the baseline's run-to-run noise (a baseline saved from several
runs keeps each run's median) and a Mann-Whitney U test on the per-round ratios says the
runs differ (p < alpha). Faster by the same margin is reported as an improvement.
Scenarios marked gate=False in extra_info (floors, the seed) are reported, never failing.

Inputs, either side, any mix: pytest-benchmark JSON (--benchmark-json; the reference named
in extra_info["reference"], or --reference TEXT), a ratios file written by --save (the
committed baseline sessionbench/bench/baselines/ratios.json), or a sessionbench compare result.json
(each configuration's p50 of append, read, read.hit and turn against the run's reference
column, per-second p50s as the samples).

Exit status: 0 no regression, 1 regression, 2 unusable input.
"""


@dataclass(frozen=True, slots=True)
class Scenario:
    """Per-round ratios of one scenario to its same-run reference."""

    name: str
    reference: str
    samples: tuple[float, ...]
    run_medians: tuple[float, ...] = ()
    """The median ratio of each run the samples came from (a baseline saved from several runs)."""
    gated: bool = True
    """False for measuring instruments (floors, the seed baseline): reported, never failing."""

    @property
    def ratio(self) -> float:
        return statistics.median(self.run_medians) if self.run_medians else statistics.median(self.samples)

    @property
    def noise(self) -> float:
        """Largest relative distance of one run's median from the median of runs (0: one run)."""
        if len(self.run_medians) < 2:
            return 0.0
        mid = self.ratio
        return max(abs(m / mid - 1) for m in self.run_medians) if mid > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    reference: str
    baseline: float
    current: float
    change: float
    noise: float
    p_value: float | None
    status: str  # "ok" | "REGRESSION" | "improved" | "slower" (not gated) | "missing" | "new"
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- statistics


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test (normal approximation, tie-corrected,
    continuity-corrected).  Good from about 8 samples a side; 1.0 when undefined."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = rank
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    z = (abs(u1 - mean) - 0.5) / math.sqrt(var)
    return max(0.0, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))))


def _downsample(values: Sequence[float], limit: int = MAX_SAMPLES) -> tuple[float, ...]:
    """At most ``limit`` evenly spaced order statistics (keeps the distribution's shape)."""
    ordered = sorted(values)
    if len(ordered) <= limit:
        return tuple(ordered)
    step = (len(ordered) - 1) / (limit - 1)
    return tuple(ordered[round(i * step)] for i in range(limit))


# ----------------------------------------------------------------------------- inputs


def load(path: Path, *, reference: str | None = None) -> dict[str, Scenario]:
    """Scenarios (ratios to their same-run reference) from any supported file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read JSON ({exc})") from None
    if isinstance(data, dict) and data.get("format") == RATIOS_FORMAT:
        out: dict[str, Scenario] = {}
        for name, item in data["scenarios"].items():
            samples = tuple(float(x) for x in item["samples"])
            medians = tuple(float(x) for x in item.get("run_medians") or ())
            out[name] = Scenario(name, item["reference"], samples, medians, bool(item.get("gated", True)))
        return out
    if is_result(data):
        return _from_result(ResultFile.from_json(data, source=str(path)), reference)
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
        return _from_pytest_benchmark(data, reference, path)
    raise ValueError(f"{path}: neither pytest-benchmark JSON, a ratios file nor a sessionbench result")


def _from_pytest_benchmark(data: dict[str, Any], reference: str | None, path: Path) -> dict[str, Scenario]:
    benches = {b["name"]: b for b in data["benchmarks"]}

    def rounds(b: dict[str, Any]) -> list[float]:
        stats = b.get("stats") or {}
        values = stats.get("data") or ([stats["median"]] if "median" in stats else [])
        return [float(x) for x in values if float(x) > 0]

    out: dict[str, Scenario] = {}
    for name, b in benches.items():
        ref_name = (b.get("extra_info") or {}).get("reference")
        if ref_name is None and reference:
            group = b.get("group")
            candidates = [n for n, o in benches.items() if reference in n and o.get("group") == group]
            ref_name = candidates[0] if candidates else None
        if ref_name is None or ref_name == name:
            continue
        if ref_name not in benches:
            raise ValueError(f"{path}: {name} names reference {ref_name!r}, which is not in the file")
        own = rounds(b)
        gated = bool((b.get("extra_info") or {}).get("gate", True))
        paired = [float(x) for x in (b.get("extra_info") or {}).get("reference_data") or []]
        if own and len(paired) == len(own) and all(x > 0 for x in paired):
            # Each round was preceded by a reference round: divide pairwise.
            out[name] = Scenario(name, ref_name, tuple(x / r for x, r in zip(own, paired, strict=True)), (), gated)
            continue
        ref_rounds = rounds(benches[ref_name])
        if not ref_rounds or not own:
            continue
        base = statistics.median(ref_rounds)
        out[name] = Scenario(name, ref_name, tuple(x / base for x in own), (), gated)
    if not out and benches:
        raise ValueError(f"{path}: no benchmark names a reference (extra_info['reference'] or --reference TEXT)")
    return out


def _from_result(result: ResultFile, reference: str | None) -> dict[str, Scenario]:
    """Every gated metric of every configuration over the same metric of the reference column.

    A metric where lower is better gives ``value / reference`` per interval; one where
    higher is better ``reference / value``, so above 1 is always worse.
    """
    ref = reference or result.reference
    gated = [m for m in REGISTRY if m.gate is not None]
    out: dict[str, Scenario] = {}
    for c in result.configs:
        tag = f"@h{c.history}" if c.history is not None else ""
        ref_cfg = result.find(ref, c.history) if ref else None
        if ref_cfg is None or ref_cfg is c:
            continue
        for metric in gated:
            mine, base = metric.value(c), metric.value(ref_cfg)
            if not mine or not base:
                continue
            values = (metric.samples(c) if metric.samples else []) or [mine]
            samples = [base / x if metric.better == "higher" else x / base for x in values if x > 0]
            name = f"{c.name}{tag}:{metric.gate}"
            out[name] = Scenario(name, f"{ref}{tag}:{metric.gate}", tuple(samples))
    return out


def merge(runs: Sequence[dict[str, Scenario]]) -> dict[str, Scenario]:
    """One baseline from several runs: pooled samples, plus each run's median (for the noise)."""
    if not runs:
        return {}
    out: dict[str, Scenario] = {}
    for name in sorted(set.intersection(*(set(r) for r in runs))):
        parts = [r[name] for r in runs]
        samples = tuple(x for p in parts for x in p.samples)
        medians = tuple(p.ratio for p in parts)
        out[name] = Scenario(name, parts[-1].reference, samples, medians, all(p.gated for p in parts))
    return out


def save(path: Path, scenarios: dict[str, Scenario], *, sources: Sequence[str]) -> None:
    """Write a ratios file (the committed baseline)."""
    payload = {
        "format": RATIOS_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sources": list(sources),
        "machine": environment()["machine"],
        "scenarios": {
            name: {
                "reference": s.reference,
                "ratio": round(s.ratio, 6),
                "noise": round(s.noise, 6),
                "gated": s.gated,
                "run_medians": [round(x, 6) for x in s.run_medians],
                "samples": [round(x, 6) for x in _downsample(s.samples)],
            }
            for name, s in sorted(scenarios.items())
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


# ----------------------------------------------------------------------------- the gate


def compare(
    baseline: dict[str, Scenario],
    current: dict[str, Scenario],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
) -> list[Verdict]:
    """One verdict per scenario in either input."""
    out: list[Verdict] = []
    for name in sorted(set(baseline) | set(current)):
        b, c = baseline.get(name), current.get(name)
        if b is None or c is None:
            s = b or c
            assert s is not None
            status = "new" if b is None else "missing"
            out.append(
                Verdict(
                    name,
                    s.reference,
                    b.ratio if b else math.nan,
                    c.ratio if c else math.nan,
                    math.nan,
                    b.noise if b else math.nan,
                    None,
                    status,
                )
            )
            continue
        notes: list[str] = []
        if b.reference != c.reference:
            notes.append(f"reference changed: {b.reference} -> {c.reference}")
        change = c.ratio / b.ratio - 1 if b.ratio > 0 else math.inf
        p: float | None = None
        if len(b.samples) >= 3 and len(c.samples) >= 3:
            p = mann_whitney(b.samples, c.samples)
        else:
            notes.append("fewer than 3 samples a side: threshold only")
        significant = p is None or p < alpha
        limit = threshold + b.noise
        if change > limit and significant:
            status = "REGRESSION" if b.gated and c.gated else "slower"
        elif change < 1 / (1 + limit) - 1 and significant:
            status = "improved"
        else:
            status = "ok"
        out.append(Verdict(name, c.reference, b.ratio, c.ratio, change, b.noise, p, status, notes))
    return out


def render(verdicts: list[Verdict], *, threshold: float, alpha: float) -> str:
    """A readable diff: one line per scenario, regressions first."""
    order = {"REGRESSION": 0, "improved": 1, "slower": 2, "missing": 3, "new": 4, "ok": 5}
    rows = [["scenario", "reference", "baseline", "current", "change", "noise", "p", "verdict"]]
    for v in sorted(verdicts, key=lambda v: (order[v.status], v.name)):
        rows.append(
            [
                v.name,
                v.reference,
                "—" if math.isnan(v.baseline) else f"{v.baseline:.3f}×",
                "—" if math.isnan(v.current) else f"{v.current:.3f}×",
                "—" if math.isnan(v.change) else f"{v.change:+.1%}",
                "—" if math.isnan(v.noise) else f"±{v.noise:.0%}",
                "—" if v.p_value is None else f"{v.p_value:.2g}",
                v.status + (f" ({'; '.join(v.notes)})" if v.notes else ""),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    bad = sum(v.status == "REGRESSION" for v in verdicts)
    lines.append("")
    lines.append(
        f"{bad} regression(s) among {len(verdicts)} scenarios "
        f"(fail when slower by more than {threshold:.0%} + the baseline's run-to-run noise, with "
        f"Mann–Whitney p < {alpha:g}; ratios are to a reference measured in the same run)"
    )
    return "\n".join(lines)


def cmd_regress(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    if args.save:
        scenarios = merge([load(f, reference=args.reference) for f in files])
        save(Path(args.save), scenarios, sources=[str(f) for f in files])
        print(f"wrote {len(scenarios)} scenario ratios from {len(files)} run(s) to {args.save}")
        return 0
    if len(files) != 2:
        raise ValueError("give BASELINE and CURRENT")
    baseline = load(files[0], reference=args.reference)
    current = load(files[1], reference=args.reference)
    if not set(baseline) & set(current):
        print(f"sessionbench regress: no scenario in common between {files[0]} and {files[1]}")
        return 2
    verdicts = compare(baseline, current, threshold=args.threshold, alpha=args.alpha)
    print(render(verdicts, threshold=args.threshold, alpha=args.alpha))
    return 1 if any(v.status == "REGRESSION" for v in verdicts) else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "regress",
        help="compare same-run ratios of a run against a baseline; non-zero exit only beyond the noise",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="BASELINE CURRENT; with --save, one or more runs to combine"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="F",
        help=f"relative slowdown of a ratio that fails the gate (default: {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        metavar="P",
        help=f"Mann–Whitney significance level (default: {DEFAULT_ALPHA})",
    )
    p.add_argument(
        "--reference",
        metavar="TEXT",
        help="pytest-benchmark: the reference is the benchmark in the same group whose name contains "
        "TEXT (when extra_info has none); result.json: the reference configuration",
    )
    p.add_argument(
        "--save", metavar="OUT", help="write the inputs' ratios to OUT (a baseline; several runs measure the noise)"
    )
    p.set_defaults(func=cmd_regress)
