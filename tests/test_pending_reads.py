"""``is_pending()``: the cache read path's question, answered from the retry record alone.

A name is pending while its invalidation is kept for a retry *or* being delivered
right now, and every name is pending once the record overflowed (the names were
dropped for "invalidate everything on recovery"). Each state is set on a fresh
record standing in for the process's own (no Redis, no thread).
"""

from __future__ import annotations

import pytest

from drf_redis_toolkit.invalidation import delivery
from drf_redis_toolkit.invalidation.rules import Names


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> delivery._Pending:
    fresh = delivery._Pending()
    monkeypatch.setattr(delivery, "_pending", fresh)
    return fresh


def names(namespaces=(), keys=()) -> Names:
    return Names(frozenset(namespaces), frozenset(keys))


def test_nothing_kept_nothing_pending(record):
    assert not delivery.is_pending("products:all")


def test_a_name_being_delivered_is_pending_though_the_backlog_is_empty(record):
    record.in_flight = [delivery._Backlog(names(["products:all"], ["product:1"]))]
    assert delivery.is_pending("products:all") and delivery.is_pending("product:1")
    assert not delivery.is_pending("categories:all")


def test_after_an_overflow_every_name_is_pending(record):
    record.backlog = delivery._Backlog(names(), overflowed=True)
    assert delivery.is_pending("products:all") and delivery.is_pending("anything:else")


def test_an_overflow_in_flight_makes_every_name_pending(record):
    record.in_flight = [delivery._Backlog(names(), overflowed=True)]
    assert delivery.is_pending("anything")


def test_a_kept_name_is_pending_and_only_it(record):
    record.backlog = delivery._Backlog(names(keys=["cart:user:7"]))
    assert delivery.is_pending("cart:user:7") and not delivery.is_pending("cart:user:8")
