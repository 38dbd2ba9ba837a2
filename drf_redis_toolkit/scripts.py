"""Lua scripts shipped as package files, loaded once and called by SHA.

``Script`` objects come from redis-py: the SHA is computed locally, ``EVALSHA``
is sent, and a ``NOSCRIPT`` answer (a restarted or new server) reloads the
script transparently. Each script file opens with a comment listing its
``KEYS``, ``ARGV`` and return value.

A line ``--@function NAME`` in a script is replaced by ``lua/NAME.lua`` wrapped
as ``local function NAME(KEYS, ARGV)``: a script can run another one's logic on
its own keys and arguments without a copy of it (Redis has no ``include``).
"""

from __future__ import annotations

import os
import re
import select
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

_hiredis_pack: Callable[..., bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py packs in Python then
    _hiredis_pack = None

_FUNCTION_RE = re.compile(rb"^--@function (\w+)$", re.MULTILINE)


def _package_text(name: str) -> bytes:
    return files("drf_redis_toolkit").joinpath("lua", f"{name}.lua").read_bytes()


def script_source(name: str, read: Callable[[str], bytes] = _package_text) -> bytes:
    """The text of ``lua/<name>.lua``, its ``--@function`` lines expanded.

    ``read`` gives a script's raw text by name (the mutation tests hand in mutated ones).
    """
    return _FUNCTION_RE.sub(
        lambda match: (
            b"local function %s(KEYS, ARGV)\n%s\nend"
            % (match[1], script_source(match[1].decode(), read))
        ),
        read(name),
    )


@cache
def get_script(name: str) -> Script:
    """Return the ``Script`` for ``drf_redis_toolkit/lua/<name>.lua``."""
    source = script_source(name)
    # Passing bytes lets redis-py hash it without a registered client; the
    # caller supplies ``client=`` on every call.
    return Script(None, source)  # type: ignore[arg-type]


def run_script(name: str, client: Any, keys: list[Any], args: list[Any]) -> Any:
    """``EVALSHA`` the script on ``client``, loading it first if the server lacks it."""
    script = get_script(name)
    try:
        return client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # A restarted or new server: load it (on the node that owns the keys) and retry.
        return script(keys=keys, args=args, client=client)


#: redis-py before 5.3 wants the command's name to hand out a pooled connection.
_NAMED_CHECKOUT: tuple[str, ...] = ("EVALSHA",) if redis.VERSION < (5, 3) else ()
#: Where a client keeps its ``_Kept`` connections (``False``: the client is not plain).
_KEPT_ATTR = "_drf_redis_toolkit_kept"
#: Counts forks: a child never uses the connections its parent kept (they share sockets).
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class _Kept:
    """Connections of one plain client, kept out of its pool for ``run_script_direct``.

    Taking a connection from a redis-py 7 pool and giving it back costs about as
    much as the throttle script itself (a lock, a readiness poll, four
    observability records and an event per call; see docs/benchmarks.md). A
    decision instead pops an idle connection from ``idle`` and pushes it back
    (single list operations: atomic, no lock); the pool is entered only when
    every kept connection is busy, so there are at most as many as decisions
    ever ran at once. They stay checked out of the pool: its ``close()`` and
    ``disconnect()`` still close them.
    """

    __slots__ = ("forks", "idle", "pack", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.idle: list[Any] = []
        self.forks = _forks
        #: hiredis' packer, called without redis-py's wrapper around it, when the
        #: connections use it anyway (``False``: they do not, ``send_command`` packs;
        #: ``None``: not known before the first connection is seen).
        self.pack: Callable[[tuple[Any, ...]], bytes] | bool | None = None

    def packer(self, conn: Any) -> Callable[[tuple[Any, ...]], bytes] | bool:
        pack = self.pack
        if pack is None:
            packer = getattr(conn, "_command_packer", None)  # none before redis-py 5
            hiredis = type(packer).__name__ == "HiredisRespSerializer"
            pack = self.pack = _hiredis_pack if hiredis and _hiredis_pack is not None else False
        return pack

    def take(self) -> Any:
        """An idle connection, ready to send (as the pool's checkout would make it)."""
        try:
            conn = self.idle.pop()
        except IndexError:
            return self.pool.get_connection(*_NAMED_CHECKOUT)
        sock = conn._sock
        if sock is not None and _readable(sock):
            # Readable while idle: closed by the server (EOF), or data nobody asked for.
            conn.disconnect()  # reconnects on its next send, as the pool would
        return conn


def _readable(sock: Any) -> bool:
    """Whether ``sock`` has something to read now (``poll``: no ``select`` descriptor limit)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _kept(client: Any) -> _Kept | None:
    """``client``'s kept connections, when it is a plain ``redis.Redis`` that never retries.

    For such a client (the toolkit's own standalone one) ``execute_command`` does no
    more than take a pooled connection, send, read and give it back, plus its own
    bookkeeping, so ``run_script_direct`` may do just that on a kept connection. The
    pool must be unbounded: kept connections are not handed to other callers.
    Sentinel pools, single-connection clients, clusters, fakes and retrying clients
    keep redis-py's own path.
    """
    kept = client.__dict__.get(_KEPT_ATTR)
    if kept is None or (kept is not False and kept.forks != _forks):
        pool = getattr(client, "connection_pool", None)
        plain = (
            type(client) is redis.Redis
            and type(pool) is redis.ConnectionPool
            and client.connection is None
            and pool.max_connections >= 2**31
            and getattr(pool.connection_kwargs.get("retry"), "_retries", 1) == 0
        )
        kept = _Kept(pool) if plain else False
        client.__dict__[_KEPT_ATTR] = kept
    return kept or None


def _direct(client: Any) -> bool:
    """Whether ``run_script_direct`` sends on ``client``'s kept connections (``_kept``)."""
    return _kept(client) is not None


def run_script_direct(name: str, client: Any, keys: list[Any], args: list[Any]) -> Any:
    """``run_script`` for the per-request hot path (a throttle decision).

    On a plain client that never retries (the toolkit's own standalone client)
    the ``EVALSHA`` goes straight onto a kept connection (``_Kept``): what
    redis-py's ``execute_command`` would do, without its per-command overhead
    and the pool's (together about half a loopback call here; see
    docs/benchmarks.md). As there, a connection that failed mid-command is
    closed, never reused; a ``NOSCRIPT`` answer falls back to ``run_script``,
    which loads the script.
    """
    kept = _kept(client)
    if kept is None:
        return run_script(name, client, keys, args)
    conn = kept.take()
    try:
        command = ("EVALSHA", get_script(name).sha, len(keys), *keys, *args)
        pack = kept.packer(conn)
        if pack:
            conn.send_packed_command([pack(command)])  # type: ignore[operator]
        else:
            conn.send_command(*command)
        return conn.read_response()
    except NoScriptError:
        pass  # given back below; then loaded and run the usual way
    except ResponseError:
        raise  # an error reply: the connection is in step and fine
    except BaseException:
        conn.disconnect()  # failed or interrupted mid-command: its state is unknown
        raise
    finally:
        kept.idle.append(conn)
    return run_script(name, client, keys, args)


async def arun_script(name: str, client: Any, keys: list[Any], args: list[Any]) -> Any:
    """``run_script`` for a ``redis.asyncio`` client: the same SHA, the same reload rule.

    On ``NOSCRIPT`` the script is sent whole (``EVAL``), which also loads it on
    the server (the node owning the keys, on a cluster) for the next ``EVALSHA``.
    """
    script = get_script(name)
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.eval(script.script, len(keys), *keys, *args)
