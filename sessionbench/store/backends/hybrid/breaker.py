"""The Redis circuit breaker: stop waiting on a dead Redis, probe it again after a pause."""

from __future__ import annotations

import time

from sessionbench.store.events import StoreEvents


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive errors; half-open (one probe) after ``reset`` s.

    A probe that never reports (its task was cancelled mid-call) expires after ``reset``
    seconds, so the breaker cannot stay half-open, refusing everything, for ever.
    """

    CLOSED, OPEN, HALF_OPEN = 0, 1, 2

    def __init__(self, failures: int, reset: float, events: StoreEvents) -> None:
        self.threshold = max(1, failures)
        self.reset = reset
        self.events = events
        self.state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_started = 0.0

    def allow(self) -> bool:
        if self.state == self.CLOSED:
            return True
        now = time.monotonic()
        if self.state == self.OPEN and now - self._opened_at >= self.reset:
            self._set(self.HALF_OPEN)
        if self.state == self.HALF_OPEN and (not self._probing or now - self._probe_started >= self.reset):
            self._probing = True
            self._probe_started = now
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state != self.CLOSED:
            self._set(self.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state == self.HALF_OPEN or self._failures >= self.threshold:
            self._opened_at = time.monotonic()
            if self.state != self.OPEN:
                self._set(self.OPEN)

    def _set(self, state: int) -> None:
        self.state = state
        self.events.breaker_state(state)
