"""The fault proxy against a real redis-server, then the toolkit through each fault.

First half: each fault is observable from redis-py as the failure it imitates
(added latency, a reset in the middle of a reply, a timeout, EOF, a refused node),
on a standalone server and on one node of a 3-master cluster while the other
nodes keep answering. Second half: the toolkit behind the proxy, standalone and
cluster: during each fault no exception but ``RedisUnavailable`` leaves a toolkit
API, views answer 200 (a miss, ``FAIL_OPEN``), the breaker opens; once the fault
is cleared the cache serves HITs and the throttle answers 429 again by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from django.test import override_settings
from redis.cluster import RedisCluster
from rest_framework.test import APIRequestFactory

from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.connection import get_breaker, reset_connection
from drf_redis_toolkit.exceptions import RedisUnavailable
from tests import servers
from tests.conftest import _unavailable
from tests.fault_views import CachedView, ThrottledView  # 3/min per X-Client
from tests.faultproxy import Fault, FaultProxy, Proxied, proxied_cluster, proxied_redis

pytestmark = pytest.mark.slow
factory = APIRequestFactory()
TIMEOUT = 0.2


@pytest.fixture(scope="module")
def standalone() -> Iterator[Proxied]:
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    setup = proxied_redis(seed=7)
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Proxied]:
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    setup = proxied_cluster(seed=7)
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture(params=["real", "cluster"])  # ids as the backend fixture's, for the summary
def proxied(request: pytest.FixtureRequest) -> Iterator[Proxied]:
    name = "standalone" if request.param == "real" else "cluster"
    setup: Proxied = request.getfixturevalue(name)
    setup.clear()
    setup.server.flushall() if setup.is_cluster else setup.server.client().flushall()
    yield setup
    setup.clear()


@pytest.fixture
def single(standalone: Proxied) -> Iterator[Proxied]:
    standalone.clear()
    yield standalone
    standalone.clear()


def _raw(setup: Proxied) -> redis.Redis:
    return redis.Redis.from_url(setup.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)


# -- the proxy itself ----------------------------------------------------------------------


def test_traffic_goes_through_the_proxy_and_is_counted(single: Proxied) -> None:
    proxy = single.proxies[0]
    client = _raw(single)
    before = (proxy.connections, proxy.bytes_up, proxy.bytes_down)
    assert client.set("through", "x" * 1000) and client.get("through") == b"x" * 1000
    assert proxy.connections == before[0] + 1
    assert proxy.bytes_up - before[1] > 1000 and proxy.bytes_down - before[2] > 1000
    client.close()


def test_latency_and_jitter_are_added_to_each_reply_and_seeded(single: Proxied) -> None:
    proxy = single.proxies[0]
    client = _raw(single)
    client.ping()
    proxy.set_fault("latency", ms=60, jitter_ms=30)
    delayed = len(proxy.delays_ms)
    for _ in range(3):
        assert client.ping()
    # One delay per reply, each the fixed part plus a jitter within its bound (the proxy
    # records what it slept: the test asserts the fault applied, not the clock).
    added = proxy.delays_ms[delayed:]
    assert len(added) == 3 and all(60 <= ms <= 90 for ms in added), added
    assert len(set(added)) == 3  # jittered, not one fixed value
    proxy.set_fault("latency", ms=TIMEOUT * 1000 + 100)
    with pytest.raises(redis.TimeoutError):
        client.ping()
    client.close()
    first, second = FaultProxy(1, seed=3), FaultProxy(1, seed=3)
    assert [first.rng.random() for _ in range(5)] == [second.rng.random() for _ in range(5)]


def test_reset_cuts_a_reply_in_the_middle_with_a_rst(single: Proxied) -> None:
    proxy = single.proxies[0]
    client = redis.Redis.from_url(single.url, socket_timeout=TIMEOUT, retry=None)
    client.set("big", "y" * 5000)
    sent_before, resets_before = proxy.bytes_down, proxy.resets
    proxy.set_fault("reset")
    with pytest.raises(redis.ConnectionError, match="reset by peer"):
        client.get("big")
    assert proxy.resets == resets_before + 1
    assert 0 < proxy.bytes_down - sent_before < 5000  # part of the reply went out, not all
    proxy.clear()
    assert client.get("big") == b"y" * 5000  # a new connection works again
    client.close()


@pytest.mark.parametrize(
    "kind, error, match",
    [
        ("blackhole", redis.TimeoutError, "Timeout"),  # accepted, never answered
        ("half_close", redis.ConnectionError, "closed by server"),  # EOF
        ("cut", redis.ConnectionError, None),  # reset, open connections and new ones
    ],
)
def test_each_failure_is_seen_on_open_and_new_connections_until_cleared(
    single: Proxied, kind: str, error: type[Exception], match: str | None
) -> None:
    proxy = single.proxies[0]
    client = redis.Redis.from_url(single.url, socket_timeout=TIMEOUT, retry=None)
    client.ping()
    proxy.set_fault(kind)
    connections = proxy.connections
    for _ in range(2):  # the open connection, then a fresh one
        with pytest.raises(error, match=match):
            client.ping()
    assert proxy.connections > connections  # the fresh connection was accepted
    proxy.clear()
    assert client.ping()
    client.close()


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("flood")


def test_cluster_clients_stay_behind_the_proxies_and_one_node_can_be_cut(
    cluster: Proxied,
) -> None:
    client = RedisCluster.from_url(cluster.url, socket_timeout=TIMEOUT)
    proxy_ports = {proxy.port for proxy in cluster.proxies}
    assert {node.port for node in client.get_nodes()} == proxy_ports
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        client.set(key, key)
    assert all(proxy.bytes_down > 0 for proxy in cluster.proxies)
    cut = cluster.proxies[1]
    cut_port = cut.port
    on_cut = {k for k in keys if client.get_node_from_key(k).port == cut_port}
    assert 0 < len(on_cut) < len(keys)
    cut.set_fault("cut")
    for key in sorted(set(keys) - on_cut):
        assert client.get(key) == key.encode()  # the other nodes keep answering
    for key in sorted(on_cut)[:3]:
        with pytest.raises((redis.ConnectionError, redis.exceptions.ClusterError)):
            client.get(key)
    cut.clear()
    deadline = time.monotonic() + 10
    while True:  # redis-py may have dropped the node from its map: wait for it back
        try:
            assert client.get(sorted(on_cut)[0]) is not None
            break
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            assert time.monotonic() < deadline, "the cut node did not come back"
            time.sleep(0.1)
    client.close()


# -- the toolkit through each fault ----------------------------------------------------------


FAULTS = {
    "latency-over-timeout": {"kind": "latency", "ms": TIMEOUT * 1000 + 150, "jitter_ms": 50},
    "reset": {"kind": "reset"},
    "blackhole": {"kind": "blackhole"},
    "half_close": {"kind": "half_close"},
    "cut": {"kind": "cut"},
}


def _apply(setup: Proxied, fault: dict, *, one_node: bool = False) -> None:
    params = dict(fault)
    kind = params.pop("kind")
    for proxy in setup.proxies[1:2] if one_node else setup.proxies:
        proxy.set_fault(kind, **params)


def _toolkit_calls(statuses: list[int]) -> int:
    """One round of everything a request does; returns how many raised RedisUnavailable."""
    statuses.append(ThrottledView.as_view()(factory.get("/t", HTTP_X_CLIENT="fresh")).status_code)
    statuses.append(ThrottledView.as_view()(factory.get("/t", HTTP_X_CLIENT="heavy")).status_code)
    statuses.append(CachedView.as_view()(factory.get("/c")).status_code)
    unavailable = 0
    for key in ("a", "b", "c", "d", "e", "f"):
        try:
            redis_client.set(f"fault:{key}", key)
            redis_client.get(f"fault:{key}")
        except RedisUnavailable:
            unavailable += 1
    assert redis_client.ping() in (True, False)
    return unavailable


def _settings(setup: Proxied) -> dict:
    return {
        "REDIS_URL": setup.url,
        "CLUSTER": setup.is_cluster,
        "SOCKET_TIMEOUT": TIMEOUT,
        "SOCKET_CONNECT_TIMEOUT": TIMEOUT,
        "CIRCUIT_BREAKER_COOLDOWN": 0.3,
    }


def _recovers(setup: Proxied) -> None:
    """Wait (bounded) until the cache serves a HIT and the heavy client gets 429 again."""
    deadline = time.monotonic() + 15
    while True:
        CachedView.as_view()(factory.get("/c"))
        cached = CachedView.as_view()(factory.get("/c"))
        throttled = ThrottledView.as_view()(factory.get("/t", HTTP_X_CLIENT="heavy"))
        if cached["X-Cache"] == "HIT" and throttled.status_code == 429:
            assert not get_breaker().is_tripped
            return
        assert time.monotonic() < deadline, (cached["X-Cache"], throttled.status_code)
        time.sleep(0.05)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_toolkit_degrades_and_recovers_through_each_fault(proxied: Proxied, fault: str):
    with override_settings(DRF_REDIS_TOOLKIT=_settings(proxied)):
        reset_connection()
        view = ThrottledView.as_view()
        assert [view(factory.get("/t", HTTP_X_CLIENT="heavy")).status_code for _ in range(4)] == [
            200,
            200,
            200,
            429,
        ]
        _apply(proxied, FAULTS[fault])
        statuses: list[int] = []
        unavailable = 0
        tripped = False
        for _ in range(8):  # bounded in count; the cool-down lets some rounds probe
            unavailable += _toolkit_calls(statuses)
            tripped = tripped or get_breaker().is_tripped
            time.sleep(0.1)
        assert set(statuses) == {200}  # FAIL_OPEN for both clients, the cache a miss
        assert unavailable > 0 and tripped
        assert redis_client.ping() is False
        proxied.clear()
        _recovers(proxied)
        reset_connection()


def test_cluster_one_node_cut_off_degrades_and_recovers(cluster: Proxied) -> None:
    cluster.clear()
    cluster.server.flushall()
    with override_settings(DRF_REDIS_TOOLKIT=_settings(cluster)):
        reset_connection()
        view = ThrottledView.as_view()
        assert [view(factory.get("/t", HTTP_X_CLIENT="heavy")).status_code for _ in range(4)][
            -1
        ] == 429
        _apply(cluster, FAULTS["cut"], one_node=True)
        statuses: list[int] = []
        unavailable = 0
        for _ in range(8):
            unavailable += _toolkit_calls(statuses)
            time.sleep(0.1)
        assert set(statuses) <= {200, 429}  # 429: the heavy client's node still answers
        assert unavailable > 0  # keys on the cut node
        cluster.clear()
        _recovers(cluster)
        reset_connection()


def test_latency_under_the_timeout_only_slows_the_toolkit(proxied: Proxied) -> None:
    with override_settings(DRF_REDIS_TOOLKIT=_settings(proxied)):
        reset_connection()
        _apply(proxied, {"kind": "latency", "ms": 30, "jitter_ms": 20})
        CachedView.as_view()(factory.get("/c"))
        assert CachedView.as_view()(factory.get("/c"))["X-Cache"] == "HIT"
        view = ThrottledView.as_view()
        statuses = [view(factory.get("/t", HTTP_X_CLIENT="slow")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert not get_breaker().is_tripped
        reset_connection()


def _key_on(setup: Proxied, index: int) -> str:
    """A ``redis_client`` key (without the prefix) whose slot is on node ``index``."""
    from drf_redis_toolkit.connection import get_client

    client = get_client()
    port = setup.proxies[index].port
    return next(
        f"on-node:{n}" for n in range(10000)
        if client.get_node_from_key(f"drt:on-node:{n}").port == port
    )  # fmt: skip


@pytest.mark.parametrize("index", [0, 1], ids=["startup-node", "other-node"])
def test_one_call_to_a_hung_cluster_node_is_sent_once(cluster: Proxied, index: int) -> None:
    """A node that does not answer costs one ``SOCKET_TIMEOUT``: its command is never retried.

    (A refused node is retried once, to follow a fail-over: tests/test_failover.py.)
    The startup node (the one ``REDIS_URL`` names) is the case where re-reading the
    slot map after the timeout could ask the hung node again.
    """
    from drf_redis_toolkit.connection import reset_stats, stats

    cluster.clear()
    with override_settings(DRF_REDIS_TOOLKIT=_settings(cluster)):
        reset_connection()
        key = _key_on(cluster, index)
        redis_client.set(key, 1)
        victim = cluster.proxies[index]
        victim.set_fault("blackhole")
        before = victim.swallowed
        reset_stats()
        try:
            with pytest.raises(RedisUnavailable):
                redis_client.get(key)
            attempts = victim.swallowed - before
            timeouts = stats()["timeouts"]
        finally:
            cluster.clear()
            reset_connection()
    assert attempts == 1, f"the command reached the hung node {attempts} times"
    assert timeouts == 1, stats
