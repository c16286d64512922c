"""The chat workload model for Locust users: the harness's parameters, drawn per user.

The parameters and their defaults come from :class:`bench.harness.workload.Workload` (the one
source of truth) when the ``bench`` package is importable, for example from a
checkout with the project installed.  Pointed at staging with only Locust installed,
the locustfile uses :data:`FALLBACK_DEFAULTS`, a copy that mirrors
``bench.harness.workload.Workload``'s defaults field for field; ``tests/test_loadtests.py``
asserts the copy equals the original, so a change there fails the suite until this
copy follows.

No Locust import here, so the model can be tested and printed on its own.

How a Locust user maps the open-model workload onto one simulated person:

* a **visit** is ``turns`` turns (Pareto tail, as in ``bench.harness.workload.generate``);
* a **turn** is: append the user message, read the last ``read_limit`` messages,
  wait the model's ``response_time``, append the assistant message; with
  ``page_probability`` (once the session is longer than a page) also read one page
  further back; then ``think_time``;
* when a visit ends, the session comes back after a ``resume_gap`` with probability
  ``min(0.95, resume_probability * weight)``, ``weight`` being the session's
  Zipf-like popularity (``popularity_skew``); the user's next visit resumes a
  session whose gap has passed, or else starts a new one.

Every duration is traffic seconds divided by ``time_compression`` (as in the
harness's replay), then multiplied by the load test's ``--think-scale``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Mirrors bench.harness.workload.Workload's defaults (same names, same values).  Keep in sync:
#: tests/test_loadtests.py::test_fallback_defaults_equal_workload fails otherwise.
FALLBACK_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "duration": 20.0,
    "time_compression": 120.0,
    "new_sessions_per_s": 0.1,
    "turns_median": 4.0,
    "turns_tail": 1.5,
    "turns_max": 200,
    "think_time_median": 30.0,
    "think_time_sigma": 0.8,
    "response_time_median": 3.0,
    "response_time_sigma": 0.5,
    "resume_probability": 0.3,
    "resume_gap_median": 3600.0,
    "resume_gap_sigma": 1.5,
    "popularity_skew": 0.5,
    "user_bytes_median": 200,
    "user_bytes_sigma": 0.9,
    "assistant_bytes_median": 800,
    "assistant_bytes_sigma": 1.0,
    "max_message_bytes": 32_768,
    "read_limit": 20,
    "page_probability": 0.02,
}


def workload_defaults() -> tuple[dict[str, Any], str]:
    """The workload defaults and where they came from (``bench.harness.workload`` or the fallback copy)."""
    try:
        from bench.harness.workload import Workload
    except ImportError:
        return dict(FALLBACK_DEFAULTS), "fallback copy of bench.harness.workload defaults"
    defaults: dict[str, Any] = Workload().to_dict()
    return defaults, "bench.harness.workload.Workload"


def parse_overrides(text: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``"think_time_median=10,read_limit=50"`` -> typed overrides (type of each default)."""
    result: dict[str, Any] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ValueError(f"--workload: {item!r} is not name=value with a workload field ({known})")
        kind = type(defaults[key])
        try:
            result[key] = kind(float(value)) if kind is int else kind(value)
        except ValueError:
            raise ValueError(f"--workload: {key}={value!r} is not a {kind.__name__}") from None
    return result


@dataclass(frozen=True, slots=True)
class ChatModel:
    """Draws one user's turns, sizes and waits.  ``params`` are workload fields."""

    params: Mapping[str, Any]
    think_scale: float = 1.0

    def _p(self, name: str) -> Any:
        return self.params[name]

    @property
    def read_limit(self) -> int:
        return int(self._p("read_limit"))

    @property
    def page_probability(self) -> float:
        return float(self._p("page_probability"))

    def _seconds(self, traffic_seconds: float) -> float:
        """Traffic seconds -> seconds this load test waits."""
        return traffic_seconds / float(self._p("time_compression")) * self.think_scale

    @staticmethod
    def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
        return rng.lognormvariate(math.log(median), sigma) if median > 0 else 0.0

    def turns(self, rng: random.Random) -> int:
        tail = float(self._p("turns_tail"))
        xm = float(self._p("turns_median")) / 2 ** (1 / tail)
        return min(int(self._p("turns_max")), max(1, math.ceil(xm * (1.0 - rng.random()) ** (-1.0 / tail))))

    def think_time(self, rng: random.Random) -> float:
        return self._seconds(self._lognormal(rng, self._p("think_time_median"), self._p("think_time_sigma")))

    def response_time(self, rng: random.Random) -> float:
        return self._seconds(self._lognormal(rng, self._p("response_time_median"), self._p("response_time_sigma")))

    def resume_gap(self, rng: random.Random) -> float:
        return self._seconds(self._lognormal(rng, self._p("resume_gap_median"), self._p("resume_gap_sigma")))

    def resume_probability(self, rng: random.Random) -> float:
        """A new session's chance of coming back after each visit (popularity-weighted)."""
        skew = float(self._p("popularity_skew"))
        weight = (1.0 - skew) * (1.0 - rng.random()) ** (-skew)
        return min(0.95, float(self._p("resume_probability")) * weight)

    def _size(self, rng: random.Random, median: float, sigma: float) -> int:
        return max(1, min(int(self._p("max_message_bytes")), round(self._lognormal(rng, median, sigma))))

    def user_bytes(self, rng: random.Random) -> int:
        return self._size(rng, self._p("user_bytes_median"), self._p("user_bytes_sigma"))

    def assistant_bytes(self, rng: random.Random) -> int:
        return self._size(rng, self._p("assistant_bytes_median"), self._p("assistant_bytes_sigma"))


# --------------------------------------------------------------------------- message text

_WORD_TEXT = (
    "the a to of and in is it you that for on with as this be are was have not or can at but your "
    "what database cache session message history token latency postgres redis python query index "
    "replica deploy config error timeout retry budget memory vector embedding model prompt context "
    "window summary customer order invoice refund shipping travel flight hotel recipe garden "
    "weather music report meeting calendar email draft review code test bug feature release "
    "migration schema"
)
WORDS = tuple(_WORD_TEXT.split())

#: Words a search task looks for (all appear in generated text, some rarely).
SEARCH_TERMS = ("database", "refund", "migration", "weather", "latency", "recipe", "invoice", "timeout")


def make_corpus(seed: int, size: int = 1 << 17) -> str:
    """A block of ASCII words to slice message contents from (cheap per message)."""
    rng = random.Random(f"corpus:{seed}")
    parts: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)


def text(corpus: str, rng: random.Random, size: int) -> str:
    """``size`` bytes of words (ASCII, so bytes == characters), starting anywhere in ``corpus``."""
    size = max(1, size)
    if size >= len(corpus):
        return (corpus * (size // len(corpus) + 1))[:size]
    start = rng.randrange(0, len(corpus) - size)
    chunk = corpus[start : start + size]
    return chunk if chunk.strip() else "x" * size  # never whitespace only
