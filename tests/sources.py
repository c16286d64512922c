"""Parsing the project's own source in tests that check its shape.

On CPython 3.11.7 a finalizer that warns while ``ast.parse`` builds its tree (a socket an
earlier test leaked, say, with warnings as errors) makes the parse raise ``SystemError: AST
constructor recursion depth mismatch``, and the leak is blamed on the test that parsed.
These helpers keep the garbage collector off while the tree is built, so such a warning
surfaces at the next collection as the unraisable warning it is.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path


def parse_source(text: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(text)`` with no garbage collection while it runs."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text, filename=filename)
    finally:
        if was_enabled:
            gc.enable()


def parse_file(path: Path) -> ast.Module:
    """The module at ``path``, parsed as :func:`parse_source` does."""
    return parse_source(path.read_text(encoding="utf-8"), filename=str(path))
