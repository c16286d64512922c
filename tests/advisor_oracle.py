"""An event-by-event oracle of the hybrid store's cache rules, for the advisor's tests.

Slow and plain on purpose: it walks the trace one event at a time with dictionaries, so
the vectorised curves (:mod:`sessionbench.bench.advisor.curves`) and the maxmemory simulator
(:mod:`sessionbench.bench.advisor.lru`) are checked against a second, independent statement of the
rules (``sessionbench/store/backends/hybrid/*.lua``): populate only on a read miss without
``before_seq`` of a session with messages; appends extend, never create; sliding TTL
refreshed by reads and extends; a hash whose list is gone is dropped, not served.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sessionbench.store.accesslog import TraceEvent

US = 1_000_000
NO_ANCHOR = (1 << 43) - 1


@dataclass
class Simulated:
    """What :func:`simulate` counts for one setting."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    peak_entries: int = 0
    entry_seconds: float = 0.0
    message_seconds: float = 0.0
    end_entries: int = 0
    end_messages: int = 0


def simulate(events: Sequence[TraceEvent], ttl: float, size: int, *, sliding: bool = True) -> Simulated:
    """Event-by-event model of the hybrid store for one (TTL, size): the oracle the tests
    check :func:`analyse` against.  Slow (pure Python); times in µs like :func:`analyse`."""
    ttl_us = min(round(ttl * US), NO_ANCHOR) if math.isfinite(ttl) else NO_ANCHOR
    out = Simulated()
    n_msgs: dict[str, int] = {}
    expires: dict[str, int] = {}  # session -> expiry time (µs) of its entry
    since: dict[str, int] = {}  # session -> time its current window state began
    live = 0
    t_end = round(events[-1].t * US) if events else 0
    t0 = round(events[0].t * US) if events else 0

    def expire_before(now: int) -> None:
        nonlocal live
        for sid in [k for k, e in expires.items() if e <= now]:
            close(sid, expires.pop(sid))
            live -= 1

    def close(sid: str, until: int) -> None:
        out.entry_seconds += (until - since[sid]) / US
        out.message_seconds += (until - since[sid]) / US * min(size, n_msgs.get(sid, 0))

    for ev in events:
        now = round(ev.t * US)
        expire_before(now)
        sid = ev.session
        n = n_msgs.get(sid, 0)
        present = sid in expires
        if ev.op == "append":
            if present:
                close(sid, now)
                since[sid] = now
                if sliding:
                    expires[sid] = now + ttl_us
            n_msgs[sid] = n + len(ev.sizes)
            continue
        upper = n if ev.before is None else min(n, ev.before - 1)
        lower = max(1, upper - ev.limit + 1)
        need = n - lower + 1 if upper >= lower else 0
        if present:
            if sliding:
                expires[sid] = now + ttl_us
            if need <= size:
                out.hits += 1
            else:
                out.bypasses += 1
            continue
        out.misses += 1
        if ev.before is None and n > 0:
            expires[sid] = now + ttl_us
            since[sid] = now
            live += 1
            out.peak_entries = max(out.peak_entries, live)
    expire_before(t_end)
    for sid in expires:
        close(sid, t_end)
        out.end_entries += 1
        out.end_messages += min(size, n_msgs[sid])
    dur = max((t_end - t0) / US, 1e-9)
    out.entry_seconds /= dur
    out.message_seconds /= dur
    return out


@dataclass
class Evicting:
    """What :func:`simulate_exact_lru` counts."""

    reads: int = 0
    hits: int = 0
    evicted: int = 0


def simulate_exact_lru(
    events: Sequence[TraceEvent], *, ttl: float, size: int, budget: float, hash_bytes: float, list_bytes: float,
    per_message: float, sliding: bool = True,
) -> Evicting:  # fmt: skip
    """The store under ``maxmemory`` with true LRU over its keys (hash and list apart), TTL expiry
    and eviction before each command: the oracle of ``lru.simulate(policy="exact-lru")``."""
    ttl_us = round(ttl * US) if math.isfinite(ttl) else 1 << 62
    keys: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()  # (sid, kind) -> (bytes, expire)
    n_msgs: dict[str, int] = {}
    total: dict[str, int] = {}
    out = Evicting()

    def used() -> float:
        return sum(b for b, _ in keys.values())

    def evict() -> None:
        while keys and used() > budget:
            keys.popitem(last=False)
            out.evicted += 1

    def touch(k: tuple[str, str], expire: int | None) -> None:
        b, e = keys.pop(k)
        keys[k] = (b, e if expire is None else expire)

    for ev in events:
        now = round(ev.t * US)
        for k in [k for k, (_, e) in keys.items() if e <= now]:
            del keys[k]
        sid = ev.session
        n = n_msgs.get(sid, 0)
        mean = total.get(sid, 0) / max(n, 1)
        h, li = (sid, "h"), (sid, "m")
        if ev.op == "append":
            n_msgs[sid] = n + len(ev.sizes)
            total[sid] = total.get(sid, 0) + sum(ev.sizes)
            mean = total[sid] / n_msgs[sid]
            evict()
            if h not in keys:
                continue
            if li not in keys:
                del keys[h]
                continue
            expire = now + ttl_us if sliding else keys[h][1]
            keys.pop(li)
            keys[li] = (list_bytes + min(size, n_msgs[sid]) * (per_message + mean), expire)
            touch(h, now + ttl_us if sliding else None)
            continue
        out.reads += 1
        evict()
        upper = n if ev.before is None else min(n, ev.before - 1)
        lower = max(1, upper - ev.limit + 1)
        need = n - lower + 1 if upper >= lower else 0
        if h in keys and li in keys:
            touch(h, now + ttl_us if sliding else None)
            touch(li, now + ttl_us if sliding else None)
            out.hits += need <= size
            continue
        keys.pop(h, None)
        if ev.before is None and n > 0:
            evict()
            keys.pop(li, None)
            keys[li] = (list_bytes + min(size, n) * (per_message + mean), now + ttl_us)
            keys[h] = (hash_bytes, now + ttl_us)
    return out
