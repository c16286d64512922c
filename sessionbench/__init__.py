"""sessionbench: a benchmark and load-test harness and a reference store for LLM chat sessions.

Three packages, one distribution:

* :mod:`sessionbench.store`: the store (memory, PostgreSQL, Redis + PostgreSQL), what a
  service embeds.  The core install brings only its drivers.
* :mod:`sessionbench.bench`: the harness (``sessionbench compare``, ``advise``, ``faults``,
  ``serve`` ...), with the ``bench`` extra.
* :mod:`sessionbench.loadtests`: the Locust files, shipped with the distribution.

Importing this package imports none of them.
"""
