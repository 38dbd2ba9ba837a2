"""A slow Redis and a full Redis: bounded waits, no 500s, throttles never over-admit when closed."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings
from rest_framework.test import APIRequestFactory

from drf_redis_toolkit import connection
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable
from tests import servers
from tests.fault_views import CachedView, ThrottledView

factory = APIRequestFactory()
pytestmark = pytest.mark.slow


@pytest.fixture
def server(redis_server):
    process = servers.start_redis(["--enable-debug-command", "yes"])
    try:
        yield process
    finally:
        process.stop()


def test_a_slow_redis_costs_one_socket_timeout_not_the_os_default(server):
    settings = {"REDIS_URL": server.url, "SOCKET_TIMEOUT": 0.2, "CIRCUIT_BREAKER_COOLDOWN": 30}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        view = ThrottledView.as_view()
        assert view(factory.get("/")).status_code == 200
        connection.reset_stats()
        server.pause()  # frozen (SIGSTOP): every command hangs until the socket times out
        try:
            statuses = [view(factory.get("/")).status_code for _ in range(5)]
            cached = CachedView.as_view()(factory.get("/c"))
            counts = connection.stats()
            breaker_open = connection.get_breaker().is_open
        finally:
            server.resume()
    assert statuses == [200] * 5  # FAIL_OPEN
    assert cached.status_code == 200 and cached["X-Cache"] == "MISS"
    # One socket timeout opened the breaker; every later call skipped Redis without waiting.
    assert counts["timeouts"] == 1 and counts["failures"] == 1, counts
    assert counts["skips"] >= 5, counts
    assert breaker_open


@pytest.fixture
def full_redis(redis_server):
    process = servers.start_redis(["--maxmemory-policy", "noeviction"])
    try:
        yield process
    finally:
        process.stop()


def _fill(server) -> None:
    """Put Redis well over ``maxmemory``: every write that needs memory now fails with OOM."""
    raw = server.client()
    try:
        raw.config_set("maxmemory", 0)
        raw.mset({f"filler:{i}": "z" * 50_000 for i in range(40)})
        used = int(raw.info("memory")["used_memory"])
        raw.config_set("maxmemory", used // 2)
    finally:
        raw.close()


def test_a_full_redis_under_noeviction_gives_no_500s_and_throttles_stay_exact(full_redis):
    settings = {"REDIS_URL": full_redis.url, "CIRCUIT_BREAKER_COOLDOWN": 30}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        view = ThrottledView.as_view()
        assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 200, 200, 429]
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        _fill(full_redis)
        with pytest.raises(RedisUnavailable, match=r"OOM|memory"):
            redis_client.set("one-more", "x" * 50_000)
        assert redis_client.ping() is True  # reachable: the breaker stayed closed
        # The cache still answers (a miss it cannot store):
        response = CachedView.as_view()(factory.get("/full"))
        assert response.status_code == 200
        # Throttles keep deciding exactly: the script writes first with ZREMRANGEBYSCORE,
        # and Redis lets a script that has written finish (atomicity beats maxmemory).
        assert view(factory.get("/")).status_code == 429
        statuses = [view(factory.get("/", HTTP_X_CLIENT="new")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
    # The same with FAIL_OPEN=False: no 503, because Redis is answering.
    with override_settings(DRF_REDIS_TOOLKIT={**settings, "FAIL_OPEN": False}):
        statuses = [view(factory.get("/", HTTP_X_CLIENT="newer")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


# -- a process never serves what it knows to be stale --------------------------------------


class Frozen:
    """A Redis this test may freeze (SIGSTOP every process) and thaw: standalone or cluster."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "cluster":
            self.server = servers.start_cluster(masters=3)
            self.processes = self.server.nodes
            self.settings = {"REDIS_URL": self.server.url, "CLUSTER": True}
        else:
            self.server = servers.start_redis()
            self.processes = [self.server]
            self.settings = {"REDIS_URL": self.server.url}

    def pause(self) -> None:
        for process in self.processes:
            process.pause()

    def resume(self) -> None:
        for process in self.processes:
            process.resume()

    def stop(self) -> None:
        self.resume()
        self.server.stop()


@pytest.fixture(params=["real", "cluster"])
def own_redis(request, redis_server):
    """A standalone server or a 3-master cluster of the test's own (node timeout 2 s:
    a freeze shorter than that leaves the cluster's state ``ok``)."""
    frozen = Frozen(request.param)
    try:
        yield frozen
    finally:
        frozen.stop()


@pytest.mark.django_db(transaction=True)
def test_the_writer_never_serves_the_old_price_after_an_outage(
    own_redis, settings, monkeypatch, catalog_factory
):
    """Issue 11 item 1, on a real Redis: HIT, SIGSTOP, breaker trips, PATCH, SIGCONT.

    Every read of the detail, from the PATCH on, must show the new price in this
    process: while the invalidation is pending (a miss), and after (delivered
    before the breaker let any read through).
    """
    from rest_framework.test import APIClient

    from drf_redis_toolkit import connection, invalidation
    from tests.sample_fixtures import apply_shop_settings, apply_shop_view_classes

    backend = type("B", (), {"settings": {**own_redis.settings, "SOCKET_TIMEOUT": 0.2}})
    apply_shop_settings(settings, backend)
    apply_shop_view_classes(monkeypatch)
    product, staff = catalog_factory()
    url = f"/api/products/{product.pk}/"
    anyone = APIClient()
    old_price = anyone.get(url).json()["price"]
    assert anyone.get(url)["X-Cache"] == "HIT"

    own_redis.pause()
    try:
        reads = [anyone.get(url) for _ in range(20)]
        assert [r.status_code for r in reads] == [200] * 20
        assert connection.get_breaker().is_open
        patched = staff.patch(url, {"price": "777.00"}, format="json")
        assert patched.status_code == 200, patched.content
        assert invalidation.pending_invalidations()["keys"]
        for _ in range(5):
            during = anyone.get(url)
            assert during.json()["price"] == "777.00" and during["X-Cache"] == "MISS"
    finally:
        own_redis.resume()

    answers: list[tuple[str, str]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = anyone.get(url)
        assert response.status_code == 200
        answers.append((response.json()["price"], response["X-Cache"]))
        if answers[-1] == ("777.00", "HIT"):
            break
        time.sleep(0.02)
    assert answers[-1] == ("777.00", "HIT"), "caching did not resume"
    stale = [a for a in answers if a[0] != "777.00"]
    assert not stale, f"served the old price {old_price} {len(stale)} times after the thaw"
    assert invalidation.pending_invalidations() == {
        "namespaces": [],
        "keys": [],
        "overflowed": False,
    }


@pytest.fixture
def catalog_factory():
    def make():
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token
        from rest_framework.test import APIClient

        from tests.sample_fixtures import make_catalog

        catalog = make_catalog()
        admin = get_user_model().objects.create_user("admin", password="pw", is_staff=True)
        token, _ = Token.objects.get_or_create(user=admin)
        staff = APIClient()
        staff.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return catalog.products[0], staff

    return make


@pytest.mark.django_db(transaction=True)
def test_the_first_call_that_reaches_redis_again_delivers_the_backlog_first(own_redis, monkeypatch):
    from drf_redis_toolkit import invalidation
    from drf_redis_toolkit.generations import read_generations
    from drf_redis_toolkit.invalidation import delivery

    monkeypatch.setattr(delivery, "_RETRY_FIRST_DELAY", 3600)  # no help from the retry thread
    settings = {**own_redis.settings, "CIRCUIT_BREAKER_COOLDOWN": 0.2, "SOCKET_TIMEOUT": 0.2}
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        before = read_generations("outage:ns")["outage:ns"]
        own_redis.pause()
        try:
            assert invalidation.invalidate_now(["outage:ns"]) is False
            assert invalidation.pending_invalidations()["namespaces"] == ["outage:ns"]
        finally:
            own_redis.resume()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis_client.get("anything")  # the first call that gets through
                break
            except RedisUnavailable:
                time.sleep(0.02)
        else:
            pytest.fail("Redis was not reached again")
        assert invalidation.pending_invalidations()["namespaces"] == []
        assert read_generations("outage:ns")["outage:ns"] != before
