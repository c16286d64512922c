"""Reports: a side-by-side table and a self-contained ``report.html``, from the result JSON only.

Everything here is computed from a ``result.json`` written by :mod:`bench.harness.results`
(decoding its HDR histograms), so a result can be re-rendered later, elsewhere:
``sessionbench report results/<time>/result.json --reference postgres``.

Ratios are ``value / value of the reference column`` for every numeric row
(so for latencies below 1 is better, for throughput above 1 is better).
"""

from __future__ import annotations

import argparse
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from bench.harness.results import PERCENTILES, decode_histogram, load_result

__all__ = [
    "REPORT_CSS",
    "TARGETS",
    "html_table",
    "issue3_checks",
    "register",
    "render_table",
    "rows",
    "svg_chart",
    "write_html",
]

MiB = 1024 * 1024
OPS = ("append", "read", "read.hit", "read.miss", "read.bypass", "turn")

#: Issue 3's performance targets, checked on ``--closed-turns`` results.
TARGETS = {
    "asyncpg_floor": 0.8,  # hybrid turns/s >= 0.8 x floor-asyncpg
    "seed": 7.0,  # hybrid turns/s >= 7 x seed
    "lrange": 1.3,  # hybrid hit read p50 <= 1.3 x floor-redis LRANGE p50
    "flat": 0.10,  # hybrid turns/s at the largest history within 10% of the smallest
}


@dataclass(frozen=True, slots=True)
class Row:
    """One table row: a label, one value per column (None: not applicable), how to print it."""

    label: str
    values: list[float | None]
    fmt: Callable[[float], str]
    ratio: bool = True


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _ms(x: float) -> str:
    return _num(x)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mib(x: float) -> str:
    return f"{x / MiB:.2f} MiB"


def _hist(config: dict[str, Any], op: str) -> HdrHistogram | None:
    text = config.get("histograms", {}).get(op)
    return decode_histogram(text) if text else None


def _hit_ratio(config: dict[str, Any]) -> float | None:
    cache = config.get("cache") or {}
    total = sum(cache.values())
    return cache.get("hit", 0) / total if total else None


def _latency_rows(configs: list[dict[str, Any]], ops: Sequence[str], points: Sequence[str]) -> list[Row]:
    hists = [{op: _hist(c, op) for op in ops} for c in configs]
    out: list[Row] = []
    for op in ops:
        if all(h[op] is None for h in hists):
            continue
        for point in points:
            values: list[float | None] = []
            for h in hists:
                hist = h[op]
                if hist is None or hist.get_total_count() == 0:
                    values.append(None)
                elif point == "max":
                    values.append(hist.get_max_value() / 1e6)
                else:
                    values.append(hist.get_value_at_percentile(float(point[1:])) / 1e6)
            out.append(Row(f"{op} {point} (ms)", values, _ms))
    return out


def rows(configs: list[dict[str, Any]], kind: str) -> list[Row]:
    """The table's rows for a list of configuration records."""

    def col(f: Callable[[dict[str, Any]], float | None]) -> list[float | None]:
        return [f(c) for c in configs]

    def server(key: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda c: (c.get("servers") or {}).get(key)

    points = [f"p{p:g}" for p in PERCENTILES] + ["max"]
    out: list[Row] = []
    if kind == "turns":
        out.append(Row("turns/s", col(lambda c: c["turns"] / c["elapsed_s"] if c["elapsed_s"] else None), _num))
        out += _latency_rows(configs, ("turn", "append", "read", "read.hit"), ["p50", "p99"])
    else:
        throughput = col(lambda c: c["operations"] / c["elapsed_s"] if c["elapsed_s"] else None)
        out.append(Row("throughput (ops/s)", throughput, _num))
        out += _latency_rows(configs, ("append", "read", "read.hit", "read.miss"), points)
    out.append(Row("cache hit ratio", col(_hit_ratio), _pct))
    out.append(Row("PG round trips/turn", col(server("pg_round_trips_per_turn")), _num))
    out.append(Row("Redis round trips/turn", col(server("redis_round_trips_per_turn")), _num))
    out.append(Row("Redis memory (keys)", col(server("redis_key_bytes")), _mib))
    out.append(Row("PostgreSQL size", col(server("pg_size_bytes")), _mib))
    out.append(Row("errors", col(lambda c: float(sum(c["errors"].values()))), lambda x: f"{x:.0f}", ratio=False))
    out.append(Row("generator CPU (cores)", col(lambda c: c["generator"]["cpu_cores"]), _num, ratio=False))
    if kind != "turns":
        out.append(Row("schedule lag p99 (ms)", col(lambda c: c["generator"]["lag_p99_ms"]), _num, ratio=False))
    return out


def _cells(row: Row, ref: int) -> list[str]:
    base = row.values[ref]
    cells = []
    for i, v in enumerate(row.values):
        if v is None:
            cells.append("—")
            continue
        text = row.fmt(v)
        if row.ratio and i != ref and base not in (None, 0) and v is not None:
            text += f" ({v / base:.2f}×)"
        cells.append(text)
    return cells


def _text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in body:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    return "\n".join(lines)


def _table_parts(configs: list[dict[str, Any]], kind: str, reference: str) -> tuple[list[str], list[list[str]]]:
    names = [c["name"] for c in configs]
    ref = names.index(reference) if reference in names else 0
    header = ["", *[f"{n}{' (ref)' if i == ref else ''}" for i, n in enumerate(names)]]
    body = [[r.label, *_cells(r, ref)] for r in rows(configs, kind)]
    body.append(["valid", *["yes" if c["valid"] else "NO" for c in configs]])
    return header, body


def _groups(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    if data.get("kind") != "turns":
        return [("", data["configs"])]
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for history in data["turns"]["histories"]:
        out.append((f"history {history}", [c for c in data["configs"] if c.get("history") == history]))
    return out


def _describe(data: dict[str, Any]) -> list[str]:
    m, v = data["machine"], data["versions"]
    lines = [
        f"sessionbench {v.get('sessionbench')} ({v.get('git_commit') or 'no git'}) · Python {v['python']} · "
        f"{m['cpu']} · {m['logical_cpus']} CPUs · load {m['load_average']}",
    ]
    srv = data.get("servers") or {}
    pg, rd = srv.get("postgres") or {}, srv.get("redis") or {}
    lines.append(
        f"servers: {srv.get('mode')} · PostgreSQL {pg.get('server_version')} (fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}) · {rd.get('server_name')} {rd.get('version')}"
    )
    if data.get("kind") == "turns":
        t = data["turns"]
        lines.append(
            f"closed turns: {t['clients']} clients · append {t['user_bytes']} B + read last {t['limit']} + append "
            f"{t['assistant_bytes']} B · {t['seconds']:g} s per run after {t['warmup']:g} s warm-up"
        )
    else:
        w = data["workload"]
        lines.append(
            f"workload: seed {w['seed']} · {w['duration']:g} s replay at {w['time_compression']:g}x "
            f"({w['new_sessions_per_s']:g} new sessions/s traffic) · {data['load_model']} model · "
            f"TTL {data['ttl_traffic_s']:g} s traffic = {data['ttl_replay_s']:.1f} s replay"
            + (f" · trace {data['trace']}" if data.get("trace") else "")
        )
    return lines


def render_table(data: dict[str, Any], *, reference: str | None = None) -> str:
    """The side-by-side table (plus issue 3's checks for ``--closed-turns`` results)."""
    reference = reference or data.get("reference") or data["configs"][0]["name"]
    parts = _describe(data)
    for title, configs in _groups(data):
        if not configs:
            continue
        header, body = _table_parts(configs, data.get("kind", "workload"), reference)
        parts += ["", *([title] if title else []), _text_table(header, body)]
        for c in configs:
            for reason in c["invalid"]:
                parts.append(f"INVALID {c['name']}: {reason}")
    if data.get("kind") == "turns":
        parts += [
            "",
            "closed model: the store runs in the generator's process, so 'generator CPU' near 1.0 means",
            "that process (driver + store) is the bottleneck being measured, and 'valid' does not judge CPU.",
        ]
        parts += ["", "issue 3 targets (measured ratio, pass/miss):"]
        parts += [f"  {label:<58} {result}" for label, result in issue3_checks(data)]
    for note in data.get("notes") or []:
        parts.append(note)
    return "\n".join(parts)


# ----------------------------------------------------------------------------- issue 3


def _find(data: dict[str, Any], name: str, history: int) -> dict[str, Any] | None:
    for c in data["configs"]:
        if c["name"] == name and c.get("history") == history:
            found: dict[str, Any] = c
            return found
    return None


def _tps(c: dict[str, Any] | None) -> float | None:
    return c["turns"] / c["elapsed_s"] if c and c["elapsed_s"] else None


def _p50(c: dict[str, Any] | None, op: str) -> float | None:
    h = _hist(c, op) if c else None
    return h.get_value_at_percentile(50) / 1e6 if h and h.get_total_count() else None


def issue3_checks(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Issue 3's ratios, measured: (label, "1.05× pass" / "0.62× MISS" / "n/a")."""

    def verdict(value: float | None, ok: bool) -> str:
        return "n/a" if value is None else f"{value:.2f}× {'pass' if ok else 'MISS'}"

    out: list[tuple[str, str]] = []
    histories = data["turns"]["histories"]
    for h in histories:
        hyb = _find(data, "hybrid", h)
        floor, seed, lrange = _find(data, "floor-asyncpg", h), _find(data, "seed", h), _find(data, "floor-redis", h)
        a, b = _tps(hyb), _tps(floor)
        r = a / b if a and b else None
        out.append((f"h={h}: hybrid turns/s ≥ {TARGETS['asyncpg_floor']}× floor-asyncpg", verdict(r, (r or 0) >= 0.8)))
        s = _tps(seed)
        r = a / s if a and s else None
        out.append((f"h={h}: hybrid turns/s ≥ {TARGETS['seed']:g}× seed", verdict(r, (r or 0) >= TARGETS["seed"])))
        hit, bare = _p50(hyb, "read.hit"), _p50(lrange, "read")
        r = hit / bare if hit and bare else None
        out.append(
            (
                f"h={h}: hybrid hit-read p50 ≤ {TARGETS['lrange']}× bare LRANGE p50",
                verdict(r, r is not None and r <= TARGETS["lrange"]),
            )
        )
    if len(histories) >= 2:
        lo, hi = _tps(_find(data, "hybrid", histories[0])), _tps(_find(data, "hybrid", histories[-1]))
        r = hi / lo if hi and lo else None
        out.append(
            (
                f"hybrid turns/s at h={histories[-1]} within {TARGETS['flat']:.0%} of h={histories[0]}",
                verdict(r, r is not None and abs(1 - r) <= TARGETS["flat"]),
            )
        )
    return out


# ----------------------------------------------------------------------------- generator check


def render_generator_check(f: dict[str, Any], workload: Any) -> str:
    return "\n".join(
        [
            "load generator with a no-op store (one process, one event loop, one core at most):",
            f"  capacity: {f['capacity_ops_per_s']:,.0f} operations/s scheduled and completed "
            f"({f['capacity_operations']:,} operations, {f['capacity_cpu_cores']:.2f} cores busy) = "
            f"{f['capacity_ops_per_cpu_s']:,.0f} operations per CPU-second",
            f"  at the workload (seed {workload.seed}, {workload.duration:g} s): {f['workload_ops_per_s']:,.0f} ops/s, "
            f"CPU {f['workload_cpu_cores']:.3f} cores (dispatcher busy {f['workload_scheduler_busy_fraction']:.1%}), "
            f"schedule lag p99 {f['workload_lag_p99_ms']:.2f} ms, max {f['workload_lag_max_ms']:.2f} ms, "
            f"{'valid' if f['workload_valid'] else 'INVALID: ' + '; '.join(f['workload_invalid'])}",
        ]
    )


# ----------------------------------------------------------------------------- HTML


_PLOT_POINTS = (0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)


def svg_chart(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.find("<svg") :]


def _plots(data: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 96, "font.size": 9})
    out: list[tuple[str, str]] = []
    groups = _groups(data)
    turns = data.get("kind") == "turns"
    ops = ("turn", "read") if turns else ("append", "read")
    for title, configs in groups:
        fig, axes = plt.subplots(1, len(ops), figsize=(11, 3.8), squeeze=False)
        for ax, op in zip(axes[0], ops, strict=True):
            for c in configs:
                h = _hist(c, op)
                if h is None or h.get_total_count() == 0:
                    continue
                xs = [min(4.0, -math.log10(max(1e-4, 1 - p / 100))) for p in _PLOT_POINTS]
                ys = [max(1e-3, h.get_value_at_percentile(p) / 1e6) for p in _PLOT_POINTS]
                ax.plot(xs, ys, marker=".", label=c["name"])
            ax.set_yscale("log")
            ax.set_xticks([0.301, 1, 2, 3, 4], ["p50", "p90", "p99", "p99.9", "p99.99"])
            ax.set_ylabel("latency (ms)")
            ax.set_title(f"{op} latency by percentile {title}".strip())
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        out.append((f"Latency percentiles {title}".strip(), svg_chart(fig)))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 3.2))
    if turns:
        names = list(dict.fromkeys(c["name"] for c in data["configs"]))
        width = 0.8 / max(1, len(groups))
        for gi, (title, configs) in enumerate(groups):
            by = {c["name"]: c["turns"] / c["elapsed_s"] if c["elapsed_s"] else 0 for c in configs}
            ax.bar([i + gi * width for i in range(len(names))], [by.get(n, 0) for n in names], width, label=title)
        ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))], names)
        ax.set_ylabel("turns/s")
        ax.set_title("throughput (closed loop, whole turns)")
        ax.legend(fontsize=7)
    else:
        for c in data["configs"]:
            series = c.get("series") or []
            ax.plot([s["t"] for s in series], [sum(s["ops"].values()) for s in series], label=c["name"])
        ax.set_xlabel("replay time (s)")
        ax.set_ylabel("operations per second")
        ax.set_title("throughput over time")
        ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    out.append(("Throughput", svg_chart(fig)))
    plt.close(fig)

    if not turns and any(c.get("cache") for c in data["configs"]):
        fig, ax = plt.subplots(figsize=(11, 3.2))
        for c in data["configs"]:
            if not c.get("cache"):
                continue
            pts = [(s["t"], s["cache"].get("hit", 0) / sum(s["cache"].values())) for s in c["series"] if s["cache"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=c["name"])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("replay time (s)")
        ax.set_ylabel("hit ratio")
        ax.set_title("cache hit ratio over time (per interval)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        out.append(("Cache hit ratio over time", svg_chart(fig)))
        plt.close(fig)
    return out


def html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"


REPORT_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}.invalid{color:#b00}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:12px}
details{margin:1em 0}
"""


def write_html(data: dict[str, Any], path: Path, *, reference: str | None = None) -> Path:
    """A self-contained report: description, tables, inline SVG plots, raw settings."""
    import json

    reference = reference or data.get("reference") or data["configs"][0]["name"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>sessionbench {html.escape(data['created'])}"
        f"</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>sessionbench {html.escape(data.get('kind', 'workload'))} comparison</h1>",
        f"<p>{html.escape(data['created'])} · ratios against <b>{html.escape(reference)}</b></p>",
    ]
    parts += [f"<p>{html.escape(line)}</p>" for line in _describe(data)]
    for title, configs in _groups(data):
        if not configs:
            continue
        header, body = _table_parts(configs, data.get("kind", "workload"), reference)
        parts.append(f"<h2>Results {html.escape(title)}</h2>" + html_table(header, body))
        for c in configs:
            for reason in c["invalid"]:
                parts.append(f"<p class='invalid'>INVALID {html.escape(c['name'])}: {html.escape(reason)}</p>")
    if data.get("kind") == "turns":
        parts.append(
            "<h2>Issue 3 targets</h2>" + html_table(["target", "measured"], [list(x) for x in issue3_checks(data)])
        )
    for note in data.get("notes") or []:
        parts.append(f"<p>{html.escape(note)}</p>")
    for title, svg in _plots(data):
        parts.append(f"<h2>{html.escape(title)}</h2>{svg}")
    meta = {k: data.get(k) for k in ("command", "seed", "workload", "turns", "servers", "machine", "versions")}
    meta["settings"] = {c["name"]: c.get("settings") for c in data["configs"]}
    parts.append(
        "<details><summary>What ran (versions, settings, servers, machine)</summary><pre>"
        + html.escape(json.dumps(meta, indent=1, default=str))
        + "</pre></details>"
    )
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path


# ----------------------------------------------------------------------------- command line


def cmd_report(args: argparse.Namespace) -> int:
    data = load_result(Path(args.result))
    print(render_table(data, reference=args.reference))
    if args.html:
        print(f"\nwrote {write_html(data, Path(args.html), reference=args.reference)}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="re-render the table (and report.html) from a result.json")
    p.add_argument("result", help="a result.json written by sessionbench compare")
    p.add_argument("--reference", metavar="NAME", help="column for the ratios (default: the one the run used)")
    p.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report here")
    p.set_defaults(func=cmd_report)
