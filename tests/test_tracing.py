"""OpenTelemetry spans around Redis calls, recorded by the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from drf_redis_toolkit import connection, tracing
from drf_redis_toolkit.cache_stats import counters
from drf_redis_toolkit.exceptions import RedisUnavailable
from tests import servers

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

pytestmark = pytest.mark.django_db


@pytest.fixture
def spans(monkeypatch):
    """A tracer provider of the test's own (the global one can be set once per process)."""
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", lambda: provider)
    monkeypatch.setattr(tracing, "_tracer", None)
    monkeypatch.setattr(tracing, "_next_look", 0.0)
    return exporter


def test_no_provider_no_span(backend, monkeypatch):
    monkeypatch.setattr(tracing, "_tracer", None)
    monkeypatch.setattr(tracing, "_next_look", 0.0)
    assert tracing.start() is None  # the API is installed, no provider is set


def test_a_provider_set_later_is_found(backend, spans, monkeypatch):
    provider = tracing._provider
    monkeypatch.setattr(tracing, "_provider", lambda: tracing.trace.ProxyTracerProvider())
    assert tracing.start() is None
    monkeypatch.setattr(tracing, "_provider", provider)
    assert tracing.start() is None  # looked less than a second ago
    monkeypatch.setattr(tracing, "_next_look", 0.0)  # as if a second had passed
    tracing.end(tracing.start(), None)
    assert len(spans.get_finished_spans()) == 1


def test_one_span_per_redis_call(backend, spans, settings, monkeypatch):
    settings.ROOT_URLCONF = "tests.caching_views"
    # The hit/miss counters reach Redis when their interval is due: not in this test.
    monkeypatch.setattr(counters, "_due", float("inf"))
    client = APIClient()
    client.get("/echo/?t=1")  # miss: the lookup, then the store
    client.get("/echo/?t=1")  # hit: the lookup
    finished = spans.get_finished_spans()
    assert [span.name for span in finished] == [tracing.SPAN_NAME] * 3
    assert all(span.attributes["db.system"] == "redis" for span in finished)
    assert all(span.status.is_ok for span in finished)


def test_a_failed_call_is_an_error_span(backend, spans, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CIRCUIT_BREAKER_COOLDOWN": 60}
    if backend.name == "fake":
        servers.FAKE_SERVER.connected = False
    else:
        settings.DRF_REDIS_TOOLKIT = {"REDIS_URL": f"redis://127.0.0.1:{servers.free_port()}/0"}
    try:
        connection.get_client()  # built (a real client connects lazily)
    except RedisUnavailable:
        pass
    try:
        with pytest.raises(RedisUnavailable), connection.guarded() as client:
            client.get("x")
        with pytest.raises(RedisUnavailable), connection.guarded() as client:
            client.get("x")  # skipped by the open breaker: no Redis call, no span
    finally:
        servers.FAKE_SERVER.connected = True
    (span,) = spans.get_finished_spans()
    assert not span.status.is_ok
    assert span.events[0].name == "exception"
