"""The hybrid cache's Lua scripts, kept as ``.lua`` files beside this module.

``read.lua`` serves a window or takes a populate lease, ``append.lua`` extends a window
with committed messages only if they follow it exactly, ``populate.lua`` stores a
window read from PostgreSQL only if the lease still holds.  :mod:`.rules` restates the
same rules in Python; a test runs both on the same operations and compares.

:class:`LuaScript` calls one by SHA (``EVALSHA``, one round trip) and loads it on
``NOSCRIPT`` (a restarted or failed-over server); on a Redis Cluster the client routes
the call by its keys' slot and loads the script on every primary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

NAMES: tuple[str, ...] = ("read", "append", "populate")


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua``."""
    if name not in NAMES:
        raise KeyError(name)
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


class LuaScript:
    """One script bound to a client: ``await script(keys, args)`` runs it (1 round trip)."""

    __slots__ = ("client", "sha", "source")

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self.client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        """``SCRIPT LOAD`` (on every primary of a cluster)."""
        await self.client.script_load(self.source)


async def run_pipelined(client: Any, calls: Sequence[tuple[LuaScript, Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Several scripts in one pipeline (**1 round trip**), run in order on one connection.

    Each item of the result is that script's reply or the exception it met (a connection
    error is every script's).  On ``NOSCRIPT`` (a restarted or failed-over server) the
    scripts are loaded and the whole pipeline sent once more, its first replies dropped:
    the store pipelines only scripts that are safe to run again (an append that already
    ran answers ``present``; a read's lease token is its own).
    """
    results: list[Any] = []
    for attempt in (1, 2):
        try:
            async with client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                results = list(await pipe.execute(raise_on_error=False))
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                for script, _, _ in calls:
                    await script.load()
                continue
        except Exception as exc:  # noqa: BLE001 - the caller maps each script's failure as for a single call
            return [exc] * len(calls)
        break
    return results
