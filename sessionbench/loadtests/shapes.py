"""Load shapes for the chat load test, chosen with ``--shape`` (see ``locustfile.py``).

Each shape is a :class:`~locust.LoadTestShape` built from explicit parameters (the
locustfile reads the command line once, at ``init``), so the same instance works in
a local run, on a master, and in the web UI's shape picker.  ``-u`` is the peak user
count of every shape, ``-r`` the spawn rate, ``-t`` the total duration (each shape
has its own default duration when ``-t`` is not given, and stops the run at the end).

============  ==================================================================
``ramp``      0 -> peak over ``--ramp-up`` s, hold, down over ``--ramp-down`` s
``steps``     ``--step-users`` more users every ``--step-time`` s up to the peak
``spike``     ``--spike-base`` users, the peak for ``--spike-length`` s from ``--spike-at`` s, back
``soak``      ramp up over ``--ramp-up`` s and hold the peak for a long time (default 1 h)
============  ==================================================================

The schedule of each shape is a pure function of the elapsed time,
:meth:`ChatShape.users_at`, so it can be printed or tested without running Locust::

    python -c "from sessionbench.loadtests import shapes; s = shapes.build('spike', peak=50); print(s.users_at(30))"
"""

from __future__ import annotations

import math

from locust import LoadTestShape

NAMES = ("none", "ramp", "steps", "spike", "soak")


class ChatShape(LoadTestShape):
    """Common part: a duration, a spawn rate and ``users_at(t)``; ``tick`` stops at the end."""

    abstract = True
    use_common_options = True  # -u, -r and -t are read (as peak, spawn rate and duration)

    def __init__(self, *, peak: int, spawn_rate: float | None = None, duration: float | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if peak < 1:
            raise ValueError("a load shape needs at least one user (-u)")
        self.peak = peak
        self.spawn_rate = spawn_rate if spawn_rate and spawn_rate > 0 else float(max(1, peak))
        self.duration = float(duration) if duration else self.default_duration()

    def default_duration(self) -> float:
        raise NotImplementedError

    def users_at(self, t: float) -> int:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        t: float = self.get_run_time()  # type: ignore[no-untyped-call]
        if t >= self.duration:
            return None
        return self.users_at(t), self.spawn_rate

    def describe(self) -> str:
        return f"{type(self).__name__}(peak={self.peak}, duration={self.duration:g}s)"


class RampShape(ChatShape):
    """Linear ramp to the peak, hold, optional linear ramp down before the end."""

    def __init__(self, *, ramp_up: float = 30.0, ramp_down: float = 0.0, **kw: float | int | None) -> None:
        self.ramp_up = max(0.0, ramp_up)
        self.ramp_down = max(0.0, ramp_down)
        super().__init__(**kw)  # type: ignore[arg-type]

    def default_duration(self) -> float:
        return self.ramp_up + 60.0 + self.ramp_down

    def users_at(self, t: float) -> int:
        up = 1.0 if self.ramp_up == 0 else min(1.0, t / self.ramp_up)
        left = self.duration - t
        down = 1.0 if self.ramp_down == 0 else min(1.0, max(0.0, left / self.ramp_down))
        return max(1, math.ceil(self.peak * min(up, down)))


class StepsShape(ChatShape):
    """Staircase: ``step_users`` more every ``step_time`` seconds until the peak, then hold."""

    def __init__(self, *, step_users: int | None = None, step_time: float = 30.0, **kw: float | int | None) -> None:
        peak = int(kw.get("peak") or 1)
        self.step_users = step_users if step_users and step_users > 0 else max(1, peak // 5)
        self.step_time = max(1.0, step_time)
        super().__init__(**kw)  # type: ignore[arg-type]

    def default_duration(self) -> float:
        steps = math.ceil(self.peak / self.step_users)
        return (steps + 1) * self.step_time  # every step, then one more step's time at the peak

    def users_at(self, t: float) -> int:
        return min(self.peak, self.step_users * (int(t // self.step_time) + 1))


class SpikeShape(ChatShape):
    """A baseline with one burst to the peak."""

    def __init__(
        self,
        *,
        base: int | None = None,
        spike_at: float = 30.0,
        spike_length: float = 30.0,
        **kw: float | int | None,
    ) -> None:
        peak = int(kw.get("peak") or 1)
        self.base = base if base and base > 0 else max(1, peak // 10)
        self.spike_at = max(0.0, spike_at)
        self.spike_length = max(1.0, spike_length)
        super().__init__(**kw)  # type: ignore[arg-type]
        self.spawn_rate = max(self.spawn_rate, float(self.peak))  # a spike arrives within about a second

    def default_duration(self) -> float:
        return self.spike_at + self.spike_length + max(self.spike_at, 30.0)

    def users_at(self, t: float) -> int:
        in_spike = self.spike_at <= t < self.spike_at + self.spike_length
        return self.peak if in_spike else min(self.base, self.peak)


class SoakShape(RampShape):
    """A long plateau: find leaks, pool exhaustion, cache eviction and TTL effects (default 1 h)."""

    def default_duration(self) -> float:
        return self.ramp_up + 3600.0 + self.ramp_down


def build(
    name: str,
    *,
    peak: int,
    spawn_rate: float | None = None,
    duration: float | None = None,
    ramp_up: float = 30.0,
    ramp_down: float = 0.0,
    step_users: int | None = None,
    step_time: float = 30.0,
    spike_base: int | None = None,
    spike_at: float = 30.0,
    spike_length: float = 30.0,
) -> ChatShape:
    """The shape called ``name`` (one of :data:`NAMES` except ``none``)."""
    common: dict[str, float | int | None] = {"peak": peak, "spawn_rate": spawn_rate, "duration": duration}
    if name == "ramp":
        return RampShape(ramp_up=ramp_up, ramp_down=ramp_down, **common)
    if name == "soak":
        return SoakShape(ramp_up=ramp_up, ramp_down=ramp_down, **common)
    if name == "steps":
        return StepsShape(step_users=step_users, step_time=step_time, **common)
    if name == "spike":
        return SpikeShape(base=spike_base, spike_at=spike_at, spike_length=spike_length, **common)
    raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(NAMES)}")
