"""A fault-injecting TCP proxy on loopback, put in front of a real ``redis-server``.

Why our own: toxiproxy needs its Go server binary (not installable here), and the
pure-Python proxies on PyPI either only add latency/bandwidth or are unmaintained;
none resets a connection *in the middle of a reply* with a TCP RST, half-closes, or
can be steered from the test's own thread. This one is small on purpose.

The proxy runs an asyncio loop in a daemon thread. Tests steer it with
``set_fault(...)`` / ``clear()`` at any moment; a fault applies to every chunk that
flows after it is set, on connections old and new:

- ``latency``: each chunk from Redis waits ``ms`` + uniform(0, ``jitter_ms``)
  (a seeded RNG, so a run is reproducible), order kept;
- ``reset``: the next reply is cut: part of it is forwarded, then the client gets a
  TCP RST (``SO_LINGER`` 0), with ``probability`` per reply (seeded);
- ``blackhole``: connections are accepted, commands read and dropped, nothing is
  ever answered (the client sees its socket timeout);
- ``half_close``: the proxy shuts its write side to the client (FIN) and drops the
  client's commands: the client reads EOF;
- ``cut``: the node is unreachable: every open connection is reset and new ones are
  reset as soon as they are accepted (one proxy per cluster node cuts one node off).

Counters (``connections``, ``bytes_up``, ``bytes_down``, ``resets``: replies cut,
``swallowed``: chunks dropped by a blackhole or a half-close) let tests
check that traffic really went through the proxy. Nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from tests import servers

KINDS = ("latency", "reset", "blackhole", "half_close", "cut")


@dataclass(frozen=True)
class Fault:
    """One fault and its parameters (``kind=None``: pass everything through)."""

    kind: str | None = None
    ms: float = 0.0
    jitter_ms: float = 0.0
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {KINDS}")


@dataclass(eq=False)
class _Pair:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    half_closed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN: ``SO_LINGER`` on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy:
    """``FaultProxy(upstream_port).start()``; point a client at ``proxy.port``."""

    def __init__(
        self,
        upstream_port: int,
        *,
        port: int | None = None,
        seed: int = 0,
        upstream_host: str = "127.0.0.1",
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or servers.free_port()
        self.fault = Fault()
        self.rng = random.Random(seed)
        self.connections = 0
        self.bytes_up = 0  # client -> Redis, forwarded
        self.bytes_down = 0  # Redis -> client, forwarded
        self.resets = 0
        self.delays_ms: list[float] = []  # each latency fault's added delay, in order
        self.swallowed = 0  # chunks read and dropped (blackhole, half-close): attempts seen
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- control, from any thread ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def set_fault(self, kind: str, **params: Any) -> None:
        """Apply ``kind`` (one of ``KINDS``) from now on, replacing any other fault."""
        self.fault = Fault(kind, **params)
        if kind == "cut":
            self._call(self._reset_all)

    def clear(self) -> None:
        """Pass everything through again (connections cut before stay closed)."""
        self.fault = Fault()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, function: Any) -> None:
        asyncio.run_coroutine_threadsafe(function(), self._loop).result(timeout=10)

    # -- the loop's side ------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        await asyncio.sleep(0.01)  # let the cancelled pumps finish before the loop stops

    async def _reset_all(self) -> None:
        for pair in list(self._pairs):
            self._drop(pair, reset=True)

    def _drop(self, pair: _Pair, *, reset: bool) -> None:
        if pair not in self._pairs:
            return
        self._pairs.discard(pair)
        if reset:
            _rst(pair.client)
        else:
            pair.client.transport.abort()
        if pair.upstream is not None:
            pair.upstream.transport.abort()
        current = asyncio.current_task()
        for task in pair.tasks:
            if task is not current:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pair = _Pair(writer)
        self._pairs.add(pair)
        if self.fault.kind == "cut":
            self._drop(pair, reset=True)
            return
        try:
            up_reader, pair.upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._drop(pair, reset=True)  # upstream down: the client sees a reset
            return
        pair.tasks = [
            asyncio.ensure_future(self._pump_up(pair, reader)),
            asyncio.ensure_future(self._pump_down(pair, up_reader)),
        ]

    def _swallow(self, pair: _Pair) -> bool:
        """Whether this chunk is dropped (blackhole, half-close); half-closes on the way."""
        kind = self.fault.kind
        if kind == "half_close" and not pair.half_closed:
            pair.half_closed = True
            if pair.client.can_write_eof():
                pair.client.write_eof()
        if kind in ("blackhole", "half_close"):
            self.swallowed += 1
            return True
        return False

    async def _pump_up(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        """Client -> Redis."""
        try:
            while data := await reader.read(65536):
                if self.fault.kind == "cut":
                    self._drop(pair, reset=True)
                    return
                if self._swallow(pair) or pair.upstream is None:
                    continue
                self.bytes_up += len(data)  # counted first: a test reading it saw the reply
                pair.upstream.write(data)
                await pair.upstream.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        self._drop(pair, reset=False)

    async def _pump_down(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        """Redis -> client: where latency, resets, blackholes and half-closes happen."""
        try:
            while data := await reader.read(65536):
                fault = self.fault
                if fault.kind == "cut":
                    self._drop(pair, reset=True)
                    return
                if self._swallow(pair) or pair.half_closed:
                    continue
                if fault.kind == "latency":
                    delay_ms = fault.ms + self.rng.uniform(0, fault.jitter_ms)
                    self.delays_ms.append(delay_ms)
                    await asyncio.sleep(delay_ms / 1000)
                if fault.kind == "reset" and self.rng.random() < fault.probability:
                    self.resets += 1  # counted before the client can see the reset
                    part = data[: max(1, len(data) // 2)] if len(data) > 1 else b""
                    self.bytes_down += len(part)
                    pair.client.write(part)
                    await pair.client.drain()
                    await asyncio.sleep(0.005)  # let loopback deliver the part before the RST
                    self._drop(pair, reset=True)
                    return
                self.bytes_down += len(data)
                pair.client.write(data)
                await pair.client.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        self._drop(pair, reset=False)


@dataclass
class Proxied:
    """Real Redis behind proxies: one proxy for a standalone server, one per cluster node."""

    server: Any  # servers.RedisProcess or servers.RedisCluster
    proxies: list[FaultProxy]

    @property
    def url(self) -> str:
        """What the toolkit is pointed at: the first proxy."""
        return self.proxies[0].url

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.server, servers.RedisCluster)

    def clear(self) -> None:
        for proxy in self.proxies:
            proxy.clear()

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        self.server.stop()


def proxied_redis(seed: int = 0) -> Proxied:
    """A standalone ``redis-server`` with one proxy in front of it."""
    server = servers.start_redis()
    return Proxied(server, [FaultProxy(server.port, seed=seed).start()])


def proxied_cluster(seed: int = 0, masters: int = 3) -> Proxied:
    """A cluster whose nodes announce their proxy's port, so clients stay behind the proxies."""
    node_ports = [servers.free_port(cluster_bus=True) for _ in range(masters)]
    proxies = [FaultProxy(port, seed=seed + i).start() for i, port in enumerate(node_ports)]
    try:
        cluster = servers.start_cluster(
            masters, ports=node_ports, announce_ports=[p.port for p in proxies]
        )
    except BaseException:
        for proxy in proxies:
            proxy.stop()
        raise
    return Proxied(cluster, proxies)
