"""Catch a sync redis-py call made on a thread that is running an event loop.

Such a call stalls every request on that loop for a round trip (or a timeout,
when Redis hangs). The check asks the calling thread for its running loop, not
for its ident: the OS hands a finished thread's ident to the next thread.
Used by ``tests/test_async.py``'s fixture and by ``tests/asgi_app.py`` under
uvicorn (``DRT_LOOP_GUARD=1``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis
import redis.client
import redis.cluster

#: What ``tests/asgi_app.py`` prints to stderr before each call it catches.
REPORT = "sync Redis call on the event loop"

#: (class, method, what a report calls it): every sync way a command reaches a socket.
GUARDED = (
    (redis.Redis, "execute_command", "command"),
    (redis.cluster.RedisCluster, "execute_command", "command"),
    (redis.client.Pipeline, "execute", "pipeline"),
    (redis.cluster.ClusterPipeline, "execute", "pipeline"),
)


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
            report(str(args[0]) if what == "command" and args else what)
        return real(self, *args, **kwargs)

    return call


def install(report: Callable[[str], None], setattr: Callable[[Any, str, Any], None]) -> None:
    """Wrap every method in ``GUARDED`` with ``setattr`` (a monkeypatch's, or the builtin)."""
    for cls, name, what in GUARDED:
        setattr(cls, name, guarded(getattr(cls, name), what, report))
