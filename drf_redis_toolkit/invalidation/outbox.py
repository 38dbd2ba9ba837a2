"""The outbox: invalidations kept in the database, so they survive the process that made them.

A row is written only when Redis is not known to be reachable, never on the
normal path:

- inside the write's transaction, when the names are scheduled while this
  process knows Redis is down (its circuit breaker is open, or earlier
  invalidations are still waiting): the row commits, or rolls back, with the data;
- right after the commit, when the delivery at the commit fails.

Any process delivers the rows: the next request of every process polls the
table (one ``SELECT``, at most every ``POLL_INTERVAL`` seconds, done when the
request starts), ``manage.py deliver_invalidations`` delivers them at once,
and a freshly started process polls at its first request. Rows read go into the
process's in-memory backlog (so their names are misses here until delivered)
and are deleted once Redis has them. Delivering a row twice only bumps a
generation twice: harmless.

The table must exist in each database that holds data with rules (it is in the
toolkit's migration); where it does not, the outbox is skipped with one warning
(polls never run inside a transaction, and the insert runs in a savepoint, so a
missing table never breaks a request or a write).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, connections, transaction

from drf_redis_toolkit import signals
from drf_redis_toolkit.invalidation.rules import Names

logger = logging.getLogger("drf_redis_toolkit.invalidation")

#: The longest a process serves requests without looking at the outbox (seconds):
#: what bounds, in other processes, the reads of an entry whose invalidation a
#: dead (or not yet reconnected) writer left in the outbox.
POLL_INTERVAL = 0.25
#: Rows read at a time.
BATCH = 500

#: A row: ``(database alias, primary key)``.
Row = tuple[str, int]

_tables: dict[str, bool] = {}
_poll_lock = threading.Lock()
_last_poll = [0.0]


def _model() -> Any:
    from drf_redis_toolkit.models import PendingInvalidation

    return PendingInvalidation


def _missing(alias: str, exc: DatabaseError) -> None:
    """Remember that ``alias`` has no outbox table (warned once per process)."""
    if _tables.get(alias) is not False:
        logger.warning(
            "drf_redis_toolkit: no outbox table in database %r (run migrate?): invalidations "
            "made there during a Redis outage do not survive their process (%s)",
            alias,
            exc,
        )
    _tables[alias] = False


def _encode(names: Names) -> str:
    return json.dumps({"namespaces": sorted(names.namespaces), "keys": sorted(names.keys)})


def _decode(text: str) -> Names:
    data = json.loads(text)
    return Names(frozenset(data.get("namespaces", ())), frozenset(data.get("keys", ())))


def keep(names: Names, alias: str) -> Row | None:
    """Write ``names`` to the outbox of ``alias`` (in its current transaction, if any).

    Returns the row, or ``None`` if it could not be written (logged): the
    in-memory backlog still has the names.
    """
    if not names or _tables.get(alias) is False:
        return None
    try:
        # A savepoint inside the caller's transaction: a failure here (no table)
        # must not break the write it accompanies.
        with transaction.atomic(using=alias):
            row = _model().objects.using(alias).create(names=_encode(names))
    except DatabaseError as exc:
        _missing(alias, exc)
        return None
    except Exception:  # never fail the write the row accompanies
        logger.exception("drf_redis_toolkit: could not write the invalidation outbox")
        return None
    signals.backlog(outbox_written=1)
    return (alias, row.pk)


def forget(rows: Iterable[Row]) -> None:
    """Delete rows whose names Redis now has (a write only after an outage)."""
    by_alias: dict[str, list[int]] = {}
    for alias, pk in rows:
        by_alias.setdefault(alias, []).append(pk)
    for alias, pks in by_alias.items():
        try:
            deleted, _ = _model().objects.using(alias).filter(pk__in=pks).delete()
            signals.backlog(outbox_delivered=deleted)
        except Exception:  # a database error, or a thread not allowed to use the database
            # Delivered again by the next poll: harmless.
            logger.warning("drf_redis_toolkit: outbox rows not deleted", exc_info=True)


def read(aliases: Iterable[str] | None = None) -> tuple[Names, set[Row], bool]:
    """The names and rows in the outbox: up to ``BATCH`` rows per database.

    The flag says whether that was all of it; when it was not, the names read
    are not all the names waiting.
    """
    names = Names()
    rows: set[Row] = set()
    complete = True
    for alias in aliases if aliases is not None else connections:
        if _tables.get(alias) is False:
            continue
        query = _model().objects.using(alias).order_by("pk").values_list("pk", "names")
        try:
            found = list(query[:BATCH])
        except DatabaseError as exc:
            _missing(alias, exc)
            continue
        complete = complete and len(found) < BATCH
        for pk, text in found:
            try:
                names = names | _decode(text)
            except (ValueError, TypeError, AttributeError):
                logger.error("drf_redis_toolkit: outbox row %s is not valid; dropped", pk)
            rows.add((alias, pk))
    return names, rows, complete


def poll(force: bool = False) -> bool:
    """Pick up the outbox into this process's backlog and deliver it; ``True`` if it ran.

    Rate-limited to one look every ``POLL_INTERVAL`` seconds per process (unless
    ``force``), one thread at a time, and never inside a transaction (a failed
    query must not break someone else's). Never raises: it runs before requests.
    """
    now = time.monotonic()
    if not force and now - _last_poll[0] < POLL_INTERVAL:
        return False
    if not _poll_lock.acquire(blocking=force):
        return False
    try:
        _last_poll[0] = now
        aliases = [a for a in connections if not connections[a].in_atomic_block]
        try:
            names, rows, complete = read(aliases)
        except Exception:  # a request must never fail because of the outbox
            logger.debug("drf_redis_toolkit: outbox not read", exc_info=True)
            return False
        if rows:
            from drf_redis_toolkit.invalidation import delivery

            # More rows than one look reads: every namespace counts as pending here,
            # and the delivery drops every generation (as for an overflowing backlog).
            delivery.adopt(names, rows, overflowed=not complete)
        return True
    finally:
        _poll_lock.release()


def _after_fork() -> None:
    _last_poll[0] = 0.0  # a new worker looks at once, at its first request


os.register_at_fork(after_in_child=_after_fork)


def on_request_started(**kwargs: Any) -> None:
    """``request_started`` receiver (connected in ``AppConfig.ready()``)."""
    poll()
