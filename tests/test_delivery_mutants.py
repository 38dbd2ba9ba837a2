"""Behaviour of invalidation/delivery.py that mutation testing found unpinned.

Written for the survivors docs/testing.md ("Mutation testing") listed as open: the
commit hooks, the retry record's bound and rows, the retry loop and
``retry_pending()``. mutmut switches a mutant on in a process that has already
imported the module, so the retry record is a fresh ``_Pending`` here (put in
place of the process-wide one where a module function reaches it), and the
retry loop is driven in the test's own thread, one round at a time.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections, transaction

from drf_redis_toolkit import invalidation
from drf_redis_toolkit.invalidation import delivery
from tests.sample_fixtures import Generations
from tests.testapp.models import CachedWidget
from tests.workers import Workers

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
    inside: list[set[str]] = []

    def work(index: int) -> None:
        try:
            with invalidation.batch():  # the first use of the batch stack in this thread
                invalidation.invalidate("thread:1")
                invalidation.invalidate("thread:2")
                inside.append(gens.bumped())
        finally:
            connections.close_all()  # this thread's own database connection

    Workers(work, 1).start().join(timeout=30)
    assert inside == [set()]  # nothing was delivered before the block ended
    assert gens.bumped() == {"thread:1", "thread:2"}
    assert failing_receiver == [frozenset({"thread:1", "thread:2"})]  # in one delivery


def test_an_invalidation_in_a_new_thread_is_delivered(backend):
    gens = Generations(["thread:3"])

    def work(index: int) -> None:
        try:
            invalidation.invalidate("thread:3")  # no batch: the stack is read, never made
        finally:
            connections.close_all()

    Workers(work, 1).start().join(timeout=30)
    assert gens.bumped() == {"thread:3"}


# -- outages: the retry record, its bound and its outbox rows ------------------------------


@pytest.fixture
def retry_record(monkeypatch: pytest.MonkeyPatch) -> delivery._Pending:
    """A fresh retry record in place of the process-wide one, with no background thread.

    The tests that drive the retry loop run it in their own thread; the one that
    checks the thread itself starts it explicitly (``_start`` is restored there).
    """
    fresh = delivery._Pending()
    monkeypatch.setattr(delivery, "_pending", fresh)
    monkeypatch.setattr(fresh, "_start", lambda: None)
    return fresh


class Outage:
    """Redis down and up again: fakeredis disconnected, or a dead URL for a real backend.

    The circuit breaker has no cool-down here: the first call after a failure
    is the probe, which delivers the backlog before anything else goes through.
    """

    def __init__(self, backend: Any, settings: Any) -> None:
        from tests import servers

        self.backend, self.settings, self.servers = backend, settings, servers
        self.dead_url = f"redis://127.0.0.1:{servers.free_port()}/0"
        self.up()

    def down(self) -> None:
        if self.backend.name == "fake":
            self.servers.FAKE_SERVER.connected = False
        else:
            self.settings.DRF_REDIS_TOOLKIT = {
                **self.backend.settings,
                "REDIS_URL": self.dead_url,
                "CIRCUIT_BREAKER_COOLDOWN": 0,
            }

    def up(self) -> None:
        self.servers.FAKE_SERVER.connected = True
        self.settings.DRF_REDIS_TOOLKIT = {**self.backend.settings, "CIRCUIT_BREAKER_COOLDOWN": 0}


@pytest.fixture
def outage(backend: Any, settings: Any) -> Iterator[Outage]:
    control = Outage(backend, settings)
    try:
        yield control
    finally:
        control.servers.FAKE_SERVER.connected = True


@pytest.fixture
def backlog_events() -> Iterator[list[dict[str, Any]]]:
    """What ``invalidation_backlog`` sent, one dict of keyword arguments per event."""
    from drf_redis_toolkit import signals

    events: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal", None)
        events.append(kwargs)

    signals.invalidation_backlog.connect(receiver, dispatch_uid="test-backlog-events")
    try:
        yield events
    finally:
        signals.invalidation_backlog.disconnect(dispatch_uid="test-backlog-events")


def _outbox_rows() -> int:
    from drf_redis_toolkit.models import PendingInvalidation

    return PendingInvalidation.objects.count()


def _generation_exists(backend: Any, name: str) -> bool:
    from drf_redis_toolkit import keys as keyspace

    return bool(backend.raw.exists(keyspace.generation_key(name)))


NOTHING_PENDING = {"namespaces": [], "keys": [], "overflowed": False}
FAILED = re.compile(
    r"drf_redis_toolkit: could not invalidate 2 namespace\(s\) and 1 key\(s\) "
    r"\(Redis unavailable: .+\); kept for a retry when Redis answers \(3 name\(s\) pending\)"
)


def test_a_failed_delivery_is_logged_kept_with_its_row_and_delivered_on_recovery(
    backend, outage, retry_record, caplog, backlog_events
):
    from drf_redis_toolkit.client import redis_client

    redis_client.set("out:key", "cached")
    gens = Generations(["out:a", "out:b", "out:key"])
    outage.down()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert invalidation.invalidate_now(["out:a", "out:b"], "out:key") is False
        assert invalidation.retry_pending() is False  # still down: kept, not lost
    (record,) = _toolkit_records(caplog)
    assert record.levelno == logging.ERROR
    assert FAILED.fullmatch(record.getMessage()), record.getMessage()
    assert invalidation.pending_invalidations() == {
        "namespaces": ["out:a", "out:b"],
        "keys": ["out:key"],
        "overflowed": False,
    }
    assert invalidation.is_pending("out:a") and invalidation.is_pending("out:key")
    assert _outbox_rows() == 1  # written after the commit, since the delivery failed
    # The row was written, then the names kept: three pending, twice (the retry failed too).
    assert backlog_events == [
        {"pending": None, "delivered": 0, "outbox_written": 1, "outbox_delivered": 0},
        {"pending": 3, "delivered": 0, "outbox_written": 0, "outbox_delivered": 0},
        {"pending": 3, "delivered": 0, "outbox_written": 0, "outbox_delivered": 0},
    ]
    backlog_events.clear()
    caplog.clear()

    outage.up()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert invalidation.retry_pending() is True
    assert gens.bumped() == {"out:a", "out:b", "out:key"}
    assert redis_client.get("out:key") is None
    assert invalidation.pending_invalidations() == NOTHING_PENDING
    assert not invalidation.is_pending("out:a") and not invalidation.is_pending("out:key")
    assert _outbox_rows() == 0  # delivered: its row is deleted
    assert backlog_events == [
        {"pending": 0, "delivered": 3, "outbox_written": 0, "outbox_delivered": 0},
        {"pending": None, "delivered": 0, "outbox_written": 0, "outbox_delivered": 1},
    ]
    assert [(r.levelno, r.getMessage()) for r in _toolkit_records(caplog)] == [
        (
            logging.WARNING,
            "drf_redis_toolkit: delivered 3 invalidation(s) kept during a Redis outage",
        )
    ]


def test_with_nothing_pending_a_retry_or_an_empty_invalidation_does_nothing(
    backend, retry_record, caplog, backlog_events
):
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert invalidation.retry_pending() is True
        assert invalidation.retry_pending() is True
        assert invalidation.invalidate_now() is True  # no name: nothing to refuse
    assert _toolkit_records(caplog) == [] and backlog_events == []
    assert invalidation.pending_invalidations() == NOTHING_PENDING
    # Nothing is left behind either: every probe after an outage runs this retry.
    assert retry_record.in_flight == []


def test_the_record_overflows_past_max_pending_names_with_one_critical_line(retry_record, caplog):
    Names, Backlog = invalidation.Names, delivery._Backlog
    full = Names(frozenset(f"full:{i}" for i in range(delivery.MAX_PENDING)))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        retry_record.put(Backlog(full))
        assert invalidation.pending_invalidations()["overflowed"] is False  # exactly full
        assert _toolkit_records(caplog) == []
        retry_record.put(Backlog(Names(keys=frozenset({"one:more"}))))
        assert invalidation.pending_invalidations() == {
            "namespaces": [],
            "keys": [],
            "overflowed": True,
        }
        assert invalidation.is_pending("any:name")  # while overflowed, every name is
        said = [(r.levelno, r.getMessage()) for r in _toolkit_records(caplog)]
        assert said == [
            (
                logging.CRITICAL,
                "drf_redis_toolkit: more than 10000 invalidations pending; every cached "
                "generation will be dropped when Redis answers",
            )
        ]
        more = Names(frozenset(f"more:{i}" for i in range(delivery.MAX_PENDING + 1)))
        retry_record.put(Backlog(more))  # overflows again: already said
    assert [(r.levelno, r.getMessage()) for r in _toolkit_records(caplog)] == said


@pytest.mark.parametrize("with_row", [False, True], ids=["no-row", "with-row"])
def test_an_overflowed_record_drops_every_generation_on_recovery(
    backend, outage, retry_record, with_row
):
    from drf_redis_toolkit.generations import bump_generations
    from drf_redis_toolkit.invalidation import outbox

    bump_generations("old:1")
    assert _generation_exists(backend, "old:1")
    rows = [outbox.keep(invalidation.Names(frozenset({"row:1"})), "default")] if with_row else []
    overflowing = frozenset(f"n:{i}" for i in range(delivery.MAX_PENDING + 1))
    retry_record.put(delivery._Backlog(invalidation.Names(overflowing), False, frozenset(rows)))
    assert invalidation.retry_pending() is True
    assert not _generation_exists(backend, "old:1")  # every generation dropped
    assert invalidation.pending_invalidations() == NOTHING_PENDING
    assert _outbox_rows() == 0  # the overflow kept the row, and its delivery deleted it


def test_a_later_delivery_carries_the_overflow_even_when_it_fails_first(
    backend, outage, retry_record
):
    from drf_redis_toolkit.generations import bump_generations

    bump_generations("old:2")
    retry_record.put(delivery._Backlog(overflowed=True))
    outage.down()
    assert invalidation.invalidate_now("new:1") is False  # took the overflow, gave it back
    assert invalidation.pending_invalidations()["overflowed"] is True
    outage.up()
    assert invalidation.invalidate_now("new:2") is True  # carries the overflow first
    assert not _generation_exists(backend, "old:2")
    assert invalidation.pending_invalidations() == NOTHING_PENDING


def test_an_overflow_being_delivered_is_still_pending(retry_record):
    retry_record.put(delivery._Backlog(overflowed=True))
    taken = retry_record.take()  # a delivery in flight, in some thread
    assert invalidation.pending_invalidations()["overflowed"] is True
    assert invalidation.is_pending("any:name")
    retry_record.settle(taken)
    assert invalidation.pending_invalidations() == NOTHING_PENDING


def test_a_delivery_gaining_an_outbox_row_leaves_another_in_flight_pending(retry_record):
    first = retry_record.take(invalidation.Names(frozenset({"first"})))
    second = retry_record.take(invalidation.Names(frozenset({"second"})))
    grown = retry_record.with_rows(second, [("default", 1)])
    assert invalidation.pending_invalidations()["namespaces"] == ["first", "second"]
    retry_record.settle(grown)
    assert invalidation.pending_invalidations()["namespaces"] == ["first"]
    retry_record.settle(first)
    assert invalidation.pending_invalidations() == NOTHING_PENDING


@pytest.mark.parametrize("batched", [False, True], ids=["plain", "batched"])
def test_a_row_kept_while_redis_was_known_down_is_deleted_by_the_delivery_at_the_commit(
    backend, outage, retry_record, batched
):
    from contextlib import nullcontext

    from drf_redis_toolkit import connection

    sent: list[frozenset[str]] = []

    def receiver(sender: Any, namespaces: frozenset[str], **kwargs: Any) -> None:
        sent.append(namespaces)

    gens = Generations(["known:1"])
    connection.get_breaker().record_failure()  # this process saw Redis fail
    delivery.cache_invalidated.connect(receiver, dispatch_uid="test-known-down")
    try:
        with transaction.atomic():
            with invalidation.batch() if batched else nullcontext():
                invalidation.invalidate("known:1")
            assert _outbox_rows() == 1  # kept in the write's transaction
    finally:
        delivery.cache_invalidated.disconnect(dispatch_uid="test-known-down")
    # Redis answered at the commit: delivered, and the row written for it deleted.
    assert sent == [frozenset({"known:1"})]
    assert gens.bumped() == {"known:1"}
    assert _outbox_rows() == 0
    assert invalidation.pending_invalidations() == NOTHING_PENDING


def test_adopted_rows_deliver_their_names_and_nothing_else(backend, retry_record, caplog):
    from drf_redis_toolkit.generations import bump_generations
    from drf_redis_toolkit.invalidation import outbox

    bump_generations("other:1")
    names = invalidation.Names(frozenset({"adopted:1"}))
    row = outbox.keep(names, "default")
    gens = Generations(["adopted:1", "other:1"])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert delivery.adopt(names, [row]) is True
    assert gens.bumped() == {"adopted:1"}  # not every generation: no overflow
    assert _outbox_rows() == 0
    assert [r.getMessage() for r in _toolkit_records(caplog)] == [
        "drf_redis_toolkit: delivered 1 invalidation(s) kept during a Redis outage"
    ]


def test_a_delivery_sends_the_backlog_first_and_reports_what_it_carried(
    backend, outage, retry_record, backlog_events
):
    gens = Generations(["kept:1", "kept:2", "fresh:1"])
    outage.down()
    assert invalidation.invalidate_now(["kept:1", "kept:2"]) is False
    outage.up()
    backlog_events.clear()
    assert invalidation.invalidate_now("fresh:1") is True
    assert gens.bumped() == {"kept:1", "kept:2", "fresh:1"}
    assert invalidation.pending_invalidations() == NOTHING_PENDING
    # The two kept names went with this delivery (the probe before it had nothing left
    # to take), and their outbox row was deleted.
    assert backlog_events == [
        {"pending": 0, "delivered": 2, "outbox_written": 0, "outbox_delivered": 0},
        {"pending": None, "delivered": 0, "outbox_written": 0, "outbox_delivered": 1},
    ]


# -- the retry loop and its thread ---------------------------------------------------------

RETRY_THREAD = "drf-redis-toolkit-invalidation-retry"


class ScriptedSleep:
    """Stands in for delivery.py's ``time``: records the delays the retry loop asks for.

    Instead of sleeping, each call runs ``script(n)`` (``n`` counts the calls), where
    the test brings Redis down or up, or holds a retry thread until it says so. The
    loop's schedule is pinned as the delays it asks for, never as measured time.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.script: Any = lambda count: None
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def sleep(self, delay: float) -> None:
        with self._lock:
            self.delays.append(delay)
            count = len(self.delays)
        self.script(count)

    def hold(self, count: int) -> None:
        """A script: wait (bounded) until the test opens the gate."""
        assert self.gate.wait(timeout=30), "the test never let the retry thread go on"


@pytest.fixture
def sleeps(
    monkeypatch: pytest.MonkeyPatch, retry_record: delivery._Pending
) -> Iterator[ScriptedSleep]:
    scripted = ScriptedSleep()
    monkeypatch.setattr(delivery, "time", scripted)
    before = set(threading.enumerate())
    try:
        yield scripted
    finally:
        # Any retry thread this test started finds an empty record at its next turn.
        retry_record.clear()
        scripted.script = lambda count: None
        scripted.gate.set()
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=30)


def test_the_retry_loop_backs_off_while_redis_is_down_and_delivers_when_it_answers(
    backend, outage, retry_record, sleeps
):
    gens = Generations(["loop:1", "loop:2"])
    outage.down()
    assert invalidation.invalidate_now(["loop:1", "loop:2"]) is False
    sleeps.script = lambda count: outage.up() if count == 5 else None
    retry_record._retry_loop()
    # 0.1 s, doubled after each failure up to 0.5 s; back to 0.1 s after the delivery,
    # whose next turn finds nothing left and ends the loop.
    assert sleeps.delays == [0.1, 0.2, 0.4, 0.5, 0.5, 0.1]
    assert gens.bumped() == {"loop:1", "loop:2"}
    assert invalidation.pending_invalidations() == NOTHING_PENDING
    assert _outbox_rows() == 0
    assert retry_record.thread is None


def test_a_retry_that_raises_is_logged_and_the_loop_goes_on(backend, retry_record, sleeps, caplog):
    from drf_redis_toolkit import signals

    raised: list[int] = []

    def receiver(sender: Any, delivered: int, **kwargs: Any) -> None:
        if delivered and not raised:
            raised.append(delivered)
            raise RuntimeError("backlog receiver broke")

    gens = Generations(["loop:3"])
    # Names with no outbox row (its table may be missing): still pending, still retried.
    retry_record.put(delivery._Backlog(invalidation.Names(frozenset({"loop:3"}))))
    signals.invalidation_backlog.connect(receiver, dispatch_uid="test-raising-backlog")
    try:
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            retry_record._retry_loop()
    finally:
        signals.invalidation_backlog.disconnect(dispatch_uid="test-raising-backlog")
    assert raised == [1] and gens.bumped() == {"loop:3"}
    (record,) = _toolkit_records(caplog)
    assert (record.levelno, record.getMessage()) == (
        logging.ERROR,
        "drf_redis_toolkit: invalidation retry failed",
    )
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    # The failed turn counts as a failure (the delay doubles), then nothing is left.
    assert sleeps.delays == [0.1, 0.2]
    assert invalidation.pending_invalidations() == NOTHING_PENDING


def test_the_retry_gives_up_after_its_attempts_and_the_next_failure_starts_it_again(
    backend, outage, retry_record, sleeps, monkeypatch
):
    monkeypatch.setattr(delivery, "_RETRY_MAX_ATTEMPTS", 3)
    gens = Generations(["loop:4", "loop:5"])
    outage.down()
    assert invalidation.invalidate_now("loop:4") is False
    retry_record._retry_loop()
    assert sleeps.delays == [0.1, 0.2, 0.4]  # three attempts, then it ends
    assert retry_record.thread is None
    assert invalidation.pending_invalidations()["namespaces"] == ["loop:4"]

    monkeypatch.delattr(retry_record, "_start")  # the real thread from here on
    sleeps.script = sleeps.hold
    assert invalidation.invalidate_now("loop:5") is False
    thread = retry_record.thread
    assert thread is not None and thread.is_alive()
    outage.up()
    sleeps.gate.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert gens.bumped() == {"loop:4", "loop:5"}
    assert invalidation.pending_invalidations() == NOTHING_PENDING


def test_the_retry_runs_in_one_named_daemon_thread(
    backend, outage, retry_record, sleeps, monkeypatch, caplog
):
    monkeypatch.delattr(retry_record, "_start")
    sleeps.script = sleeps.hold
    gens = Generations(["thread:a", "thread:b"])
    outage.down()
    assert invalidation.invalidate_now("thread:a") is False
    thread = retry_record.thread
    assert thread is not None and thread.is_alive()
    assert invalidation.invalidate_now("thread:b") is False
    assert retry_record.thread is thread  # one retry thread, however many failures
    # A daemon: an outage never keeps the process from exiting.
    assert thread.daemon is True
    outage.up()
    caplog.clear()  # the two failures' ERROR lines (pinned in the first outage test)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        sleeps.gate.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert gens.bumped() == {"thread:a", "thread:b"}
    # Its log lines name it (operators read %(threadName)s).
    assert [(r.threadName, r.getMessage()) for r in _toolkit_records(caplog)] == [
        (RETRY_THREAD, "drf_redis_toolkit: delivered 2 invalidation(s) kept during a Redis outage")
    ]


# -- the database a write's outbox row goes to ----------------------------------------------


@pytest.fixture
def outbox_table_missing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The ``default`` database without the outbox table (``migrate`` not run), for one test."""
    from django.db import connection as db

    from drf_redis_toolkit.invalidation import outbox
    from drf_redis_toolkit.models import PendingInvalidation

    monkeypatch.setattr(outbox, "_tables", {})  # what this process learnt about tables
    table = PendingInvalidation._meta.db_table
    with db.schema_editor() as editor:
        editor.alter_db_table(PendingInvalidation, table, f"{table}_away")
    try:
        yield
    finally:
        with db.schema_editor() as editor:
            editor.alter_db_table(PendingInvalidation, f"{table}_away", table)


MISSING_TABLE = re.compile(
    r"drf_redis_toolkit: no outbox table in database 'default' \(run migrate\?\): "
    r"invalidations made there during a Redis outage do not survive their process \(.+\)"
)


@pytest.mark.parametrize(
    ("known_down", "batched"),
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["failing-at-commit", "failing-at-commit-batched", "known-down", "known-down-batched"],
)
def test_a_missing_outbox_table_is_warned_once_naming_the_writes_database(
    backend, outage, retry_record, outbox_table_missing, caplog, known_down, batched
):
    from contextlib import nullcontext

    outage.down()
    if known_down:  # this process saw Redis fail: the row is written before the commit
        assert invalidation.invalidate_now("first:1") is False
        caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with transaction.atomic():
            with invalidation.batch() if batched else nullcontext():
                invalidation.invalidate("missing:1")
    warnings = [r for r in _toolkit_records(caplog) if r.levelno == logging.WARNING]
    if known_down:
        # Warned at the first write attempt (invalidate_now, cleared above): not again.
        assert warnings == []
    else:
        (warning,) = warnings
        assert MISSING_TABLE.fullmatch(warning.getMessage()), warning.getMessage()
    # The names are kept in memory all the same.
    assert "missing:1" in invalidation.pending_invalidations()["namespaces"]
