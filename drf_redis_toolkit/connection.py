"""The one Redis connection of the process, and the circuit breaker that guards it.

Everything in the toolkit that talks to Redis goes through ``guarded()``: it
hands out the shared client, turns connection-level failures into
``RedisUnavailable`` and trips the breaker, so that a dead Redis costs at most
one socket timeout per ``CIRCUIT_BREAKER_COOLDOWN`` instead of one per request.
What a failure *means* (a cache miss, an admitted or refused request) is decided
by the caller, in one place each.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from django.utils.module_loading import import_string
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ClusterDownError, MaxConnectionsError, SlotNotCoveredError
from redis.retry import Retry

from drf_redis_toolkit.conf import CONNECTION_KEYS, toolkit_settings
from drf_redis_toolkit.exceptions import RedisUnavailable

logger = logging.getLogger("drf_redis_toolkit")

#: redis-py errors that mean "Redis is not there right now" (not "you sent a bad command").
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # includes BusyLoadingError and Sentinel's MasterNotFoundError
    redis.TimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    MaxConnectionsError,
    OSError,  # e.g. a reset socket surfacing unwrapped
)


#: Error replies meaning "this server cannot take the command now", not "bad command":
#: out of memory under ``noeviction``, a demoted master, a replica cut off from its master.
UNAVAILABLE_REPLIES: tuple[type[BaseException], ...] = tuple(
    getattr(redis.exceptions, name)
    for name in ("OutOfMemoryError", "ReadOnlyError", "MasterDownError", "TryAgainError")
    if hasattr(redis.exceptions, name)
)


class CircuitBreaker:
    """Skip Redis for ``cooldown`` seconds after a connection failure.

    After the cool-down exactly one caller (the probe) is let through; the
    others keep skipping until the probe succeeds or fails. A ``cooldown`` of 0
    disables the breaker.
    """

    def __init__(self, cooldown: float, clock: Any = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self._open_until = 0.0
        self._tripped = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._tripped and self.clock() < self._open_until

    def allow(self) -> bool:
        """Return whether a call to Redis may be attempted now."""
        if not self._tripped or self.cooldown <= 0:
            return True
        with self._lock:
            now = self.clock()
            if now < self._open_until:
                return False
            # Half-open: this caller probes; everyone else waits another cool-down.
            self._open_until = now + self.cooldown
            return True

    def record_success(self) -> None:
        if self._tripped:
            with self._lock:
                self._tripped = False
                self._open_until = 0.0
            logger.warning("drf_redis_toolkit: Redis is reachable again; circuit breaker closed")

    def record_failure(self) -> bool:
        """Open the breaker; return ``True`` if it was closed until now."""
        with self._lock:
            newly = not self._tripped
            self._tripped = True
            self._open_until = self.clock() + self.cooldown
        return newly


class _State:
    """The process's client and breaker, rebuilt after a fork or a settings change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: Any = None
        self.pid: int | None = None
        self.breaker = CircuitBreaker(0)
        self.generation = 0
        self.counts = {"failures": 0, "timeouts": 0, "skips": 0}


_state = _State()


def stats() -> dict[str, int]:
    """How often Redis failed (``timeouts`` of them socket timeouts) or was skipped by the breaker.

    Counted by ``guarded()`` since the process started (or ``reset_stats()``): tests and
    operators can tell "one timeout, then skipped" from "a timeout on every request"
    without timing anything. Only the failure paths count, never a successful call
    (plain increments: under many failing threads at once a count may come out low).
    """
    return dict(_state.counts)


def reset_stats() -> None:
    """Start the counts of ``stats()`` from zero."""
    _state.counts = dict.fromkeys(_state.counts, 0)


def _connection_kwargs() -> dict[str, Any]:
    return {
        "socket_timeout": toolkit_settings.SOCKET_TIMEOUT,
        "socket_connect_timeout": toolkit_settings.SOCKET_CONNECT_TIMEOUT,
        # redis-py retries failed commands by default; a dead Redis would then
        # cost several timeouts per call. The breaker decides instead.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }


def build_client() -> Any:
    """Build a redis-py client from the current settings (no I/O happens here)."""
    factory = toolkit_settings.CONNECTION_FACTORY
    if factory is not None:
        return (import_string(factory) if isinstance(factory, str) else factory)()
    url = toolkit_settings.REDIS_URL
    kwargs = _connection_kwargs()
    if toolkit_settings.SENTINELS:
        from redis.sentinel import Sentinel

        url_kwargs = {
            k: v for k, v in parse_url(url).items() if k in ("db", "username", "password")
        }
        sentinel = Sentinel(
            toolkit_settings.SENTINELS,
            sentinel_kwargs={
                "socket_timeout": kwargs["socket_timeout"],
                "socket_connect_timeout": kwargs["socket_connect_timeout"],
            },
            **kwargs,
        )
        return sentinel.master_for(toolkit_settings.SENTINEL_SERVICE_NAME, **url_kwargs)
    if toolkit_settings.CLUSTER:
        from redis.cluster import RedisCluster

        kwargs.pop("health_check_interval")
        # One retry lets a command follow a failover (the client re-reads the
        # slot map); MOVED/ASK redirections are followed regardless.
        kwargs["retry"] = Retry(NoBackoff(), 1)
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def get_client() -> Any:
    """Return the process's shared client, building it on first use or after a fork."""
    client = _state.client
    if client is not None and _state.pid == os.getpid():
        return client
    with _state.lock:
        if _state.client is None or _state.pid != os.getpid():
            _state.client = build_client()
            _state.pid = os.getpid()
            _state.breaker = CircuitBreaker(toolkit_settings.CIRCUIT_BREAKER_COOLDOWN)
        return _state.client


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (multi-key calls must stay in one slot)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def get_breaker() -> CircuitBreaker:
    get_client()
    return _state.breaker


def reset_connection() -> None:
    """Drop the client and its breaker; the next call builds them anew."""
    with _state.lock:
        client, _state.client, _state.pid = _state.client, None, None
        _state.generation += 1
    if client is not None:
        try:
            client.close()
        except Exception:
            logger.debug("drf_redis_toolkit: error closing the old client", exc_info=True)


def _on_settings_change(changed: set[str]) -> None:
    if changed & CONNECTION_KEYS:
        reset_connection()


toolkit_settings.on_change(_on_settings_change)


class guarded:  # used like a function: ``with guarded() as client:``
    """Yield the shared client; turn connection failures into ``RedisUnavailable``.

    Raises ``RedisUnavailable`` at once while the breaker is open. Errors that
    are not about reaching Redis (a ``ResponseError`` for a wrong type, say)
    pass through unchanged. A class rather than ``@contextmanager``: it sits on
    every request's hot path, and a generator costs more.
    """

    __slots__ = ("breaker",)

    def __enter__(self) -> Any:
        client = get_client()
        self.breaker = breaker = _state.breaker
        if breaker._tripped and not breaker.allow():
            _state.counts["skips"] += 1
            raise RedisUnavailable("Redis skipped: the circuit breaker is open after a failure")
        return client

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Never swallows: returns None, or raises RedisUnavailable from the error.
        breaker = self.breaker
        if exc_type is None:
            if breaker._tripped:
                breaker.record_success()
            return
        if issubclass(exc_type, CONNECTION_ERRORS):
            counts = _state.counts
            counts["failures"] += 1
            if issubclass(exc_type, redis.TimeoutError | TimeoutError):
                counts["timeouts"] += 1
            if breaker.record_failure():
                logger.warning(
                    "drf_redis_toolkit: Redis unreachable (%s: %s); skipping it for %ss",
                    exc_type.__name__,
                    exc,
                    breaker.cooldown,
                )
            raise RedisUnavailable(f"Redis unavailable: {exc_type.__name__}: {exc}") from exc
        if issubclass(exc_type, UNAVAILABLE_REPLIES) or str(exc).startswith("NOREPLICAS"):
            # The server answers, quickly: no need to open the breaker, but callers
            # must treat it like an outage (cache miss, FAIL_OPEN), never as a 500.
            raise RedisUnavailable(f"Redis refused the command: {exc}") from exc
