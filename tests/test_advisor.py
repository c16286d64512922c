"""The TTL / cache-size advisor: exact curves on hand-made traces, the engine against an
event-by-event model of the store, monotonicity, stack distances, the command, and
predicted vs measured hit ratio on the real hybrid store."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from bench.advisor import command as advise
from bench.advisor import curves as advisor
from bench.cli import main
from bench.harness.workload import Workload, generate
from bench.servers import Servers
from store.accesslog import TraceEvent, TraceFormatError, read_trace, write_trace


def _append(t: float, s: str = "a", roles: str = "u", size: int = 100) -> TraceEvent:
    return TraceEvent(t, s, "append", roles, tuple(size for _ in roles))


def _read(t: float, s: str = "a", limit: int = 20, before: int | None = None) -> TraceEvent:
    return TraceEvent(t, s, "read", limit=limit, before=before)


def _analyse(events: list[TraceEvent], ttls: list[float]) -> advisor.Analysis:
    return advisor.analyse(advisor.columns_from_events(events), ttls=ttls, fixed_ttls=None, stack_sample=None)


def _hits(a: advisor.Analysis, ttl: float, size: int, *, sliding: bool = True) -> int:
    k = list(a.ttls if sliding else a.fixed_ttls).index(ttl)
    return int((a.sliding_hits if sliding else a.fixed_hits)[k, min(size, advisor.NEED_CAP)])


def test_sliding_and_fixed_ttl_differ_exactly_on_a_hand_trace() -> None:
    """Reads every 5 s: a 6 s sliding TTL keeps the entry (4 hits) while a fixed one expires from the populate (2)."""
    events = [_append(0), _read(0), _read(5), _read(10), _read(15), _read(20)]
    a = _analyse(events, [3, 6, 21])
    assert a.reads == 5
    assert [_hits(a, t, 20) for t in (3, 6, 21, math.inf)] == [0, 4, 4, 4]
    # Fixed: populate at 0, hit at 5, expired at 10 (populate again), hit at 15, expired at 20.
    assert [_hits(a, t, 20, sliding=False) for t in (3, 6, 21, math.inf)] == [0, 2, 4, 4]
    assert advisor.min_sliding_ttl(a, 20, 0.8) == pytest.approx(5.000001)


def test_appends_extend_but_never_create_an_entry() -> None:
    """Appends before any read and a read of an empty session never populate; only a read miss does."""
    events = [_read(0), _append(1), _append(2, roles="a"), _read(3), _read(4), _append(5), _read(6)]
    a = _analyse(events, [1.5, 10])
    # read@0: no messages (miss, nothing cached); read@3: miss + populate; read@4 hit; read@6 hit (append refreshed).
    assert a.cold_reads == 2
    assert _hits(a, 10, 20) == 2
    # 1.5 s sliding: gaps 1 and 1+1 stay below it; a fixed 1.5 s entry from t=3 is gone at t=6.
    assert _hits(a, 1.5, 20) == 2
    assert _hits(a, 1.5, 20, sliding=False) == 1


def test_reads_the_window_can_answer_by_cache_size() -> None:
    """A read needs the newest min(limit, history) messages, a page needs its range: hits by size are exact."""
    events = [
        _append(0, roles="ua" * 15),  # 30 messages in one turn
        _read(1, limit=20),  # miss, populates
        _read(2, limit=20),  # needs 20
        _read(3, limit=5),  # needs 5
        _read(4, limit=10, before=21),  # seqs 11..20 -> the newest 20
        _read(5, limit=10, before=11),  # seqs 1..10 -> all 30
    ]
    a = _analyse(events, [100])
    got = {s: _hits(a, math.inf, s) for s in (1, 4, 5, 19, 20, 29, 30, 1000)}
    assert got == {1: 0, 4: 0, 5: 1, 19: 1, 20: 3, 29: 3, 30: 4, 1000: 4}
    summary = advisor.summarise(a, advisor.RedisModel(200.0, 20.0, "test"), target=0.8, sizes=[5, 20, 30])
    # 4 of 5 reads can hit at most (the first is cold): 80% needs every window read, so size 30.
    assert summary["recommendation"]["smallest_size"] == 30
    j = summary["sizes"].index(20)
    assert summary["sliding"]["bypass_ratio"][j][0] == pytest.approx(1 / 5)


def _random_trace(rng: random.Random, n: int) -> list[TraceEvent]:
    t, events, count = 0.0, [], {}
    for _ in range(n):
        t += rng.choice([0, 0, 0.5, 1, 2, 3, 7, 20, 60])
        s = f"s{rng.randrange(5)}"
        if rng.random() < 0.45:
            k = rng.choice([1, 1, 2])
            events.append(TraceEvent(t, s, "append", "ua"[:k], tuple(rng.randrange(1, 500) for _ in range(k))))
            count[s] = count.get(s, 0) + k
        else:
            before = rng.choice([None, None, None, rng.randrange(1, count.get(s, 0) + 3)])
            events.append(_read(t, s, limit=rng.choice([1, 3, 5, 20]), before=before))
    return events


def test_one_pass_matches_the_event_by_event_model() -> None:
    """On random traces, every curve of the one pass equals a step-by-step simulation of the store's semantics."""
    ttls = [1, 2, 3, 5, 8, 30]
    for seed in range(40):
        rng = random.Random(seed)
        events = _random_trace(rng, rng.randrange(2, 60))
        a = _analyse(events, ttls)
        for k, ttl in enumerate([*ttls, math.inf]):
            for sliding in (True, False):
                for size in (1, 3, 20):
                    sim = advisor.simulate(events, ttl, size, sliding=sliding)
                    mem = advisor.memory_components(a.mem_sliding if sliding else a.mem_fixed, size)[:, k]
                    end = advisor.memory_components(a.end_sliding if sliding else a.end_fixed, size)[:, k]
                    peak = (a.peak_sliding if sliding else a.peak_fixed)[k]
                    where = f"seed {seed} ttl {ttl} size {size} sliding {sliding}"
                    assert _hits(a, ttl, size, sliding=sliding) == sim.hits, where
                    assert mem[0] == pytest.approx(sim.entry_seconds, abs=1e-9), where
                    assert mem[1] == pytest.approx(sim.message_seconds, abs=1e-9), where
                    assert (end[0], end[1]) == (sim.end_entries, sim.end_messages), where
                    assert peak == sim.peak_entries, where


@pytest.fixture(scope="module")
def workload_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hours of default traffic, in traffic seconds (about 57,000 events)."""
    path = tmp_path_factory.mktemp("advisor") / "trace.tsv"
    write_trace(path, generate(Workload(duration=6 * 3600, time_compression=1.0, seed=3)))
    return path


def test_curves_are_monotone(workload_trace: Path) -> None:
    """Hit ratio never falls as TTL or cache size grows, and mean memory never falls as TTL grows."""
    a = advisor.analyse(advisor.load_trace(workload_trace), stack_sample=None)
    for hits in (a.sliding_hits, a.fixed_hits):
        assert np.all(np.diff(hits, axis=0) >= 0)
        assert np.all(np.diff(hits, axis=1) >= 0)
    for table in (a.mem_sliding, a.mem_fixed):
        for size in (1, 20, 1000):
            comps = advisor.memory_components(table, size)
            assert np.all(np.diff(comps, axis=1) >= -1e-9 * comps.max())
    assert np.all(np.diff(a.peak_sliding) >= 0)
    # Sliding keeps an entry at least as long as fixed does: never fewer hits.
    at = [list(a.ttls).index(x) for x in a.fixed_ttls]
    assert np.all(a.sliding_hits[at] >= a.fixed_hits)


def test_stack_distances_are_exact() -> None:
    """Byte-weighted LRU stack distances equal a brute-force count of the distinct items in between."""
    items = np.array([0, 1, 2, 0, 1, 1, 3, 0])
    weights = np.array([1.0, 2.0, 4.0, 1.0, 8.0, 16.0, 32.0, 1.0])
    got = advisor.stack_distances(items, weights)
    # 0@3: {1 (2), 2 (4)}; 1@4: {2 (4), 0 (1)}; 1@5: none; 0@7: {1 (16), 3 (32)}
    assert np.isinf(got[[0, 1, 2, 6]]).all()
    assert got[[3, 4, 5, 7]].tolist() == [6.0, 5.0, 0.0, 48.0]
    rng = np.random.default_rng(1)
    items = rng.integers(0, 30, 400)
    weights = rng.integers(1, 9, 400).astype(float)
    fast = advisor.stack_distances(items, weights)
    for i in range(400):
        prev = np.flatnonzero(items[:i] == items[i])
        if prev.size == 0:
            assert math.isinf(fast[i])
            continue
        latest = {int(items[j]): weights[j] for j in range(prev[-1] + 1, i)}
        assert fast[i] == sum(latest.values())


def test_lru_curve_reaches_the_unbounded_hit_ratio(workload_trace: Path) -> None:
    """With maxmemory at the footprint LRU never evicts: its hit ratio equals TTL ∞; SHARDS stays close."""
    a = advisor.analyse(advisor.load_trace(workload_trace), stack_sample=1.0)
    full = advisor.lru_curve(a.access, 20, 200.0, 20.0)
    assert full.hit_ratio[-1] == pytest.approx(a.sliding_hits[-1, 20] / a.reads)
    assert np.all(np.diff(full.hit_ratio) >= 0)
    sampled = advisor.analyse(advisor.load_trace(workload_trace), stack_sample=0.25)
    part = advisor.lru_curve(sampled.access, 20, 200.0, 20.0)
    assert part.footprint == pytest.approx(full.footprint, rel=0.15)
    assert part.hit_ratio[-1] == pytest.approx(full.hit_ratio[-1], abs=0.03)


def test_vectorised_loading_matches_the_reference_reader(workload_trace: Path, tmp_path: Path) -> None:
    """load_trace gives the same columns as store.accesslog.read_trace, also gzipped, and names a bad line."""
    events = list(read_trace(workload_trace))
    slow = advisor.columns_from_events(events)
    gz = tmp_path / "t.tsv.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(workload_trace.read_bytes())
    for cols in (advisor.load_trace(workload_trace, block_bytes=1 << 16), advisor.load_trace(gz)):
        for name in ("t", "is_read", "nmsg", "nbytes", "limit", "before"):
            assert np.array_equal(getattr(cols, name), getattr(slow, name)), name
        assert [cols.sessions[i] for i in cols.sid] == [slow.sessions[i] for i in slow.sid]
    bad = tmp_path / "bad.tsv"
    lines = workload_trace.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if i > 100 and "\tread\t" in line)
    lines[i] = lines[i].replace("\tread\t", "\treed\t")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match=f"line {i + 1}"):
        advisor.load_trace(bad)


def test_advise_command_writes_json_and_html(workload_trace: Path, tmp_path: Path) -> None:
    """`sessionbench advise --no-measure` prints a recommendation and writes the JSON and the HTML report."""
    out, page = tmp_path / "advice.json", tmp_path / "advice.html"
    code = main(["advise", str(workload_trace), "--no-measure", "--target", "0.8", "-o", str(out), "--html", str(page)])
    assert code == 0
    data = json.loads(out.read_text())
    rec = data["recommendation"]
    assert rec["target_reachable"]
    assert rec["sliding"]["hit_ratio"] >= 0.8
    k = data["ttls"].index(rec["sliding"]["ttl_s"])
    # The recommended TTL is the smallest on the grid that reaches the target at that size.
    j = data["sizes"].index(rec["sliding"]["size"])
    assert data["sliding"]["hit_ratio"][j][k - 1] < 0.8 <= data["sliding"]["hit_ratio"][j][k]
    assert data["lru"]["hit_ratio"][-1] > 0.8
    assert page.read_text().count("<svg") == 4


async def test_measured_redis_constants_are_plausible(database_url: str, redis_url: str) -> None:
    """MEMORY USAGE of entries the store wrote gives a positive per-entry and per-message overhead."""
    model = await advise.measure_model(database_url, redis_url, 800)
    assert 50 < model.per_entry < 2000
    assert 0 < model.per_message < 400


async def test_predicted_hit_ratio_matches_the_real_hybrid_store(
    workload_trace: Path, database_url: str, redis_url: str, servers: Servers
) -> None:
    """Replaying a compressed slice on real Redis + PostgreSQL measures the predicted hit ratio within 2 points."""
    del servers
    events, factor = advise.sample_for_replay(workload_trace, 1500, 3.0, 600)
    ttl = 600 / factor
    predicted, _ = advise._predict(events, ttl, 20, True, advise.BUILTIN_MODEL)
    got = await advise.replay_point(events, ttl, 20, True, database_url, redis_url)
    measured = got["cache"].get("hit", 0) / got["reads"]
    assert got["reads"] > 300
    assert not got["errors"]
    assert abs(measured - predicted) <= 0.02, (predicted, measured, got["lag_p99_ms"])
