"""The chat workload model for Locust users: the harness's workload, drawn per simulated person.

The model is ``sessionbench.bench.harness.workload`` (``Workload``: the fields, defaults and range
checks; ``Draws``: turns, waits and sizes) and the message text is
``sessionbench.bench.harness.runner.payload``, imported whenever ``bench`` is importable (the project
installed, or a checkout).  On a Locust machine without sessionbench the same names come
from ``fallback.py``, a copy that ``tests/test_loadtests.py`` checks against the real
model.  :data:`SOURCE` says which one this process runs.

No Locust import here, so the model can be tested and printed on its own.

How a Locust user maps the open-model workload onto one simulated person:

* a **visit** is ``turns`` turns (Pareto tail, as in ``sessionbench.bench.harness.workload.generate``);
* a **turn** is: append the user message, read the last ``read_limit`` messages,
  wait the model's ``response_time``, append the assistant message; with
  ``page_probability`` (once the session is longer than a page) also read one page
  further back; then ``think_time``;
* when a visit ends, the session comes back after a ``resume_gap`` with its
  ``resume_probability`` (the base chance times its Zipf-like popularity weight, at
  most 0.95); the user's next visit resumes a session whose gap has passed, or else
  starts a new one.

Every wait is traffic seconds divided by ``time_compression`` (as in the harness's
replay), then multiplied by the load test's ``--think-scale``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

try:
    from sessionbench.bench.harness.runner import payload
    from sessionbench.bench.harness.workload import Draws, Workload

    SOURCE = "sessionbench.bench.harness.workload"
except ImportError:  # a Locust machine without sessionbench: the checked copy
    from .fallback import Draws, Workload, payload  # type: ignore[assignment]

    SOURCE = "loadtests.fallback (sessionbench is not installed)"

__all__ = ["SOURCE", "ChatModel", "Workload", "defaults", "parse_overrides", "search_term", "text", "workload_from"]


def defaults() -> dict[str, Any]:
    """The workload's fields and their default values."""
    return Workload().to_dict()


def parse_overrides(spec: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """``"think_time_median=10,read_limit=50"`` -> typed overrides (the type of each value in ``base``)."""
    result: dict[str, Any] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in base:
            known = ", ".join(sorted(base))
            raise ValueError(f"--workload: {item!r} is not name=value with a workload field ({known})")
        kind = type(base[key])
        try:
            result[key] = kind(float(value)) if kind is int else kind(value)
        except ValueError:
            raise ValueError(f"--workload: {key}={value!r} is not a {kind.__name__}") from None
    return result


def workload_from(spec: str) -> Workload:
    """The default workload with ``--workload`` overrides (``"read_limit=50,..."``); ``ValueError`` if out of range."""
    base = defaults()
    return Workload(**{**base, **parse_overrides(spec, base)})


class ChatModel:
    """One simulated person's draws: the workload's, with waits in seconds of this load test.

    ``ChatModel(Workload(...), think_scale)``; every method takes the user's ``random.Random``.
    """

    def __init__(self, workload: Workload, think_scale: float = 1.0) -> None:
        if think_scale < 0:
            raise ValueError("--think-scale must be >= 0")
        self.workload = workload
        self.think_scale = think_scale
        self.read_limit = workload.read_limit
        self.page_probability = workload.page_probability
        draws = Draws(workload)
        self._draws = draws
        self.turns = draws.turns
        self.resume_probability = draws.resume_probability
        self.user_bytes = draws.user_bytes
        self.assistant_bytes = draws.assistant_bytes

    def _seconds(self, traffic_seconds: float) -> float:
        """Traffic seconds -> seconds this load test waits."""
        return traffic_seconds / self.workload.time_compression * self.think_scale

    def think_time(self, rng: random.Random) -> float:
        return self._seconds(self._draws.think_time(rng))

    def response_time(self, rng: random.Random) -> float:
        return self._seconds(self._draws.response_time(rng))

    def resume_gap(self, rng: random.Random) -> float:
        return self._seconds(self._draws.resume_gap(rng))


def text(rng: random.Random, size: int) -> str:
    """``size`` bytes of message text (ASCII), the harness's payload at a random offset."""
    return payload(size, rng.getrandbits(32))


def search_term(rng: random.Random) -> str:
    """A word that occurs in message text: the longest whole word of a random slice of it."""
    words = text(rng, 64).split()[1:-1]  # the first and last may be cut
    return max(words, key=len, default="x")
