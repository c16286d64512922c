"""The runner: drive a target (a store, the seed baseline, a floor, a no-op) with trace events.

Three ways to drive it, all in-process on one asyncio loop and all bounded in time:

:func:`run_open` (the default, an **open model**)
    Each event is due at ``start + t``; the dispatcher starts it then, whatever the
    store is doing, so a slow store builds a queue instead of slowing the schedule.
    Latency is measured from when the operation was *due*, not from when it got to
    run, so time spent queued is counted (no coordinated omission).  The operations
    of one session run one at a time, in trace order, as a service handles a
    conversation; an operation due at the same instant as its session's previous one
    (the history read right after the user's message) is due when that one finished,
    so a stall is counted once, in the operation that hit it.  The dispatcher sleeps
    until ``dispatch_slack_ms`` before an event is due (the event loop wakes up to a
    millisecond late); latency is then measured from the actual start if that was
    earlier than the due time, never from a later point.
    The dispatcher's lateness (schedule lag) goes into its own histogram: a run whose
    p99 lag exceeds ``max_lag_ms``, that overflows ``max_in_flight`` or that cannot
    drain in ``drain_timeout`` is flagged invalid with the reason.
:func:`run_closed` (a **closed model**)
    ``clients`` workers each own a share of the sessions and run their events back to
    back, ignoring timestamps: peak throughput, with latency as service time.
:func:`run_turns` (the fixed-turn benchmark)
    ``clients`` workers each loop over their own sessions doing one turn after
    another: append the user's message, read the last ``limit``, append the answer.

Every run records per-operation HDR histograms (nanoseconds, 3 significant digits),
per-second time series (operations, cache results, p50/p99), cache results (from
``ReadResult.cache`` of each read), errors by kind, the process's
CPU time (``getrusage``: the generator, the runner and the store's client code) and the
dispatcher's own busy time.  Time is always ``perf_counter_ns``.
"""

from __future__ import annotations

import asyncio
import random
import resource
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Protocol

from hdrh.histogram import HdrHistogram

from sessionbench.store.accesslog import LETTER_ROLES, TraceEvent
from sessionbench.store.models import ReadResult
from sessionbench.store.tasks import stop_task

__all__ = [
    "ChatStore",
    "Interval",
    "NoopTarget",
    "RunOptions",
    "RunResult",
    "StoreTarget",
    "Target",
    "payload",
    "prefill",
    "run_closed",
    "run_open",
    "run_turns",
    "session_uuid",
]

HIGHEST_NS = 60_000_000_000  # latencies above a minute are clamped (and the run is hopeless anyway)
HIGHEST_INTERVAL_US = 60_000_000
_NS = uuid.UUID("6f1d2a8e-5b7c-4c1e-9a55-5e55b0e4c4a1")


# ----------------------------------------------------------------------------- targets


class Target(Protocol):
    """What the runner drives.  ``read`` returns the cache result when the target has one."""

    name: str

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None: ...

    async def read(self, session: str, limit: int, before: int | None) -> str | None: ...

    async def close(self) -> None: ...


class TurnShapedTarget(Target, Protocol):
    """A target with a turn-shaped call: append, then the window after it, as one call
    (``SessionStore.add_and_read``; the floors' least work for it)."""

    async def append_and_read(self, session: str, roles: str, sizes: Sequence[int], limit: int) -> str | None: ...


def turn_shaped(target: Target) -> TurnShapedTarget | None:
    """``target`` if it has a turn-shaped call (the stores and the floors), else None (the seed, peers)."""
    inner: Any = target
    while hasattr(inner, "target"):  # a wrapper (CountingTarget) calls the target it wraps
        if not callable(getattr(inner, "append_and_read", None)):
            return None
        inner = inner.target
    if isinstance(inner, StoreTarget) and not hasattr(inner.store, "add_and_read"):
        return None
    return target if callable(getattr(inner, "append_and_read", None)) else None  # type: ignore[return-value]


class ChatStore(Protocol):
    """The part of :class:`store.SessionStore` (and of the seed baseline) the runner uses."""

    async def add_message(
        self, session_id: str, role: str, content: str, metadata: Mapping[str, Any] | None = None
    ) -> Any: ...

    async def add_messages(self, session_id: str, messages: Sequence[Mapping[str, Any]]) -> Any: ...

    async def get_messages(self, session_id: str, limit: int = 20, before_seq: int | None = None) -> Any: ...

    async def create_session(self, session_id: str) -> Any: ...

    async def close(self) -> None: ...


def session_uuid(key: str) -> str:
    """The UUID a trace's session key maps to (the same in every configuration)."""
    return str(uuid.uuid5(_NS, key))


def _corpus(size: int = 1 << 17) -> str:
    rng = random.Random(20240501)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    words: list[str] = []
    total = 0
    while total < size:
        word = "".join(rng.choices(letters, weights, k=rng.randint(1, 10)))
        words.append(word)
        total += len(word) + 1
    return " ".join(words)[:size]


CORPUS = _corpus()


def payload(size: int, salt: int) -> str:
    """ASCII text of exactly ``size`` bytes, word-like (so TOAST and memory figures are fair)."""
    size = max(1, min(size, len(CORPUS) - 1))
    start = (salt * 2654435761) % (len(CORPUS) - size)
    text = CORPUS[start : start + size]
    return text if text[0] != " " else "x" + text[1:]


class StoreTarget:
    """Drives anything with ``add_message`` / ``add_messages`` / ``get_messages`` (a store, the seed).

    ``create_first``: call ``create_session`` before a session's first append (the seed
    baseline silently drops messages of sessions that were never created; the store
    creates them on append, in the same round trip).  ``cached``: the store has a cache
    whose result each read reports (``SessionStore.read``); the runner then counts hits.
    """

    def __init__(
        self, store: ChatStore, name: str, *, owns: bool = True, create_first: bool = False, cached: bool = False
    ) -> None:
        self.store = store
        self.name = name
        self._cached = cached
        self._owns = owns
        self._salt = 0
        self._created: set[str] | None = set() if create_first else None

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        sid = session_uuid(session)
        self._salt += 1
        if self._created is not None and session not in self._created:
            await self.store.create_session(sid)
            self._created.add(session)
        if len(roles) == 1:
            await self.store.add_message(sid, LETTER_ROLES[roles], payload(sizes[0], self._salt))
            return
        await self.store.add_messages(sid, self._messages(roles, sizes))

    def _messages(self, roles: str, sizes: Sequence[int]) -> list[dict[str, str]]:
        """The messages of one append: a role letter and a payload size each, every payload distinct."""
        pairs = zip(roles, sizes, strict=True)
        messages = [{"role": LETTER_ROLES[r], "content": payload(n, self._salt + i)} for i, (r, n) in enumerate(pairs)]
        self._salt += len(messages)
        return messages

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        if self._cached:
            result: ReadResult = await self.store.read(session_uuid(session), limit, before)  # type: ignore[attr-defined]
            return result.cache
        await self.store.get_messages(session_uuid(session), limit, before)
        return None

    async def append_and_read(self, session: str, roles: str, sizes: Sequence[int], limit: int) -> str | None:
        """``add_and_read`` (stores only: see :func:`turn_shaped`); the cache result when there is a cache."""
        self._salt += 1
        messages = self._messages(roles, sizes)
        turn = await self.store.add_and_read(session_uuid(session), messages, limit)  # type: ignore[attr-defined]
        return str(turn.cache) if self._cached else None

    async def close(self) -> None:
        if self._owns:
            await self.store.close()


class NoopTarget:
    """Does nothing: measures the generator and the runner themselves."""

    name = "noop"

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        return None

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        return None

    async def close(self) -> None:
        return None


# ----------------------------------------------------------------------------- recording


def new_histogram() -> HdrHistogram:
    """A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits."""
    return HdrHistogram(1, HIGHEST_NS, 3)


@dataclass(frozen=True, slots=True)
class Interval:
    """One time-series interval of a run: completed operations, cache results, errors, p50/p99.

    ``ops`` counts completed operations by kind; ``p50_ms`` / ``p99_ms`` are per
    histogram name (``read``, ``read.hit``, ...), in milliseconds, at 2 significant digits.
    """

    t: float
    ops: dict[str, int]
    cache: dict[str, int]
    errors: int
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]

    @property
    def completed(self) -> int:
        """Operations completed in this interval (appends and reads; the ``turn`` histogram is not one)."""
        return self.ops.get("append", 0) + self.ops.get("read", 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "ops": self.ops,
            "cache": self.cache,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Interval:
        return cls(
            t=float(data["t"]),
            ops={str(k): int(v) for k, v in (data.get("ops") or {}).items()},
            cache={str(k): int(v) for k, v in (data.get("cache") or {}).items()},
            errors=int(data.get("errors") or 0),
            p50_ms={str(k): float(v) for k, v in (data.get("p50_ms") or {}).items()},
            p99_ms={str(k): float(v) for k, v in (data.get("p99_ms") or {}).items()},
        )


class _Bucket:
    __slots__ = ("cache", "errors", "hist", "ops")

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.cache: Counter[str] = Counter()
        self.errors = 0
        self.hist: dict[str, HdrHistogram] = {}


class Recorder:
    """Histograms, counters and per-interval series for one run."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.histograms: dict[str, HdrHistogram] = {}
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.cache: Counter[str] = Counter()
        self.lag = HdrHistogram(1, HIGHEST_INTERVAL_US, 3)  # microseconds
        self.turns = 0
        self.enabled = True
        self.t0 = perf_counter_ns()
        self.last_end = self.t0
        self._interval = max(1, int(interval_s * 1e9))
        self._buckets: dict[int, _Bucket] = {}

    def start(self, t0: int) -> None:
        self.t0 = self.last_end = t0

    def _bucket(self, end: int) -> _Bucket:
        index = max(0, (end - self.t0) // self._interval)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        return bucket

    def record(self, op: str, latency_ns: int, end: int, cache: str | None = None) -> None:
        if not self.enabled:
            return
        value = min(max(1, latency_ns), HIGHEST_NS)
        names = (op,) if cache is None else (op, f"{op}.{cache}")
        bucket = self._bucket(end)
        for name in names:
            hist = self.histograms.get(name)
            if hist is None:
                hist = self.histograms[name] = new_histogram()
            hist.record_value(value)
            self.counts[name] += 1
            ih = bucket.hist.get(name)
            if ih is None:
                ih = bucket.hist[name] = HdrHistogram(1, HIGHEST_INTERVAL_US, 2)
            ih.record_value(min(max(1, value // 1000), HIGHEST_INTERVAL_US))
        bucket.ops[op] += 1
        if cache is not None:
            self.cache[cache] += 1
            bucket.cache[cache] += 1
        self.last_end = max(self.last_end, end)

    def error(self, op: str, kind: str, end: int) -> None:
        if not self.enabled:
            return
        self.errors[f"{op}:{kind}"] += 1
        self._bucket(end).errors += 1
        self.last_end = max(self.last_end, end)

    def record_lag(self, lag_ns: int) -> None:
        if self.enabled:
            self.lag.record_value(min(max(1, lag_ns // 1000), HIGHEST_INTERVAL_US))

    def series(self) -> list[Interval]:
        """Per-interval figures, oldest first (empty intervals included)."""
        if not self._buckets:
            return []
        seconds = self._interval / 1e9
        out: list[Interval] = []
        for index in range(max(self._buckets) + 1):
            b = self._buckets.get(index) or _Bucket()
            out.append(
                Interval(
                    t=round(index * seconds, 3),
                    ops=dict(b.ops),
                    cache=dict(b.cache),
                    errors=b.errors,
                    p50_ms={k: h.get_value_at_percentile(50) / 1000 for k, h in b.hist.items()},
                    p99_ms={k: h.get_value_at_percentile(99) / 1000 for k, h in b.hist.items()},
                )
            )
        return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class RunResult:
    """What one run measured (raw; :mod:`sessionbench.bench.harness.results` turns it into JSON)."""

    mode: str
    target: str
    elapsed_s: float
    histograms: dict[str, HdrHistogram]
    counts: dict[str, int]
    errors: dict[str, int]
    cache: dict[str, int]
    turns: int
    cpu_s: float
    scheduler_busy_s: float
    lag: HdrHistogram
    series: list[Interval]
    options: dict[str, Any]
    invalid: list[str] = field(default_factory=list)
    window_turns: int = -1
    """Turns over the whole run including warm-up (what driver calls are divided by); -1: ``turns``."""
    offered: int | None = None
    """Open model: operations the schedule offered (dispatched) in ``schedule_s``; None in closed loops."""
    schedule_s: float | None = None
    """Open model: the length of the schedule in replay seconds (the offered rate's denominator)."""

    def __post_init__(self) -> None:
        if self.window_turns < 0:
            self.window_turns = self.turns

    @property
    def operations(self) -> int:
        """Completed store operations (appends and reads; a turn is three of them)."""
        return self.counts.get("append", 0) + self.counts.get("read", 0)

    @property
    def throughput(self) -> float:
        """Completed operations per second of the run."""
        return self.operations / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_fraction(self) -> float:
        """CPU time of this process over wall time: 1.0 is one core busy."""
        return self.cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def valid(self) -> bool:
        return not self.invalid


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Knobs of the open and closed runners (every loop is bounded by them)."""

    duration: float | None = None
    """Stop dispatching at this many replay seconds (None: when the events end)."""

    max_lag_ms: float = 10.0
    """Flag the run invalid when the dispatcher's p99 lateness exceeds this."""

    max_in_flight: int = 5000
    """Flag invalid and stop dispatching when this many operations are queued or running."""

    drain_timeout: float = 10.0
    """Seconds to wait for operations still running when the schedule ends; the rest are cancelled."""

    op_timeout: float = 10.0
    """An operation taking longer is cancelled and counted as an error (``timeout``)."""

    dispatch_slack_ms: float = 2.0
    """Start an event up to this early: the loop's timer rounds sleeps up to the next
    millisecond and the OS adds jitter; latency is then measured from the actual start."""

    interval: float = 1.0
    """Seconds per time-series interval."""

    asap: bool = False
    """Ignore timestamps: every event is due at once (the generator's capacity)."""

    max_cpu_fraction: float = 0.9
    """Open model: flag invalid when this process used more than this many cores (saturated)."""

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


class _Executor:
    """Runs one event against the target, timing it and recording the outcome."""

    def __init__(self, target: Target, rec: Recorder, op_timeout: float) -> None:
        self.target = target
        self.rec = rec
        self.op_timeout = op_timeout

    async def execute(self, ev: TraceEvent, t0: int) -> int:
        """Run ``ev``; latency is measured from ``t0``.  Returns the completion time."""
        cache: str | None = None
        try:
            async with asyncio.timeout(self.op_timeout):
                if ev.op == "append":
                    await self.target.append(ev.session, ev.roles, ev.sizes)
                else:
                    cache = await self.target.read(ev.session, ev.limit, ev.before)
        except TimeoutError:
            end = perf_counter_ns()
            self.rec.error(ev.op, "timeout", end)
            return end
        except Exception as exc:  # noqa: BLE001 - any failure of the target is counted; the run goes on
            end = perf_counter_ns()
            self.rec.error(ev.op, type(exc).__name__, end)
            return end
        end = perf_counter_ns()
        self.rec.record(ev.op, end - t0, end, cache)
        if ev.op == "append" and ev.roles[:1] == "u":
            self.rec.turns += 1
        return end

    async def append_and_read(self, target: TurnShapedTarget, ev: TraceEvent, t0: int) -> int:
        """Run ``ev`` (an append) and the read of its window as one call, recorded as ``append_read``."""
        op = "append_read"
        try:
            async with asyncio.timeout(self.op_timeout):
                cache = await target.append_and_read(ev.session, ev.roles, ev.sizes, ev.limit)
        except TimeoutError:
            end = perf_counter_ns()
            self.rec.error(op, "timeout", end)
            return end
        except Exception as exc:  # noqa: BLE001 - any failure of the target is counted; the run goes on
            end = perf_counter_ns()
            self.rec.error(op, type(exc).__name__, end)
            return end
        end = perf_counter_ns()
        self.rec.record(op, end - t0, end, cache)
        if ev.roles[:1] == "u":
            self.rec.turns += 1
        return end


# ----------------------------------------------------------------------------- open model


class _Session:
    __slots__ = ("last_done", "last_t", "queue", "running")

    def __init__(self) -> None:
        self.queue: deque[tuple[TraceEvent, int]] = deque()
        self.running = False
        self.last_t = -1.0
        self.last_done = 0


class _OpenRun:
    def __init__(self, target: Target, options: RunOptions, progress: Callable[[float], None] | None) -> None:
        self.options = options
        self.rec = Recorder(options.interval)
        self.exec = _Executor(target, self.rec, options.op_timeout)
        self.progress = progress
        self.sessions: dict[str, _Session] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.invalid: list[str] = []

    def dispatch(self, ev: TraceEvent, due: int) -> None:
        s = self.sessions.get(ev.session)
        if s is None:
            s = self.sessions[ev.session] = _Session()
        s.queue.append((ev, due))
        self.in_flight += 1
        if not s.running:
            s.running = True
            task = asyncio.create_task(self._drain(s))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _drain(self, s: _Session) -> None:
        try:
            while s.queue:
                ev, due = s.queue.popleft()
                start = perf_counter_ns()
                # A step due at the same instant as its predecessor (the read after the
                # user's message) is due when the predecessor finished.
                intended = max(due, s.last_done) if ev.t == s.last_t else due
                s.last_done = await self.exec.execute(ev, min(start, intended))
                s.last_t = ev.t
                self.in_flight -= 1
        finally:
            s.running = False

    def sweep(self, now: int) -> None:
        """Forget idle sessions (their chaining state is only needed for a moment)."""
        horizon = now - 1_000_000_000
        for key in [k for k, s in self.sessions.items() if not s.running and s.last_done < horizon]:
            del self.sessions[key]

    async def run(self, events: Iterable[TraceEvent]) -> RunResult:
        o = self.options
        slack = int(o.dispatch_slack_ms * 1e6)
        cpu0 = _cpu_seconds()
        start = perf_counter_ns()
        self.rec.start(start)
        stop_t = o.duration if o.duration is not None else float("inf")
        busy = 0
        mark = start
        since_yield = 0
        next_progress = 1.0
        offered = 0
        last_t = 0.0
        for dispatched, ev in enumerate(events, start=1):
            if ev.t > stop_t:
                break
            last_t = ev.t
            now = perf_counter_ns()
            due = now if o.asap else start + round(ev.t * 1e9)
            wait = due - slack - now
            if wait > 0 or since_yield >= 64:
                busy += now - mark
                await asyncio.sleep(max(0, wait) / 1e9)
                mark = now = perf_counter_ns()
                since_yield = 0
            self.rec.record_lag(now - due)
            if self.in_flight >= o.max_in_flight:
                self.invalid.append(f"more than {o.max_in_flight} operations in flight at t={ev.t:.1f} s: overloaded")
                break
            self.dispatch(ev, due)
            offered += 1
            since_yield += 1
            if dispatched % 4096 == 0:
                self.sweep(now)
            if self.progress is not None and ev.t >= next_progress:
                self.progress(ev.t)
                next_progress = ev.t + 1.0
        busy += perf_counter_ns() - mark
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=o.drain_timeout)
            if pending:
                busy_after = f"{len(pending)} sessions still busy {o.drain_timeout:.0f} s after the schedule ended"
                self.invalid.append(busy_after)
                await asyncio.gather(
                    *(stop_task(t) for t in pending)
                )  # sessionbench/store/tasks.py: cancel until they end
        end = max(self.rec.last_end, start + 1)
        elapsed = (end - start) / 1e9
        cpu = _cpu_seconds() - cpu0
        lag_p99_ms = self.rec.lag.get_value_at_percentile(99) / 1000
        if not o.asap and lag_p99_ms > o.max_lag_ms:
            behind = f"p99 lag {lag_p99_ms:.1f} ms > {o.max_lag_ms} ms"
            self.invalid.append(f"the generator fell behind its schedule: {behind}")
        if not o.asap and cpu / elapsed > o.max_cpu_fraction:
            self.invalid.append(f"the load generator process was saturated ({cpu / elapsed:.2f} cores)")
        return RunResult(
            mode="open",
            target=self.exec.target.name,
            elapsed_s=elapsed,
            histograms=self.rec.histograms,
            counts=dict(self.rec.counts),
            errors=dict(self.rec.errors),
            cache=dict(self.rec.cache),
            turns=self.rec.turns,
            cpu_s=cpu,
            scheduler_busy_s=busy / 1e9,
            lag=self.rec.lag,
            series=self.rec.series(),
            options=o.to_dict(),
            invalid=self.invalid,
            offered=offered,
            schedule_s=None if o.asap else (o.duration if o.duration is not None else last_t),
        )


async def run_open(
    target: Target,
    events: Iterable[TraceEvent],
    options: RunOptions | None = None,
    *,
    progress: Callable[[float], None] | None = None,
) -> RunResult:
    """Replay ``events`` on their schedule (open model); see the module docstring."""
    return await _OpenRun(target, options or RunOptions(), progress).run(events)


# ----------------------------------------------------------------------------- closed model


async def run_closed(
    target: Target,
    events: Iterable[TraceEvent],
    *,
    clients: int,
    duration: float,
    op_timeout: float = 10.0,
    interval: float = 1.0,
    progress: Callable[[float], None] | None = None,
) -> RunResult:
    """``clients`` workers run the events of their sessions back to back for ``duration`` s."""
    if clients < 1:
        raise ValueError("clients must be at least 1")
    rec = Recorder(interval)
    executor = _Executor(target, rec, op_timeout)
    source: Iterator[TraceEvent] = iter(events)
    queues: list[deque[TraceEvent]] = [deque() for _ in range(clients)]
    buffered = 0
    cpu0 = _cpu_seconds()
    start = perf_counter_ns()
    rec.start(start)
    deadline = start + int(duration * 1e9)

    def next_for(i: int) -> TraceEvent | None:
        nonlocal buffered
        q = queues[i]
        while not q:
            if buffered > 1_000_000:  # one client starving the rest: stop rather than grow
                return None
            ev = next(source, None)
            if ev is None:
                return None
            queues[zlib.crc32(ev.session.encode()) % clients].append(ev)
            buffered += 1
        buffered -= 1
        return q.popleft()

    async def client(i: int) -> None:
        next_progress = start + 1_000_000_000
        while (now := perf_counter_ns()) < deadline:
            ev = next_for(i)
            if ev is None:
                return
            await executor.execute(ev, perf_counter_ns())
            if i == 0 and progress is not None and now >= next_progress:
                progress((now - start) / 1e9)
                next_progress = now + 1_000_000_000

    await asyncio.gather(*(client(i) for i in range(clients)))
    end = perf_counter_ns()
    cpu = _cpu_seconds() - cpu0
    return RunResult(
        mode="closed",
        target=target.name,
        elapsed_s=(end - start) / 1e9,
        histograms=rec.histograms,
        counts=dict(rec.counts),
        errors=dict(rec.errors),
        cache=dict(rec.cache),
        turns=rec.turns,
        cpu_s=cpu,
        scheduler_busy_s=0.0,
        lag=rec.lag,
        series=rec.series(),
        options={"clients": clients, "duration": duration, "op_timeout": op_timeout},
    )


# ----------------------------------------------------------------------------- fixed turns


async def prefill(
    target: Target, sessions: Sequence[str], history: int, *, batch: int = 50, concurrency: int = 16
) -> None:
    """Give every session ``history`` messages (user / assistant alternating, 200 B / 800 B)."""
    pending = deque(sessions)

    async def worker() -> None:
        while pending:
            key = pending.popleft()
            done = 0
            while done < history:
                n = min(batch, history - done)
                roles = "".join("u" if (done + i) % 2 == 0 else "a" for i in range(n))
                await target.append(key, roles, [200 if r == "u" else 800 for r in roles])
                done += n

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def run_turns(
    target: Target,
    sessions: Sequence[str],
    *,
    clients: int = 16,
    duration: float = 5.0,
    warmup: float = 0.5,
    user_bytes: int = 200,
    assistant_bytes: int = 800,
    limit: int = 20,
    op_timeout: float = 10.0,
    progress: Callable[[float], None] | None = None,
    shaped: bool = False,
) -> RunResult:
    """Closed loop of whole turns (append user, read last ``limit``, append assistant).

    Client ``i`` cycles over ``sessions[i::clients]``.  The first ``warmup`` seconds
    are run but not recorded.  Histograms: ``append``, ``read`` (+ ``read.<cache>``),
    ``turn``; ``turns`` counts completed turns.  ``shaped``: the user's append and the
    read are one turn-shaped call (``append_read`` + ``append_read.<cache>``; the target
    must have one, see :func:`turn_shaped`), then the assistant's append.
    """
    if clients < 1 or len(sessions) < clients:
        raise ValueError("need at least one session per client")
    shaped_target = turn_shaped(target) if shaped else None
    if shaped and shaped_target is None:
        raise ValueError(f"{target.name} has no turn-shaped call")
    rec = Recorder()
    rec.enabled = False
    executor = _Executor(target, rec, op_timeout)
    t_start = perf_counter_ns()
    measure_from = t_start + int(warmup * 1e9)
    deadline = measure_from + int(duration * 1e9)
    cpu_box: list[float] = []

    async def client(i: int) -> None:
        mine = sessions[i::clients]
        n = 0
        next_progress = measure_from + 1_000_000_000
        while (now := perf_counter_ns()) < deadline:
            if not rec.enabled and now >= measure_from:
                rec.enabled = True
                rec.start(now)
                cpu_box.append(_cpu_seconds())
            key = mine[n % len(mine)]
            n += 1
            t0 = perf_counter_ns()
            before = sum(rec.errors.values())
            if shaped_target is not None:
                user = TraceEvent(0.0, key, "append", "u", (user_bytes,), limit=limit)
                await executor.append_and_read(shaped_target, user, t0)
            else:
                await executor.execute(TraceEvent(0.0, key, "append", "u", (user_bytes,)), t0)
                await executor.execute(TraceEvent(0.0, key, "read", limit=limit), perf_counter_ns())
            end = await executor.execute(TraceEvent(0.0, key, "append", "a", (assistant_bytes,)), perf_counter_ns())
            if rec.enabled and t0 >= rec.t0 and sum(rec.errors.values()) == before:
                rec.record("turn", end - t0, end)
            if i == 0 and progress is not None and now >= next_progress:
                progress((now - measure_from) / 1e9)
                next_progress = now + 1_000_000_000

    await asyncio.gather(*(client(i) for i in range(clients)))
    end = perf_counter_ns()
    cpu = _cpu_seconds() - (cpu_box[0] if cpu_box else _cpu_seconds())
    elapsed = (end - rec.t0) / 1e9 if rec.enabled else 0.0
    return RunResult(
        mode="turns",
        target=target.name,
        elapsed_s=elapsed,
        histograms=rec.histograms,
        counts=dict(rec.counts),
        errors=dict(rec.errors),
        cache=dict(rec.cache),
        turns=rec.counts.get("turn", 0),
        window_turns=rec.turns,
        cpu_s=cpu,
        scheduler_busy_s=0.0,
        lag=rec.lag,
        series=rec.series(),
        options={
            "clients": clients,
            "duration": duration,
            "warmup": warmup,
            "user_bytes": user_bytes,
            "assistant_bytes": assistant_bytes,
            "limit": limit,
            "sessions": len(sessions),
            "turn_shaped": shaped,
        },
    )
