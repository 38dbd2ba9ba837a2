"""The toolkit's hook point: Django signals for what it decides, serves and suffers.

Connect a receiver to watch throttle decisions, cache outcomes, Redis errors,
circuit-breaker transitions and the invalidation backlog (the Prometheus
exporter in ``drf_redis_toolkit.metrics`` is such a receiver). Every signal is
sent with ``sender`` set as documented in ``docs/observability.md``.

The senders sit on the request's hot path (a throttle decision, a cache hit),
so each helper below first asks whether anyone listens (``Signal.receivers``,
a plain list) and builds no payload when nobody does: unobserved, a helper
call costs one function call and one attribute test.

Receivers run synchronously in the request's thread, like any Django signal
sent with ``send()``: a receiver must be quick, and must not call Redis
through the toolkit (it may be called while the circuit breaker changes
state). An exception in a receiver propagates to the caller.
"""

from __future__ import annotations

import threading
from typing import Any

from django.dispatch import Signal
from redis.exceptions import RedisError

#: A throttle of the toolkit decided a request. ``sender``: the throttle class.
#: Arguments: ``scope``, ``allowed`` (bool), ``identity`` (a digest of the
#: client's identity, never the raw value), ``cost``, ``request``, ``view``.
throttle_decided = Signal()

#: A cacheable request was looked up. ``sender``: the view class (``None`` when
#: unknown). Arguments: ``namespace``, ``outcome`` (one of ``OUTCOMES``),
#: ``reason`` (why a request bypassed the cache, else ``None``), ``request``.
#: Exactly one is sent per looked-up request.
cache_outcome = Signal()

#: A miss computed an answer that was not stored. ``sender``: the view class.
#: Arguments: ``namespace``, ``reason`` (one of ``NOT_STORED_REASONS``),
#: ``status_code``, ``request``.
cache_not_stored = Signal()

#: A call to Redis failed. ``sender``: the exception's class. Arguments:
#: ``exception``, ``unreachable`` (bool: an outage, which trips the breaker).
redis_error = Signal()

#: The circuit breaker changed state. ``sender``: the ``CircuitBreaker``.
#: Arguments: ``old`` and ``new``, each one of ``BREAKER_STATES``.
breaker_state_changed = Signal()

#: The invalidation backlog (names kept for Redis after a failure) or the
#: outbox changed. ``sender``: ``None``. Arguments: ``pending`` (names waiting
#: for a retry now, or ``None`` if this event did not change it), ``delivered``
#: (names from the backlog just delivered), ``outbox_written`` and
#: ``outbox_delivered`` (outbox rows written, and deleted after delivery).
invalidation_backlog = Signal()

HIT, NOT_MODIFIED, MISS, EARLY_REFRESH, BYPASS = (
    "hit",
    "not_modified",
    "miss",
    "early_refresh",
    "bypass",
)
OUTCOMES = (HIT, NOT_MODIFIED, MISS, EARLY_REFRESH, BYPASS)
#: Why a request bypassed the cache (``cache_outcome``'s ``reason``).
PENDING_INVALIDATION, REDIS_FAILED = "pending_invalidation", "redis_error"
#: Why a computed answer was not stored (``cache_not_stored``'s ``reason``).
#: ``bypass``: the lookup was bypassed or failed (see ``cache_outcome``), so no
#: generation is known to store under; ``vary_star``: the answer varies on
#: ``*``; ``uncacheable``: not a 200, a cookie, ``no-store``, session or CSRF
#: data in the body, or ``should_cache_response()`` said no.
NOT_STORED_REASONS = ("bypass", "vary_star", "uncacheable")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)


# -- throttling -------------------------------------------------------------------


def throttle(throttle: Any, request: Any, view: Any, decision: Any) -> None:
    """Send ``throttle_decided`` for ``decision`` (a ``ratelimit.Decision``) of ``throttle``."""
    if not throttle_decided.receivers:
        return
    from drf_redis_toolkit.keys import throttle_identity

    throttle_decided.send(
        sender=type(throttle),
        scope=decision.scope,
        allowed=decision.allowed,
        identity=throttle_identity(decision.key),
        cost=decision.cost,
        request=request,
        view=view,
    )


# -- caching ----------------------------------------------------------------------


def _outcome(namespace: str, outcome: str, reason: str | None, view: Any, request: Any) -> None:
    cache_outcome.send(
        sender=None if view is None else type(view),
        namespace=namespace,
        outcome=outcome,
        reason=reason,
        request=request,
    )


def cache_served(namespace: str, response: Any, view: Any, request: Any) -> None:
    """A hit answered ``request``: ``hit``, or ``not_modified`` for a 304."""
    if cache_outcome.receivers:
        outcome = NOT_MODIFIED if response.status_code == 304 else HIT
        _outcome(namespace, outcome, None, view, request)


def cache_missed(
    namespace: str, view: Any, request: Any, *, early: bool = False, failed: bool = False
) -> None:
    """No entry answered ``request``: a miss, an early refresh, or a bypass (Redis failed)."""
    if cache_outcome.receivers:
        if failed:
            _outcome(namespace, BYPASS, REDIS_FAILED, view, request)
        else:
            _outcome(namespace, EARLY_REFRESH if early else MISS, None, view, request)


def cache_bypassed(namespace: str, reason: str, view: Any, request: Any) -> None:
    """``request`` did not look the cache up at all, for ``reason``."""
    if cache_outcome.receivers:
        _outcome(namespace, BYPASS, reason, view, request)


def not_stored(namespace: str, view: Any, request: Any, response: Any, gen: Any, vary: Any) -> None:
    """A computed answer was not stored: no lookup, ``Vary: *``, or the rules said no."""
    if not cache_not_stored.receivers:
        return
    reason = "bypass" if gen is None else "vary_star" if vary is None else "uncacheable"
    cache_not_stored.send(
        sender=None if view is None else type(view),
        namespace=namespace,
        reason=reason,
        status_code=getattr(response, "status_code", None),
        request=request,
    )


# -- Redis and the breaker ------------------------------------------------------------


def error(exc: BaseException, unreachable: bool) -> None:
    """A call to Redis raised ``exc`` (other errors in a ``guarded()`` block are not sent)."""
    if redis_error.receivers and (unreachable or isinstance(exc, RedisError)):
        redis_error.send(sender=type(exc), exception=exc, unreachable=unreachable)


_breaker_lock = threading.Lock()


def breaker(breaker: Any, new: str) -> None:
    """``breaker`` is now in state ``new``; send ``breaker_state_changed`` if that is news.

    The last state sent is kept on the breaker (always, listened to or not, so a
    receiver connected later sees consistent transitions); repeats (a second
    failure while open) send nothing. Transitions are rare: the lock is cheap.
    """
    with _breaker_lock:
        old = getattr(breaker, "_signalled_state", CLOSED)
        if old == new:
            return
        breaker._signalled_state = new
    if breaker_state_changed.receivers:
        breaker_state_changed.send(sender=breaker, old=old, new=new)


# -- invalidation backlog -------------------------------------------------------------


def backlog(
    pending: int | None = None,
    delivered: int = 0,
    outbox_written: int = 0,
    outbox_delivered: int = 0,
) -> None:
    """The invalidation backlog or outbox changed (see ``invalidation_backlog``)."""
    if invalidation_backlog.receivers:
        invalidation_backlog.send(
            sender=None,
            pending=pending,
            delivered=delivered,
            outbox_written=outbox_written,
            outbox_delivered=outbox_delivered,
        )


def backlog_delivered(taken: Any, wanted: Any, pending: int) -> None:
    """A delivery of ``wanted`` names also carried the backlog (``taken``, a ``Names``)."""
    if invalidation_backlog.receivers and taken != wanted:
        extra = len(taken.namespaces - wanted.namespaces) + len(taken.keys - wanted.keys)
        backlog(pending=pending, delivered=extra)
