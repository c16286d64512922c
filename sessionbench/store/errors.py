"""The store's error tree (every error it raises; a driver exception never escapes)::

StoreError
├── ValidationError      bad input, raised before any I/O (field names the culprit)
├── SessionNotFound      no such session, or it belongs to another user
└── StoreUnavailable     PostgreSQL (or, where it is the source of truth, anything
                         durable) could not be reached or answered with an error
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises."""


class ValidationError(StoreError, ValueError):
    """Input is invalid; nothing was read or written.  ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SessionNotFound(StoreError, LookupError):
    """The session does not exist, or it is not visible to the given user."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} not found")
        self.session_id = session_id


class StoreUnavailable(StoreError):
    """The durable store could not complete the operation; it may be retried.

    ``in_doubt`` is True when the request may have reached PostgreSQL and its reply was
    lost (a broken connection or a timeout mid-statement): a write may then have
    committed.  False when the server refused it or it never left the client (no
    connection, a pool timeout, an error the server returned), so nothing was written.
    """

    def __init__(self, message: str, *, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.in_doubt = in_doubt


class StoreClosed(StoreError, RuntimeError):
    """The store was closed (``close()`` or the end of ``async with``); open a new one."""
