"""A checked copy of the workload model, for a Locust machine where sessionbench is not installed.

``chat_model`` imports the real model, ``sessionbench.bench.harness.workload`` (``Workload``, ``Draws``)
and ``sessionbench.bench.harness.runner.payload``, whenever ``bench`` is importable; only a bare Locust
machine (this folder copied next to Locust alone) runs this copy.  ``tests/test_loadtests.py``
proves the copy agrees with the real model: the same fields, types and defaults, the same
range checks, the same draws from the same seed and the same message text.  Change the
model there and the suite fails until this file follows; nothing but ``chat_model`` imports it.
Field meanings are documented on ``sessionbench.bench.harness.workload.Workload``.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Workload:
    """Copy of ``sessionbench.bench.harness.workload.Workload``: its fields, defaults and range checks."""

    seed: int = 0
    duration: float = 20.0
    time_compression: float = 120.0
    new_sessions_per_s: float = 0.1
    turns_median: float = 4.0
    turns_tail: float = 1.5
    turns_max: int = 200
    think_time_median: float = 30.0
    think_time_sigma: float = 0.8
    response_time_median: float = 3.0
    response_time_sigma: float = 0.5
    resume_probability: float = 0.3
    resume_gap_median: float = 3600.0
    resume_gap_sigma: float = 1.5
    popularity_skew: float = 0.5
    user_bytes_median: int = 200
    user_bytes_sigma: float = 0.9
    assistant_bytes_median: int = 800
    assistant_bytes_sigma: float = 1.0
    max_message_bytes: int = 32_768
    read_limit: int = 20
    page_probability: float = 0.02

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


class Draws:
    """Copy of ``sessionbench.bench.harness.workload.Draws``: the same draws, in the same order, from one rng."""

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
        xm, exponent, most = self._turns
        draw: float = xm * (1.0 - rng.random()) ** exponent
        return min(most, max(1, math.ceil(draw)))

    def resume_probability(self, rng: random.Random) -> float:
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


def _log(median: float) -> float:
    return math.log(median) if median > 0 else -math.inf


# --------------------------------------------------------------------------- message text
# Copy of sessionbench.bench.harness.runner's CORPUS and payload().


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
