"""The hybrid cache's key layout in Redis: the one place that names keys and hash fields.

Per session (``sid`` is the canonical UUID string), three keys that share the hash tag
``{sid}``, so they live in one Redis Cluster slot and one script may touch all three:

=====================  =====  =====================================================
``<prefix>:{sid}:m``   list   the cached window: encoded messages, oldest first
``<prefix>:{sid}:h``   hash   ``last`` (seq of the newest cached message), ``owner``
                              (user id, ``''`` for none), ``epoch`` (the cache epoch
                              the entry was populated under)
``<prefix>:{sid}:l``   str    the populate lease of the read that missed
=====================  =====  =====================================================

There is no key outside a session's slot: the cache epoch every entry must match is
kept in PostgreSQL (:mod:`.sync`) and passed to the scripts as an argument, so every
script touches one slot and the keys spread over all masters of a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Fields of the per-session hash.
LAST, OWNER, EPOCH = "last", "owner", "epoch"


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The Redis keys of one session's cache entry."""

    messages: str
    meta: str
    lease: str

    @property
    def entry(self) -> tuple[str, str, str]:
        """Every key of the entry (what deleting it deletes)."""
        return (self.messages, self.meta, self.lease)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names under one ``prefix`` (``CacheSettings.key_prefix``)."""

    prefix: str = "sb"

    def session(self, sid: str) -> SessionKeys:
        base = f"{self.prefix}:{{{sid}}}"
        return SessionKeys(f"{base}:m", f"{base}:h", f"{base}:l")

    def script_keys(self, sid: str) -> list[str]:
        """KEYS of every hybrid script: list, hash, lease."""
        keys = self.session(sid)
        return [keys.messages, keys.meta, keys.lease]

    def pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every per-session key of this prefix."""
        return f"{self.prefix}:{{*}}:*"
