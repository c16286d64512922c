"""Locust's statistics as Prometheus metrics, served by the master (or a local run).

``--prometheus-port 9646`` starts a small HTTP server on ``--prometheus-host``
(default 127.0.0.1) that answers ``GET /metrics`` from the live statistics at every
scrape: nothing is copied on a timer, so the figures are the ones Locust shows.
Needs ``prometheus-client`` (``pip install prometheus-client``); the locustfile runs
without it when the option is not given.

Exported names (the Grafana load-test dashboard queries exactly these):

==============================================  ========  =====================================================
``locust_users``                                gauge     simulated users running now
``locust_workers``                              gauge     workers connected to the master (0 in a local run)
``locust_state{state}``                         gauge     1 for the runner's current state (ready, spawning, ...)
``locust_requests_total{name,method}``          counter   requests per group (``name`` = request group)
``locust_failures_total{name,method}``          counter   failed requests per group
``locust_requests_per_second{name,method}``     gauge     Locust's current rate per group
``locust_response_time_seconds{name,method,quantile}``          gauge   since the start (0.5, 0.9, 0.95, 0.99, 0.999, 1)
``locust_current_response_time_seconds{name,method,quantile}``  gauge   last ~10 s (0.5, 0.95, 0.99)
``locust_fail_ratio``                           gauge     failed / all requests
``locust_cache_requests_total{result}``         counter   ``GET messages`` reads by ``X-Cache`` (hit/miss/bypass/none)
``locust_cache_hit_ratio``                      gauge     hit / (hit + miss + bypass); absent before the first read
``locust_cache_read_response_time_seconds{result,quantile}``    gauge   read latency by cache result
==============================================  ========  =====================================================

``name`` values are the request groups of ``groups.py`` (``messages.read``, ...);
the response-time gauges also carry ``name="Aggregated", method=""`` (percentiles of
all requests; they cannot be summed), the counters do not (sum them instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .groups import hit_ratio

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
CURRENT_QUANTILES = (0.5, 0.95, 0.99)
STATES = ("ready", "spawning", "running", "cleanup", "stopping", "stopped", "missing")


class LocustCollector:
    """A prometheus_client custom collector over a Locust ``Environment`` (read at scrape time)."""

    def __init__(self, environment: Any, *, cache_method: str, cache_results: tuple[str, ...] = ()) -> None:
        self.environment = environment
        self.cache_method = cache_method  # statistics rows with this method are X-Cache counts, not requests
        self.cache_results = cache_results  # always exported, 0 until seen

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families are produced at scrape time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runner = self.environment.runner
        if runner is None:
            return
        stats = runner.stats

        yield GaugeMetricFamily("locust_users", "Simulated users running now", value=runner.user_count)
        workers = len(getattr(runner, "clients", {}) or {})
        yield GaugeMetricFamily("locust_workers", "Workers connected to the master", value=workers)
        state = GaugeMetricFamily("locust_state", "1 for the runner's current state", labels=["state"])
        for s in STATES:
            state.add_metric([s], 1.0 if runner.state == s else 0.0)
        yield state

        requests = CounterMetricFamily("locust_requests", "Requests per group", labels=["name", "method"])
        failures = CounterMetricFamily("locust_failures", "Failed requests per group", labels=["name", "method"])
        rps = GaugeMetricFamily("locust_requests_per_second", "Current request rate", labels=["name", "method"])
        rt = GaugeMetricFamily(
            "locust_response_time_seconds",
            "Response time percentiles since the start",
            labels=["name", "method", "quantile"],
        )
        current = GaugeMetricFamily(
            "locust_current_response_time_seconds",
            "Response time percentiles over the last ~10 s",
            labels=["name", "method", "quantile"],
        )
        cache = CounterMetricFamily("locust_cache_requests", "Message reads by X-Cache header", labels=["result"])
        cache_rt = GaugeMetricFamily(
            "locust_cache_read_response_time_seconds",
            "Message read response time percentiles by X-Cache result",
            labels=["result", "quantile"],
        )
        cache_counts: dict[str, int] = dict.fromkeys(self.cache_results, 0)
        for (name, method), entry in sorted(stats.entries.items()):
            if method == self.cache_method:
                cache_counts[name] = entry.num_requests
                if entry.num_requests:
                    for q in QUANTILES:
                        cache_rt.add_metric([name, _q(q)], entry.get_response_time_percentile(q) / 1000.0)
                continue
            requests.add_metric([name, method], entry.num_requests)
            failures.add_metric([name, method], entry.num_failures)
            rps.add_metric([name, method], entry.current_rps)
            _percentiles(rt, current, [name, method], entry)
        _percentiles(rt, current, ["Aggregated", ""], stats.total)
        for result, count in cache_counts.items():
            cache.add_metric([result], count)
        yield from (requests, failures, rps, rt, current, cache, cache_rt)

        total = stats.total
        fail_ratio = total.num_failures / total.num_requests if total.num_requests else 0.0
        yield GaugeMetricFamily("locust_fail_ratio", "Failed / all requests", value=fail_ratio)
        ratio = hit_ratio(cache_counts)
        if ratio is not None:
            yield GaugeMetricFamily("locust_cache_hit_ratio", "X-Cache hit / (hit + miss + bypass)", value=ratio)


def _q(q: float) -> str:
    return f"{q:g}"


def _percentiles(rt: Any, current: Any, labels: list[str], entry: Any) -> None:
    if not entry.num_requests:
        return
    for q in QUANTILES:
        rt.add_metric([*labels, _q(q)], entry.get_response_time_percentile(q) / 1000.0)
    if entry.use_response_times_cache:
        for q in CURRENT_QUANTILES:
            value = entry.get_current_response_time_percentile(q)
            if value is not None:
                current.add_metric([*labels, _q(q)], value / 1000.0)


def serve(collector: LocustCollector, host: str, port: int) -> Any:
    """Start ``/metrics`` on ``host:port`` in a gevent WSGI server; returns the server (``.stop()``)."""
    try:
        from prometheus_client import CollectorRegistry, make_wsgi_app
    except ImportError as exc:  # the locustfile must run without it unless asked
        raise SystemExit("--prometheus-port needs prometheus-client: pip install prometheus-client") from exc
    from gevent.pywsgi import WSGIServer  # type: ignore[import-untyped]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server = WSGIServer((host, port), make_wsgi_app(registry), log=None)
    server.start()
    return server
