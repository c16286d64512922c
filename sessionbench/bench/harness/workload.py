"""Seeded chat workloads: a small description of traffic and a pure generator of trace events.

A :class:`Workload` describes chat traffic the way an operator would: how many new
conversations start per second, how many turns a visit has (heavy-tailed), how long
users think between turns, how long the model takes to answer, how often a
conversation is resumed after a gap (which is what makes reads miss a cache TTL),
how large messages are (log-normal), how many messages a read asks for, and how
unevenly resumes are spread over sessions.  Every duration is in **traffic** seconds
(what users experience); ``time_compression`` divides them so an hour of traffic
replays in 30 seconds.  Cache TTLs must be divided by the same factor (the runner's
callers do that), so a 1 h TTL still sees the 2 h gaps miss.

:func:`generate` turns a workload into a deterministic stream of
:class:`sessionbench.store.accesslog.TraceEvent` (replay seconds, rounded to the microsecond so that a
trace written with :func:`sessionbench.store.accesslog.write_trace` reads back identical).  One turn is::

    t           append  u  <user bytes>        the user's message
    t           read       limit=20            history for the model
    t + answer  append  a  <assistant bytes>   the model's answer

then the next turn after ``think time``.  The generator is pure: the same workload
gives the same events on every run (``random.Random(seed)``, no global state, no
clock).  It is lazy and keeps only live sessions in memory.

Defaults describe a modest service (about 8,600 new conversations a day, a few
turns each, a third of them coming back later) replayed 120x faster: about
250-300 operations per second of replay once warm.  The Locust load test imports
:class:`Workload` and :class:`Draws` (``sessionbench/loadtests/chat_model.py``), so they are the one
source of truth for "realistic traffic".
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from sessionbench.store.accesslog import TraceEvent

__all__ = ["Draws", "Workload", "events_per_second", "generate"]


@dataclass(frozen=True, slots=True)
class Workload:
    """Seeded chat traffic.  Durations are traffic seconds unless the name says replay."""

    seed: int = 0
    """Seed of the one ``random.Random`` that draws everything."""

    duration: float = 20.0
    """Length of the generated trace in **replay** (wall-clock) seconds."""

    time_compression: float = 120.0
    """Traffic seconds per replay second (120: an hour of traffic in 30 s).  Scale TTLs alike."""

    new_sessions_per_s: float = 0.1
    """New conversations per traffic second, Poisson arrivals (0.1/s is 8,640 a day)."""

    turns_median: float = 4.0
    """Median turns per visit; turns follow a Pareto tail above ``turns_median / 2**(1/turns_tail)``."""

    turns_tail: float = 1.5
    """Pareto tail index of turns per visit (smaller = heavier tail; mean is finite above 1)."""

    turns_max: int = 200
    """Hard cap on turns per visit."""

    think_time_median: float = 30.0
    """Median seconds between the model's answer and the user's next message (log-normal)."""

    think_time_sigma: float = 0.8
    """Log-normal sigma of the think time."""

    response_time_median: float = 3.0
    """Median seconds the model takes to answer, between the history read and the answer's append."""

    response_time_sigma: float = 0.5
    """Log-normal sigma of the response time."""

    resume_probability: float = 0.3
    """Chance that a session comes back after a visit ends (times its popularity weight, at most 0.95)."""

    resume_gap_median: float = 3600.0
    """Median seconds between the end of a visit and the resume (log-normal): the TTL-miss knob."""

    resume_gap_sigma: float = 1.5
    """Log-normal sigma of the resume gap (1.5: a quarter of gaps exceed 2.8x the median)."""

    popularity_skew: float = 0.5
    """0 <= skew < 1.  Each session gets weight ``(1 - skew) * U**-skew`` (mean 1, Zipf-like):
    0 resumes every session alike; near 1 a few sessions take most of the resumes."""

    user_bytes_median: int = 200
    """Median size of a user message in bytes (log-normal)."""

    user_bytes_sigma: float = 0.9
    """Log-normal sigma of user message sizes (long tail: pasted documents)."""

    assistant_bytes_median: int = 800
    """Median size of an assistant message in bytes (log-normal)."""

    assistant_bytes_sigma: float = 1.0
    """Log-normal sigma of assistant message sizes."""

    max_message_bytes: int = 32_768
    """Sizes are clipped to this (below the store's 64 KiB content limit)."""

    read_limit: int = 20
    """Messages a history read asks for (the model's context window, in messages)."""

    page_probability: float = 0.02
    """Chance that a turn also pages back one ``read_limit`` page (a user scrolling up)."""

    def __post_init__(self) -> None:
        checks = {
            "duration": self.duration > 0,
            "time_compression": self.time_compression > 0,
            "new_sessions_per_s": self.new_sessions_per_s > 0,
            "turns_median": self.turns_median >= 1,
            "turns_tail": self.turns_tail > 0,
            "turns_max": self.turns_max >= 1,
            "think_time_median": self.think_time_median >= 0,
            "response_time_median": self.response_time_median >= 0,
            "resume_probability": 0 <= self.resume_probability <= 1,
            "resume_gap_median": self.resume_gap_median >= 0,
            "popularity_skew": 0 <= self.popularity_skew < 1,
            "user_bytes_median": self.user_bytes_median >= 1,
            "assistant_bytes_median": self.assistant_bytes_median >= 1,
            "max_message_bytes": self.max_message_bytes >= 1,
            "read_limit": 1 <= self.read_limit <= 1000,
            "page_probability": 0 <= self.page_probability <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"Workload.{name} is out of range: {getattr(self, name)!r}")
        for f in fields(self):
            if f.name.endswith("_sigma") and getattr(self, f.name) < 0:
                raise ValueError(f"Workload.{f.name} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replay_seconds(self, traffic_seconds: float) -> float:
        """Convert a traffic duration (a TTL, a gap) to replay seconds."""
        return traffic_seconds / self.time_compression


class Draws:
    """A workload's random draws, each taking the caller's ``random.Random``.

    :func:`generate` draws with these and so does the Locust user: the same workload and
    the same generator state give the same turns, waits and sizes.  Waits are traffic
    seconds (``Workload.replay_seconds`` converts them); a zero median draws no wait.
    """

    __slots__ = ("_assistant", "_gap", "_response", "_resume", "_skew", "_think", "_turns", "_user", "workload")

    def __init__(self, workload: Workload) -> None:
        w = self.workload = workload
        self._turns = (w.turns_median / 2 ** (1 / w.turns_tail), -1.0 / w.turns_tail, w.turns_max)
        self._skew = w.popularity_skew
        self._resume = w.resume_probability
        self._think = (_log(w.think_time_median), w.think_time_sigma)
        self._response = (_log(w.response_time_median), w.response_time_sigma)
        self._gap = (_log(w.resume_gap_median), w.resume_gap_sigma)
        self._user = (_log(w.user_bytes_median), w.user_bytes_sigma, w.max_message_bytes)
        self._assistant = (_log(w.assistant_bytes_median), w.assistant_bytes_sigma, w.max_message_bytes)

    def turns(self, rng: random.Random) -> int:
        """Turns in one visit: Pareto above ``turns_median / 2**(1/turns_tail)``, 1 to ``turns_max``."""
        xm, exponent, most = self._turns
        draw: float = xm * (1.0 - rng.random()) ** exponent
        return min(most, max(1, math.ceil(draw)))

    def resume_probability(self, rng: random.Random) -> float:
        """A new session's chance of coming back after each visit: its popularity weight times the base."""
        weight: float = (1.0 - self._skew) * (1.0 - rng.random()) ** (-self._skew)
        return min(0.95, self._resume * weight)

    def think_time(self, rng: random.Random) -> float:
        mu, sigma = self._think
        return 0.0 if mu == -math.inf else rng.lognormvariate(mu, sigma)

    def response_time(self, rng: random.Random) -> float:
        mu, sigma = self._response
        return 0.0 if mu == -math.inf else rng.lognormvariate(mu, sigma)

    def resume_gap(self, rng: random.Random) -> float:
        mu, sigma = self._gap
        return 0.0 if mu == -math.inf else rng.lognormvariate(mu, sigma)

    def user_bytes(self, rng: random.Random) -> int:
        mu, sigma, most = self._user
        return max(1, min(most, round(rng.lognormvariate(mu, sigma))))

    def assistant_bytes(self, rng: random.Random) -> int:
        mu, sigma, most = self._assistant
        return max(1, min(most, round(rng.lognormvariate(mu, sigma))))


def events_per_second(workload: Workload) -> float:
    """A rough steady-state estimate of trace events per replay second (for progress and sizing)."""
    alpha = workload.turns_tail
    xm = workload.turns_median / 2 ** (1 / alpha)
    mean_turns = min(float(workload.turns_max), xm * alpha / (alpha - 1) if alpha > 1 else workload.turns_max / 2)
    visits = 1 / (1 - min(0.95, workload.resume_probability))
    per_turn = 3 + workload.page_probability
    return workload.new_sessions_per_s * workload.time_compression * mean_turns * visits * per_turn


# Heap entries: (traffic time, tie-breaking counter, action, session index).
_TURN = 0
_ANSWER = 1


def generate(workload: Workload) -> Iterator[TraceEvent]:
    """Yield the workload's trace events in time order; deterministic for a given workload.

    Sessions are named ``s<n>`` in order of arrival.  Times are replay seconds,
    rounded to the microsecond (the trace format's precision).
    """
    w = workload
    rng = random.Random(w.seed)
    draws = Draws(w)
    turns, resume_probability = draws.turns, draws.resume_probability
    think_time, response_time, resume_gap = draws.think_time, draws.response_time, draws.resume_gap
    user_bytes, assistant_bytes = draws.user_bytes, draws.assistant_bytes
    scale = 1.0 / w.time_compression
    end = w.duration * w.time_compression  # in traffic seconds
    limit = w.read_limit

    # Per live session: [messages so far, turns left in this visit, resume probability].
    live: dict[int, list[Any]] = {}
    heap: list[tuple[float, int, int, int]] = []
    counter = 0
    next_session = 0
    next_arrival = rng.expovariate(w.new_sessions_per_s)

    while True:
        if heap and heap[0][0] <= next_arrival:
            t, _, action, index = heapq.heappop(heap)
        else:
            t, action, index = next_arrival, _TURN, next_session
            resume = resume_probability(rng)  # drawn before the turns, as ever
            live[index] = [0, turns(rng), resume]
            next_session += 1
            next_arrival += rng.expovariate(w.new_sessions_per_s)
        if t > end:
            return
        state = live[index]
        key = f"s{index}"
        at = round(t * scale, 6)
        if action == _TURN:
            state[0] += 1
            yield TraceEvent(at, key, "append", "u", (user_bytes(rng),))
            yield TraceEvent(at, key, "read", limit=limit)
            if state[0] > limit and rng.random() < w.page_probability:
                yield TraceEvent(at, key, "read", limit=limit, before=state[0] + 1 - limit)
            counter += 1
            heapq.heappush(heap, (t + response_time(rng), counter, _ANSWER, index))
            continue
        state[0] += 1
        yield TraceEvent(at, key, "append", "a", (assistant_bytes(rng),))
        state[1] -= 1
        if state[1] > 0:
            delay = think_time(rng)
        elif rng.random() < state[2]:
            state[1] = turns(rng)
            delay = resume_gap(rng)
        else:
            del live[index]
            continue
        counter += 1
        heapq.heappush(heap, (t + delay, counter, _TURN, index))


def _log(median: float) -> float:
    return math.log(median) if median > 0 else -math.inf
