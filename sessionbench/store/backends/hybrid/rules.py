"""The hybrid cache's rules in Python: the twin of ``read.lua``, ``append.lua`` and ``populate.lua``.

:class:`CacheModel` keeps, per session, the three keys the scripts keep (the list of
encoded messages, the hash ``last``/``owner``/``epoch``, the populate lease), each with
its own expiry time, and answers each call exactly as the script does, reply included.
``tests/test_cache_rules.py`` runs random call sequences through this model and through
the real scripts on Valkey and compares replies and keys after every step, so a change
to one that is not made to the other fails a test.  The advisor's tests replay traces
through it, and the fault checker uses :func:`servable`, the read script's test of
whether an entry may be served.

Time is in milliseconds on the caller's clock; a key whose expiry is ``<= now`` is gone
(Redis's own lazy expiry behaves the same from the client's point of view).  Eviction
(``maxmemory``) and outside deletions are :meth:`CacheModel.evict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What a read reply is, as the script returns it: ``("hit", last, messages)``,
#: ``("bypass", last)``, ``("miss", leased, stale)`` or ``("forbidden",)``.
ReadReply = tuple[object, ...]


def servable(last: int | None, entry_epoch: str | None, list_length: int, epoch: str) -> bool:
    """Whether the read script would serve an entry (rather than drop it and miss).

    An entry is servable when its hash exists, it was filled under the current
    ``epoch``, and its list is present unless the session had no messages
    (``last == 0``): a hash whose list vanished on its own is never served.
    """
    return last is not None and entry_epoch == epoch and (list_length > 0 or last == 0)


@dataclass
class _Key:
    value: object
    expires: float | None = None  # ms on the model's clock; None: no TTL


@dataclass
class CacheModel:
    """Every session's cache keys, and the three scripts as methods."""

    size: int
    ttl_ms: int
    sliding: bool = True
    lease_ms: int = 5000
    lists: dict[str, _Key] = field(default_factory=dict)
    hashes: dict[str, _Key] = field(default_factory=dict)
    leases: dict[str, _Key] = field(default_factory=dict)

    # -- keys ----------------------------------------------------------------------------
    def _get(self, table: dict[str, _Key], sid: str, now: float) -> _Key | None:
        key = table.get(sid)
        if key is not None and key.expires is not None and key.expires <= now:
            del table[sid]
            return None
        return key

    def entry(self, sid: str, now: float) -> tuple[dict[str, str] | None, list[str], str | None]:
        """``(hash fields or None, list items, lease or None)`` of ``sid`` at ``now``."""
        h = self._get(self.hashes, sid, now)
        items = self._get(self.lists, sid, now)
        lease = self._get(self.leases, sid, now)
        return (
            None if h is None else dict(h.value),  # type: ignore[call-overload]
            [] if items is None else list(items.value),  # type: ignore[call-overload]
            None if lease is None else str(lease.value),
        )

    def ttl(self, table: str, sid: str, now: float) -> float | None:
        """Milliseconds left on ``lists``/``hashes``/``leases`` key of ``sid`` (None: absent or no TTL)."""
        key = self._get(getattr(self, table), sid, now)
        return None if key is None or key.expires is None else key.expires - now

    def evict(self, sid: str, which: str = "mhl") -> None:
        """Remove some of a session's keys as eviction or an operator would: ``m`` list, ``h`` hash, ``l`` lease."""
        for letter, table in (("m", self.lists), ("h", self.hashes), ("l", self.leases)):
            if letter in which:
                table.pop(sid, None)

    def _drop(self, sid: str) -> None:
        self.lists.pop(sid, None)
        self.hashes.pop(sid, None)

    # -- the scripts ---------------------------------------------------------------------
    def read(
        self, sid: str, now: float, *, limit: int, before_seq: int | None, owner: str, token: str, epoch: str
    ) -> ReadReply:
        """``read.lua``: serve the window, or take the populate lease on a miss."""
        h = self._get(self.hashes, sid, now)
        items_key = self._get(self.lists, sid, now)
        items: list[str] = [] if items_key is None else items_key.value  # type: ignore[assignment]
        fields: dict[str, str] = {} if h is None else h.value  # type: ignore[assignment]
        last = None if h is None else int(fields["last"])
        if not servable(last, fields.get("epoch"), len(items) if h is not None else 0, epoch):
            stale = 0
            if h is not None:
                self._drop(sid)
                stale = 1
            leased = 0
            if token and self._get(self.leases, sid, now) is None:
                self.leases[sid] = _Key(token, now + self.lease_ms)
                leased = 1
            return ("miss", leased, stale)
        assert h is not None
        assert last is not None
        if owner and fields.get("owner") != owner:
            return ("forbidden",)
        if self.sliding:
            if items_key is not None:
                items_key.expires = now + self.ttl_ms
            h.expires = now + self.ttl_ms
        first = last - len(items) + 1
        upper = last if before_seq is None else min(last, before_seq - 1)
        lower = max(1, upper - limit + 1)
        if upper < lower:
            return ("hit", last, [])
        if lower < first:
            return ("bypass", last)
        return ("hit", last, items[lower - first : upper - first + 1])

    def append(self, sid: str, now: float, *, first_seq: int, messages: list[str], epoch: str) -> str:
        """``append.lua``: extend the window with committed messages only if they follow it exactly."""
        self.leases.pop(sid, None)
        h = self._get(self.hashes, sid, now)
        if h is None:
            return "absent"
        fields: dict[str, str] = h.value  # type: ignore[assignment]
        if fields.get("epoch") != epoch:
            self._drop(sid)
            return "epoch"
        last, n = int(fields["last"]), len(messages)
        if last >= first_seq + n - 1:
            return "present"
        if last != first_seq - 1:
            self._drop(sid)
            return "gap"
        items_key = self._get(self.lists, sid, now)
        if last > 0 and items_key is None:
            self.hashes.pop(sid, None)
            return "lost"
        if items_key is None:
            items_key = self.lists[sid] = _Key([])
        items: list[str] = items_key.value  # type: ignore[assignment]
        items.extend(messages)
        del items[: max(0, len(items) - self.size)]
        fields["last"] = str(first_seq + n - 1)
        if self.sliding:
            items_key.expires = h.expires = now + self.ttl_ms
        elif h.expires is not None:
            items_key.expires = h.expires
        return "extended"

    def populate(
        self, sid: str, now: float, *, token: str, last_seq: int, owner: str, epoch: str, messages: list[str]
    ) -> str:
        """``populate.lua``: store a window read from PostgreSQL if this read's lease still holds."""
        lease = self._get(self.leases, sid, now)
        if lease is None or lease.value != token:
            return "discarded"
        self.leases.pop(sid, None)
        self.lists.pop(sid, None)
        if messages:
            self.lists[sid] = _Key(list(messages), now + self.ttl_ms)
        h = self._get(self.hashes, sid, now)
        fields: dict[str, str] = {} if h is None else h.value  # type: ignore[assignment]
        fields.update(last=str(last_seq), owner=owner, epoch=epoch)
        self.hashes[sid] = _Key(fields, now + self.ttl_ms)
        return "stored"
