"""Bridges between the store and other libraries, each behind an optional extra.

Nothing here is imported by ``import sessionbench.store``; import the module you need:

* :mod:`sessionbench.store.integrations.agents` — the OpenAI Agents SDK ``Session`` protocol on any
  store (the ``agents`` extra);
* :mod:`sessionbench.store.integrations.chat` — chat-completions message dicts (tool calls, content
  as a list of parts) to store messages and back, losslessly (no extra);
* :mod:`sessionbench.store.integrations.pdf` — the ``pdf`` export format (the ``pdf`` extra), used by
  ``export(session_id, "pdf")``; ``fonts/`` holds the DejaVu Sans it embeds.
"""
