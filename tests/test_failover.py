"""Fail-over: the toolkit follows a Sentinel promotion and a Redis Cluster replica take-over.

Real processes on loopback: a master, a replica and a Sentinel; a 3-master cluster
with one replica each. The master is killed with SIGKILL while the toolkit is in
use; the test then polls (bounded) until the toolkit works again without
rebuilding anything by hand, and checks the data that had been replicated.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import pytest
from django.test import override_settings

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.rates import parse_rate
from tests import servers
from tests.conftest import _unavailable

pytestmark = pytest.mark.slow
LIMITS = parse_rate("100/min")


def _kill(process: servers.RedisProcess) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.process.wait(timeout=10)


def _until_working(action, seconds: float = 30.0) -> tuple[object, int]:
    """Call ``action`` until it stops raising ``RedisUnavailable``; return (result, failures)."""
    failures = 0
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action(), failures
        except RedisUnavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def sentinel_setup():
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    setup = servers.start_sentinel_setup()
    try:
        yield setup
    finally:
        setup.stop()


def test_sentinel_failover_is_followed(sentinel_setup):
    settings = {
        "SENTINELS": sentinel_setup.sentinels,
        "SENTINEL_SERVICE_NAME": sentinel_setup.service_name,
        "CIRCUIT_BREAKER_COOLDOWN": 0.2,
        "SOCKET_TIMEOUT": 0.5,
    }
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        redis_client.set("before", {"v": 1}, timeout=None)
        for _ in range(3):
            assert ratelimit.decide(ratelimit.LOG, "fo", "client", LIMITS).allowed
        master = sentinel_setup.master.client()
        deadline = time.monotonic() + 20
        while master.wait(1, 1000) != 1:  # the replica has everything so far
            assert time.monotonic() < deadline, "the replica never acknowledged the writes"
        master.close()

        _kill(sentinel_setup.master)
        _, failures = _until_working(lambda: redis_client.set("after", 2), seconds=40)

        assert redis_client.get("before") == {"v": 1}
        assert redis_client.get("after") == 2
        decision = ratelimit.decide(ratelimit.LOG, "fo", "client", LIMITS)
        assert decision.allowed and decision.limits[0].remaining == 100 - 4
        promoted = redis_client.client.connection_pool.get_master_address()
        assert promoted[1] == sentinel_setup.replica.port
    print(f"\nSentinel fail-over: {failures} calls refused while the replica was promoted")


def _role(node: servers.RedisProcess) -> str:
    client = node.client(socket_timeout=1)
    try:
        role = client.execute_command("ROLE")[0]
    finally:
        client.close()
    return role.decode() if isinstance(role, bytes) else role


def _until_replicated(master: servers.RedisProcess, seconds: float = 30) -> None:
    """Wait (bounded) until a replica acknowledged every write ``master`` took.

    ``WAIT`` blocks in the server for up to its own timeout (a replica that is
    still syncing acknowledges nothing), so the socket's timeout is longer than
    that; and a timed-out ``WAIT`` is not retried: redis-py 6+ retries a command
    after a socket timeout by default, 5.x does not.
    """
    client = master.client(socket_timeout=3)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if client.execute_command("WAIT", 1, 1000) >= 1:
                return
    finally:
        client.close()
    pytest.fail(f"no replica of {master.port} caught up within {seconds} s")


def test_cluster_failover_is_followed_without_a_restart(cluster_with_replicas):
    cluster = cluster_with_replicas
    settings = {
        "REDIS_URL": cluster.url,
        "CLUSTER": True,
        "CIRCUIT_BREAKER_COOLDOWN": 0.2,
        "SOCKET_TIMEOUT": 0.5,
    }
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        redis_client.set_many({f"item:{i}": i for i in range(60)}, timeout=None)
        for i in range(20):
            assert ratelimit.decide(ratelimit.LOG, "fo", f"client{i}", LIMITS).allowed
        raw = redis_client.client
        # Kill the master that owns client0's throttle key (and, if it is, the startup node).
        key = keyspace.throttle_key(ratelimit.LOG, "fo", "client0")
        owner = raw.get_node_from_key(key)
        victim = next(n for n in cluster.nodes if n.port == owner.port)
        assert _role(victim) == "master"
        for node in cluster.nodes:
            if _role(node) == "master":
                _until_replicated(node)

        _kill(victim)
        decision, failures = _until_working(
            lambda: ratelimit.decide(ratelimit.LOG, "fo", "client0", LIMITS), seconds=40
        )

        assert decision.allowed
        assert decision.limits[0].remaining == 100 - 2  # the replica had the first request
        # Other nodes may report the cluster down for a moment longer: bounded retries.
        items, more = _until_working(
            lambda: redis_client.get_many([f"item:{i}" for i in range(60)]), seconds=30
        )
        failures += more
        assert items == {f"item:{i}": i for i in range(60)}
        assert _until_working(lambda: redis_client.clear_pattern("item:*"), seconds=30)[0] == 60
    print(f"\nCluster fail-over: {failures} calls refused while the replica took over")


def test_cluster_failover_under_load_behind_the_sample_api(cluster_with_replicas, capsys):
    """Kill a master while gunicorn serves the sample API on the cluster: no 5xx, then it heals."""
    import json
    import threading

    from tests.sample_server import SAMPLE, http, metric_samples, sample_api
    from tests.workers import Workers

    cluster = cluster_with_replicas
    # /metrics adds up every worker's state (gunicorn's multi-process mode): the
    # breaker gauge is the worst live worker's, which is what the throttles below need.
    multiproc = tempfile.mkdtemp(prefix="drt-prom-")
    env = {
        "REDIS_CLUSTER": "1",
        "SHOP_RATE_ANON": "100000/hour",
        "SHOP_RATE_USER": "100000/hour",
        "SHOP_RATE_CART_WRITE": "2/min",
        "PROMETHEUS_MULTIPROC_DIR": multiproc,
        "GUNICORN_CMD_ARGS": f"--config {SAMPLE / 'config' / 'gunicorn.conf.py'}",
    }

    def worst_breaker() -> float:
        text = http(base + "/metrics")[1].decode()
        states = metric_samples(text, "drf_redis_toolkit_circuit_breaker_state")
        return max(states.values(), default=-1.0)

    def redis_errors() -> float:
        text = http(base + "/metrics")[1].decode()
        return sum(metric_samples(text, "drf_redis_toolkit_redis_errors_total").values())

    with sample_api(cluster.url, workers=2, threads=2, env=env) as base:
        ids = [p["id"] for p in json.loads(http(base + "/api/products/")[1])["results"]]
        statuses: list[int] = []
        stop = threading.Event()

        def reader(offset: int) -> None:
            n = offset
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline:
                statuses.append(http(base + f"/api/products/{ids[n % len(ids)]}/")[0])
                n += 1

        readers = Workers(reader, 2, "reader").start()
        try:
            deadline = time.monotonic() + 30
            while len(statuses) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)  # the load is running before the kill
            masters = [n for n in cluster.nodes if _role(n) == "master"]
            for node in masters:  # every replica in sync before the kill
                client = node.client(socket_timeout=6)
                client.execute_command("WAIT", 1, 5000)
                client.close()
            # Not the startup node named by REDIS_URL: this test is about the fail-over.
            victim = next(n for n in masters if n.port != cluster.nodes[0].port)
            _kill(victim)
            killed_at = len(statuses)
            survivors = [n for n in cluster.nodes if n is not victim]
            servers._wait_cluster_ok(survivors, timeout=45)  # the replica has taken over
            # Heal: a detail is cached again (MISS then HIT) once the replica took over.
            detail = base + f"/api/products/{ids[0]}/"
            deadline = time.monotonic() + 60
            healed = False
            while time.monotonic() < deadline and not healed:
                http(detail)
                healed = http(detail)[2].get("X-Cache") == "HIT"
                time.sleep(0.2)
            assert healed, "the cache did not come back after the fail-over"
            after_heal = len(statuses)
            deadline = time.monotonic() + 30
            while len(statuses) < after_heal + 10 and time.monotonic() < deadline:
                time.sleep(0.05)  # the load goes on past the healing
            # One worker healed; the other may have failed later and still be inside
            # its breaker's cooldown (5 s), when a throttle fails open by design
            # (FAIL_OPEN). The readers keep both workers probing: wait (bounded) until
            # no live worker's breaker is open before judging the throttles.
            deadline = time.monotonic() + 30
            while worst_breaker() != 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert worst_breaker() == 0, "a worker's circuit breaker stayed open"
        finally:
            stop.set()
            readers.join(timeout=30)
        # Every phase ran: reads before the kill, between the kill and the healing, and after.
        assert 0 < killed_at < after_heal < len(statuses), (killed_at, after_heal, len(statuses))
        # Throttles work again: cart writes at 2/min, the third is refused.
        login = {"username": "demo1", "password": "demo-pass"}
        token = json.loads(http(base + "/api/auth/token/", "POST", login)[1])["token"]
        item = {"product": ids[1], "quantity": 1}
        errors_before = redis_errors()
        answers = [http(base + "/api/cart/items/", "POST", item, token) for _ in range(3)]
        # No Redis error during the burst, so no decision below can have failed open.
        errors_during = redis_errors() - errors_before
    shutil.rmtree(multiproc, ignore_errors=True)
    assert errors_during == 0, f"{errors_during} Redis errors during the cart-write burst"
    assert all(s == 200 for s in statuses), sorted(set(statuses))
    burst = [answer[0] for answer in answers]
    # A counted decision carries its headers; one that failed open carries none.
    remaining = [answer[2].get("X-RateLimit-Remaining") for answer in answers]
    assert burst[2] == 429 and all(s in (200, 201) for s in burst[:2]), (burst, remaining)
    assert remaining[:2] == ["1", "0"], remaining
    with capsys.disabled():
        print(
            f"\nCluster fail-over under load: {len(statuses)} reads ({len(statuses) - killed_at} "
            f"after the kill), all 200; throttle answers after healing {burst}"
        )
