"""Chat-completions message dicts to store messages and back, losslessly (no extra needed).

A message in OpenAI's chat-completions shape — ``{"role": "assistant", "content": [...],
"tool_calls": [...]}``, ``{"role": "tool", "tool_call_id": "...", "name": "...",
"content": "..."}`` — becomes one store message:

* ``role`` as it is (the store takes system, user, assistant and tool);
* ``content``: a non-empty string as it is; anything else (a list of parts, ``None``
  for a turn that only calls tools, ``""``) as its JSON text, with
  ``metadata["content_json"] = true``;
* every other key (``tool_calls``, ``tool_call_id``, ``name``, ``refusal``...) in
  ``metadata`` under its own name, so the store's metadata limit (8 KiB by default)
  bounds them together.

:func:`to_chat` inverts it: ``to_chat(stored) == message`` for the message stored from
``to_new_message(message)``, whichever backend (or cache) returns it, and for a
message read back from a JSON Lines or CSV export (``Message.from_dict``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sessionbench.store.errors import ValidationError
from sessionbench.store.models import Message, NewMessage

#: The metadata flag saying ``content`` holds JSON text (a list of parts, ``None``...).
CONTENT_JSON = "content_json"


def to_new_message(message: Mapping[str, Any]) -> NewMessage:
    """The store message for a chat-completions message dict (validated by the store on append)."""
    if not isinstance(message, Mapping):
        raise ValidationError("message", "must be an object with role and content")
    if CONTENT_JSON in message:
        raise ValidationError(CONTENT_JSON, "is reserved for the store's encoding of content")
    content = message.get("content")
    metadata = {k: v for k, v in message.items() if k not in ("role", "content")}
    if not (isinstance(content, str) and content):
        try:
            content = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValidationError("content", f"is not JSON-serialisable ({exc})") from None
        metadata[CONTENT_JSON] = True
    return NewMessage(message.get("role"), content, metadata)  # type: ignore[arg-type]


def to_chat(message: Message) -> dict[str, Any]:
    """The chat-completions dict a stored message came from (see :func:`to_new_message`)."""
    metadata = dict(message.metadata)
    content: Any = message.content
    if metadata.pop(CONTENT_JSON, False) is True:
        content = json.loads(content)
    return {"role": message.role, "content": content, **metadata}
