"""The outbox's rows, one function at a time: what mutation testing found unpinned
(docs/testing.md, "Mutation testing").

``keep`` and ``forget`` are plain functions over the test database (SQLite here, the
same tests on PostgreSQL): each test looks at the rows they leave, the
``invalidation_backlog`` signal and what is logged for operators. Nothing is mocked:
a missing table is a table really dropped inside the test's transaction, a
caller not allowed to use the database is code running on an event loop's thread
(Django refuses it with ``SynchronousOnlyOperation``), and a second database is a
second SQLite file (``second_database``, tests/sample_fixtures.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from catalog.models import Category
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from drf_redis_toolkit import signals
from drf_redis_toolkit.invalidation import outbox
from drf_redis_toolkit.invalidation.rules import Names
from drf_redis_toolkit.models import PendingInvalidation

pytestmark = pytest.mark.django_db

LOGGER = "drf_redis_toolkit.invalidation"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _fresh_tables(monkeypatch):
    """Each test starts not knowing which databases lack the table (a process-wide record)."""
    monkeypatch.setattr(outbox, "_tables", {})


@pytest.fixture
def backlog_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        events.append({k: v for k, v in kwargs.items() if k != "signal"})

    signals.invalidation_backlog.connect(receiver, dispatch_uid="test-outbox-mutants")
    try:
        yield events
    finally:
        signals.invalidation_backlog.disconnect(dispatch_uid="test-outbox-mutants")


def _on_an_event_loop(call: Callable[[], T]) -> T:
    """Run ``call`` on this thread while an event loop runs on it (as an async view would)."""

    async def main() -> T:
        return call()

    return asyncio.run(main())


def _stored() -> dict[int, Any]:
    return {
        pk: json.loads(text) for pk, text in PendingInvalidation.objects.values_list("pk", "names")
    }


# -- the row's format ------------------------------------------------------------------


def test_a_row_stores_namespaces_and_keys_each_under_its_own_field_sorted():
    # A stored format: rows written by one version are read by the next (a rolling deploy).
    row = outbox.keep(Names(frozenset({"b:1", "a:1"}), frozenset({"key:2", "key:1"})), "default")
    assert row is not None and row[0] == "default"
    assert _stored() == {row[1]: {"namespaces": ["a:1", "b:1"], "keys": ["key:1", "key:2"]}}


@pytest.mark.parametrize(
    "names",
    [
        Names(frozenset({"product:1", "products"}), frozenset({"page:home"})),
        Names(frozenset({"only-a-namespace"})),
        Names(keys=frozenset({"only-a-key"})),
        Names(frozenset({"same"}), frozenset({"same"})),  # one text, each kind kept apart
    ],
    ids=["both", "namespaces", "keys", "same-text-both-kinds"],
)
def test_every_kind_of_name_comes_back_as_written(names):
    row = outbox.keep(names, "default")
    assert outbox.read(["default"]) == (names, {row}, True)


def test_a_row_naming_one_kind_only_is_read_not_dropped(caplog):
    # The table is public (docs/invalidation.md): a row may leave out the kind it has none of.
    only_keys = PendingInvalidation.objects.create(names='{"keys": ["page:home"]}')
    only_namespaces = PendingInvalidation.objects.create(names='{"namespaces": ["products"]}')
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        names, rows, complete = outbox.read(["default"])
    assert names == Names(frozenset({"products"}), frozenset({"page:home"}))
    assert rows == {("default", only_keys.pk), ("default", only_namespaces.pk)} and complete
    assert caplog.records == []


def test_a_corrupt_row_is_logged_and_dropped_and_the_others_still_read(caplog):
    good = outbox.keep(Names(frozenset({"products"})), "default")
    bad = PendingInvalidation.objects.create(names="not json")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        names, rows, _ = outbox.read(["default"])
    assert names == Names(frozenset({"products"}))
    assert rows == {good, ("default", bad.pk)}  # both are deleted once delivered
    assert [r.getMessage() for r in caplog.records] == [
        f"drf_redis_toolkit: outbox row {bad.pk} is not valid; dropped"
    ]


# -- keep ------------------------------------------------------------------------------


def test_keep_writes_no_row_for_no_names(backlog_events):
    assert outbox.keep(Names(), "default") is None
    assert _stored() == {} and backlog_events == []


def test_keep_reports_one_row_written(backlog_events):
    outbox.keep(Names(frozenset({"a"})), "default")
    outbox.keep(Names(keys=frozenset({"k"})), "default")
    assert [e["outbox_written"] for e in backlog_events] == [1, 1]
    assert PendingInvalidation.objects.count() == 2


def _drop_the_table() -> None:
    # Inside the test's transaction (transactional DDL on SQLite and PostgreSQL): rolled back.
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {PendingInvalidation._meta.db_table}")


def test_a_missing_table_is_warned_once_naming_the_database_and_the_error(caplog):
    _drop_the_table()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert outbox.keep(Names(frozenset({"a"})), "default") is None
        Category.objects.create(name="still", slug="still")  # the write it went with goes on
        assert outbox.keep(Names(frozenset({"b"})), "default") is None
    (record,) = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert message.startswith(
        "drf_redis_toolkit: no outbox table in database 'default' (run migrate?): "
        "invalidations made there during a Redis outage do not survive their process ("
    )
    assert PendingInvalidation._meta.db_table in message  # the database's own error
    assert outbox._tables == {"default": False}
    assert Category.objects.filter(slug="still").exists()


def test_keep_queries_no_more_once_the_table_is_known_missing():
    _drop_the_table()
    assert outbox.keep(Names(frozenset({"a"})), "default") is None  # learns it: one try
    with CaptureQueriesContext(connection) as queries:
        assert outbox.keep(Names(frozenset({"b"})), "default") is None
    assert queries.captured_queries == []


def test_keep_on_an_event_loop_logs_an_error_and_returns_none(caplog, backlog_events):
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        row = _on_an_event_loop(lambda: outbox.keep(Names(frozenset({"a"})), "default"))
    assert row is None and backlog_events == [] and _stored() == {}
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "drf_redis_toolkit: could not write the invalidation outbox"
    assert record.exc_info is not None and record.exc_info[0] is SynchronousOnlyOperation
    assert outbox._tables == {}  # not taken for a missing table


# -- forget ----------------------------------------------------------------------------


def test_forget_deletes_exactly_the_rows_delivered_and_reports_how_many(backlog_events):
    first = outbox.keep(Names(frozenset({"a"})), "default")
    second = outbox.keep(Names(frozenset({"b"})), "default")
    third = outbox.keep(Names(frozenset({"c"})), "default")
    assert first and second and third
    backlog_events.clear()
    outbox.forget([first, third, ("default", third[1] + 1000)])  # one no longer there
    assert list(_stored()) == [second[1]]
    assert [e["outbox_delivered"] for e in backlog_events] == [2]


def test_forget_that_cannot_delete_warns_with_the_error_and_keeps_the_rows(caplog):
    row = outbox.keep(Names(frozenset({"a"})), "default")
    assert row is not None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _on_an_event_loop(lambda: outbox.forget([row]))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "drf_redis_toolkit: outbox rows not deleted"
    assert record.exc_info is not None and record.exc_info[0] is SynchronousOnlyOperation
    assert list(_stored()) == [row[1]]  # delivered again by the next poll


# -- a second database -----------------------------------------------------------------


def _create_outbox_table(alias: str) -> None:
    with connections[alias].schema_editor() as editor:
        editor.create_model(PendingInvalidation)


def _pks(alias: str) -> list[int]:
    return sorted(PendingInvalidation.objects.using(alias).values_list("pk", flat=True))


def test_keep_and_forget_use_the_rows_own_database(second_database):
    _create_outbox_table(second_database)
    there = outbox.keep(Names(frozenset({"b"})), second_database)
    assert there is not None and there[0] == "other"
    assert _pks("other") == [there[1]] and _pks("default") == []  # written there only
    assert PendingInvalidation.objects.using("other").get().names == outbox._encode(
        Names(frozenset({"b"}))
    )
    # A row here with the same pk: only the alias tells the two apart.
    here = PendingInvalidation.objects.create(pk=there[1], names=outbox._encode(Names()))
    outbox.forget([there])
    assert _pks("other") == [] and _pks("default") == [here.pk]
    outbox.forget([("default", here.pk)])
    assert _pks("default") == []


def test_a_database_without_the_table_keeps_its_transaction_usable(second_database, caplog):
    # No outbox table in "other": the row is not written, and the write it goes with,
    # in the same transaction of that database, goes on.
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with transaction.atomic(using=second_database):
            assert outbox.keep(Names(frozenset({"a"})), second_database) is None
            Category.objects.using(second_database).create(name="kept", slug="kept")
    assert Category.objects.using(second_database).filter(slug="kept").exists()
    assert outbox._tables == {"other": False}
    assert "no outbox table in database 'other'" in caplog.records[0].getMessage()
    assert _pks("default") == []
