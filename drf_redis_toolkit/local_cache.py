"""Cache hits served from process memory, kept coherent by Redis's invalidation messages.

Opt-in (``LOCAL_CACHE``). Each process keeps what ``cache_get.lua`` answered for
hot entries (the namespace's generation, the entry, when Redis expires it) in a
bounded LRU (``LOCAL_CACHE_MAX_BYTES``), and a tracking connection per Redis node
(``tracking.py``) tells it which of those keys changed. A local hit needs:

* every tracking connection of the process healthy, and *drained first*: each
  invalidation already in the process's sockets is applied before looking, so a
  write whose message reached this process is never missed;
* a heartbeat: every node answered a ``PING`` sent less than
  ``LOCAL_CACHE_HEARTBEAT`` ago (one is sent once the last is half that old), so
  a frozen, cut-off or silently lagging link stops local hits within that bound;
  a ``PING`` unanswered for ``SOCKET_TIMEOUT`` drops everything;
* the generation held for the namespace is the one the entry was stored under,
  and the entry has not reached the expiry Redis gave it.

A copy is stored only if neither its generation key nor its entry key was
invalidated between the start of the lookup that read it and the store (a
sequence number taken before the lookup), so an invalidation that overtakes a
read can never leave the old answer behind. A tracking connection that fails or
lags, or this process's circuit breaker opening, drops every copy at once;
requests then go to Redis (the ordinary path) until tracking is re-established
(at most once per heartbeat interval).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from drf_redis_toolkit import signals, tracking
from drf_redis_toolkit.conf import CONNECTION_KEYS, toolkit_settings
from drf_redis_toolkit.connection import get_breaker, get_client
from drf_redis_toolkit.drivers import Flow, Script
from drf_redis_toolkit.exceptions import RedisUnavailable

logger = logging.getLogger("drf_redis_toolkit")

#: ``cache_get.lua`` states worth keeping: a whole entry, a vary record.
_KEPT_STATES = (0, 6)
#: Keys whose last invalidation is remembered (for stores in flight); past it, forget
#: them all and refuse every store of a lookup that began before.
INVALIDATED_MAX_KEYS = 100_000
#: Seconds between two drains of the background drainer, at least (``_drain_while_idle``).
IDLE_DRAIN_GAP = 0.01
#: The drainer's longest wait for a message: half a heartbeat, but never more (``poll()``
#: takes a C int of milliseconds; an infinite ``LOCAL_CACHE_HEARTBEAT`` is allowed).
IDLE_WAIT_MAX = 60.0
#: The longest wait before tracking is re-opened after it broke or failed to open: a
#: heartbeat, but never more (an infinite ``LOCAL_CACHE_HEARTBEAT`` turns the PING off,
#: not the local cache: it must not keep one drop from ever being recovered).
REOPEN_WAIT_MAX = 60.0
#: Seconds the drainer rests after a failed round (settings that do not validate...).
IDLE_FAILURE_PAUSE = 1.0
#: Bookkeeping bytes counted per held key, besides the key and the value.
_OVERHEAD = 160
_SETTINGS = CONNECTION_KEYS | {"KEY_PREFIX", "LOCAL_CACHE", "LOCAL_CACHE_MAX_BYTES"}


class _Copy:
    """One held answer of ``cache_get.lua`` (or, with ``raw`` ``None``, a generation)."""

    __slots__ = ("delta", "expires", "gen", "raw", "size", "state")

    def __init__(
        self, gen: int, raw: bytes | None, state: int, expires: float, delta: int, size: int
    ) -> None:
        self.gen, self.raw, self.state = gen, raw, state
        self.expires, self.delta, self.size = expires, delta, size


class Ticket:
    """Taken before a Redis lookup: what it may store afterwards is judged against it."""

    __slots__ = ("seq", "started")

    def __init__(self, seq: int, started: float) -> None:
        self.seq, self.started = seq, started


def _reopen_wait() -> float:
    """Seconds before the next attempt to open tracking: ``LOCAL_CACHE_HEARTBEAT``, capped."""
    return min(toolkit_settings.LOCAL_CACHE_HEARTBEAT, REOPEN_WAIT_MAX)


class LocalCache:
    """The process's copies, its tracking connections, and the rules tying them together."""

    def __init__(self) -> None:
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._copies: OrderedDict[str, _Copy] = OrderedDict()
        self._bytes = 0
        self._trackers: list[tracking.NodeTracker] = []
        self._healthy = False
        self._retry_at = 0.0
        self._seq = 0
        self._floor = 0
        #: Moved by ``reset()``: connections opened before it belong to old settings.
        self._epoch = 0
        self._invalidated: dict[str, int] = {}
        #: What ``_invalidated`` takes, counted like the copies (BCAST brings every key).
        self._invalidated_bytes = 0
        #: A cluster's masters when tracking opened (``None``: standalone), and when
        #: the client's slot map was last compared with them.
        self._topology: frozenset[tuple[str, int]] | None = None
        self._topology_checked = 0.0
        #: The thread that drains while no request does (``_drain_while_idle``); one per
        #: process, started with the first tracking connection (a forked child starts its own).
        self._idle_drainer: threading.Thread | None = None
        self._tracking_opened = threading.Event()
        #: Tests that must see a message wait, unread, for the request path's own drain.
        self._idle_paused = False
        self.counts = dict.fromkeys(
            ("hits", "misses", "stores", "refused", "drains", "idle_drains", "drops", "connects"),
            0,
        )

    # -- what Redis pushes -------------------------------------------------------

    def _on_invalidate(self, keys: list[bytes] | None) -> None:
        """Forget ``keys`` (``None``: everything); called with the lock held."""
        self._seq += 1
        seq = self._seq
        if keys is None:
            self._clear_copies()
            self._forget_invalidations()
            self._floor = seq
            return
        invalidated = self._invalidated
        for name in keys:
            key = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            if key not in invalidated:
                self._invalidated_bytes += len(key) + _OVERHEAD
            invalidated[key] = seq
            copy = self._copies.pop(key, None)
            if copy is not None:
                self._bytes -= copy.size
        if (
            len(invalidated) > INVALIDATED_MAX_KEYS
            or self._invalidated_bytes > toolkit_settings.LOCAL_CACHE_MAX_BYTES // 4
        ):
            self._forget_invalidations()
            self._floor = seq

    def forget(self, *keys: str) -> None:
        """Apply this process's own write to ``keys`` at once (its push follows anyway)."""
        if keys and self._healthy:  # untracked: nothing held, nothing may be stored
            with self._lock:
                self._on_invalidate([key.encode() for key in keys])

    def _forget_invalidations(self) -> None:
        self._invalidated.clear()
        self._invalidated_bytes = 0

    def _clear_copies(self) -> None:
        self._copies.clear()
        self._bytes = 0

    # -- tracking connections ----------------------------------------------------

    def needs_connect(self) -> bool:
        """Whether the next lookup would try to (re)open the tracking connections."""
        return not self._healthy and time.monotonic() >= self._retry_at

    def _connect(self) -> None:
        """Open the tracking connections (one thread at a time, at most once per heartbeat)."""
        if not self._connect_lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            if self._healthy or now < self._retry_at or get_breaker().is_tripped:
                return  # tripped: this process's own calls to Redis fail; stay on its path
            self._retry_at = now + _reopen_wait()
            epoch = self._epoch
            try:
                client = get_client()
                topology = tracking.masters(client)
                trackers = tracking.connect(
                    client, self._on_invalidate, toolkit_settings.SOCKET_TIMEOUT
                )
            except tracking.TrackingUnsupported as exc:
                self._retry_at = math.inf
                logger.error(
                    "drf_redis_toolkit: LOCAL_CACHE is on, but this connection cannot be "
                    "tracked (%s); every hit goes to Redis",
                    exc,
                )
                return
            except (tracking.TrackingLost, RedisUnavailable, redis.RedisError, OSError) as exc:
                logger.debug("drf_redis_toolkit: local cache tracking not up: %s", exc)
                return
            except Exception:  # a cache must never fail a request: log it, serve via Redis
                logger.exception("drf_redis_toolkit: LOCAL_CACHE could not open tracking")
                return
            with self._lock:
                if epoch != self._epoch:  # settings changed while connecting (KEY_PREFIX...)
                    for tracker in trackers:
                        tracker.close()
                    return
                self._trackers = trackers
                self._topology, self._topology_checked = topology, now
                self._healthy = True
                self._clear_copies()
                self._floor = self._seq + 1  # lookups begun untracked store nothing
                self._seq += 1
                self.counts["connects"] += 1
            self._start_idle_drainer()
            self._tracking_opened.set()
        finally:
            self._connect_lock.release()

    def _start_idle_drainer(self) -> None:
        # A thread that ended anyway (an interpreter shutting down...) is replaced.
        if self._idle_drainer is None or not self._idle_drainer.is_alive():
            self._idle_drainer = threading.Thread(
                target=self._drain_while_idle,
                name="drf-redis-toolkit local cache drainer",
                daemon=True,
            )
            self._idle_drainer.start()

    def _drain_while_idle(self) -> None:
        """Read the tracking connections as messages arrive, whether requests come or not.

        BCAST sends the name of every cache key written anywhere, and Redis's default
        ``client-output-buffer-limit`` for normal clients is no limit: a process that
        serves no request for a while would otherwise make the server buffer every name
        for it until its next request. This thread waits on the sockets (at most half a
        ``LOCAL_CACHE_HEARTBEAT``, so the heartbeat stays proved and the first request
        after a quiet spell can hit at once) and drains under the request path's lock;
        a drain reads only what has arrived (a message whose first bytes have arrived is
        read to its end, as on the request path: ~30 ms for one of 15 000 key names on
        loopback, whoever drains). Consecutive drains are ``IDLE_DRAIN_GAP`` apart at
        least, so heavy write traffic elsewhere costs it a bounded number of wake-ups.
        """
        me = threading.current_thread()
        while self._idle_drainer is me:  # a forked child's state names its own, or none
            try:
                self._drain_when_readable()
            except Exception:  # the thread must outlive any surprise; requests drain anyway
                logger.exception("drf_redis_toolkit: the local cache's idle drain failed")
                time.sleep(IDLE_FAILURE_PAUSE)  # a lasting failure logs once a second
            time.sleep(IDLE_DRAIN_GAP)

    def _drain_when_readable(self) -> None:
        """One round of the drainer: wait for a message (or half a heartbeat), then drain."""
        timeout = toolkit_settings.LOCAL_CACHE_HEARTBEAT / 2
        if not timeout <= IDLE_WAIT_MAX:  # inf (never PING) too
            timeout = IDLE_WAIT_MAX
        trackers = self._trackers if self._healthy else []
        if trackers:
            tracking.wait_readable(trackers, timeout)
        else:
            self._tracking_opened.wait(timeout)
            self._tracking_opened.clear()
        with self._lock:
            if (
                self._healthy
                and not self._idle_paused
                and self._trackers is trackers
                and self._drain(idle=True)
            ):
                self.counts["idle_drains"] += 1

    def drop(self, why: object) -> None:
        """Forget every copy and close tracking now (e.g. this process lost Redis)."""
        with self._lock:
            if self._healthy:
                self._drop(why)

    def _drop(self, why: object) -> None:
        """Stop serving locally at once: a link failed or lags (called with the lock held)."""
        trackers, self._trackers = self._trackers, []
        self._healthy = False
        self._clear_copies()
        self._forget_invalidations()
        self._seq += 1
        self._floor = self._seq
        self._retry_at = time.monotonic() + _reopen_wait()
        self.counts["drops"] += 1
        for tracker in trackers:
            tracker.close()
        logger.warning("drf_redis_toolkit: local cache dropped: %s", why)

    def _drain(self, idle: bool = False) -> bool:
        """Apply every message already received, on every node; ``False`` if tracking broke.

        ``idle``: the background drainer's (counted apart from the request path's). It
        never drops tracking for a ``PING`` left unanswered: the missing proof already
        stops local hits, and the next request's drain drops. Dropping in the background
        made that request re-open tracking first, to a frozen Redis: a ``SOCKET_TIMEOUT``
        spent on ``HELLO`` before its own lookup's (two timeouts, where one is the bound).
        """
        if not self._healthy:
            return False
        heartbeat = toolkit_settings.LOCAL_CACHE_HEARTBEAT
        patience = math.inf if idle else toolkit_settings.SOCKET_TIMEOUT
        if not idle:
            self.counts["drains"] += 1
        if self._topology is not None and not self._same_masters(heartbeat):
            return False
        try:
            for tracker in self._trackers:
                tracker.drain(heartbeat, patience)
        except tracking.TrackingLost as exc:
            self._drop(exc)
            return False
        return True

    def _same_masters(self, heartbeat: float) -> bool:
        """Every half heartbeat, whether the cluster client still knows the masters tracked.

        A master added to the cluster (and given slots) sends no message to a process
        not tracking it: once the client has learnt of it (a ``MOVED``), rebuild.
        """
        now = time.monotonic()
        if now - self._topology_checked < heartbeat / 2:
            return True
        self._topology_checked = now
        try:
            current = tracking.masters(get_client())
        except RedisUnavailable as exc:
            self._drop(exc)
            return False
        if current != self._topology:
            self._drop(f"cluster masters changed: {sorted(current or ())}")
            return False
        return True

    def _proven(self, now: float) -> bool:
        """Whether every node proved, less than a heartbeat ago, that nothing it pushed
        before then is still on the way (a frozen or cut-off node stops local hits)."""
        oldest = now - toolkit_settings.LOCAL_CACHE_HEARTBEAT
        return all(tracker.last_proof >= oldest for tracker in self._trackers)

    # -- lookups -----------------------------------------------------------------

    def get(
        self, gen_key: str, entry_key: str, factor: float, connect: bool = True
    ) -> tuple[tuple[int, bytes, int] | None, Ticket | None]:
        """A local hit ``(gen, raw, state)``, or ``None`` and the ticket of the Redis lookup.

        The ticket is ``None`` when the answer may not be stored (tracking down).
        ``connect=False`` (on an event loop): never open the tracking connections
        here, even if their wait ran out since the caller asked ``needs_connect()``.
        """
        if not self._healthy and connect:
            self._connect()
        with self._lock:
            if not self._drain():
                return None, None
            now = time.monotonic()
            ticket = Ticket(self._seq, now)
            copies = self._copies
            copy = copies.get(entry_key)
            generation = copies.get(gen_key)
            if (
                copy is None
                or generation is None
                or copy.gen != generation.gen
                or now >= copy.expires
                or not self._proven(now)
                # XFetch: let Redis decide whether this request recomputes early.
                or (factor > 0 and copy.delta * factor >= (copy.expires - now) * 1000)
            ):
                self.counts["misses"] += 1
                return None, ticket
            copies.move_to_end(entry_key)
            copies.move_to_end(gen_key)
            self.counts["hits"] += 1
            return (copy.gen, copy.raw or b"", copy.state), ticket

    def put(
        self,
        ticket: Ticket,
        gen_key: str,
        entry_key: str,
        gen: int,
        raw: bytes,
        state: int,
        pttl: int,
    ) -> None:
        """Keep what a Redis lookup answered, unless an invalidation overtook it."""
        if state not in _KEPT_STATES or pttl == -2 or pttl == 0:
            return
        expires = math.inf if pttl < 0 else ticket.started + pttl / 1000
        delta = 0
        if state == 0:
            try:
                delta = int(raw.split(b" ", 2)[1])
            except (IndexError, ValueError):
                return
        size = len(raw) + len(entry_key) + _OVERHEAD
        max_bytes = toolkit_settings.LOCAL_CACHE_MAX_BYTES
        if size > max_bytes // 4:
            return  # one answer never crowds out the rest
        with self._lock:
            if not self._drain():
                return
            seq = ticket.seq
            invalidated = self._invalidated
            held = self._copies.get(gen_key)
            if (
                seq < self._floor
                or invalidated.get(gen_key, 0) > seq
                or invalidated.get(entry_key, 0) > seq
                # Generations only grow: a later lookup already saw a newer one.
                or (held is not None and held.gen > gen)
            ):
                self.counts["refused"] += 1
                return
            self._hold(gen_key, _Copy(gen, None, -1, math.inf, 0, len(gen_key) + _OVERHEAD))
            self._hold(entry_key, _Copy(gen, raw, state, expires, delta, size))
            self.counts["stores"] += 1
            while self._bytes > max_bytes and self._copies:
                _, dropped = self._copies.popitem(last=False)
                self._bytes -= dropped.size

    def _hold(self, key: str, copy: _Copy) -> None:
        old = self._copies.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._copies[key] = copy
        self._bytes += copy.size

    # -- lifecycle ---------------------------------------------------------------

    def reset(self) -> None:
        """Close the tracking connections and forget every copy (settings changed)."""
        with self._lock:
            trackers, self._trackers = self._trackers, []
            self._healthy = False
            self._retry_at = 0.0
            self._epoch += 1
            self._clear_copies()
            self._forget_invalidations()
            self._seq += 1
            self._floor = self._seq
        for tracker in trackers:
            tracker.close()

    def held_bytes(self) -> int:
        """Bytes the copies take, as counted against ``LOCAL_CACHE_MAX_BYTES``."""
        return self._bytes

    def _after_fork_in_child(self) -> None:
        # The parent's sockets and locks are not this process's: start empty, untracked.
        counts = self.counts
        self._reset_state()
        self.counts = dict.fromkeys(counts, 0)


local_cache = LocalCache()
os.register_at_fork(after_in_child=local_cache._after_fork_in_child)


def _on_breaker(sender: Any, old: str, new: str, **kwargs: Any) -> None:
    if new == signals.OPEN:
        local_cache.drop("this process could not reach Redis (circuit breaker open)")


signals.breaker_state_changed.connect(_on_breaker, dispatch_uid="drf_redis_toolkit.local_cache")


def _on_settings_change(changed: set[str]) -> None:
    if changed & _SETTINGS:
        local_cache.reset()


toolkit_settings.on_change(_on_settings_change)


def forget(*keys: str) -> None:
    """This process wrote ``keys`` (a bump, a ``DEL``): drop its copies of them now."""
    local_cache.forget(*keys)


def stats() -> dict[str, int]:
    """Local ``hits`` and ``misses``, ``stores`` (and ``refused`` ones), ``drains`` (on
    the request path) and ``idle_drains`` (in the background), ``drops`` of every copy,
    ``connects`` of the tracking connections, since start-up."""
    return dict(local_cache.counts)


def reset_stats() -> None:
    local_cache.counts = dict.fromkeys(local_cache.counts, 0)


# -- the steps the cache's request path yields (drivers.py runs them) --------------


class Get:
    """Drain, then look locally; the answer is ``(hit or None, ticket or None)``."""

    __slots__ = ("entry_key", "factor", "gen_key")

    def __init__(self, gen_key: str, entry_key: str, factor: float) -> None:
        self.gen_key, self.entry_key, self.factor = gen_key, entry_key, factor

    def run(self) -> Any:
        return local_cache.get(self.gen_key, self.entry_key, self.factor)

    async def arun(self) -> Any:
        if local_cache.needs_connect():  # opening sockets blocks: not on the loop
            return await asyncio.to_thread(self.run)
        # Draining reads only what Redis has already sent (docs/local-cache.md); if the
        # wait before re-opening runs out meanwhile, the next lookup opens, in a thread.
        return local_cache.get(self.gen_key, self.entry_key, self.factor, connect=False)


class Put:
    """Keep a Redis lookup's answer (``LocalCache.put``)."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args

    def run(self) -> None:
        local_cache.put(*self.args)

    async def arun(self) -> None:
        local_cache.put(*self.args)


def lookup(
    keys: list[str], token: str, lock_ms: int, factor: float
) -> Flow[tuple[int, bytes, int]]:
    """``cache_get.lua``'s answer, from process memory when it can be trusted.

    Redis is asked for the whole entry (no ETag offer: the copy must be complete)
    and for its remaining lifetime, so a copy never outlives it.
    """
    found, ticket = yield Get(keys[0], keys[1], factor)
    if found is not None:
        return found  # type: ignore[no-any-return]
    gen, raw, state, pttl = yield Script("cache_get", keys, [token, lock_ms, factor, "", "1"])
    gen, raw, state = int(gen), raw or b"", int(state)
    if ticket is not None and state in _KEPT_STATES:
        yield Put(ticket, keys[0], keys[1], gen, raw, state, int(pttl))
    return gen, raw, state
