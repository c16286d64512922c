"""Tests of optional extras: skipped with the reason when the extra is missing, failed under CI=true."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

#: The extra that brings each optional module (what ``pip install 'sessionbench[<extra>]'`` adds).
EXTRAS = {"agents": "agents", "reportlab": "pdf", "pypdf": "pdf (tests: pypdf, in dev)"}


def require(module: str) -> ModuleType:
    """Import ``module`` or skip the test saying which extra brings it (a failure under CI=true)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed (the {EXTRAS.get(module, module)} extra): {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} -- required under CI=true")
        pytest.skip(reason)
