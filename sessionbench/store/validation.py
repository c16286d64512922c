"""Input limits and validation: every rule a request must pass before any I/O."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sessionbench.store.errors import ValidationError
from sessionbench.store.models import EXPORT_FORMATS, ROLES, NewMessage


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits, enforced before any I/O."""

    content_bytes: int = 64 * 1024
    metadata_bytes: int = 8 * 1024
    max_limit: int = 1000
    max_batch: int = 100
    user_id_chars: int = 128
    query_chars: int = 256


DEFAULT_LIMITS = Limits()


#: ``older_than`` above this is rejected: PostgreSQL cannot subtract much more from now().
MAX_OLDER_THAN = 100 * 365.25 * 24 * 3600.0

# A NUL character inside any JSON string is encoded as ``\u0000`` preceded by an even
# number of backslashes; an odd number means the text holds a literal backslash-u-0000.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates, which neither PostgreSQL nor Redis can store."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_session_id(session_id: str | uuid.UUID | None, *, field: str = "session_id") -> str:
    """Return the canonical (lowercase, hyphenated) form of a UUID session id."""
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    if not isinstance(session_id, str):
        raise ValidationError(field, "must be a UUID string")
    if _CANONICAL_UUID.fullmatch(session_id):
        return session_id  # already canonical (the common case): no parse, no new string
    if len(session_id) > 64:
        raise ValidationError(field, "is not a UUID")
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        raise ValidationError(field, "is not a UUID") from None


def validate_user_id(user_id: str | None, limits: Limits) -> str | None:
    if user_id is None:
        return None
    if not isinstance(user_id, str) or not user_id or len(user_id) > limits.user_id_chars:
        raise ValidationError("user_id", f"must be a non-empty string of at most {limits.user_id_chars} characters")
    if "\x00" in user_id:
        raise ValidationError("user_id", "must not contain NUL characters")
    if not _is_unicode(user_id):
        raise ValidationError("user_id", "is not valid Unicode text")
    return user_id


def validate_metadata(metadata: Mapping[str, Any] | None, limits: Limits, *, field: str = "metadata") -> dict[str, Any]:
    """Metadata is a JSON object of bounded encoded size, no NUL, integers within 64 bits;
    return a plain-dict copy (every backend and the cache then return the same value)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError(field, "must be a JSON object")
    if not metadata:
        return {}
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(field, f"is not JSON-serialisable ({exc})") from None
    if _JSON_NUL.search(encoded):
        raise ValidationError(field, "must not contain NUL characters")
    if not _is_unicode(encoded):
        raise ValidationError(field, "is not valid Unicode text")
    if len(encoded.encode()) > limits.metadata_bytes:
        raise ValidationError(field, f"is larger than {limits.metadata_bytes} bytes encoded")
    decoded: dict[str, Any] = json.loads(encoded)
    if _LONG_NUMBER.search(encoded) and _has_wide_int(decoded):
        raise ValidationError(field, "holds an integer beyond 64 bits (JSON libraries disagree on those)")
    return decoded


# A run of 19+ digits may be an integer beyond 64 bits; only then is the value walked.
_LONG_NUMBER = re.compile(r"\d{19,}")
_INT_RANGE = range(-(2**63), 2**64)


def _has_wide_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value not in _INT_RANGE
    if isinstance(value, dict):
        return any(_has_wide_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_wide_int(v) for v in value)
    return False


def validate_content(content: str, limits: Limits, *, field: str = "content") -> str:
    if not isinstance(content, str):
        raise ValidationError(field, "must be a string")
    if not content:
        raise ValidationError(field, "must not be empty")
    if "\x00" in content:
        raise ValidationError(field, "must not contain NUL characters")
    try:
        size = len(content.encode())
    except UnicodeEncodeError:
        raise ValidationError(field, "is not valid Unicode text") from None
    if size > limits.content_bytes:
        raise ValidationError(field, f"is {size} bytes; the limit is {limits.content_bytes}")
    return content


def validate_role(role: str, *, field: str = "role") -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise ValidationError(field, f"must be one of {', '.join(sorted(ROLES))}")
    return role


def validate_new_messages(
    messages: Sequence[NewMessage | Mapping[str, Any]], limits: Limits
) -> list[tuple[str, str, dict[str, Any]]]:
    """Validate a batch; return ``(role, content, metadata)`` tuples."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):  # type: ignore[unreachable]
        raise ValidationError("messages", "must be a list of messages")
    if not messages:
        raise ValidationError("messages", "must not be empty")
    if len(messages) > limits.max_batch:
        raise ValidationError("messages", f"holds {len(messages)} messages; the limit is {limits.max_batch}")
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i, item in enumerate(messages):
        role: Any
        content: Any
        metadata: Any
        if isinstance(item, NewMessage):
            role, content, metadata = item.role, item.content, item.metadata
        elif isinstance(item, Mapping):
            role, content, metadata = item.get("role"), item.get("content"), item.get("metadata")
        else:
            raise ValidationError(f"messages[{i}]", "must be an object with role and content")
        out.append(
            (
                validate_role(role, field=f"messages[{i}].role"),
                validate_content(content, limits, field=f"messages[{i}].content"),
                validate_metadata(metadata, limits, field=f"messages[{i}].metadata"),
            )
        )
    return out


def validate_limit(limit: int, limits: Limits, *, field: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= limits.max_limit:
        raise ValidationError(field, f"must be an integer from 1 to {limits.max_limit}")
    return limit


def validate_before_seq(before_seq: int | None) -> int | None:
    if before_seq is None:
        return None
    if isinstance(before_seq, bool) or not isinstance(before_seq, int) or not 1 <= before_seq <= 2**62:
        raise ValidationError("before_seq", "must be a positive integer")
    return before_seq


def validate_before(before: datetime | None) -> datetime | None:
    """``list_sessions``' ``before``: None or a timezone-aware datetime."""
    if before is not None and (not isinstance(before, datetime) or before.tzinfo is None):
        raise ValidationError("before", "must be a timezone-aware datetime")
    return before


#: The library the ``pdf`` export format needs (the ``pdf`` extra), and how to get it.
PDF_LIBRARY = "reportlab"
PDF_HINT = "pip install 'sessionbench[pdf]'"


def validate_format(fmt: str) -> str:
    """An export format; ``pdf`` also needs its optional library (checked without importing it)."""
    if not isinstance(fmt, str) or fmt not in EXPORT_FORMATS:
        raise ValidationError("format", f"must be one of {', '.join(sorted(EXPORT_FORMATS))}")
    if fmt == "pdf" and importlib.util.find_spec(PDF_LIBRARY) is None:
        raise ValidationError("format", f"pdf needs {PDF_LIBRARY}, which is not installed ({PDF_HINT})")
    return fmt


def validate_cleanup(older_than: float, batch_size: int) -> None:
    # The chained comparison also rejects NaN and infinities (and never overflows on big ints).
    number = isinstance(older_than, (int, float)) and not isinstance(older_than, bool)
    if not number or not 0 <= older_than <= MAX_OLDER_THAN:
        raise ValidationError("older_than", "must be a number of seconds from 0 to 100 years")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
        raise ValidationError("batch_size", "must be an integer from 1 to 100000")


def validate_query(query: str, limits: Limits) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query", "must be a non-empty string")
    if len(query) > limits.query_chars or "\x00" in query or not _is_unicode(query):
        raise ValidationError("query", f"must be at most {limits.query_chars} characters of text, without NUL")
    return query.strip()
