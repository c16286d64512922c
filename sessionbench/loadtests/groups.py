"""The names a load test's statistics use: request groups, the X-Cache rows and the hit ratio.

One home for the locustfile (which names its requests and counts ``X-Cache``), its
thresholds and Prometheus exporter, and ``sessionbench loadtest`` (which lays its table
out by them).  No Locust import.
"""

from __future__ import annotations

from collections.abc import Mapping

# Request groups (the ``name=`` of every request): a turn's requests, then a visit's.
APPEND_USER = "messages.append_user"
READ = "messages.read"
#: ``--turn-shaped``: the user's message and the read in one request (``POST …/messages?window=N``).
APPEND_READ = "messages.append_read"
APPEND_ASSISTANT = "messages.append_assistant"
PAGE = "messages.page"
CREATE = "sessions.create"
GET_SESSION = "sessions.get"
LIST = "sessions.list"
SEARCH = "search"
EXPORT = "sessions.export"
GROUPS = (APPEND_USER, READ, APPEND_READ, APPEND_ASSISTANT, PAGE, CREATE, GET_SESSION, LIST, SEARCH, EXPORT)

#: Statistics rows of this method count message reads by their ``X-Cache`` header, not requests.
CACHE_METHOD = "X-Cache"
#: Their names: the header's values, and ``none`` for a read without the header.
CACHE_RESULTS = ("hit", "miss", "bypass", "none")
#: The results a hit ratio is taken over (``none`` and the service's ``error`` are not).
COUNTED = ("hit", "miss", "bypass")


def hit_ratio(counts: Mapping[str, float]) -> float | None:
    """hit / (hit + miss + bypass) of ``result -> reads``; ``None`` when none of them was seen."""
    counted = sum(counts.get(k, 0) for k in COUNTED)
    return counts.get("hit", 0) / counted if counted else None
