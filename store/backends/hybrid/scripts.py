"""The hybrid cache's Lua scripts, kept as ``.lua`` files beside this module.

``read.lua`` serves a window or takes a populate lease, ``append.lua`` extends a window
with committed messages only if they follow it exactly, ``populate.lua`` stores a
window read from PostgreSQL only if the lease still holds.  :mod:`.rules` restates the
same rules in Python; a test runs both on the same operations and compares.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

NAMES: tuple[str, ...] = ("read", "append", "populate")


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua``."""
    if name not in NAMES:
        raise KeyError(name)
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
