"""Per-namespace hit/miss counts of the response cache, for ``cache_stats``.

Counting in Redis on every request would cost a command per request (or make the
hit script write). Each process counts in memory instead and adds its counts to
one Redis hash at most every ``STATS_FLUSH_INTERVAL`` seconds, at exit, and before
``namespace_stats()`` reads them.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.conf import CONNECTION_KEYS, toolkit_settings
from drf_redis_toolkit.connection import guarded
from drf_redis_toolkit.scripts import get_script

logger = logging.getLogger("drf_redis_toolkit")

#: Seconds between flushes of the in-process hit/miss counters to Redis.
STATS_FLUSH_INTERVAL = 5.0


def stats_field(namespace: str) -> str:
    if len(namespace) <= 200:
        return namespace
    return namespace[:160] + "~" + keyspace.digest(namespace, 8)


class Counters:
    """Per-namespace hit/miss counts kept in process, added to Redis every few seconds.

    Counting in Redis on every request would cost a command per request (or make
    the hit script write); instead the request that finds the counts older than
    ``STATS_FLUSH_INTERVAL`` sends them all in one script call: one extra round
    trip per process every few seconds, none on the others. ``add()`` only says
    that a flush is due; the caller's flow runs ``flush()`` as a step of its own,
    so on an event loop it runs in a worker thread, never on the loop.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        self._due = time.monotonic() + interval

    def add(self, namespace: str, hit: bool) -> bool:
        """Count one hit or miss; whether the counts are due to be flushed (I/O: the caller's)."""
        with self._lock:
            counts = self._pending.get(namespace)
            if counts is None:
                counts = self._pending[namespace] = [0, 0]
            counts[0 if hit else 1] += 1
            return time.monotonic() >= self._due

    def reset(self) -> None:
        with self._lock:
            self._pending = {}

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._due = time.monotonic() + self.interval
        if not pending:
            return
        args: list[Any] = []
        for namespace, (hits, misses) in pending.items():
            field = stats_field(namespace)
            if hits:
                args += ["h:" + field, hits]
            if misses:
                args += ["m:" + field, misses]
        try:
            with guarded() as client:
                get_script("cache_stats_add")(
                    keys=[keyspace.cache_stats_key()], args=args, client=client
                )
        except Exception as exc:  # RedisError, RedisClusterException, any other
            # Kept for the next flush, whatever failed: statistics never fail a request.
            logger.debug(
                "drf_redis_toolkit: cache statistics kept for later: %s", exc, exc_info=True
            )
            with self._lock:  # keep them for the next flush
                for namespace, (hits, misses) in pending.items():
                    counts = self._pending.setdefault(namespace, [0, 0])
                    counts[0] += hits
                    counts[1] += misses


counters = Counters(STATS_FLUSH_INTERVAL)


def _after_fork_in_child() -> None:
    # A forked worker starts from zero (its parent flushes the counts it made), with a
    # fresh lock: another thread of the parent may have held it at the fork.
    counters._lock = threading.Lock()
    counters._pending = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_at_exit() -> None:
    try:
        counters.flush()
    except Exception:  # never let the interpreter's exit fail on statistics
        logger.debug("drf_redis_toolkit: could not flush cache statistics", exc_info=True)


atexit.register(_flush_at_exit)


def _on_settings_change(changed: set[str]) -> None:
    if changed & (CONNECTION_KEYS | {"KEY_PREFIX"}):
        counters.reset()  # the counts belong to the Redis (and prefix) they were made under


toolkit_settings.on_change(_on_settings_change)


def namespace_stats() -> dict[str, dict[str, Any]]:
    """Hits, misses and hit rate per namespace, over every process (this one flushed first).

    Returns ``{namespace: {"hits": int, "misses": int, "hit_rate": percent}}``.
    Raises ``RedisUnavailable`` if Redis cannot be reached.
    """
    counters.flush()
    with guarded() as client:
        raw = client.hgetall(keyspace.cache_stats_key())
    stats: dict[str, dict[str, Any]] = {}
    for field, value in raw.items():
        text = field.decode("utf-8", "replace") if isinstance(field, bytes) else field
        kind, _, namespace = text.partition(":")
        entry = stats.setdefault(namespace, {"hits": 0, "misses": 0})
        entry["hits" if kind == "h" else "misses"] += int(value)
    for entry in stats.values():
        total = entry["hits"] + entry["misses"]
        entry["hit_rate"] = round(100.0 * entry["hits"] / total, 1) if total else 0.0
    return stats
