"""The workload model: seeded, pure, realistic by default, and round-trips through trace files."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from sessionbench.bench.harness.runner import RunOptions, run_closed, run_open
from sessionbench.bench.harness.workload import Workload, events_per_second, generate
from sessionbench.store.accesslog import TraceEvent, read_trace, write_trace

SHORT = Workload(duration=10.0)


class Recorder:
    """A target that records the operation stream it is driven with."""

    name = "recorder"

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, str, tuple[int, ...], int, int | None]] = []

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        self.ops.append((session, "append", roles, tuple(sizes), 0, None))

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        self.ops.append((session, "read", "", (), limit, before))
        return None

    async def close(self) -> None:
        return None


def test_same_seed_same_events_and_different_seed_different_events() -> None:
    """Generation is deterministic for a seed, and the seed matters."""
    first = list(generate(SHORT))
    assert first == list(generate(SHORT))
    assert len(first) > 500
    assert first != list(generate(replace(SHORT, seed=1)))


def test_generation_leaves_the_global_random_state_alone() -> None:
    """The generator is pure: it draws from its own Random, not the module-level one."""
    state = random.getstate()
    list(generate(SHORT))
    assert random.getstate() == state


def test_events_are_time_ordered_and_turns_are_well_formed() -> None:
    """Times never go backwards; every session starts with a user append followed by its history read."""
    events = list(generate(SHORT))
    assert all(a.t <= b.t for a, b in itertools.pairwise(events))
    assert events[-1].t <= SHORT.duration
    by_session: dict[str, list[TraceEvent]] = defaultdict(list)
    for ev in events:
        by_session[ev.session].append(ev)
    for evs in by_session.values():
        assert (evs[0].op, evs[0].roles) == ("append", "u")
        for i, ev in enumerate(evs):
            if ev.op == "append" and ev.roles == "u" and i + 1 < len(evs):
                nxt = evs[i + 1]
                assert nxt.op == "read"
                assert nxt.t == ev.t
                assert nxt.limit == SHORT.read_limit


def test_defaults_are_realistic() -> None:
    """Default traffic: hundreds of ops/s once warm, ~200 B / ~800 B median messages, heavy-tailed turns, resumes."""
    w = Workload()
    events = list(generate(w))
    late = [e for e in events if e.t >= w.duration / 2]
    rate = len(late) / (w.duration / 2)
    assert 150 < rate < 600, rate
    assert 100 < events_per_second(w) < 800
    user = [e.sizes[0] for e in events if e.roles == "u"]
    assistant = [e.sizes[0] for e in events if e.roles == "a"]
    assert 170 < statistics.median(user) < 235
    assert 650 < statistics.median(assistant) < 950
    assert max(assistant) > 5 * statistics.median(assistant)  # a long tail
    turns = Counter(e.session for e in events if e.roles == "u")
    assert max(turns.values()) >= 4 * statistics.median(turns.values())
    pages = [e for e in events if e.op == "read" and e.before is not None]
    assert pages
    assert all(e.before > 1 for e in pages)
    # Resumed sessions: a gap far longer than any think time between two turns of one session.
    gaps = []
    last: dict[str, float] = {}
    for e in events:
        if e.roles == "u":
            if e.session in last:
                gaps.append(e.t - last[e.session])
            last[e.session] = e.t
    think_replay = w.think_time_median / w.time_compression
    assert any(g > 20 * think_replay for g in gaps)


def test_out_of_range_settings_are_rejected() -> None:
    """A workload with an impossible setting fails at construction, naming the field."""
    with pytest.raises(ValueError, match="popularity_skew"):
        Workload(popularity_skew=1.0)
    with pytest.raises(ValueError, match="new_sessions_per_s"):
        Workload(new_sessions_per_s=0)
    with pytest.raises(ValueError, match="read_limit"):
        Workload(read_limit=0)


def test_workload_round_trips_through_a_dict() -> None:
    """to_dict/from_dict keep every field (results record the workload this way)."""
    w = Workload(seed=7, duration=3.0, popularity_skew=0.9)
    assert Workload.from_dict(w.to_dict()) == w


@pytest.mark.parametrize("suffix", [".trace", ".trace.gz"])
def test_trace_write_read_replay_gives_the_identical_operation_stream(tmp_path: Path, suffix: str) -> None:
    """Generated events written to a trace and read back are identical, and replaying either gives the same ops."""
    w = replace(SHORT, duration=4.0, page_probability=0.3)
    path = tmp_path / f"w{suffix}"
    generated = list(generate(w))
    assert write_trace(path, generated) == len(generated)
    replayed = list(read_trace(path))
    assert replayed == generated

    direct, from_file = Recorder(), Recorder()
    asyncio.run(run_closed(direct, generate(w), clients=1, duration=60))
    asyncio.run(run_closed(from_file, read_trace(path), clients=1, duration=60))
    assert from_file.ops == direct.ops
    assert len(direct.ops) == len(generated)


def test_open_model_replays_every_event_of_each_session_in_trace_order() -> None:
    """On the open-model schedule each session sees exactly its trace events, in order."""
    w = replace(SHORT, duration=2.0, time_compression=600.0)
    target = Recorder()
    asyncio.run(run_open(target, generate(w), RunOptions(asap=True)))
    expected: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in generate(w):
        expected[e.session].append((e.op, e.roles))
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for session, op, roles, *_ in target.ops:
        seen[session].append((op, roles))
    assert seen == expected
