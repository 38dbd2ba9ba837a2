"""The one Redis connection of the process, and the circuit breaker that guards it.

Everything in the toolkit that talks to Redis goes through ``guarded()``: it
hands out the shared client, turns connection-level failures into
``RedisUnavailable`` and trips the breaker, so that a dead Redis costs at most
one socket timeout per ``CIRCUIT_BREAKER_COOLDOWN`` instead of one per request.
What a failure *means* (a cache miss, an admitted or refused request) is decided
by the caller, in one place each.

Building the client is a way of reaching Redis too: a Cluster client reads the
slot map in its constructor and fails when no startup node answers. Such a
failure trips the breaker like any other, and the client is built again (lazily,
by the first call after the cool-down), so a process started before its Redis
connects later without a restart.

Before the first call after an outage is let through, the *recovery hooks* run
(``on_recovery()``): the invalidation module delivers what it kept during the
outage there, so nothing is read from Redis before it has been told what changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.retry import Retry

from drf_redis_toolkit import signals, tracing
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


#: Errors a client's constructor raises when it cannot reach Redis. redis-py's
#: ``RedisClusterException`` is not a ``RedisError``: the Cluster constructor raises
#: it when no startup node answers, or when the nodes answer without a full slot map.
BUILD_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    RedisClusterException,
    redis.RedisError,
)

#: The messages of the ``RedisClusterException`` a Cluster client raises *while
#: running a command* when it must re-read the slot map and no node answers:
#: an outage, not a bad command (which raises the same class with other words).
_CLUSTER_UNREACHABLE = (
    "Redis Cluster cannot be connected",
    "All slots are not covered",
    "Cluster mode is not enabled",
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (from redis-py) means Redis could not be reached."""
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    if isinstance(exc, RedisClusterException):
        return str(exc).startswith(_CLUSTER_UNREACHABLE) or isinstance(
            exc.__cause__, CONNECTION_ERRORS
        )
    return False


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
        """Whether calls are being skipped right now (tripped, cool-down running)."""
        return self._tripped and self.clock() < self._open_until

    @property
    def is_tripped(self) -> bool:
        """Whether the last contact with Redis failed (cool-down over or not)."""
        return self._tripped

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
            signals.breaker(self, signals.CLOSED)
            logger.warning("drf_redis_toolkit: Redis is reachable again; circuit breaker closed")

    def record_failure(self) -> bool:
        """Open the breaker; return ``True`` if it was closed until now."""
        with self._lock:
            newly = not self._tripped
            self._tripped = True
            self._open_until = self.clock() + self.cooldown
        signals.breaker(self, signals.OPEN)
        return newly


class _State:
    """The process's client and breaker, rebuilt after a fork or a settings change.

    The breaker outlives a client that could not be built: it is what spaces
    the attempts to build one.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: Any = None
        self.pid: int | None = None
        self.breaker = CircuitBreaker(0)
        self.generation = 0
        self.counts = {"failures": 0, "timeouts": 0, "skips": 0}


_state = _State()
_local = threading.local()

#: Called, in order, before the first call after an outage reaches Redis.
_recovery_hooks: list[Callable[[], bool]] = []


def on_recovery(hook: Callable[[], bool]) -> Callable[[], bool]:
    """Run ``hook`` when Redis answers again, before the call that found out proceeds.

    The hook runs with the breaker bypassed for its own thread (its Redis calls
    go through ``guarded()`` as usual). It returns ``False`` when it could not
    do its work; the probe then counts as failed, the breaker stays open and
    the waiting call gets ``RedisUnavailable``. Registering twice adds once.
    """
    if hook not in _recovery_hooks:
        _recovery_hooks.append(hook)
    return hook


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


def _sentinel_master(sentinel_class: Any, url: str, kwargs: dict[str, Any]) -> Any:
    """The master client of ``SENTINELS`` (sync or ``redis.asyncio``, by ``sentinel_class``)."""
    url_kwargs = {k: v for k, v in parse_url(url).items() if k in ("db", "username", "password")}
    sentinel = sentinel_class(
        toolkit_settings.SENTINELS,
        sentinel_kwargs={
            "socket_timeout": kwargs["socket_timeout"],
            "socket_connect_timeout": kwargs["socket_connect_timeout"],
        },
        **kwargs,
    )
    return sentinel.master_for(toolkit_settings.SENTINEL_SERVICE_NAME, **url_kwargs)


#: Pools whose connection settings can be copied into a pool of the toolkit's own.
_COPYABLE_POOLS = (redis.ConnectionPool, redis.BlockingConnectionPool)
_COPYABLE_CONNECTIONS = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)


def with_toolkit_timeouts(client: Any) -> Any:
    """``client``'s connection settings in a pool of the toolkit's own, with its timeouts.

    A client handed over by ``CONNECTION_FACTORY`` or a Django cache often has no
    socket timeout at all (``None``): a hung Redis would then hang every request
    instead of costing one ``SOCKET_TIMEOUT`` before the breaker opens. The
    toolkit keeps the host, port, db, credentials and TLS settings, but opens its
    own connections with its timeouts and without redis-py's retries; the other
    user's pool is left as it was. Clients this cannot copy (Cluster, Sentinel,
    other connection classes such as fakeredis') are returned unchanged.
    """
    if type(client) is not redis.Redis:
        return client
    pool = client.connection_pool
    if type(pool) not in _COPYABLE_POOLS or pool.connection_class not in _COPYABLE_CONNECTIONS:
        return client
    kwargs = {**pool.connection_kwargs, **_connection_kwargs(), "decode_responses": False}
    own_pool = type(pool)(
        connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs
    )
    return redis.Redis(connection_pool=own_pool)


def django_cache_client(alias: str) -> Any:
    """The redis-py client behind the Django cache ``alias`` (Django's or django-redis')."""
    from django.core.cache import caches

    cache = caches[alias]
    inner = getattr(cache, "client", None)  # django-redis: DefaultClient
    if inner is not None and hasattr(inner, "get_client"):
        return inner.get_client(write=True)
    inner = getattr(cache, "_cache", None)  # Django's RedisCache: RedisCacheClient
    if inner is not None and hasattr(inner, "get_client"):
        return inner.get_client(write=True)
    raise ImproperlyConfigured(
        f"DRF_REDIS_TOOLKIT['DJANGO_CACHE_ALIAS'] = {alias!r}: "
        f"{type(cache).__name__} gives no redis-py client"
    )


def build_client() -> Any:
    """Build a redis-py client from the current settings (no I/O happens here).

    A client from ``CONNECTION_FACTORY`` or from the Django cache named by
    ``DJANGO_CACHE_ALIAS`` gets the toolkit's timeouts (``with_toolkit_timeouts``).
    """
    factory = toolkit_settings.CONNECTION_FACTORY
    if factory is not None:
        return with_toolkit_timeouts(
            (import_string(factory) if isinstance(factory, str) else factory)()
        )
    alias = toolkit_settings.DJANGO_CACHE_ALIAS
    if alias is not None:
        return with_toolkit_timeouts(django_cache_client(alias))
    url = toolkit_settings.REDIS_URL
    kwargs = _connection_kwargs()
    if toolkit_settings.SENTINELS:
        from redis.sentinel import Sentinel

        return _sentinel_master(Sentinel, url, kwargs)
    if toolkit_settings.CLUSTER:
        from drf_redis_toolkit.cluster_client import cluster_from_url

        kwargs.pop("health_check_interval")
        # One retry follows a fail-over (the client re-reads the slot map), none
        # follows a timeout; MOVED/ASK redirections are followed regardless.
        return cluster_from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def _current_state() -> _State:
    """The state of this process: after a fork, forget the parent's client and breaker."""
    if _state.pid != os.getpid():
        with _state.lock:
            if _state.pid != os.getpid():
                _state.client = None
                _state.breaker = CircuitBreaker(toolkit_settings.CIRCUIT_BREAKER_COOLDOWN)
                _state.pid = os.getpid()
    return _state


def _build(breaker: CircuitBreaker) -> Any:
    """Build the shared client (under the lock); a failure trips ``breaker``."""
    with _state.lock:
        if _state.client is not None:
            return _state.client
        try:
            client = build_client()
        except BUILD_ERRORS as exc:
            signals.error(exc, unreachable=True)
            if breaker.record_failure():
                logger.warning(
                    "drf_redis_toolkit: could not connect to Redis (%s: %s); retrying in %ss",
                    type(exc).__name__,
                    exc,
                    breaker.cooldown,
                )
            raise RedisUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        _state.client = client
        return client


def get_client() -> Any:
    """Return the process's shared client, building it on first use or after a fork.

    Raises ``RedisUnavailable`` when the client cannot be built (a Cluster with
    no reachable node), and while the breaker is open after such a failure.
    """
    state = _current_state()
    client = state.client
    if client is not None:
        return client
    breaker = state.breaker
    if breaker._tripped and not breaker.allow() and not getattr(_local, "probing", False):
        state.counts["skips"] += 1
        raise RedisUnavailable("Redis skipped: the circuit breaker is open after a failure")
    return _build(breaker)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (multi-key calls must stay in one slot)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def refresh_cluster_nodes(client: Any) -> None:
    """Re-read a cluster's node list and slot map (one ``CLUSTER SLOTS``); no-op otherwise.

    Run by the probe after an outage, before the first command. A node may have
    failed over while Redis was away, and redis-py before 7.0 forgets a node it
    could not reach: its startup-node dict *is* its node cache, so dropping the
    node from the one drops it from the other, while the slot map still routes
    that node's keys to it. Commands sent to every primary (``SCRIPT LOAD``,
    ``SCAN``) then skip that node until the next full refresh: a script is never
    loaded there (``NoScriptError`` on each call to its keys) and a pattern
    clear misses its keys.
    """
    if is_cluster(client):
        client.nodes_manager.initialize()


def get_breaker() -> CircuitBreaker:
    return _current_state().breaker


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


def _probe(breaker: CircuitBreaker) -> Any:
    """Reach Redis (building the client if needed), run the recovery hooks, close ``breaker``.

    Raises ``RedisUnavailable`` (and keeps the breaker open) if Redis does not
    answer or a hook could not finish.
    """
    _local.probing = True
    signals.breaker(breaker, signals.HALF_OPEN)
    try:
        client = _build(breaker)
        try:
            client.ping()
            refresh_cluster_nodes(client)
        except BUILD_ERRORS as exc:
            signals.error(exc, unreachable=True)
            breaker.record_failure()
            raise RedisUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        for hook in list(_recovery_hooks):
            if not hook():
                breaker.record_failure()
                raise RedisUnavailable("Redis answered, but what was kept for it is not delivered")
    finally:
        _local.probing = False
    breaker.record_success()
    return client


def probe() -> bool:
    """Try Redis now, whatever the cool-down; ``True`` if it answered and recovery ran.

    For background work (the invalidation retry thread): a request never waits
    for this, and the process learns that Redis is back without waiting for a
    request to come after the cool-down.
    """
    breaker = _current_state().breaker
    if not breaker._tripped:
        return True
    try:
        _probe(breaker)
    except RedisUnavailable:
        return False
    return True


class guarded:  # used like a function: ``with guarded() as client:``
    """Yield the shared client; turn connection failures into ``RedisUnavailable``.

    Raises ``RedisUnavailable`` at once while the breaker is open. The first
    call after the cool-down is the probe: it runs the recovery hooks before it
    proceeds. Errors that are not about reaching Redis (a ``ResponseError`` for
    a wrong type, say) pass through unchanged. A class rather than
    ``@contextmanager``: it sits on every request's hot path, and a generator
    costs more.
    """

    __slots__ = ("breaker", "span")

    def __enter__(self) -> Any:
        state = _current_state()
        self.breaker = breaker = state.breaker
        self.span = None
        if breaker._tripped and not getattr(_local, "probing", False):
            if not breaker.allow():
                state.counts["skips"] += 1
                raise RedisUnavailable("Redis skipped: the circuit breaker is open after a failure")
            return _probe(breaker)
        client = state.client
        client = client if client is not None else _build(breaker)
        self.span = tracing.start() if tracing.ENABLED else None  # optional OpenTelemetry
        return client

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Never swallows: returns None, or raises RedisUnavailable from the error.
        tracing.end(self.span, exc)
        _after_call(self.breaker, exc_type, exc)


def _after_call(breaker: CircuitBreaker, exc_type: Any, exc: Any) -> None:
    """What a call's outcome means for the breaker (shared by ``guarded`` and ``aguarded``)."""
    if exc_type is None:
        if breaker._tripped and not getattr(_local, "probing", False):
            breaker.record_success()
        return
    signals.error(exc, is_unreachable(exc))
    if issubclass(exc_type, CONNECTION_ERRORS) or (
        issubclass(exc_type, RedisClusterException) and is_unreachable(exc)
    ):
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


# -- the async client: redis.asyncio, one per event loop, the same breaker ---------

#: ``loop -> (connection generation, client)``; a client is bound to its loop.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, Any]] = (
    weakref.WeakKeyDictionary()
)


class _ThreadedClient:
    """A sync client behind an awaitable face: each command runs in a worker thread.

    For a ``CONNECTION_FACTORY`` without an ``ASYNC_CONNECTION_FACTORY`` (the
    toolkit cannot derive an async twin of an arbitrary client), and for a
    cluster (see ``build_async_client``): the event loop still never blocks on Redis.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def pipeline(self, **kwargs: Any) -> _ThreadedPipeline:
        return _ThreadedPipeline(self._client.pipeline(**kwargs))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


class _ThreadedPipeline:
    """A sync pipeline: commands queue here, ``execute()`` runs in a worker thread."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    async def execute(self, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._pipe.execute, **kwargs)


def build_async_client() -> Any:
    """Build a ``redis.asyncio`` client from the current settings (no I/O happens here).

    The same URL, sentinel choice and timeouts as ``build_client()``. A cluster
    gets the sync cluster client in worker threads: redis-py 7's
    ``redis.asyncio.cluster.RedisCluster`` with a ``socket_timeout`` fails
    under concurrent connection set-up (``Connection closed by server``, then
    ``AttributeError: 'NoneType' object has no attribute 'writelines'``, a 500),
    see docs/async.md.
    """
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry as AsyncRetry

    factory = toolkit_settings.ASYNC_CONNECTION_FACTORY
    if factory is not None:
        return (import_string(factory) if isinstance(factory, str) else factory)()
    if _threaded():
        return _ThreadedClient(get_client())
    url = toolkit_settings.REDIS_URL
    kwargs = _connection_kwargs()
    kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
    if toolkit_settings.SENTINELS:
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        return _sentinel_master(AsyncSentinel, url, kwargs)
    return aredis.Redis.from_url(url, **kwargs)


def _threaded() -> bool:
    """Whether the async path runs the sync client in worker threads (``build_async_client``)."""
    return toolkit_settings.ASYNC_CONNECTION_FACTORY is None and bool(
        toolkit_settings.CONNECTION_FACTORY is not None
        or toolkit_settings.DJANGO_CACHE_ALIAS is not None
        or toolkit_settings.CLUSTER
    )


def get_async_client() -> Any:
    """The running event loop's async client (built on first use, rebuilt after a reset)."""
    loop = asyncio.get_running_loop()
    generation = _state.generation
    known = _async_clients.get(loop)
    if known is not None and known[0] == generation:
        return known[1]
    client = build_async_client()
    _async_clients[loop] = (generation, client)
    return client


class aguarded:  # used like a function: ``async with aguarded() as client:``
    """``guarded()`` for coroutines: the loop's async client, the same breaker and rules.

    The probe after a cool-down (which runs the recovery hooks, sync code that
    talks to Redis) runs in a worker thread, so the loop is not blocked.
    """

    __slots__ = ("breaker",)

    async def __aenter__(self) -> Any:
        state = _current_state()
        self.breaker = breaker = state.breaker
        if breaker._tripped:
            if not breaker.allow():
                raise RedisUnavailable("Redis skipped: the circuit breaker is open after a failure")
            await asyncio.to_thread(_probe, breaker)
        elif state.client is None and _threaded():
            # Building a cluster client reads the slot map: not on the loop.
            await asyncio.to_thread(get_client)
        try:
            return get_async_client()
        except BUILD_ERRORS as exc:
            breaker.record_failure()
            raise RedisUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _after_call(self.breaker, exc_type, exc)
