"""Grafana dashboards and Prometheus rules for sessionbench, as code.

``python -m dashboards.build`` regenerates ``dashboards/grafana/*.json`` from
:mod:`dashboards.build` (grafana-foundation-sdk builders); ``--check`` only says
whether the committed JSON is stale.  The Prometheus configuration, recording and
alerting rules and their ``promtool test rules`` files live in ``dashboards/prometheus/``;
Grafana provisioning in ``dashboards/provisioning/``.
"""
