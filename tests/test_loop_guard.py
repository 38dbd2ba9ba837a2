"""Nothing blocks an event loop on Redis: the guard the async tests rely on
(``tests/loop_guard.py``) can fail, and a local lookup never opens tracking there."""

from __future__ import annotations

import asyncio
import time

import redis

from tests import loop_guard


def test_the_loop_guard_sees_every_sync_way_to_redis_made_on_a_loop(real_backend, monkeypatch):
    """The guard these tests rely on can fail: a throttle decision and the popularity
    counter (scripts sent on the toolkit's kept connection, past ``execute_command``)
    and a plain command, each made on a running loop, are all reported."""
    from drf_redis_toolkit import ratelimit
    from drf_redis_toolkit.client import track_product_view
    from drf_redis_toolkit.connection import guarded
    from drf_redis_toolkit.rates import parse_rate

    def question():
        return ratelimit.ask(ratelimit.LOG, "guard", "ip:1", parse_rate("100/min"))

    ratelimit.decide_one(question())  # scripts loaded and connections open, off the loop
    track_product_view(1)
    reports: list[str] = []
    loop_guard.install(reports.append, monkeypatch.setattr)

    async def on_the_loop(call):
        call()

    for call in (lambda: ratelimit.decide_one(question()), lambda: track_product_view(1)):
        before = len(reports)
        asyncio.run(on_the_loop(call))
        assert {"send", "read"} <= set(reports[before:]), reports[before:]

    def plain_get():
        with guarded() as client:
            client.get("x")

    before = len(reports)
    asyncio.run(on_the_loop(plain_get))
    assert "GET" in reports[before:]
    before = len(reports)
    plain_get()  # off the loop: nothing reported
    assert reports[before:] == []

    def fresh_connection():
        client = redis.Redis.from_url(real_backend.settings["REDIS_URL"])
        try:
            client.ping()
        finally:
            client.close()

    before = len(reports)
    asyncio.run(on_the_loop(fresh_connection))
    assert {"connect", "PING"} <= set(reports[before:]), reports[before:]


def test_only_the_tracking_drain_is_exempt(real_backend, monkeypatch):
    """The one exemption is ``NodeTracker.drain`` (it reads what has arrived, and does
    not wait for its heartbeat's answer). The same sends and reads made by any other
    code on the loop, a full round trip, are reported."""
    from drf_redis_toolkit.tracking import NodeTracker

    client = redis.Redis.from_url(real_backend.settings["REDIS_URL"])
    connection = client.connection_pool.get_connection("PING")
    reports: list[str] = []
    loop_guard.install(reports.append, monkeypatch.setattr)

    async def round_trip():
        connection.send_command("PING")
        return connection.read_response()

    assert asyncio.run(round_trip()) == b"PONG"
    assert {"send", "read"} <= set(reports), reports

    class Tracker:  # what drain needs of a tracker; its code object is drain's own
        ping_sent = None
        last_proof = 0.0
        probe = None
        failure = None
        _poll = None

        def __init__(self):
            self.connection = connection

        def _quiet(self):
            return False

        def _watch(self):
            pass

    del reports[:]

    async def drain():
        NodeTracker.drain(Tracker(), heartbeat=0.0, patience=10.0)  # sends a PING
        deadline = time.monotonic() + 5
        while not connection.can_read(timeout=0):  # the PONG has arrived
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        return NodeTracker.drain(Tracker(), heartbeat=1e9, patience=10.0)

    assert asyncio.run(drain()) == 1  # the PONG, read inside drain
    assert reports == []
    client.connection_pool.release(connection)
    client.close()


def test_a_local_lookup_on_the_loop_never_opens_tracking_even_when_the_wait_runs_out(
    monkeypatch,
):
    """``Get.arun`` asks ``needs_connect()`` and then looks up: if the wait before
    re-opening ran out in between, the lookup used to open the tracking connections
    (a handshake per node) on the event loop. It now answers "look in Redis"."""
    from drf_redis_toolkit import local_cache as module

    opened: list[bool] = []
    monkeypatch.setattr(module.local_cache, "_healthy", False)
    monkeypatch.setattr(module.local_cache, "_connect", lambda: opened.append(True))
    monkeypatch.setattr(module.local_cache, "needs_connect", lambda: False)  # asked first...
    step = module.Get("g", "e", 0.0)
    assert asyncio.run(step.arun()) == (None, None)  # ...then due: not opened on the loop
    assert opened == []
    assert step.run() == (None, None)  # the sync path opens (its own thread)
    assert opened == [True]
