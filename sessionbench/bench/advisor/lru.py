"""Hit ratio by Redis ``maxmemory``: an event-by-event model of the hybrid store on Valkey.

A single stack-distance pass cannot give this curve: an append to an absent entry does
nothing (appends extend but never create), so which entries exist depends on the budget.
:func:`simulate` therefore replays the (session-sampled) trace once per budget against a
model of what the store's scripts and Valkey do:

* per session two keys, evicted independently: the **hash** (``last``, owner, epoch:
  ``RedisModel.hash_bytes``) and the **list** (``list_bytes + n x (per_message + mean
  content size)``, ``n = min(cache_size, history)``); a populate writes both, an append
  that finds both extends the list (trimmed to ``cache_size``), one that finds no hash
  does nothing, one that finds the hash without its list deletes the hash (``lost``); a
  read that finds the hash without its list drops it and misses (never serves it);
* TTL: both keys get ``ttl`` at the populate; sliding refreshes both on every hit, bypass
  and extend; fixed keeps the populate's expiry; an expired key frees its memory at once
  (Valkey's active expiry reclaims it within about a second; the difference is ignored);
* **eviction** runs before every command (the read script, the populate, the append
  script) while the keys use more than the budget (``maxmemory`` minus Valkey's own
  baseline), exactly as Valkey's ``performEvictions`` does: sample ``maxmemory-samples``
  (5) keys, insert them into the 16-entry eviction pool by score, evict the best pool
  entry that still exists.  ``volatile-lru`` scores by idle time on Valkey's LRU clock
  (1-second resolution of wall time), ``volatile-ttl`` by the soonest expiry; every key
  of the cache has a TTL, so ``volatile-*`` never touches keys without one (the epoch);
* over the budget when a script starts (``noeviction``, or nothing left to evict), a
  script's *first* write that may grow memory fails with OOM (Valkey lets the rest of
  a script through once it has written anything): a miss cannot take its lease (the
  read errors and goes to PostgreSQL), while appends (their first write deletes the
  lease) and populates still land.  Errors feed the store's circuit breaker (3 in a
  row open it for 1 s of wall time: reads go around the cache, appends mark their
  sessions, whose entries are dropped when it closes).

What is approximated, and how much it costs is measured by ``advise --validate``: the
sampled keys are uniform (Valkey walks random hash-table buckets), the LRU clock is
exact to the second (Valkey's is refreshed 10 times a second), leases and the
expired-but-not-yet-reclaimed keys take no memory, and a session-sampled pass scales the
budget by the sampling rate (SHARDS).  ``policy="exact-lru"`` evicts the true least
recently used key instead, to show what the sampling changes.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sessionbench.bench.advisor.curves import US, _need, _seg_cumsum_excl
from sessionbench.bench.advisor.parse import Chunk

POLICIES: tuple[str, ...] = ("volatile-lru", "volatile-ttl", "noeviction")
MODEL_POLICIES: tuple[str, ...] = (*POLICIES, "exact-lru")
#: Valkey's defaults: keys sampled per eviction, and the eviction pool.
MAXMEMORY_SAMPLES = 5
EVPOOL_SIZE = 16
#: Valkey's active expiry: a cycle every 0.1 s of wall time frees expired keys; it may stop
#: while a share of the keys it samples (at most 10%) is still expired.  Replays on Valkey
#: match a share of 0 best at TTLs of seconds and more (shorter ones hold more stale keys).
RECLAIM_S = 0.1
STALE_SHARE = 0.0


@dataclass(frozen=True, slots=True)
class KeyCosts:
    """Bytes of Valkey ``used_memory`` per key (what ``maxmemory`` counts)."""

    hash_bytes: float
    list_bytes: float
    per_message: float


@dataclass
class SimEvents:
    """The per-event inputs of :func:`simulate`, in time order (plain lists: a fast loop)."""

    t: list[int]
    sid: list[int]
    is_read: list[bool]
    anchor: list[bool]
    """A read without ``before_seq`` (it takes a lease on a miss)."""
    n_before: list[int]
    n_after: list[int]
    mu: list[float]
    need: list[int]
    sessions: int
    span: tuple[int, int]

    @property
    def events(self) -> int:
        return len(self.t)


def prepare(chunk: Chunk, span: tuple[int, int] | None = None) -> SimEvents:
    """Per-event history length, mean message size and need, for whole sessions in time order."""
    n = chunk.events
    uniq, sid = np.unique(chunk.session, return_inverse=True)
    order = np.argsort(sid, kind="stable")
    s = sid[order]
    first = np.ones(n, bool)
    if n > 1:
        first[1:] = s[1:] != s[:-1]
    nmsg = chunk.nmsg[order].astype(np.int64)
    n_before = np.empty(n, np.int64)
    n_before[order] = _seg_cumsum_excl(nmsg, first)
    p_before = np.empty(n, np.int64)
    p_before[order] = _seg_cumsum_excl(chunk.nbytes[order], first)
    n_after = n_before + chunk.nmsg
    p_after = p_before + chunk.nbytes
    mu = np.where(n_after > 0, p_after / np.maximum(n_after, 1), 0.0)
    is_read = chunk.nmsg == 0
    need = np.where(is_read, _need(n_before, chunk.limit.astype(np.int64), chunk.before), 0)
    if span is None:
        span = (int(chunk.t[0]), int(chunk.t[-1])) if n else (0, 0)
    return SimEvents(
        chunk.t.tolist(), sid.tolist(), is_read.tolist(), (is_read & (chunk.before < 0)).tolist(),
        n_before.tolist(), n_after.tolist(), mu.tolist(), need.tolist(), int(uniq.size), span,
    )  # fmt: skip


@dataclass
class SimResult:
    """What one :func:`simulate` run counted."""

    reads: int = 0
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    errors: int = 0
    """Reads answered around the cache: OOM under noeviction, or the breaker open."""
    oom: int = 0
    """Scripts refused with OOM (noeviction)."""
    evicted_keys: int = 0
    peak_bytes: float = 0.0
    mean_bytes: float = 0.0
    end_bytes: float = 0.0
    session_hits: npt.NDArray[np.int64] | None = None
    session_reads: npt.NDArray[np.int64] | None = None

    @property
    def hit_ratio(self) -> float:
        return self.hits / max(self.reads, 1)

    def band(self, rate: float) -> float:
        """Half-width of a 95% band of :attr:`hit_ratio` for a session sample at ``rate``.

        Sessions are the sampling units (a ratio estimator over clusters); 0 when exact.
        """
        if rate >= 1 or self.session_hits is None or self.session_reads is None:
            return 0.0
        h, r = self.session_hits.astype(float), self.session_reads.astype(float)
        m = int(np.count_nonzero(r))
        if m < 2:
            return 1.0
        ratio = h.sum() / r.sum()
        var = float(((h - ratio * r) ** 2).sum()) / (m * (m - 1)) / (r.sum() / m) ** 2
        return 1.96 * math.sqrt(var * (1 - rate))


def simulate(
    ev: SimEvents,
    *,
    ttl: float,
    sliding: bool,
    size: int,
    budget: float,
    policy: str,
    costs: KeyCosts,
    compression: float = 1.0,
    breaker_failures: int = 3,
    breaker_reset: float = 1.0,
    samples: int = MAXMEMORY_SAMPLES,
    seed: int = 0,
    budget_steps: Sequence[tuple[int, float]] = (),
    reclaim: float = RECLAIM_S,
    arguments: bool = True,
) -> SimResult:
    """Replay ``ev`` against the model (module docstring) for one setting and budget (bytes of keys).

    ``compression`` is trace seconds per wall second (1 for real traffic; the replay's
    factor when predicting a compressed replay): it scales the LRU clock and the breaker.
    ``budget_steps`` (time in µs, budget) change the budget as time passes (what a replay's
    client buffers leave for keys, measured).  An expired key is gone for reads at once but
    holds its memory ``reclaim`` wall seconds longer (Valkey's active expiry), unless an
    eviction takes it first.  ``arguments``: a populate or append counts its messages twice
    while the limit is checked (they are in the client's query buffer then).
    """
    if policy not in MODEL_POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    rng = random.Random(seed)
    ttl_us = round(ttl * US) if math.isfinite(ttl) else 1 << 62
    clock_div = US * compression  # trace µs per LRU-clock second
    reset_us = breaker_reset * US * compression
    hb, lb, pm = costs.hash_bytes, costs.list_bytes, costs.per_message
    noevict = policy == "noeviction"
    by_ttl = policy == "volatile-ttl"
    exact = policy == "exact-lru"
    # key id = sid * 2 (+1 for the list); value: [bytes, expire_us, lru_clock, version]
    keys: dict[int, list[float]] = {}
    ids: list[int] = []  # for uniform sampling
    where: dict[int, int] = {}
    order: dict[int, None] = {}  # exact LRU: insertion order == recency order
    heap: list[tuple[float, int, float]] = []
    pool: list[tuple[float, int]] = []  # ascending score
    used = 0.0
    out = SimResult()
    nsess = ev.sessions
    s_hits = np.zeros(nsess, np.int64)
    s_reads = np.zeros(nsess, np.int64)
    failures = 0
    open_at = -1.0  # breaker: -1 closed, else when it opened
    dirty: set[int] = set()
    last_t = float(ev.span[0])
    cycle_us = reclaim * US * compression
    next_cycle = float(ev.span[0])
    # Expired keys not yet reclaimed, oldest first: key id -> bytes.  Gone for reads; an access frees it.
    zombies: dict[int, float] = {}
    steps = list(budget_steps)
    step = 0
    integral = 0.0

    def delete(kid: int) -> None:
        nonlocal used
        rec = keys.pop(kid)
        used -= rec[0]
        i = where.pop(kid)
        tail = ids.pop()
        if tail != kid:
            ids[i] = tail
            where[tail] = i
        if exact:
            del order[kid]

    def put(kid: int, nbytes: float, expire: float, clock: float) -> None:
        nonlocal used
        rec = keys.get(kid)
        if rec is None:
            keys[kid] = [nbytes, expire, clock, 0.0]
            where[kid] = len(ids)
            ids.append(kid)
            used += nbytes
        else:
            used += nbytes - rec[0]
            rec[0], rec[1], rec[2] = nbytes, expire, clock
            if exact:
                del order[kid]
        if exact:
            order[kid] = None
        heapq.heappush(heap, (expire, kid, expire))

    def touch(kid: int, clock: float, expire: float | None) -> None:
        rec = keys[kid]
        rec[2] = clock
        if expire is not None:
            rec[1] = expire
            heapq.heappush(heap, (expire, kid, expire))
        if exact:
            del order[kid]
            order[kid] = None

    def evict(clock: float, extra: float) -> None:
        nonlocal used
        while used + extra > budget and zombies:  # expired keys are the first an eviction finds
            used -= zombies.pop(next(iter(zombies)))
            out.evicted_keys += 1
        while used + extra > budget and keys:
            if exact:
                delete(next(iter(order)))
                out.evicted_keys += 1
                continue
            picked: int | None = None
            while picked is None:
                for kid in rng.sample(ids, min(samples, len(ids))):
                    rec = keys[kid]
                    score = -rec[1] if by_ttl else clock - rec[2]
                    k = 0
                    while k < len(pool) and pool[k][0] < score:
                        k += 1
                    if k == 0 and len(pool) >= EVPOOL_SIZE:
                        continue
                    pool.insert(k, (score, kid))
                    if len(pool) > EVPOOL_SIZE:
                        pool.pop(0)
                while pool:
                    _, kid = pool.pop()
                    if kid in keys:
                        picked = kid
                        break
            delete(picked)
            out.evicted_keys += 1

    t_list, sid_list, read_list, anchor_list = ev.t, ev.sid, ev.is_read, ev.anchor
    nb_list, na_list, mu_list, need_list = ev.n_before, ev.n_after, ev.mu, ev.need
    for i in range(len(t_list)):
        now = t_list[i]
        while heap and heap[0][0] <= now:
            exp, kid, stamp = heapq.heappop(heap)
            rec = keys.get(kid)
            if rec is not None and rec[1] == stamp:
                delete(kid)
                if cycle_us > 0:
                    used += rec[0]
                    zombies[kid] = rec[0]
        if zombies and now >= next_cycle:
            next_cycle = now + cycle_us
            while zombies and len(zombies) > STALE_SHARE * (len(keys) + len(zombies)):
                used -= zombies.pop(next(iter(zombies)))
        integral += used * (now - last_t)
        last_t = now
        sid = sid_list[i]
        is_read = read_list[i]
        if is_read:
            out.reads += 1
            s_reads[sid] += 1
        if open_at >= 0 and now - open_at < reset_us:  # the breaker is open: around the cache
            if is_read:
                out.errors += 1
            else:
                dirty.add(sid)
            continue
        if dirty:  # the store drops them first, in one pipeline: a success for the breaker
            for d in dirty:
                for kid in (2 * d, 2 * d + 1):
                    if kid in keys:
                        delete(kid)
            dirty.clear()
            failures = 0
            open_at = -1.0
        clock = now // clock_div
        if steps and step < len(steps) and now >= steps[step][0]:
            while step < len(steps) and now >= steps[step][0]:
                budget = steps[step][1]
                step += 1
        # The command's arguments sit in its client's buffers while Valkey checks the limit.
        args = (na_list[i] - nb_list[i]) * (pm + mu_list[i]) if arguments and not is_read else 0.0
        if not noevict and used + args > budget:
            evict(clock, args)
        oom = used > budget
        mkey, lkey = 2 * sid, 2 * sid + 1
        if zombies:  # the lookup of an expired key deletes it
            used -= zombies.pop(mkey, 0.0) + zombies.pop(lkey, 0.0)
        ok = True
        if is_read:
            if mkey in keys and lkey in keys:
                refresh = now + ttl_us if sliding else None
                touch(mkey, clock, refresh)
                touch(lkey, clock, refresh)
                if need_list[i] <= size:
                    out.hits += 1
                    s_hits[sid] += 1
                else:
                    out.bypasses += 1
            else:
                wrote = False
                if mkey in keys:  # the hash without its list: dropped, not served
                    delete(mkey)
                    wrote = True
                if anchor_list[i] and oom and not wrote:
                    ok = False  # SET lease refused: the read goes to PostgreSQL, no populate
                    out.oom += 1
                    out.errors += 1
                else:
                    out.misses += 1
                    n = min(size, nb_list[i])
                    if anchor_list[i] and n > 0:
                        args = n * (pm + mu_list[i]) if arguments else 0.0
                        if not noevict and used + args > budget:
                            evict(clock, args)  # the populate is a command of its own, its window its argument
                        if lkey in keys:
                            delete(lkey)  # an orphan list is replaced
                        exp = now + ttl_us
                        put(lkey, lb + n * (pm + mu_list[i]), exp, clock)
                        put(mkey, hb, exp, clock)
        elif mkey in keys:
            if lkey not in keys:
                delete(mkey)  # 'lost'
            else:  # never refused: the script's first write (DEL of the lease) lets the rest through
                n = min(size, na_list[i])
                exp_l = now + ttl_us if sliding else keys[mkey][1]
                put(lkey, lb + n * (pm + mu_list[i]), exp_l, clock)
                touch(mkey, clock, now + ttl_us if sliding else None)
        if used > out.peak_bytes:
            out.peak_bytes = used
        if ok:
            failures = 0
            open_at = -1.0
        else:
            failures += 1
            if open_at >= 0 or failures >= breaker_failures:
                open_at = float(now)
    end = ev.span[1]
    while heap and heap[0][0] <= end:
        exp, kid, stamp = heapq.heappop(heap)
        rec = keys.get(kid)
        if rec is not None and rec[1] == stamp:
            delete(kid)
    integral += used * (end - last_t)
    out.mean_bytes = integral / max(end - ev.span[0], 1)
    out.end_bytes = used
    out.session_hits, out.session_reads = s_hits, s_reads
    return out


@dataclass
class BudgetCurve:
    """Hit ratio by budget for one policy and setting (raw, at the sample's scale)."""

    policy: str
    budgets: list[float]
    results: list[SimResult]


def budgets_for(footprint: float, points: int = 9, low: float = 1 / 64, high: float = 1.25) -> list[float]:
    """Budgets from ``low`` to ``high`` x ``footprint`` (the peak of the keys with no limit; a
    command's arguments need room above it too), geometric."""
    if footprint <= 0:
        return [0.0]
    return [float(x) for x in np.geomspace(footprint * low, footprint * high, points)]


def curve(
    ev: SimEvents,
    budgets: Sequence[float],
    *,
    policy: str,
    ttl: float,
    sliding: bool,
    size: int,
    costs: KeyCosts,
    compression: float = 1.0,
) -> BudgetCurve:
    """:func:`simulate` at each budget."""
    runs = [
        simulate(ev, ttl=ttl, sliding=sliding, size=size, budget=b, policy=policy, costs=costs, compression=compression)
        for b in budgets
    ]
    return BudgetCurve(policy, list(budgets), runs)
