"""Optional OpenTelemetry spans around the toolkit's Redis calls (extra ``otel``).

Every ``guarded()`` block (one script call, or one pipeline) becomes a client
span named ``drf_redis_toolkit.redis``, child of whatever span is current (the
request's, with Django instrumentation), marked as an error when Redis fails.
Spans exist only when ``opentelemetry-api`` is importable *and* the application
set a tracer provider (``trace.set_tracer_provider()``, or the
``opentelemetry-instrument`` launcher); otherwise ``start()`` returns ``None``
after one check, and nothing else happens.
"""

from __future__ import annotations

import time
from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]

#: ``False`` when the API is missing: ``guarded()`` then skips even the call.
ENABLED = trace is not None
SPAN_NAME = "drf_redis_toolkit.redis"

_tracer: Any = None
#: While no provider is set, look again at most once a second: asking the API
#: costs over a microsecond, too much for every Redis call.
_next_look = 0.0


def _provider() -> Any:
    return trace.get_tracer_provider()


def start() -> Any:
    """A started span for one Redis call, or ``None`` while no tracer provider is set."""
    global _tracer, _next_look
    if _tracer is None:
        now = time.monotonic()
        if now < _next_look:
            return None
        provider = _provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            _next_look = now + 1.0  # not configured (yet)
            return None
        _tracer = provider.get_tracer("drf_redis_toolkit")
    return _tracer.start_span(
        SPAN_NAME, kind=trace.SpanKind.CLIENT, attributes={"db.system": "redis"}
    )


def end(span: Any, exc: BaseException | None) -> None:
    """End ``span`` (from ``start()``); an exception marks it as an error."""
    if span is None:
        return
    if exc is not None:
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
    span.end()
