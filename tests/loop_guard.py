"""Catch a sync redis-py call made on a thread that is running an event loop.

Such a call stalls every request on that loop for a round trip (or a timeout,
when Redis hangs). The check asks the calling thread for its running loop, not
for its ident: the OS hands a finished thread's ident to the next thread.
Used by the ``no_sync_redis_on_the_loop`` fixture (conftest) and by
``tests/asgi_app.py`` under uvicorn (``DRT_LOOP_GUARD=1``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import redis
import redis.client
import redis.cluster
import redis.connection

#: What ``tests/asgi_app.py`` prints to stderr before each call it catches.
REPORT = "sync Redis call on the event loop"

#: (class, method, what a report calls it): every sync way a command reaches a socket,
#: from the client's methods down to a connection's own writes and reads (the toolkit
#: sends scripts on a kept connection, past ``execute_command``).
GUARDED = (
    (redis.Redis, "execute_command", "command"),
    (redis.cluster.RedisCluster, "execute_command", "command"),
    (redis.client.Pipeline, "execute", "pipeline"),
    (redis.cluster.ClusterPipeline, "execute", "pipeline"),
    (redis.connection.AbstractConnection, "connect", "connect"),
    (redis.connection.AbstractConnection, "send_packed_command", "send"),
    (redis.connection.AbstractConnection, "read_response", "read"),
)


def _in_tracking_drain() -> bool:
    """Whether the call comes from ``NodeTracker.drain``: a LOCAL_CACHE local hit on an
    event loop drains the tracking connections there by design (docs/local-cache.md,
    "On an event loop"). ``drain`` reads only while ``can_read(timeout=0)`` says a
    reply has arrived, and sends its heartbeat without waiting for the answer. Any
    other call on those connections, a blocking round trip included, is reported."""
    from drf_redis_toolkit.tracking import NodeTracker

    drain = NodeTracker.drain.__code__
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is drain:
            return True
        frame = frame.f_back
    return False


def guarded(
    real: Callable[..., Any], what: str, report: Callable[[str], None]
) -> Callable[..., Any]:
    """``real`` wrapped: ``report(name)`` first when it is called on an event loop's thread."""

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            if what not in ("send", "read") or not _in_tracking_drain():
                report(str(args[0]) if what == "command" and args else what)
        return real(self, *args, **kwargs)

    return call


def install(report: Callable[[str], None], setattr: Callable[[Any, str, Any], None]) -> None:
    """Wrap every method in ``GUARDED`` with ``setattr`` (a monkeypatch's, or the builtin)."""
    for cls, name, what in GUARDED:
        setattr(cls, name, guarded(getattr(cls, name), what, report))
