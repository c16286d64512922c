"""Tracing set-up for entry points (the service, the CLI): OTLP export only when asked for.

``store`` itself depends on ``opentelemetry-api`` only; this module imports the SDK and
the OTLP/HTTP exporter (the ``otlp`` extra, ``opentelemetry-exporter-otlp-proto-http``)
lazily, inside :func:`configure_tracing`, and only when ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.  Otherwise nothing is configured, no
span is created and nothing is exported.

The exporter reads the other standard variables itself (``OTEL_EXPORTER_OTLP_HEADERS``,
``_TIMEOUT``, ``_COMPRESSION``...); ``OTEL_SERVICE_NAME`` names the service
(default ``sessionstore``); ``OTEL_SDK_DISABLED=true`` turns everything off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACER_NAME = "sessionstore"


class TelemetryError(RuntimeError):
    """Tracing was asked for but cannot be set up (message says what to install)."""


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL the environment asks for, or None."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    specific = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        return None
    return base.rstrip("/") + "/v1/traces"


def configure_tracing(environ: Mapping[str, str]) -> TracerProvider | None:
    """A tracer provider exporting OTLP/HTTP in batches, or None when no endpoint is set.

    The caller passes ``provider.get_tracer(TRACER_NAME)`` to the store wrapper and the
    service, and calls ``provider.shutdown()`` on exit to flush.  The provider is not
    installed globally: only what it is handed to traces.
    """
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise TelemetryError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing ({exc.name}): "
            "install sessionbench[otlp]"
        ) from exc
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or "sessionstore"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider
