"""sessionbench advise TRACE: which TTL, how many messages to cache and how much maxmemory, from a trace.

Reads the trace once in bounded memory (text or the columnar form of `sessionbench trace
convert`), measures what cache entries cost on the real Valkey (INFO used_memory around
entries the hybrid store itself writes, with the trace's mean message size), prints a
table and a recommendation, and writes JSON (-o) and a self-contained HTML report
(--html). Hit ratio by maxmemory is simulated per budget for the volatile-lru,
volatile-ttl and noeviction policies at the recommended setting (Valkey's sampled
eviction modelled). --sample-rate analyses a fraction of the sessions (chosen by a hash
of the session) for every curve and prints a 95% band. --validate replays a
session-sampled, time-compressed slice of the trace on the real hybrid store at three
points of every curve the report draws, and prints predicted against measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import html
import json
import math
import resource
import time
from pathlib import Path
from typing import Any

from sessionbench.bench.advisor import curves
from sessionbench.bench.advisor import summary as sm
from sessionbench.bench.advisor import validate as vd
from sessionbench.bench.advisor.summary import MaxmemoryCurve, Summary
from sessionbench.bench.servers import MODES, open_servers

# ----------------------------------------------------------------------------- text


def _dur(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "∞"
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if x >= n:
            return f"{x / n:g} {unit}"
    return f"{x:g} s"


def _bytes(x: float) -> str:
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(x) >= n:
            return f"{x / n:.1f} {unit}"
    return f"{x:.0f} B"


def _pct(x: float, band: float = 0.0) -> str:
    return f"{100 * x:.1f}%" + (f" ±{100 * band:.1f}" if band > 0.0005 else "")


def suggested_maxmemory(curve: MaxmemoryCurve, within: float = 0.01) -> float:
    """The smallest maxmemory on the curve whose hit ratio is within ``within`` of no limit."""
    for m, h in zip(curve.maxmemory_bytes, curve.hit_ratio, strict=True):
        if h >= curve.unbounded_hit_ratio - within:
            return m
    return curve.maxmemory_bytes[-1]


def headline(s: Summary) -> list[str]:
    """The recommendation in a few sentences (the top of the text and of the HTML report)."""
    rec = s.recommendation
    lines = []
    goal = f"target {_pct(rec.target)}" + ("" if rec.target_given else " (95% of the ceiling)")
    if not rec.target_reachable:
        lines.append(f"{goal} is above the ceiling {_pct(rec.ceiling)}: aiming at {_pct(rec.effective_target)} instead")
    else:
        lines.append(goal)
    for r in (rec.sliding, rec.fixed):
        if r is None:
            continue
        exact = f" (exact minimum {_dur(r.exact_min_ttl_s)})" if r.exact_min_ttl_s else ""
        lines.append(
            f"recommended {r.mode}: ttl={_dur(r.ttl_s)}{exact}, cache_size={r.size} -> hit {_pct(r.hit_ratio)}, "
            f"mean Redis {_bytes(r.memory_mean_bytes)}, {r.peak_sessions:,.0f} sessions at peak, "
            f"{r.pg_reads_per_s:.2f} PostgreSQL reads/s"
        )
    if rec.sliding is None and rec.fixed is None:
        lines.append(f"no setting on the grid reaches {_pct(rec.effective_target)}")
    lru_curve = next((c for c in s.maxmemory if c.policy == "volatile-lru"), None)
    if lru_curve is not None:
        lines.append(
            f"maxmemory: at least {_bytes(suggested_maxmemory(lru_curve))} with maxmemory-policy volatile-lru "
            f"(within 1 point of no limit; Valkey's own {_bytes(s.redis_model.baseline_bytes)} included; "
            f"nothing is evicted from {_bytes(lru_curve.maxmemory_bytes[-1])})"
        )
    lines.append(
        f"ceiling: {_pct(s.trace.cold_read_ratio)} of reads are cold (a session's first read, or one before any "
        f"message) and miss at every setting, so no TTL or size goes above {_pct(rec.ceiling)}"
    )
    return lines


def render(s: Summary) -> str:
    """The table and the recommendation, as text (the table is at the recommended cache size)."""
    tr, rm = s.trace, s.redis_model
    size = s.size_for_ttl_curves
    j = s.sizes.index(size)
    sl, fx = s.sliding, s.fixed
    lines = [
        f"trace: {tr.events:,} events ({tr.reads:,} reads) over {_dur(tr.duration_s)}, {tr.sessions:,} sessions, "
        f"mean message {tr.mean_message_bytes:.0f} B",
        f"redis: {rm.hash_bytes:.0f} B per hash + {rm.list_bytes:.0f} B per list + {rm.per_message:.0f} B per "
        f"message + content; baseline {_bytes(rm.baseline_bytes)} ({rm.source})",
    ]
    if s.sample_rate < 1:
        lines.append(
            f"sampled: {100 * s.sample_rate:g}% of the sessions by hash (SHARDS); ± is a 95% band (jackknife over "
            "16 session buckets)"
        )
    lines += ["", *headline(s), "", f"by TTL at cache_size={size} (the recommended size):"]
    lines.append(
        f"{'TTL':>8} {'sliding hit':>14} {'bypass':>7} {'mean mem':>10} {'peak mem':>10} {'peak sess':>9} "
        f"{'PG reads/s':>10} {'fixed hit':>14} {'fixed mem':>10}"
    )
    fixed_at = {x: i for i, x in enumerate(fx.ttls)}
    for k, ttl in enumerate(sl.ttls):
        f = fixed_at.get(ttl)
        fixed = (
            f"{_pct(fx.hit_ratio[j][f], fx.hit_band[j][f]):>14} {_bytes(fx.memory_mean_bytes[j][f]):>10}"
            if f is not None
            else f"{'':>14} {'':>10}"
        )
        lines.append(
            f"{_dur(ttl):>8} {_pct(sl.hit_ratio[j][k], sl.hit_band[j][k]):>14} {_pct(sl.bypass_ratio[j][k]):>7} "
            f"{_bytes(sl.memory_mean_bytes[j][k]):>10} {_bytes(sl.memory_peak_bytes[j][k]):>10} "
            f"{sl.peak_sessions[k]:>9,.0f} {sl.pg_reads_per_s[j][k]:10.2f} {fixed}"
        )
    by = s.by_size
    lines += ["", "reads the window can answer (TTL ∞) by cache_size:"]
    lines.append(
        "  " + "  ".join(f"{x}: {_pct(by.answerable_ratio[x - 1])}" for x in s.sizes if x <= len(by.answerable_ratio))
    )
    kn = s.knees
    lines.append(f"knees: sliding TTL {_dur(kn.sliding_ttl_s)}, fixed TTL {_dur(kn.fixed_ttl_s)}, cache_size {kn.size}")
    for c in s.maxmemory:
        mode = "sliding" if c.sliding else "fixed"
        lines += ["", f"by maxmemory, {c.policy}, ttl={_dur(c.ttl_s)} {mode}, cache_size={c.size} "
                      f"(simulated on {c.events:,} events, {100 * c.sample_rate:.3g}% of sessions):"]  # fmt: skip
        lines.append("  " + "  ".join(
            f"{_bytes(m)}: {_pct(h, b)}" + (f" ({_pct(e)} err)" if e > 0.0005 else "")
            for m, h, b, e in zip(c.maxmemory_bytes, c.hit_ratio, c.band, c.error_ratio, strict=True)
        ))  # fmt: skip
    return "\n".join(lines)


def render_validation(points: list[sm.ValidationPoint]) -> str:
    """Predicted vs measured, one line per replayed point."""
    if not points:
        return ""
    head = (f"{'curve':<24} {'point':<18} {'replay TTL':>10} {'size':>5} {'predicted':>9} {'as replayed':>11} "
            f"{'measured':>9} {'mem predicted':>13} {'mem measured':>12}  ok")  # fmt: skip
    lines = ["validation on real Valkey (hit ratio, mean memory above the baseline):", head]
    for v in points:
        lines.append(
            f"{v.curve:<24} {v.label:<18} {v.replay_ttl_s:>9.3g}s {v.size:>5} {_pct(v.predicted_hit_ratio):>9} "
            f"{_pct(v.as_replayed_hit_ratio):>11} {_pct(v.measured_hit_ratio):>9} "
            f"{_bytes(v.as_replayed_memory_bytes):>13} {_bytes(v.measured_memory_bytes):>12}  "
            f"{'yes' if v.within() else 'NO'}" + (f"  INVALID: {'; '.join(v.invalid)}" if v.invalid else "")
        )
    worst_h = max(abs(v.hit_error) for v in points)
    worst_m = max(abs(v.memory_error) for v in points)
    lines.append(f"worst: {100 * worst_h:.1f} points of hit ratio, {100 * worst_m:.1f}% of memory "
                 "(tolerance 3 points, 10%)")  # fmt: skip
    return "\n".join(lines)


# ----------------------------------------------------------------------------- HTML


def _plots(s: Summary) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    from sessionbench.bench.harness.report import svg_chart

    plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 96, "font.size": 9})
    mib = FuncFormatter(lambda y, _: f"{y:,.3g}")
    rec = s.recommendation.sliding or s.recommendation.fixed
    size = s.size_for_ttl_curves
    target = s.recommendation.effective_target
    out: list[tuple[str, str]] = []
    for title, field, ylabel in (
        ("Hit ratio vs TTL", "hit_ratio", "hit ratio"),
        ("Redis memory vs TTL (mean; peak dashed)", "memory_mean_bytes", "MiB (mean over the trace)"),
    ):
        fig, ax = plt.subplots(figsize=(11, 3.6))
        for mode, style in (("sliding", "-"), ("fixed", ":")):
            curves_ = s.sliding if mode == "sliding" else s.fixed
            ttls = [x for x in curves_.ttls if x is not None]
            n = len(ttls)
            for j, sz in enumerate(s.sizes):
                if sz not in (size, 1, 5) and sz != s.sizes[-1]:
                    continue
                ys = getattr(curves_, field)[j][:n]
                band = (curves_.hit_band if field == "hit_ratio" else curves_.memory_band)[j][:n]
                div = 1.0 if field == "hit_ratio" else float(1 << 20)
                ys = [y / div for y in ys]
                (line,) = ax.plot(ttls, ys, style, marker=".", label=f"{mode}, size {sz}")
                if any(b > 0 for b in band):
                    lo = [y - b / div for y, b in zip(ys, band, strict=True)]
                    hi = [y + b / div for y, b in zip(ys, band, strict=True)]
                    ax.fill_between(ttls, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
                if field != "hit_ratio" and mode == "sliding" and sz == size:
                    peak = [y / div for y in curves_.memory_peak_bytes[j][:n]]
                    ax.plot(ttls, peak, "--", label=f"sliding peak, size {sz}")
        if rec is not None and rec.ttl_s is not None:
            y = rec.hit_ratio if field == "hit_ratio" else rec.memory_mean_bytes / (1 << 20)
            ax.axvline(rec.ttl_s, color="crimson", lw=0.8)
            ax.plot([rec.ttl_s], [y], "o", color="crimson", ms=8, label=f"recommended: {rec.mode} {_dur(rec.ttl_s)}, "
                    f"size {rec.size}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("TTL (s of traffic time)")
        ax.set_ylabel(ylabel)
        if field == "hit_ratio":
            ax.axhline(target, color="grey", lw=0.8, ls="--", label=f"target {_pct(target)}")
            ax.axhline(s.recommendation.ceiling, color="black", lw=0.8, ls=":", label="ceiling (cold misses)")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        else:
            ax.yaxis.set_major_formatter(mib)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        out.append((title, svg_chart(fig)))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    by = s.by_size
    (line,) = ax.plot(by.sizes, by.answerable_ratio, label="TTL ∞ (window only)")
    if any(b > 0 for b in by.band):
        lo = [y - b for y, b in zip(by.answerable_ratio, by.band, strict=True)]
        hi = [y + b for y, b in zip(by.answerable_ratio, by.band, strict=True)]
        ax.fill_between(by.sizes, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    if rec is not None:
        ax.axvline(rec.size, color="crimson", lw=0.8)
        ax.plot([rec.size], [by.answerable_ratio[min(rec.size, len(by.sizes)) - 1]], "o", color="crimson", ms=8,
                label=f"recommended size {rec.size}")  # fmt: skip
    ax.axhline(target, color="grey", lw=0.8, ls="--", label=f"target {_pct(target)}")
    ax.axhline(s.recommendation.ceiling, color="black", lw=0.8, ls=":", label="ceiling (cold misses)")
    ax.set_xscale("log")
    ax.set_xlabel("cache_size (messages per session)")
    ax.set_ylabel("hit ratio")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    out.append(("Hit ratio vs cache size", svg_chart(fig)))
    plt.close(fig)
    if s.maxmemory:
        fig, ax = plt.subplots(figsize=(11, 3.6))
        for c in s.maxmemory:
            xs = [m / (1 << 20) for m in c.maxmemory_bytes]
            (line,) = ax.plot(xs, c.hit_ratio, marker=".", label=c.policy)
            lo = [h - b for h, b in zip(c.hit_ratio, c.band, strict=True)]
            hi = [h + b for h, b in zip(c.hit_ratio, c.band, strict=True)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        first = next((c for c in s.maxmemory if c.policy == "volatile-lru"), s.maxmemory[0])
        pick = suggested_maxmemory(first) / (1 << 20)
        ax.axvline(pick, color="crimson", lw=0.8)
        ax.plot([pick], [first.hit_ratio[first.maxmemory_bytes.index(suggested_maxmemory(first))]], "o",
                color="crimson", ms=8, label=f"suggested maxmemory {_bytes(pick * (1 << 20))}")  # fmt: skip
        ax.axhline(first.unbounded_hit_ratio, color="grey", lw=0.8, ls="--", label="no limit")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mib)
        ax.set_xlabel("maxmemory (MiB, Valkey's baseline included)")
        ax.set_ylabel("hit ratio")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        out.append((f"Hit ratio vs maxmemory (ttl {_dur(first.ttl_s)}, cache_size {first.size})", svg_chart(fig)))
        plt.close(fig)
    return out


_CSS = ".rec{border:2px solid crimson;padding:0.6em 1em;margin:0.5em 0 1em;font-size:1.1em;max-width:70em}"


def write_html(s: Summary, path: Path) -> Path:
    """A self-contained report: the recommendation first, then every curve with it marked, then the table."""
    from sessionbench.bench.harness.report import REPORT_CSS, html_table

    items = "".join(f"<li>{html.escape(line)}</li>" for line in headline(s))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sessionbench advise</title>"
        f"<style>{REPORT_CSS}{_CSS}</style></head><body><h1>sessionbench advise: TTL, cache size, maxmemory</h1>",
        f"<div class='rec'><ul>{items}</ul><p>The ceiling: a read can only hit an entry an earlier read of "
        "the same session populated, so the first read of every session misses whatever the TTL, size or "
        "memory. The target is therefore read against the ceiling; the red marks on the plots below are the "
        "recommended setting.</p></div>",
    ]
    if s.validation:
        header = ["curve", "point", "replay TTL", "size", "predicted", "as replayed", "measured", "mem predicted",
                  "mem measured", "within 3 pts / 10%"]  # fmt: skip
        body = [
            [
                v.curve,
                v.label,
                f"{v.replay_ttl_s:.3g} s",
                str(v.size),
                _pct(v.predicted_hit_ratio),
                _pct(v.as_replayed_hit_ratio),
                _pct(v.measured_hit_ratio),
                _bytes(v.as_replayed_memory_bytes),
                _bytes(v.measured_memory_bytes),
                "yes" if v.within() else "NO",
            ]
            for v in s.validation
        ]
        parts.append("<h2>Validation on real Valkey</h2>" + html_table(header, body))
    for title, svg in _plots(s):
        parts.append(f"<h2>{html.escape(title)}</h2>{svg}")
    parts.append(f"<h2>Table</h2><pre>{html.escape(render(s))}</pre>")
    meta = {"source": s.source, "redis_model": s.redis_model.to_json(), "performance": s.performance}
    parts.append("<details><summary>What ran</summary><pre>" + html.escape(json.dumps(meta, indent=1)) + "</pre>"
                 "</details></body></html>")  # fmt: skip
    path.write_text("\n".join(parts))
    return path


# ----------------------------------------------------------------------------- command


def _parse_list(text: str, kind: type) -> list[Any]:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None


def check_args(args: argparse.Namespace) -> None:
    """Every option in range, before anything starts (ValueError: one line, exit 2)."""
    if args.target is not None and not (math.isfinite(args.target) and 0 < args.target <= 1):
        raise ValueError(f"--target must be a hit ratio in (0, 1], got {args.target:g}")
    if not (math.isfinite(args.sample_rate) and 0 < args.sample_rate <= 1):
        raise ValueError(f"--sample-rate must be in (0, 1], got {args.sample_rate:g}")
    if args.cache_size is not None and args.cache_size < 1:
        raise ValueError(f"--cache-size must be at least 1, got {args.cache_size}")
    for name in ("ttls", "fixed_ttls"):
        bad = [x for x in getattr(args, name) or [] if not (x > 0)]
        if bad:
            raise ValueError(f"--{name.replace('_', '-')} must be positive seconds, got {bad[0]:g}")
    if any(x < 1 for x in args.sizes or []):
        raise ValueError("--sizes must be at least 1")
    if args.validate_events < 100 or not args.validate_seconds > 0:
        raise ValueError("--validate-events must be at least 100 and --validate-seconds positive")
    if args.lru_events < 1000:
        raise ValueError(f"--lru-events must be at least 1000, got {args.lru_events}")
    if not Path(args.trace).exists():
        raise ValueError(f"{args.trace}: no such trace")


def run(args: argparse.Namespace) -> Summary:
    check_args(args)
    path = Path(args.trace)
    t0, c0 = time.perf_counter(), time.process_time()
    p = curves.run_pass(
        path,
        ttls=args.ttls or curves.DEFAULT_TTLS,
        fixed_ttls=args.fixed_ttls or (args.ttls or curves.DEFAULT_FIXED_TTLS),
        sample_rate=args.sample_rate,
        lru_events=args.lru_events,
    )
    perf = {"pass_s": time.perf_counter() - t0, "read_s": p.seconds["read"], "analyse_s": p.seconds["analyse"]}
    ctx = contextlib.nullcontext() if (args.no_measure and not args.validate) else open_servers(args.servers)
    with ctx as servers:
        if args.no_measure or servers is None:
            model = vd.cached_model()
        else:
            mean_size = round(p.analysis.content_bytes / max(p.analysis.messages, 1))
            model = asyncio.run(vd.measure_model(servers.database_url, servers.redis_url, mean_size))
        s = sm.summarise(p, model, target=args.target, sizes=args.sizes or curves.DEFAULT_SIZES,
                         cache_size=args.cache_size, source=str(path))  # fmt: skip
        if not args.no_maxmemory:
            t1 = time.perf_counter()
            s = sm.add_maxmemory(s, p)
            perf["maxmemory_s"] = time.perf_counter() - t1
        perf["events_per_s"] = p.events / max(time.perf_counter() - t0, 1e-9)
        perf["cpu_s"] = time.process_time() - c0
        perf["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        validation: list[sm.ValidationPoint] = []
        if args.validate and servers is not None:
            validation = asyncio.run(
                vd.validate_curves(
                    path,
                    s,
                    model,
                    max_events=args.validate_events,
                    seconds=args.validate_seconds,
                    database_url=servers.database_url,
                    redis_url=servers.redis_url,
                )
            )
    return dataclasses.replace(s, validation=validation, performance=perf)


def cmd_advise(args: argparse.Namespace) -> int:
    s = run(args)
    print(render(s))
    if s.validation:
        print()
        print(render_validation(s.validation))
    perf = s.performance
    print(f"\npass: {s.trace.events:,} events in {perf['pass_s']:.1f} s ({perf['events_per_s'] / 1e6:.2f} M events/s "
          f"end to end), peak RSS {perf['peak_rss_mib']:.0f} MiB")  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(s.to_json(), indent=1))
        print(f"wrote {args.output}")
    if args.html:
        print(f"wrote {write_html(s, Path(args.html))}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "advise",
        help="recommend a cache TTL, size and maxmemory from an access trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("trace", help="a sessionbench trace: text (.tsv, .tsv.gz) or a columnar directory")
    p.add_argument("--target", type=float, metavar="RATIO",
                   help="hit ratio to reach, in (0, 1] (default: 95%% of the ceiling set by cold misses)")  # fmt: skip
    p.add_argument("--ttls", type=lambda s: _parse_list(s, float), metavar="SECONDS,...",
                   help="TTL grid in seconds, comma-separated")  # fmt: skip
    p.add_argument("--fixed-ttls", type=lambda s: _parse_list(s, float), metavar="SECONDS,...",
                   help="fixed-TTL grid in seconds (default: a 13-point subset; each costs one pass)")  # fmt: skip
    p.add_argument("--sizes", type=lambda s: _parse_list(s, int), metavar="N,...",
                   help="cache sizes to tabulate, comma-separated")  # fmt: skip
    p.add_argument("--cache-size", type=int, metavar="N",
                   help="cache size of the TTL table and plots (default: the recommended one)")  # fmt: skip
    p.add_argument("--sample-rate", type=float, default=1.0, metavar="FRACTION",
                   help="analyse this fraction of the sessions (by hash) for every curve, with a 95%% band "
                   "(default 1: exact)")  # fmt: skip
    p.add_argument("--lru-events", type=int, default=100_000, metavar="N",
                   help="events of the session sample each maxmemory simulation replays (default 100000)")  # fmt: skip
    p.add_argument("--no-maxmemory", action="store_true", help="skip the maxmemory curves")
    p.add_argument("--no-measure", action="store_true", help="use the last measured Valkey constants")
    p.add_argument("--validate", action="store_true",
                   help="replay three points of every curve on the real hybrid store and print predicted vs "
                   "measured")  # fmt: skip
    p.add_argument("--validate-events", type=int, default=3000, metavar="N",
                   help="events replayed per point (default 3000)")  # fmt: skip
    p.add_argument("--validate-seconds", type=float, default=6.0, metavar="SECONDS",
                   help="replay length per point (default 6)")  # fmt: skip
    p.add_argument("--servers", choices=MODES, default="embedded", help="where servers come from (default embedded)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the result JSON here")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report here")
    p.set_defaults(func=cmd_advise)
