"""Redis's invalidation messages for the toolkit's cache keys, one connection per node.

Server-assisted client-side caching (``CLIENT TRACKING ... BCAST``): each Redis
node the cache lives on (one standalone server, or every master of a cluster)
gets one dedicated RESP3 connection of this process, subscribed to every key
under the toolkit's generation and entry prefixes. Whenever such a key is
written, deleted, expires or is evicted, the node pushes its name down that
connection; ``FLUSHALL``/``FLUSHDB`` push ``None`` ("everything").

``drain()`` waits for nothing new: it reads what already sits in the sockets (a
message partly arrived is read to its end, up to ``SOCKET_TIMEOUT``). It also keeps
each link honest with a heartbeat: a ``PING`` sent on the tracking connection and
answered proves that every message the node pushed before it has arrived (a node
sends in order on one connection). A ``PING`` unanswered after ``SOCKET_TIMEOUT``
means the link lags: ``TrackingLost``. On a cluster the heartbeat first reads a key
of a slot the node masters, so a master demoted by a graceful fail-over answers
``MOVED`` instead of a quiet ``PONG``.
"""

from __future__ import annotations

import select
import ssl
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.connection import is_cluster

#: ``on_invalidate(keys)``: the names Redis pushed, or ``None`` for "every key".
Listener = Callable[[list[bytes] | None], None]


#: What a broken or refused tracking connection raises.
_LINK_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)


def push_handlers_available() -> bool:
    """Whether this redis-py hands RESP3 invalidation messages to a callback.

    ``set_invalidation_push_handler`` arrived in redis-py 5.1: on 5.0 the messages
    would be read and thrown away, so a local copy could never be dropped.
    """
    from redis._parsers import _RESP3Parser

    return hasattr(_RESP3Parser, "set_invalidation_push_handler")


class TrackingLost(Exception):
    """A tracking connection failed, closed or lags: its node's messages may be lost."""


def masters(client: Any) -> frozenset[tuple[str, int]] | None:
    """``(host, port)`` of every master in a cluster client's current slot map (no I/O);
    ``None`` for a standalone client. Tracking must cover each of them."""
    if not is_cluster(client):
        return None
    return frozenset((node.host, int(node.port)) for node in client.get_primaries())


def _node_addresses(client: Any) -> list[tuple[Any, dict[str, Any], str | None]]:
    """``(connection class, connection kwargs, probe key)`` of every node holding cache keys.

    A standalone client gives its pool's settings (host, port, credentials,
    TLS); a cluster client one entry per master of its current slot map.
    Anything else (Sentinel, fakeredis, a foreign pool) cannot be tracked.
    """
    if is_cluster(client):
        nodes = []
        for node in client.get_primaries():
            pool = node.redis_connection.connection_pool
            kwargs = {**pool.connection_kwargs, "host": node.host, "port": node.port}
            nodes.append((pool.connection_class, kwargs, _probe_key(client, node)))
        return nodes
    pool = getattr(client, "connection_pool", None)
    connection_class = getattr(pool, "connection_class", None)
    if type(client) is not redis.Redis or connection_class not in (
        redis.Connection,
        redis.SSLConnection,
        redis.UnixDomainSocketConnection,
    ):
        raise TrackingUnsupported(
            f"{type(client).__name__} with {type(pool).__name__}: only a plain redis.Redis "
            "(REDIS_URL, CONNECTION_FACTORY, DJANGO_CACHE_ALIAS) or CLUSTER can be tracked"
        )
    return [(connection_class, dict(pool.connection_kwargs), None)]  # type: ignore[union-attr]


def _probe_key(client: Any, node: Any) -> str | None:
    """A key of a slot that ``node`` masters in the client's slot map (``None``: it has none).

    A master demoted by a graceful fail-over (``CLUSTER FAILOVER``) keeps its tracking
    connection open and answers ``PING``, while writes go to the new master and reach
    it only through replication. Reading this key in each heartbeat proves more: a node
    that no longer masters the slot answers ``MOVED``, and every copy is dropped.
    """
    for slot, holders in client.nodes_manager.slots_cache.items():
        if holders and holders[0].name == node.name:
            return keyspace.slot_probe_key(slot)
    return None


class TrackingUnsupported(Exception):
    """The client's kind of connection cannot carry tracking (Sentinel, fakeredis...)."""


class NodeTracker:
    """One node's tracking connection: its messages, its heartbeat."""

    __slots__ = ("_poll", "_tls", "connection", "failure", "last_proof", "ping_sent", "probe")

    def __init__(self, connection: Any, probe: str | None = None) -> None:
        self.connection = connection
        #: On a cluster, a key of a slot this node masters (``_probe_key``).
        self.probe = probe
        #: Monotonic time of the last PING answered (everything pushed before it is read).
        self.last_proof = time.monotonic()
        #: When the PING still unanswered was sent; ``None``: none outstanding.
        self.ping_sent: float | None = None
        self._poll: Any = None
        self._tls = False
        #: What the listener raised on a message (``listen``): that message is lost.
        self.failure: Exception | None = None

    def listen(self, on_invalidate: Listener) -> Callable[[Any], None]:
        """The push handler for this connection's parser.

        redis-py logs and swallows what a push handler raises: a message the listener
        failed to apply would be lost without a trace. It is kept here instead, and
        the drain that read it raises ``TrackingLost`` (every copy dropped).
        """

        def handler(message: Any) -> None:
            try:
                on_invalidate(message[1] if len(message) > 1 else None)
            except Exception as exc:  # noqa: BLE001 - reported by drain()
                self.failure = exc

        return handler

    def _watch(self) -> None:
        """Register the socket for ``_quiet()``, once a drain has emptied the parser
        (``connect()``'s own reads may have buffered a message behind their reply)."""
        sock = self.connection._sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._tls = isinstance(sock, ssl.SSLSocket)

    def _quiet(self) -> bool:
        """Whether nothing can have arrived since the last drain, for the price of one
        ``poll()`` (redis-py's ``can_read(timeout=0)`` costs two ``settimeout()`` calls
        and a caught exception, on every local hit).

        It holds because every drain ends with ``can_read(timeout=0)`` false: the
        parser then holds no complete message and the socket (with TLS, its decrypted
        buffer too) nothing more, so anything new is in the socket, which ``poll()``
        sees (a closed or failed socket shows as readable, or as an error).
        """
        poll = self._poll
        if poll is None or poll.poll(0):
            return False
        return not (self._tls and self.connection._sock.pending())

    def drain(self, heartbeat: float, patience: float) -> int:
        """Read every message already received, and keep the heartbeat going: a ``PING``
        once the last proof is half a ``heartbeat`` old, so a busy link never goes unproven.

        Returns the number of replies read. Raises ``TrackingLost`` if the
        connection failed or a ``PING`` went unanswered for ``patience`` seconds.
        """
        connection = self.connection
        read = 0
        if connection._sock is None:
            # redis-py closed it (an exception, even a BaseException, mid-read): its
            # can_read() or send_command() would silently reopen it, untracked.
            raise TrackingLost("the tracking connection was closed")
        try:
            # Only before the first read: a read can leave whole messages in the parser.
            if not self._quiet():
                while connection.can_read(timeout=0):
                    reply = connection.read_response(push_request=True)
                    read += 1
                    if reply in (b"PONG", "PONG") and self.ping_sent is not None:
                        self.last_proof, self.ping_sent = self.ping_sent, None
                if self.failure is not None:
                    raise TrackingLost(f"a message was not applied: {self.failure!r}")
                if self._poll is None:  # the first full drain: the invariant holds from here
                    self._watch()
            now = time.monotonic()
            if self.ping_sent is None:
                if now - self.last_proof >= heartbeat / 2:
                    if self.probe is not None:  # answered before the PONG, or MOVED
                        connection.send_command("EXISTS", self.probe)
                    connection.send_command("PING")
                    self.ping_sent = now
            elif now - self.ping_sent > patience:
                raise TrackingLost(f"PING unanswered for {now - self.ping_sent:.3f}s")
        except TrackingLost:
            raise
        except _LINK_ERRORS as exc:
            raise TrackingLost(f"{type(exc).__name__}: {exc}") from exc
        return read

    def close(self) -> None:
        try:
            self.connection.disconnect()
        except Exception:  # noqa: BLE001 - a broken socket is being thrown away
            pass


def wait_readable(trackers: list[NodeTracker], timeout: float) -> None:
    """Block until a tracker's socket has something to read, or ``timeout`` seconds pass.

    Returns at once if a connection is closed (the caller looks at its trackers
    again); a TLS socket's decrypted buffer counts as readable.
    """
    poller = select.poll()
    try:
        for tracker in trackers:
            sock = tracker.connection._sock
            if sock is None or (tracker._tls and sock.pending()):
                return
            poller.register(sock, select.POLLIN)
        poller.poll(timeout * 1000)
    except (ValueError, OSError):  # closed by another thread meanwhile (fileno -1)
        return


def connect(client: Any, on_invalidate: Listener, socket_timeout: float) -> list[NodeTracker]:
    """Open one tracking connection per node of ``client``; raise ``TrackingLost`` if one fails.

    Raises ``TrackingUnsupported`` for a client whose connections cannot be tracked.
    """
    prefixes = keyspace.tracked_prefixes()
    trackers: list[NodeTracker] = []
    try:
        for connection_class, kwargs, probe in _node_addresses(client):
            kwargs.update(
                protocol=3,
                socket_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
            connection = connection_class(**kwargs)
            tracker = NodeTracker(connection, probe)
            trackers.append(tracker)
            connection.connect()
            connection._parser.set_invalidation_push_handler(tracker.listen(on_invalidate))
            args: list[str] = ["CLIENT", "TRACKING", "ON", "BCAST"]
            for prefix in prefixes:
                args += ["PREFIX", prefix]
            connection.send_command(*args)
            connection.read_response()
    except _LINK_ERRORS as exc:
        for tracker in trackers:
            tracker.close()
        raise TrackingLost(f"{type(exc).__name__}: {exc}") from exc
    return trackers
