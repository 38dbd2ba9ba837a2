"""An outside review of ``LOCAL_CACHE``: each test is one way a stale answer, a failed
request or unbounded memory was looked for, on the real server and the real cluster.

Tests that found a defect fail without the fix that follows them (or are marked
``xfail(strict=True)`` with the mechanism, where the fix is not small).
"""

from __future__ import annotations

import select
import time
from typing import Any

import pytest
from django.test import override_settings

from drf_redis_toolkit import tracking
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.local_cache import local_cache, stats
from tests.test_local_cache import (
    VALUE,
    body,
    bump_elsewhere,
    get,
    lc_backend,  # noqa: F401 - the fixture
    pytestmark,  # noqa: F401 - the same skip on redis-py 5.0
    served_locally,
    tracked,
)


def fresh_within(path: str, value: int, seconds: float = 5.0) -> None:
    """Request until the answer shows ``value`` (bounded): a message that reached the
    process makes the very next request fresh, so only a lost subscription fails this."""
    deadline = time.monotonic() + seconds
    while True:
        seen = body(get(path))["value"]
        if seen == value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still {seen} (not {value}) after {seconds}s: {stats()}")
        time.sleep(0.01)


@pytest.mark.django_db
def test_settings_changed_while_tracking_opens_never_keep_the_old_subscription(
    lc_backend,  # noqa: F811
    monkeypatch,
):
    """``KEY_PREFIX`` changes (``reset()``) while a thread is inside ``tracking.connect()``.

    Before the fix, ``_connect()`` installed the connections it had just opened,
    subscribed to the *old* prefix, and marked tracking healthy: every entry stored
    under the new prefix was then served locally with no message ever able to drop it.
    """
    prefix = toolkit_settings.KEY_PREFIX
    changed = override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, KEY_PREFIX=prefix + "x"))
    real_connect = tracking.connect

    def connect_then_settings_change(*args: Any, **kwargs: Any) -> Any:
        trackers = real_connect(*args, **kwargs)  # subscribed to the old prefix
        monkeypatch.setattr(tracking, "connect", real_connect)
        changed.enable()  # another thread's override_settings: local_cache.reset()
        return trackers

    monkeypatch.setattr(tracking, "connect", connect_then_settings_change)
    try:
        VALUE["lc"] = 1
        get()  # opens tracking; the settings change meanwhile
        assert toolkit_settings.KEY_PREFIX == prefix + "x"
        served_locally()
        VALUE["lc"] = 2
        bump_elsewhere(lc_backend, "lc")  # under the new prefix
        fresh_within("/v", 2)
    finally:
        changed.disable()


#: Writes ``ARGV[2]`` keys named ``ARGV[1] .. padding .. i`` (one BCAST message of them all).
_WRITE_MANY = """
local pad = string.rep('k', 200)
for i = 1, tonumber(ARGV[2]) do redis.call('SET', ARGV[1] .. pad .. i, '1') end
for i = 1, tonumber(ARGV[2]) do redis.call('UNLINK', ARGV[1] .. pad .. i) end
return 1
"""


def _tracking_client(raw: Any) -> dict[str, Any]:
    (client,) = [c for c in raw.client_list() if "t" in c["flags"]]
    return client


def _flood(lc_backend: Any, count: int) -> None:  # noqa: F811
    """Another process writes ``count`` cache keys this process never held."""
    lc_backend.raw.eval(_WRITE_MANY, 0, f"{toolkit_settings.KEY_PREFIX}:c:{{flood}}:", count)


@pytest.mark.django_db
def test_a_tracking_link_cut_by_the_servers_output_buffer_limit_is_noticed(lc_backend):  # noqa: F811
    """``client-output-buffer-limit`` closes a slow tracking client: the next request
    must see the close (drop everything) rather than serve a copy whose message was lost."""
    if lc_backend.name != "real":
        pytest.skip("one server shows it (the limit is per server)")
    raw = lc_backend.raw
    old = raw.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    VALUE["lc"] = 1
    get()
    served_locally()
    victim = _tracking_client(raw)["id"]
    raw.config_set("client-output-buffer-limit", "normal 1mb 0 0")
    try:
        deadline = time.monotonic() + 10
        while any(c["id"] == victim for c in raw.client_list()):  # until the server cuts it
            assert time.monotonic() < deadline, "the server never closed the tracking client"
            _flood(lc_backend, 20_000)
    finally:
        raw.config_set("client-output-buffer-limit", old)
    VALUE["lc"] = 2
    bump_elsewhere(lc_backend, "lc")  # its message can never arrive
    drops = stats()["drops"]
    assert body(get())["value"] == 2
    assert stats()["drops"] == drops + 1


@pytest.mark.django_db
def test_an_idle_process_does_not_make_redis_buffer_without_bound(lc_backend):  # noqa: F811
    """BCAST sends the name of every cache key written anywhere, and Redis's default
    ``client-output-buffer-limit`` (normal 0 0 0) buffers them for a client that does not
    read without bound. Draining only on the request path let an idle process make the
    server hold ~50 MB here; the background drainer reads them while no request does."""
    if lc_backend.name != "real":
        pytest.skip("one server shows it")
    local_cache._idle_paused = False  # the fixture pauses it for the request path's tests
    VALUE["lc"] = 1
    get()
    served_locally()
    tracker = _tracking_client(lc_backend.raw)["id"]
    connects, drops, drains = (stats()[k] for k in ("connects", "drops", "drains"))
    # The process now serves nothing while others write ~50 MB of cache key names.
    for _ in range(8):
        _flood(lc_backend, 15_000)
    deadline = time.monotonic() + 30  # a bound only: the drainer runs every half heartbeat
    while int(_tracking_client(lc_backend.raw)["omem"]) >= 1024 * 1024:
        assert time.monotonic() < deadline, f"Redis still holds {_tracking_client(lc_backend.raw)}"
        time.sleep(0.05)
    # Read by the idle drainer, on the same connection: no request drained, none cut.
    assert stats()["drains"] == drains and stats()["idle_drains"] > 0
    assert _tracking_client(lc_backend.raw)["id"] == tracker
    assert (stats()["connects"], stats()["drops"]) == (connects, drops)
    served_locally()


@pytest.mark.django_db
def test_the_idle_drainer_applies_what_it_reads(lc_backend):  # noqa: F811
    """The background drainer does not just empty the socket: each message it reads
    drops the copy, so the next request (which then finds nothing to drain) misses."""
    local_cache._idle_paused = False
    get()
    for round_ in range(1, 4):
        VALUE["lc"] = round_
        served_locally()
        VALUE["lc"] = round_ * 10
        idle = stats()["idle_drains"]
        bump_elsewhere(lc_backend, "lc")
        deadline = time.monotonic() + 10  # a bound only
        while not (stats()["idle_drains"] > idle and _nothing_unread()):
            assert time.monotonic() < deadline, stats()
            time.sleep(0.01)
        hits = stats()["hits"]
        response = get()
        assert (response["X-Cache"], body(response)["value"]) == ("MISS", round_ * 10)
        assert stats()["hits"] == hits


def _nothing_unread() -> bool:
    socks = [t.connection._sock for t in local_cache._trackers]
    return bool(socks) and not select.select(socks, [], [], 0)[0]


@pytest.mark.django_db
def test_the_memory_of_recent_invalidations_stays_within_the_cap(lc_backend):  # noqa: F811
    """``LOCAL_CACHE_MAX_BYTES`` caps what the process holds. Besides the copies, it
    remembers recent invalidations (rule 2), and BCAST brings it every cache key written
    anywhere: before the fix that memory went to 100 000 keys whatever the cap (tens of
    MB with long keys), counted nowhere."""
    import tracemalloc

    if lc_backend.name != "real":
        pytest.skip("one server shows it")
    cap = 1024 * 1024
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_MAX_BYTES=cap)):
        VALUE["lc"] = 1
        get()
        served_locally()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            _flood(lc_backend, 40_000)  # ~9 MB of key names this process never held
            get()  # drains them
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert stats()["drops"] == 0
        assert grown < cap, f"{grown} bytes held after the messages were applied"


@pytest.mark.slow
@pytest.mark.django_db
def test_a_graceful_failover_never_leaves_tracking_on_the_demoted_master(
    cluster_with_replicas, monkeypatch
):
    """A graceful fail-over (``CLUSTER FAILOVER``) does not break the tracking connection:
    the old master, now a replica, keeps it open and answers ``PING``, while writes go to
    the new master and reach the old one only through replication. Local hits make no
    Redis call, so the cluster client never gets a ``MOVED`` either. With replication
    stalled (``CLIENT PAUSE WRITE`` on the demoted node) the old copy was served for as
    long as the stall lasted, until the heartbeat read a key of a slot the node should
    master (``tracking._probe_key``): the demoted node answers ``MOVED``, every copy is
    dropped. Failed before that, 2 runs out of 2."""
    import math

    from redis.cluster import RedisCluster

    from drf_redis_toolkit import keys as keyspace
    from drf_redis_toolkit.cache_stats import counters

    monkeypatch.setattr(counters, "_due", math.inf)  # no incidental MOVED from a stats flush
    cluster = cluster_with_replicas
    settings = {
        "REDIS_URL": cluster.url,
        "CLUSTER": True,
        "LOCAL_CACHE": True,
        "LOCAL_CACHE_HEARTBEAT": 1.0,
        "SOCKET_TIMEOUT": 0.5,
    }
    raw = RedisCluster.from_url(cluster.url)
    try:
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            VALUE["lc"] = 1
            get()
            served_locally()
            owner = raw.get_node_from_key(keyspace.generation_key("lc"))
            old = next(n for n in cluster.nodes if n.port == owner.port).client()
            replica = next(
                n.client()
                for n in cluster.nodes
                if n.client().execute_command("ROLE")[0] in (b"slave", "slave")
                and int(n.client().execute_command("ROLE")[2]) == owner.port
            )
            deadline = time.monotonic() + 60
            while old.execute_command("ROLE")[0] not in (b"slave", "slave"):
                assert time.monotonic() < deadline, "the fail-over never completed"
                if replica.execute_command("ROLE")[3] in (b"connected", "connected"):
                    replica.execute_command("CLUSTER", "FAILOVER")  # retried while it waits
                    wait = time.monotonic() + 5
                    while time.monotonic() < wait and old.execute_command("ROLE")[0] not in (
                        b"slave",
                        "slave",
                    ):
                        served_locally()  # a busy process: its heartbeat stays proven
                else:
                    served_locally()
            old.execute_command("CLIENT", "PAUSE", 20000, "WRITE")  # replication stalls
            try:
                VALUE["lc"] = 2
                writer = RedisCluster.from_url(cluster.url)  # knows the new master
                try:
                    bump_elsewhere(type("B", (), {"raw": writer}), "lc")
                finally:
                    writer.close()
                served_locally()
                fresh_within("/v", 2, seconds=5.0)  # five heartbeats
            finally:
                old.execute_command("CLIENT", "UNPAUSE")
    finally:
        raw.close()
