"""The hook point: exact signals for a known sequence of requests, on every backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal
from django.test import override_settings
from rest_framework.test import APIClient, APIRequestFactory

from drf_redis_toolkit import connection, signals
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.invalidation import delivery
from drf_redis_toolkit.throttling import SlidingWindowThrottle
from tests import servers

pytestmark = pytest.mark.django_db


class Recorder:
    """Connect to ``signal`` for the test; keep every call's arguments."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        self.calls.append({"sender": sender, **kwargs})


@pytest.fixture
def record() -> Iterator[Any]:
    connected: list[Recorder] = []

    def connect(signal: Signal) -> Recorder:
        recorder = Recorder(signal)
        signal.connect(recorder, weak=False)
        connected.append(recorder)
        return recorder

    yield connect
    for recorder in connected:
        recorder.signal.disconnect(recorder)


class Fixed(SlidingWindowThrottle):
    rate = "3/min"
    scope = "signals"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return "client-42"


def test_throttle_decisions_are_sent_with_the_identity_digest(backend, record):
    seen = record(signals.throttle_decided)
    request = APIRequestFactory().get("/")
    view = object()  # what the receivers get back as ``view``
    results = [Fixed().allow_request(request, view) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert [call["allowed"] for call in seen.calls] == results
    assert {call["sender"] for call in seen.calls} == {Fixed}
    assert all(call["request"] is request and call["view"] is view for call in seen.calls)
    assert {call["scope"] for call in seen.calls} == {"signals"}
    assert {call["cost"] for call in seen.calls} == {1}
    assert {call["identity"] for call in seen.calls} == {keyspace.digest("client-42")}
    assert all("client-42" not in repr(call["identity"]) for call in seen.calls)


def test_cache_outcomes_for_a_known_sequence(backend, record, settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    outcomes = record(signals.cache_outcome)
    not_stored = record(signals.cache_not_stored)
    client = APIClient()
    first = client.get("/echo/?x=1")  # miss (stored)
    client.get("/echo/?x=1")  # hit
    client.get("/echo/?x=1", HTTP_IF_NONE_MATCH=first["ETag"])  # 304 from the entry
    client.get("/echo/?x=2")  # miss
    client.get("/csrf-form/")  # miss, not stored: the body holds a CSRF token
    got = Counter((call["namespace"], call["outcome"]) for call in outcomes.calls)
    assert got == {
        ("echo", "miss"): 2,
        ("echo", "hit"): 1,
        ("echo", "not_modified"): 1,
        (outcomes.calls[-1]["namespace"], "miss"): 1,
    }
    assert len(outcomes.calls) == 5
    assert [(c["reason"], c["status_code"]) for c in not_stored.calls] == [("uncacheable", 200)]


def test_a_pending_invalidation_is_a_bypass_and_nothing_is_stored(backend, record, settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    outcomes = record(signals.cache_outcome)
    not_stored = record(signals.cache_not_stored)
    delivery._pending.in_flight = [delivery._Backlog(delivery.Names(frozenset({"echo"})))]
    try:
        APIClient().get("/echo/?x=1")
    finally:
        delivery._pending.clear()
    assert [(c["outcome"], c["reason"]) for c in outcomes.calls] == [
        ("bypass", "pending_invalidation")
    ]
    assert [c["reason"] for c in not_stored.calls] == ["bypass"]


def test_an_early_refresh_is_its_own_outcome(backend, record, settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    outcomes = record(signals.cache_outcome)
    client = APIClient()
    client.get("/refreshing/")
    (key,) = backend.raw.scan_iter(match=b"drt:c:*", count=1000)
    head, rest = backend.raw.get(key).split(b"\n", 1)
    gen, _, etag = head.split(b" ", 2)
    # As if computing it took far longer than the time it has left: refresh now.
    backend.raw.set(key, gen + b" 999999999999 " + etag + b"\n" + rest, px=50_000)
    client.get("/refreshing/")
    assert [c["outcome"] for c in outcomes.calls] == ["miss", "early_refresh"]


def _outage(backend: Any, settings: Any) -> None:
    if backend.name == "fake":
        servers.FAKE_SERVER.connected = False
    else:
        dead = f"redis://127.0.0.1:{servers.free_port()}/0"
        settings.DRF_REDIS_TOOLKIT = {"REDIS_URL": dead, "CIRCUIT_BREAKER_COOLDOWN": 60}


def test_breaker_transitions_and_errors(backend, record, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CIRCUIT_BREAKER_COOLDOWN": 60}
    changes = record(signals.breaker_state_changed)
    errors = record(signals.redis_error)
    _outage(backend, settings)
    try:
        with pytest.raises(RedisUnavailable), connection.guarded() as client:
            client.get("x")
        with pytest.raises(RedisUnavailable), connection.guarded() as client:
            client.get("x")  # skipped by the open breaker: no error, no transition
        assert connection.probe() is False
    finally:
        servers.FAKE_SERVER.connected = True
    assert [(c["old"], c["new"]) for c in changes.calls] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]
    assert len(errors.calls) == 2 and all(c["unreachable"] for c in errors.calls)
    if backend.name == "fake":
        assert connection.probe() is True
        assert [(c["old"], c["new"]) for c in changes.calls[3:]] == [
            ("open", "half_open"),
            ("half_open", "closed"),
        ]


def test_an_error_reply_is_sent_but_opens_nothing(backend, record):
    changes = record(signals.breaker_state_changed)
    errors = record(signals.redis_error)
    backend.raw.set(keyspace.client_key("a-string"), "x")
    with pytest.raises(Exception, match="WRONGTYPE"), connection.guarded() as client:
        client.lpush(keyspace.client_key("a-string"), "y")
    assert [c["unreachable"] for c in errors.calls] == [False]
    assert changes.calls == []


def test_the_backlog_and_outbox_are_reported(backend, record, settings, monkeypatch):
    # No background retry thread: this test's own retry_pending() delivers, once.
    monkeypatch.setattr(delivery._pending, "_start", lambda: None)
    events = record(signals.invalidation_backlog)
    with override_settings(DRF_REDIS_TOOLKIT={**backend.settings, "CIRCUIT_BREAKER_COOLDOWN": 60}):
        _outage(backend, settings)
        try:
            assert delivery.invalidate_now(namespaces=["a", "b"], keys=["k"]) is False
        finally:
            servers.FAKE_SERVER.connected = True
        settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CIRCUIT_BREAKER_COOLDOWN": 60}
        assert [c["outbox_written"] for c in events.calls] == [1, 0]
        assert events.calls[1]["pending"] == 3
        assert connection.probe() is True and delivery.retry_pending() is True
    assert sum(c["delivered"] for c in events.calls) == 3
    assert sum(c["outbox_delivered"] for c in events.calls) == 1
    assert [c["pending"] for c in events.calls if c["delivered"]] == [0]


def test_nothing_is_built_without_a_receiver(backend, monkeypatch):
    """No receiver: the helpers return before touching their arguments."""
    for signal in (signals.cache_outcome, signals.throttle_decided, signals.cache_not_stored):
        monkeypatch.setattr(signal, "receivers", [])  # whatever other tests connected
    signals.cache_served("ns", None, None, None)  # would fail on None.status_code
    signals.throttle(None, None, None, None)  # would fail on None.key
    signals.not_stored("ns", None, None, None, None, None)
