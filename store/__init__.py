"""A checkout's shortcut to :mod:`sessionbench.store`, the store's one home (``sessionbench/store/``).

In a clone of this repository ``from store import open_store`` keeps working: this package
re-exports the public API of :mod:`sessionbench.store`, the same objects.  It is not part of
the distribution: an installed sessionbench has only the ``sessionbench`` import name, so
code outside this checkout imports ``sessionbench.store``.
"""

from __future__ import annotations

from sessionbench.store import *  # noqa: F403 - the re-export is the point
from sessionbench.store import __all__ as __all__
