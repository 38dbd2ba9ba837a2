"""The shared connection and circuit breaker, against real ``redis-server`` processes."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import redis
from django.test import override_settings
from rest_framework.test import APIRequestFactory

from drf_redis_toolkit import connection
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.connection import (
    CircuitBreaker,
    get_client,
    guarded,
    reset_stats,
    stats,
)
from drf_redis_toolkit.exceptions import RedisUnavailable
from tests import servers
from tests.fault_views import CachedView, ThrottledView

factory = APIRequestFactory()


@pytest.fixture
def own_server(redis_server):
    """A real redis-server this test may stop, freeze and restart."""
    server = servers.start_redis()
    try:
        yield server
    finally:
        server.stop()


def test_breaker_opens_then_lets_one_probe_through():
    now = [100.0]
    breaker = CircuitBreaker(5, clock=lambda: now[0])
    assert breaker.allow()
    assert breaker.record_failure() is True
    assert breaker.record_failure() is False  # already open: log once per trip
    assert not breaker.allow()
    now[0] += 4.9
    assert not breaker.allow()
    now[0] += 0.2
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else keeps skipping
    breaker.record_success()
    assert breaker.allow() and breaker.allow()


def test_breaker_with_zero_cooldown_never_skips():
    breaker = CircuitBreaker(0)
    breaker.record_failure()
    assert breaker.allow()


def test_connection_is_rebuilt_when_the_url_changes(redis_server, own_server):
    with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": redis_server.url}):
        redis_client.set("where", "first")
        first = get_client()
        with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": own_server.url}):
            assert get_client() is not first
            assert redis_client.get("where") is None
            redis_client.set("where", "second")
        assert redis_client.get("where") == "first"


def test_ping_is_false_quickly_when_redis_is_stopped(own_server):
    with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": own_server.url}):
        assert redis_client.ping() is True
        own_server.stop()
        reset_stats()
        assert redis_client.ping() is False
        # Refused at once: a connection failure, not a wait for a socket timeout.
        assert stats() == {"failures": 1, "timeouts": 0, "skips": 0}


def test_a_hung_redis_costs_one_timeout_then_the_breaker_skips(own_server):
    settings = {"REDIS_URL": own_server.url, "SOCKET_TIMEOUT": 0.2, "CIRCUIT_BREAKER_COOLDOWN": 30}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        redis_client.set("k", 1)
        reset_stats()
        own_server.pause()
        try:
            with pytest.raises(RedisUnavailable) as info:
                redis_client.get("k")
            assert isinstance(info.value.__cause__, redis.TimeoutError)
            after_first = stats()
            for _ in range(20):
                with pytest.raises(RedisUnavailable, match="circuit breaker"):
                    redis_client.get("k")
            assert redis_client.ping() is False
            after_rest = stats()
        finally:
            own_server.resume()
    # One socket timeout for the first call, none for the next twenty: they were skipped.
    assert after_first == {"failures": 1, "timeouts": 1, "skips": 0}
    assert after_rest == {"failures": 1, "timeouts": 1, "skips": 21}


def test_calls_recover_after_the_cooldown(own_server):
    settings = {"REDIS_URL": own_server.url, "CIRCUIT_BREAKER_COOLDOWN": 0.5}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        redis_client.set("k", 1)
        own_server.stop()
        with pytest.raises(RedisUnavailable):
            redis_client.get("k")
        with pytest.raises(RedisUnavailable, match="circuit breaker"):
            redis_client.get("k")
        own_server.restart()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                assert redis_client.get("k") is None  # a new, empty server
                break
            except RedisUnavailable:
                time.sleep(0.05)
        else:
            pytest.fail("the client did not recover after the cool-down")
        assert not connection.get_breaker().is_open


def test_errors_that_are_not_about_reaching_redis_pass_through(real_backend):
    import redis

    real_backend.raw.lpush("drt:a-list", 1)
    with pytest.raises(redis.ResponseError):
        redis_client.get("a-list")
    assert not connection.get_breaker().is_open


def _child_uses_the_client(url, queue):
    from django.test import override_settings as child_override

    with child_override(DRF_REDIS_TOOLKIT={"REDIS_URL": url}):
        queue.put(redis_client.incr("forked"))


def test_fork_safe(real_backend):
    redis_client.set("forked", 0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [
        ctx.Process(target=_child_uses_the_client, args=(real_backend.server.url, queue))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=20)
    assert sorted(queue.get(timeout=5) for _ in children) == [1, 2, 3, 4]
    assert redis_client.get("forked") == 4


def test_guarded_yields_the_shared_client(real_backend):
    with guarded() as first, guarded() as second:
        assert first is second


# -- a Redis that is not there yet when the process starts ---------------------------------


def _assert_redis_is_treated_as_missing() -> None:
    """Every way in: no exception but ``RedisUnavailable``, no 500."""
    assert redis_client.ping() is False
    with pytest.raises(RedisUnavailable):
        redis_client.get("k")
    with pytest.raises(RedisUnavailable):
        with guarded():
            pass
    assert ThrottledView.as_view()(factory.get("/t")).status_code == 200  # FAIL_OPEN
    cached = CachedView.as_view()(factory.get("/c"))
    assert cached.status_code == 200 and cached["X-Cache"] == "MISS"
    with override_settings(DRF_REDIS_TOOLKIT={**_current_settings(), "FAIL_OPEN": False}):
        assert ThrottledView.as_view()(factory.get("/t")).status_code == 503


def _startup_status() -> int:
    return ThrottledView.as_view()(factory.get("/t", HTTP_X_CLIENT="startup")).status_code


def _current_settings() -> dict:
    from django.conf import settings

    return dict(settings.DRF_REDIS_TOOLKIT)


def _wait_until_connected(limit: float = 20.0) -> None:
    """Bounded wait for the same process (no reset, no restart) to reach the new Redis."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            redis_client.set("k", "v")
            if redis_client.get("k") == "v":
                return
        except RedisUnavailable:
            pass
        time.sleep(0.05)
    pytest.fail(f"the process did not connect within {limit} s of Redis starting")


def test_a_cluster_started_after_the_process_is_joined_without_a_restart(redis_server):
    ports = [servers.free_port(cluster_bus=True) for _ in range(3)]
    url = f"redis://127.0.0.1:{ports[0]}/0"
    settings = {"REDIS_URL": url, "CLUSTER": True, "CIRCUIT_BREAKER_COOLDOWN": 0.2}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        _assert_redis_is_treated_as_missing()
        cluster = servers.start_cluster(masters=3, ports=ports)
        try:
            _wait_until_connected()
            assert redis_client.ping() is True
            assert connection.is_cluster(get_client())
            statuses = [_startup_status() for _ in range(3)]
            assert statuses == [200, 200, 200]  # counted in the cluster now (3/min)
            assert _startup_status() == 429
            assert CachedView.as_view()(factory.get("/c"))["X-Cache"] == "MISS"
            assert CachedView.as_view()(factory.get("/c"))["X-Cache"] == "HIT"
        finally:
            cluster.stop()


def test_every_cluster_node_down_is_redis_unavailable_then_recovers(redis_server):
    """The client was built, then every node went away: re-reading the slot map fails."""
    cluster = servers.start_cluster(masters=3)
    ports = [node.port for node in cluster.nodes]
    settings = {"REDIS_URL": cluster.url, "CLUSTER": True, "CIRCUIT_BREAKER_COOLDOWN": 0.2}
    try:
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            redis_client.set("k", "v")
            cluster.stop()
            for _ in range(3):  # the breaker's first failure, then probes after cool-downs
                _assert_redis_is_treated_as_missing()
                time.sleep(0.25)
            cluster = servers.start_cluster(masters=3, ports=ports)
            _wait_until_connected()
    finally:
        cluster.stop()


def test_after_a_cluster_outage_every_master_is_reached_again(redis_server):
    """redis-py < 7 forgets the node it could not reach (its startup-node dict is its node
    cache) while its slot map still routes keys there; the probe re-reads the topology
    (``refresh_cluster_nodes``), so commands sent to every master reach all three again."""
    cluster = servers.start_cluster(masters=3)
    settings = {
        "REDIS_URL": cluster.url,
        "CLUSTER": True,
        "SOCKET_TIMEOUT": 0.2,
        "CIRCUIT_BREAKER_COOLDOWN": 0.2,
    }
    try:
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            names = [f"outage:{n}" for n in range(30)]  # spread over the three masters
            for name in names:
                redis_client.set(name, "v")
            for node in cluster.nodes:
                node.pause()  # frozen: the next call times out, redis-py drops a node
            try:
                with pytest.raises(RedisUnavailable):
                    redis_client.get("outage:0")
            finally:
                for node in cluster.nodes:
                    node.resume()
            _wait_until_connected()
            masters = {f"127.0.0.1:{node.port}" for node in cluster.nodes}
            assert {node.name for node in get_client().get_primaries()} == masters
            # SCAN runs on every master: each key is found, wherever its slot lives.
            assert redis_client.clear_pattern("outage:*") == len(names)
            # A script new to the cluster is loaded on every master (SCRIPT LOAD) and runs
            # on the keys of each (one generation key per namespace, spread over the slots).
            from drf_redis_toolkit.generations import bump_generations

            assert len(bump_generations(*(f"ns{n}" for n in range(30)))) == 30
    finally:
        cluster.stop()


def test_a_standalone_redis_started_after_the_process_is_reached(redis_server):
    port = servers.free_port()
    settings = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "CIRCUIT_BREAKER_COOLDOWN": 0.2}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        _assert_redis_is_treated_as_missing()
        server = servers.start_redis(port=port)
        try:
            _wait_until_connected()
        finally:
            server.stop()


def test_no_sentinel_reachable_is_redis_unavailable_then_recovers(redis_server):
    port = servers.free_port()
    settings = {
        "SENTINELS": [("127.0.0.1", port)],
        "SENTINEL_SERVICE_NAME": "drtstartup",
        "CIRCUIT_BREAKER_COOLDOWN": 0.2,
    }
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        _assert_redis_is_treated_as_missing()
        setup = servers.start_sentinel_setup("drtstartup", sentinel_port=port)
        try:
            _wait_until_connected()
            assert setup.master.client().get("drt:k") == b'"v"'  # via the Sentinel's master
        finally:
            setup.stop()


def _refuses_to_build():
    from redis.exceptions import RedisClusterException

    raise RedisClusterException("Redis Cluster cannot be connected. (from a factory)")


def test_a_connection_factory_that_cannot_connect_is_redis_unavailable():
    settings = {"CONNECTION_FACTORY": _refuses_to_build, "CIRCUIT_BREAKER_COOLDOWN": 30}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        with pytest.raises(RedisUnavailable, match="cannot be connected"):
            redis_client.get("k")
        with pytest.raises(RedisUnavailable, match="circuit breaker"):
            redis_client.get("k")  # not built again before the cool-down
        assert connection.get_breaker().is_open
