"""Comparison baselines for the harness: designs we measure against, never use.

:mod:`bench.baselines.seed_naive` is the seed design note's ``SessionManager``
(``shared/seeds/000_0510607bba889f8b.txt``) reproduced with its defects intact.
"""

from __future__ import annotations

from bench.baselines.seed_naive import SeedNaiveStore, open_seed_baseline

__all__ = ["SeedNaiveStore", "open_seed_baseline"]
