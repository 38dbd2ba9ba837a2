"""Delivery: bump and delete the names in Redis after the commit, and keep what failed.

Nothing is invalidated before the transaction commits and nothing after a
rollback: delivery runs in ``transaction.on_commit``. If Redis cannot be reached
then, the names are logged at ERROR and kept in a bounded in-process record,
retried in the background and before every later invalidation; if the record
overflows, every generation and every key matching a registered ``keys``
template is dropped on recovery instead.

While a name is in that record, ``is_pending()`` says so and the cache read path
answers a miss for it; the first contact with Redis after an outage (the
breaker's probe, or the retry thread's) delivers the record before anything
else goes through.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.dispatch import Signal

from drf_redis_toolkit import connection, signals
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.invalidation import outbox
from drf_redis_toolkit.invalidation.rules import EMPTY, Names, _registry, template_glob

logger = logging.getLogger("drf_redis_toolkit.invalidation")

#: Sent after names were invalidated in Redis. ``sender`` is the model whose
#: change caused it (``None`` for a direct ``invalidate()``); keyword arguments
#: ``namespaces`` and ``keys`` are frozensets of the names.
cache_invalidated = Signal()

#: How many distinct names the in-process retry record holds before it gives up
#: on remembering them and drops everything on recovery instead.
MAX_PENDING = 10_000
#: The background retry's first delay, doubled after each failure up to the maximum:
#: the longest a kept invalidation waits after Redis answers again (with no request
#: coming to probe sooner).
_RETRY_FIRST_DELAY = 0.1
_RETRY_MAX_DELAY = 0.5
_RETRY_MAX_ATTEMPTS = 10_000  # over an hour; then it ends until the next invalidation


@dataclass
class _Batch:
    """Names collected for delivery at one commit, grouped by database and sender."""

    by_alias: dict[str, dict[Any, Names]] = field(default_factory=dict)

    rows: dict[str, set[outbox.Row]] = field(default_factory=dict)

    def add(self, alias: str, sender: Any, names: Names, row: outbox.Row | None = None) -> None:
        senders = self.by_alias.setdefault(alias, {})
        senders[sender] = senders.get(sender, EMPTY) | names
        if row is not None:
            self.rows.setdefault(alias, set()).add(row)

    def merge(self, other: _Batch) -> None:
        for alias, senders in other.by_alias.items():
            for sender, names in senders.items():
                self.add(alias, sender, names)
        for alias, rows in other.rows.items():
            self.rows.setdefault(alias, set()).update(rows)

    def schedule(self) -> None:
        for alias, senders in self.by_alias.items():
            deliver = partial(_deliver, dict(senders), frozenset(self.rows.get(alias, ())), alias)
            on_commit_robust(deliver, alias)


_local = threading.local()


def on_commit_robust(func: Any, alias: str) -> None:
    """Run ``func`` after the commit on ``alias``; an error in it is logged, never raised.

    A failing delivery must not break the write that was already committed nor
    the other commit hooks. The function is wrapped to that effect on every
    Django version, not handed over with Django 5's ``robust=True``: Django
    logs that error through ``func.__qualname__``, which the ``partial`` given
    here lacks, so the ``AttributeError`` escaped the commit and the later
    hooks were skipped.
    """
    transaction.on_commit(partial(_logging_errors, func), using=alias)


def _logging_errors(func: Any) -> None:
    try:
        func()
    except Exception:
        logger.exception("drf_redis_toolkit: an invalidation delivery failed after the commit")


def _batches() -> list[_Batch]:
    stack = getattr(_local, "batches", None)
    if stack is None:
        stack = _local.batches = []
    return stack


@contextmanager
def batch() -> Iterator[None]:
    """Collect every invalidation made inside the block into one Redis call.

    On leaving the block, what was collected is scheduled with
    ``transaction.on_commit`` (so a rollback of the enclosing transaction still
    cancels it). Leaving with an exception schedules it too: writes that were
    already committed must not keep stale entries alive.
    """
    stack = _batches()
    current = _Batch()
    stack.append(current)
    try:
        yield
    finally:
        stack.pop()
        if stack:
            stack[-1].merge(current)
        else:
            current.schedule()


def as_names(namespaces: str | Iterable[str], keys: str | Iterable[str]) -> Names:
    """``Names`` from iterables of names, or from single names given as plain strings.

    ``invalidate("product:1")`` means the one namespace ``product:1``, not the
    nine one-character namespaces iterating the string would give.
    """
    return Names(
        frozenset((namespaces,) if isinstance(namespaces, str) else namespaces),
        frozenset((keys,) if isinstance(keys, str) else keys),
    )


def invalidate(
    namespaces: str | Iterable[str] = (),
    keys: str | Iterable[str] = (),
    *,
    using: str | None = None,
    sender: Any = None,
) -> None:
    """Invalidate names when the current transaction on ``using`` commits (at once if none).

    Each argument is a name or an iterable of names.
    """
    names = as_names(namespaces, keys)
    if names:
        schedule(names, using or DEFAULT_DB_ALIAS, sender)


def invalidate_now(
    namespaces: str | Iterable[str] = (), keys: str | Iterable[str] = (), *, sender: Any = None
) -> bool:
    """Invalidate at once, ignoring transactions; ``False`` if Redis was unreachable (queued)."""
    return _deliver({sender: as_names(namespaces, keys)})


def schedule(names: Names, alias: str, sender: Any) -> None:
    """Deliver ``names`` at the commit; keep them in the outbox now if Redis is known down.

    The outbox row is written here, before the commit, so that it commits (or
    rolls back) with the data: then no moment exists where the data is
    committed and the invalidation only lives in this process's memory.
    """
    row = outbox.keep(names, alias) if _redis_known_down() else None
    stack = _batches()
    if stack:
        stack[-1].add(alias, sender, names, row)
    else:
        rows = frozenset((row,)) if row is not None else frozenset()
        deliver = partial(_deliver, {sender: names}, rows, alias)
        on_commit_robust(deliver, alias)


def _redis_known_down() -> bool:
    """No I/O: the breaker is open, or earlier invalidations still wait for Redis."""
    return connection.get_breaker().is_tripped or not _pending.empty()


def _deliver(
    by_sender: dict[Any, Names],
    rows: frozenset[outbox.Row] = frozenset(),
    alias: str = DEFAULT_DB_ALIAS,
) -> bool:
    """Bump and delete now; on a Redis failure, log and keep the names for a retry.

    ``rows`` are the outbox rows already holding these names; without any, a
    failed delivery writes one (after the commit: the best that can be done
    when Redis failed only now).
    """
    wanted = EMPTY
    for names in by_sender.values():
        wanted = wanted | names
    if not wanted:
        return True
    taken = _pending.take(wanted, rows)  # pending from now until Redis has them
    try:
        _apply(taken.names, taken.overflowed)
        _pending.settle(taken)
        signals.backlog_delivered(taken.names, wanted, _pending.size())
    except (RedisUnavailable, redis.RedisError) as exc:
        if not rows:
            row = outbox.keep(wanted, alias)
            if row is not None:
                taken = _pending.with_rows(taken, {row})
        _pending.put(taken)
        logger.error(
            "drf_redis_toolkit: could not invalidate %d namespace(s) and %d key(s) (%s); kept "
            "for a retry when Redis answers (%d name(s) pending)",
            len(wanted.namespaces),
            len(wanted.keys),
            exc,
            _pending.size(),
        )
        return False
    if taken.rows:
        outbox.forget(taken.rows)
    for sender, names in by_sender.items():
        cache_invalidated.send(sender=sender, namespaces=names.namespaces, keys=names.keys)
    return True


def _apply(names: Names, everything: bool) -> None:
    from drf_redis_toolkit.client import redis_client
    from drf_redis_toolkit.generations import bump_generations

    if everything:
        _invalidate_everything()
    if names.namespaces or names.keys:
        bump_generations(*sorted(names.namespaces | names.keys))
    if names.keys:
        redis_client.delete(*sorted(names.keys))


def _invalidate_everything() -> None:
    """Forget every namespace generation, and every key a ``keys`` template can produce.

    A generation created afresh starts at the server clock, above any value it
    ever had, so every cached response becomes unreachable.
    """
    from drf_redis_toolkit.client import redis_client
    from drf_redis_toolkit.connection import guarded

    with guarded() as client:
        batch_: list[Any] = []
        for name in client.scan_iter(match=keyspace.generation_pattern(), count=500):
            batch_.append(name)
            if len(batch_) >= 500:
                client.unlink(*batch_)
                batch_ = []
        if batch_:
            client.unlink(*batch_)
    for rule in [*_registry.from_settings.values(), *_registry.python.values()]:
        for template in rule.keys:
            redis_client.clear_pattern(template_glob(template))
    logger.warning("drf_redis_toolkit: dropped every cache generation after a lost invalidation")


@dataclass
class _Backlog:
    names: Names = EMPTY
    overflowed: bool = False
    #: Outbox rows holding (some of) these names: deleted once they are delivered.
    rows: frozenset[outbox.Row] = frozenset()


class _Pending:
    """Invalidations Redis did not receive: bounded, retried in a background thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.backlog = _Backlog()
        # Taken for delivery but not delivered yet: still pending for anyone asking.
        self.in_flight: list[_Backlog] = []
        self.thread: threading.Thread | None = None

    def size(self) -> int:
        names = self.backlog.names
        return len(names.namespaces) + len(names.keys)

    def take(self, extra: Names = EMPTY, rows: Iterable[outbox.Row] = ()) -> _Backlog:
        """Take the backlog (with ``extra``) for a delivery; ``settle()`` or ``put()`` it after.

        What is taken stays pending for ``is_pending()`` until it is settled:
        it joins ``in_flight`` before it leaves ``backlog`` (readers look
        without the lock, in the other order).
        """
        with self.lock:
            backlog = self.backlog
            taken = _Backlog(backlog.names | extra, backlog.overflowed, backlog.rows | set(rows))
            self.in_flight = [*self.in_flight, taken]
            self.backlog = _Backlog()
        return taken

    def settle(self, backlog: _Backlog) -> None:
        """The delivery of ``backlog`` succeeded."""
        with self.lock:
            self._forget(backlog)

    def _forget(self, backlog: _Backlog) -> None:
        # A new list, never an edit in place: is_pending() reads it without the lock.
        self.in_flight = [item for item in self.in_flight if item is not backlog]

    def snapshot(self) -> _Backlog:
        """Everything not delivered yet: the backlog and what is being delivered."""
        with self.lock:
            names, overflowed = self.backlog.names, self.backlog.overflowed
            for item in self.in_flight:
                names, overflowed = names | item.names, overflowed or item.overflowed
        return _Backlog(names, overflowed)

    def put(self, backlog: _Backlog) -> None:
        """The delivery of ``backlog`` failed: keep it for the next retry."""
        with self.lock:
            self.backlog = _Backlog(
                self.backlog.names | backlog.names,
                self.backlog.overflowed or backlog.overflowed,
                self.backlog.rows | backlog.rows,
            )
            self._forget(backlog)  # after: the names are never absent from both
            self._bound()
            if not self.empty():
                self._start()
        signals.backlog(pending=self.size())

    def with_rows(self, backlog: _Backlog, rows: Iterable[outbox.Row]) -> _Backlog:
        """``backlog`` (in flight) with more outbox rows, still in flight."""
        with self.lock:
            grown = _Backlog(backlog.names, backlog.overflowed, backlog.rows | set(rows))
            self.in_flight = [grown if item is backlog else item for item in self.in_flight]
        return grown

    def _bound(self) -> None:
        if self.size() > MAX_PENDING:
            if not self.backlog.overflowed:
                logger.critical(
                    "drf_redis_toolkit: more than %d invalidations pending; every cached "
                    "generation will be dropped when Redis answers",
                    MAX_PENDING,
                )
            self.backlog = _Backlog(EMPTY, True, self.backlog.rows)

    def _start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=self._retry_loop, name="drf-redis-toolkit-invalidation-retry", daemon=True
            )
            self.thread.start()

    def _retry_loop(self) -> None:
        delay = _RETRY_FIRST_DELAY
        for _ in range(_RETRY_MAX_ATTEMPTS):
            time.sleep(delay)
            with self.lock:
                if self.empty():
                    self.thread = None  # under the lock: a later add() starts a new thread
                    return
            # While the breaker is open, probe Redis regardless of its cool-down (the
            # probe delivers the backlog first): no request waits here, and the
            # backlog reaches Redis within one delay of it answering again.
            try:
                delivered = connection.probe() and retry_pending()
            except Exception:  # the thread must outlive any one failure
                logger.exception("drf_redis_toolkit: invalidation retry failed")
                delivered = False
            finally:
                connections.close_all()  # this thread's own (outbox) connections
            delay = _RETRY_FIRST_DELAY if delivered else min(delay * 2, _RETRY_MAX_DELAY)
        with self.lock:
            self.thread = None

    def empty(self) -> bool:
        return not self.backlog.names and not self.backlog.overflowed and not self.backlog.rows

    def clear(self) -> None:
        with self.lock:
            self.backlog = _Backlog()
            self.in_flight = []


_pending = _Pending()
os.register_at_fork(after_in_child=_pending.clear)  # the parent still owns its backlog


def _deliver_on_recovery() -> bool:
    # Registered below: runs before the first call after an outage reaches Redis.
    return retry_pending()


def retry_pending() -> bool:
    """Deliver the invalidations kept after a Redis failure; ``False`` if Redis refused them.

    ``True`` means what this call took was delivered (or there was nothing to
    take); a delivery running in another thread at the same time may still be
    in flight, and its names stay pending (``is_pending()``) until it lands.
    """
    backlog = _pending.take()
    if not backlog.names and not backlog.overflowed and not backlog.rows:
        _pending.settle(backlog)
        return True
    try:
        _apply(backlog.names, backlog.overflowed)
    except (RedisUnavailable, redis.RedisError):
        _pending.put(backlog)
        return False
    _pending.settle(backlog)
    signals.backlog(_pending.size(), len(backlog.names.namespaces) + len(backlog.names.keys))
    if backlog.rows:
        outbox.forget(backlog.rows)
    logger.warning(
        "drf_redis_toolkit: delivered %d invalidation(s) kept during a Redis outage",
        len(backlog.names.namespaces) + len(backlog.names.keys),
    )
    return True


def adopt(names: Names, rows: Iterable[outbox.Row], overflowed: bool = False) -> bool:
    """Take outbox rows (maybe another process's) into this backlog, and deliver them.

    Their names are misses here from now until Redis has them. Returns whether
    they were delivered now.
    """
    _pending.put(_Backlog(names, overflowed, frozenset(rows)))
    if connection.get_breaker().is_tripped:
        return False  # the retry thread (or the breaker's probe) delivers them
    return retry_pending()


def is_pending(name: str) -> bool:
    """Whether an invalidation of ``name`` (namespace or key) waits for Redis in this process.

    The cache read path asks this before it looks an entry up: an entry of a
    pending name may be stale, so it is a miss. No lock and no I/O: nearly
    free while nothing is pending.
    """
    backlog = _pending.backlog  # before in_flight: take() fills in_flight first
    in_flight = _pending.in_flight
    if not in_flight and not backlog.overflowed and not backlog.names:
        return False
    for item in (backlog, *in_flight):
        if item.overflowed or name in item.names.namespaces or name in item.names.keys:
            return True
    return False


def pending_invalidations() -> dict[str, Any]:
    """What waits for Redis: ``{"namespaces": [...], "keys": [...], "overflowed": bool}``.

    Includes what a delivery is sending right now: empty means delivered.
    """
    backlog = _pending.snapshot()
    return {
        "namespaces": sorted(backlog.names.namespaces),
        "keys": sorted(backlog.names.keys),
        "overflowed": backlog.overflowed,
    }


connection.on_recovery(_deliver_on_recovery)
