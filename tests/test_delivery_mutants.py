"""Behaviour of invalidation/delivery.py that mutation testing found unpinned.

docs/testing.md ("Mutation testing") lists what these tests were written for: the
commit hooks, the retry record's bound and rows, the retry loop and
``retry_pending()``. mutmut switches a mutant on in a process that has already
imported the module, so the retry record is a fresh ``_Pending`` here (put in
place of the process-wide one where a module function reaches it), and the
retry loop is driven in the test's own thread, one round at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections, transaction

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.invalidation import delivery
from tests.sample_fixtures import Generations
from tests.testapp.models import CachedWidget

pytestmark = pytest.mark.django_db(transaction=True)

LOGGER = "drf_redis_toolkit.invalidation"


def _toolkit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def failing_receiver() -> Iterator[list[frozenset[str]]]:
    """A ``cache_invalidated`` receiver that raises for names starting with ``robust:``."""
    seen: list[frozenset[str]] = []

    def receiver(sender: Any, namespaces: frozenset[str], keys: frozenset[str], **kw: Any) -> None:
        seen.append(namespaces)
        if any(name.startswith("robust:") for name in namespaces):
            raise RuntimeError("receiver broke")

    delivery.cache_invalidated.connect(receiver, dispatch_uid="test-failing-receiver")
    try:
        yield seen
    finally:
        delivery.cache_invalidated.disconnect(dispatch_uid="test-failing-receiver")


# -- on_commit_robust ---------------------------------------------------------------------


def _assert_one_logged_failure(caplog: pytest.LogCaptureFixture) -> None:
    (record,) = _toolkit_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "drf_redis_toolkit: an invalidation delivery failed after the commit"
    )
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError and str(record.exc_info[1]) == "receiver broke"


def test_a_failing_delivery_leaves_the_commit_and_the_later_hooks_alone(
    backend, caplog, failing_receiver
):
    later: list[str] = []
    gens = Generations(["robust:1"])
    with caplog.at_level(logging.ERROR):
        with transaction.atomic():
            widget = CachedWidget.objects.create(name="kept")
            invalidation.invalidate("robust:1")
            transaction.on_commit(lambda: later.append("ran"))
    assert later == ["ran"]  # the hook after the failing delivery still ran
    assert CachedWidget.objects.filter(pk=widget.pk).exists()
    assert gens.bumped() == {"robust:1"}  # delivered; only the receiver after it failed
    assert frozenset({"robust:1"}) in failing_receiver
    _assert_one_logged_failure(caplog)


def test_a_failing_delivery_outside_a_transaction_is_logged_not_raised(
    backend, caplog, failing_receiver
):
    gens = Generations(["robust:2"])
    with caplog.at_level(logging.ERROR):
        invalidation.invalidate("robust:2")  # autocommit: delivered at once
    assert gens.bumped() == {"robust:2"}
    _assert_one_logged_failure(caplog)


# -- the batch stack of a thread --------------------------------------------------------------


def test_a_batch_in_a_new_thread_delivers_once_at_its_end(backend, failing_receiver):
    gens = Generations(["thread:1", "thread:2"])
    errors: list[BaseException] = []
    inside: list[set[str]] = []

    def work() -> None:
        try:
            with invalidation.batch():  # the first use of the batch stack in this thread
                invalidation.invalidate("thread:1")
                invalidation.invalidate("thread:2")
                inside.append(gens.bumped())
        except BaseException as exc:  # reported to the test's thread
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own database connection

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []
    assert inside == [set()]  # nothing was delivered before the block ended
    assert gens.bumped() == {"thread:1", "thread:2"}
    assert failing_receiver == [frozenset({"thread:1", "thread:2"})]  # in one delivery


def test_an_invalidation_in_a_new_thread_is_delivered(backend):
    gens = Generations(["thread:3"])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            invalidation.invalidate("thread:3")  # no batch: the stack is read, never made
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == [] and gens.bumped() == {"thread:3"}
