"""The Locust load tests of the session service, shipped inside the sessionbench distribution.

Run them with ``locust -f sessionbench/loadtests/locustfile.py`` from a checkout, with
``locust -f "$(sessionbench loadtest --locustfile)"`` where sessionbench is installed, or
copy this folder alone to a machine that has only Locust: the locustfile then runs on
``fallback.py``, a copy of the workload model that the test suite checks against the real one.

Importing this package, ``groups``, ``thresholds``, ``chat_model`` or ``fallback`` never
imports Locust (which patches the standard library with gevent when it is imported);
only ``locustfile``, ``shapes`` and the exporter's ``serve`` do.
"""

from __future__ import annotations

from pathlib import Path

#: The locustfile this package ships (``sessionbench loadtest --locustfile`` prints it).
LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
