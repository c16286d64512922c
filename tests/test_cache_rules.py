"""The Python statement of the cache rules (sessionbench/store/backends/hybrid/rules.py) equals the Lua scripts.

Seeded random sequences of script calls (reads with and without leases, owners,
``before_seq`` and odd limits; appends that follow, overlap or leave gaps; populates with
the right and wrong lease; epoch changes; deletion of some of a session's keys) run
through :class:`CacheModel` and through the real scripts on Valkey.  After every call the
replies must be equal, and so must every key of the session: the list's items, the
hash's fields, the lease, and whether each key has a TTL (and how much, within the time
the calls took).  A change to a script that is not made to the model fails here.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
import redis.asyncio as aioredis

from sessionbench.store.backends.hybrid import CacheModel, KeyLayout, scripts, servable

SIZE = 4
TTL_MS = 60_000
LEASE_MS = 30_000
STEPS = 1500
#: TTLs are compared to this many ms: calls are 1 ms apart with a few pauses of twice this, so a
#: missed or extra TTL refresh shows as a larger difference, while a loaded machine adds < 250 ms.
TTL_SLACK_MS = 250


def _message(seq: int) -> str:
    return f'[{seq},"user","m{seq}","2026-01-01T00:00:00+00:00",{{}}]'


def _decode_read(reply: list[object]) -> tuple[object, ...]:
    """The read script's reply in the model's form."""
    if reply[0] == "hit":
        return ("hit", int(reply[1]), list(reply[2]))  # type: ignore[call-overload]
    return tuple(int(x) if isinstance(x, int) else x for x in reply)


@pytest.mark.parametrize("sliding", [True, False], ids=["sliding", "fixed"])
async def test_model_and_scripts_agree_call_by_call(redis_url: str, sliding: bool) -> None:
    """1,500 random calls per TTL mode give the same replies and leave the same keys in the model and in Valkey."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    read, append, populate = (client.register_script(scripts.source(n)) for n in scripts.NAMES)
    layout = KeyLayout(f"rules-{uuid.uuid4().hex[:8]}")
    model = CacheModel(size=SIZE, ttl_ms=TTL_MS, sliding=sliding, lease_ms=LEASE_MS)
    rng = random.Random(20261201 + sliding)
    sids = [str(uuid.uuid4()) for _ in range(3)]
    history = dict.fromkeys(sids, 0)  # the session's "PostgreSQL" last seq
    leases: dict[str, str] = {}
    epoch = "0"
    seen: set[str] = set()
    t0 = time.monotonic()

    def now() -> float:
        return (time.monotonic() - t0) * 1000

    try:
        for step in range(STEPS):
            sid = rng.choice(sids)
            keys = layout.script_keys(sid)
            op = rng.choices(["read", "append", "populate", "epoch", "evict", "wait"], [40, 30, 20, 3, 7, 0.5])[0]
            if op == "read":
                limit = rng.choice([1, 2, SIZE, SIZE + 2])
                before = rng.choice([None, None, None, rng.randint(1, max(1, history[sid] + 1))])
                owner = rng.choice(["", "", "alice", "bob"])
                token = "" if before is not None or rng.random() < 0.2 else f"t{step}"
                args = [limit, "" if before is None else before, TTL_MS, "1" if sliding else "0", owner, token,
                        LEASE_MS, epoch]  # fmt: skip
                got = _decode_read(await read(keys=keys, args=args))
                want = model.read(sid, now(), limit=limit, before_seq=before, owner=owner, token=token, epoch=epoch)
                if got[0] == "miss" and got[1]:
                    leases[sid] = token
                seen.add(f"read:{got[0]}")
            elif op == "append":
                n = rng.choice([1, 1, 2, 3])
                first = history[sid] + 1
                first += rng.choice([0, 0, 0, 0, -1, 1])  # mostly the next seq; sometimes overlap or a gap
                first = max(1, first)
                msgs = [_message(first + i) for i in range(n)]
                history[sid] = max(history[sid], first + n - 1)
                got = (await append(keys=keys, args=[first, TTL_MS, "1" if sliding else "0", SIZE, epoch, *msgs]),)
                want = (model.append(sid, now(), first_seq=first, messages=msgs, epoch=epoch),)
                seen.add(f"append:{got[0]}")
            elif op == "populate":
                token = leases.get(sid, "") if rng.random() < 0.8 else "wrong"
                last = history[sid]
                msgs = [_message(s) for s in range(max(1, last - SIZE + 1), last + 1)]
                owner = rng.choice(["", "alice"])
                got = (await populate(keys=keys, args=[token, last, owner, TTL_MS, epoch, *msgs]),)
                want = (
                    model.populate(sid, now(), token=token, last_seq=last, owner=owner, epoch=epoch, messages=msgs),
                )
                seen.add(f"populate:{got[0]}")
            elif op == "epoch":
                epoch = str(int(epoch) + 1)
                continue
            elif op == "wait":  # long enough that a missed or extra TTL refresh exceeds the slack
                await asyncio.sleep(2 * TTL_SLACK_MS / 1000)
                continue
            else:
                which = rng.choice(["m", "h", "l", "mh", "mhl"])
                named = dict(zip("mhl", layout.session(sid).entry, strict=True))
                await client.delete(*(named[w] for w in which))
                model.evict(sid, which)
                continue
            assert got == want, f"step {step} {op}: scripts {got} != model {want}"
            await _same_keys(client, layout, model, sid, now())
            await asyncio.sleep(0.001)
    finally:
        await client.aclose()
    for path in ("read:hit", "read:miss", "read:bypass", "append:extended", "append:gap", "append:absent",
                 "populate:stored", "populate:discarded"):  # fmt: skip
        assert path in seen, f"the sequence never reached {path}"


async def _same_keys(client: aioredis.Redis, layout: KeyLayout, model: CacheModel, sid: str, now: float) -> None:
    keys = layout.session(sid)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.meta)
        pipe.lrange(keys.messages, 0, -1)
        pipe.get(keys.lease)
        pipe.pttl(keys.meta)
        pipe.pttl(keys.messages)
        h, items, lease, h_ttl, m_ttl = await pipe.execute()
    want_h, want_items, want_lease = model.entry(sid, now)
    assert (h or None) == want_h
    assert items == want_items
    assert lease == want_lease
    for real, table in ((h_ttl, "hashes"), (m_ttl, "lists")):
        expected = model.ttl(table, sid, now)
        if real < 0:  # -2: no key, -1: no TTL
            assert expected is None, f"{table}: Redis has no TTL, the model {expected}"
        else:
            assert expected is not None, f"{table}: Redis TTL {real} ms, the model none"
            assert abs(real - expected) < TTL_SLACK_MS, f"{table}: Redis TTL {real} ms, the model {expected:.0f}"


def test_servable_is_the_read_scripts_rule() -> None:
    """An entry is servable iff its hash exists, its epoch is current and its list is there (or it is empty)."""
    assert servable(3, "2", 3, "2")
    assert servable(0, "2", 0, "2")
    assert not servable(None, None, 0, "2")
    assert not servable(3, "1", 3, "2")
    assert not servable(3, "2", 0, "2")
