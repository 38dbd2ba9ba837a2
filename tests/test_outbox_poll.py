"""``outbox.poll()``: picks up rows another process left, never inside a transaction.

It runs before requests: a failed outbox query inside someone's transaction would
break that transaction, so a database in an atomic block is not read (its rows wait
for the next look). It says whether it ran. Real commits (``transaction=True``).
"""

from __future__ import annotations

import threading

import pytest
from django.db import transaction

from drf_redis_toolkit.invalidation import delivery, outbox
from drf_redis_toolkit.invalidation.rules import Names
from drf_redis_toolkit.models import PendingInvalidation
from tests.sample_fixtures import Generations

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> delivery._Pending:
    """A fresh retry record, no thread: what poll() adopts stays visible in it."""
    fresh = delivery._Pending()
    monkeypatch.setattr(delivery, "_pending", fresh)
    monkeypatch.setattr(fresh, "_start", lambda: None)
    return fresh


def left_by_another_process(name: str) -> None:
    PendingInvalidation.objects.create(names=outbox._encode(Names(frozenset({name}))))


def test_poll_reads_no_database_inside_a_transaction(record, backend):
    gens = Generations(["products:all"])
    left_by_another_process("products:all")
    with transaction.atomic():
        assert outbox.poll(force=True) is True
        assert gens.bumped() == set()  # not read: the database is in an atomic block
        assert PendingInvalidation.objects.count() == 1
    assert outbox.poll(force=True) is True
    assert gens.bumped() == {"products:all"}
    assert not PendingInvalidation.objects.exists()  # delivered, then forgotten


def test_poll_says_whether_it_ran(record, monkeypatch):
    assert outbox.poll(force=True) is True
    holder = threading.Thread(target=outbox._poll_lock.acquire)
    holder.start()
    holder.join(timeout=10)
    monkeypatch.setattr(outbox, "_last_poll", [0.0])  # due: only the lock stops it
    try:
        assert outbox.poll() is False  # another thread is polling: not this one
    finally:
        outbox._poll_lock.release()

    def broken(aliases=None):
        raise RuntimeError("the outbox query failed")

    monkeypatch.setattr(outbox, "read", broken)
    assert outbox.poll(force=True) is False  # nothing read, and no error raised
