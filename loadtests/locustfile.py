"""``locust -f loadtests/locustfile.py`` in a checkout: the Locust file of ``sessionbench/loadtests/``.

The load tests live in the package (:mod:`sessionbench.loadtests`), so that they ship with
the distribution (``locust -f "$(sessionbench loadtest --locustfile)"`` where sessionbench
is installed).  This file keeps the short path of a checkout: it runs that locustfile and
takes over its namespace, where Locust finds the users, the listeners and the options.
"""

from __future__ import annotations

import runpy
from pathlib import Path

globals().update(
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "sessionbench" / "loadtests" / "locustfile.py"))
)
