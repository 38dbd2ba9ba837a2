"""A slow Redis and a full Redis: bounded waits, no 500s, throttles never over-admit when closed."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import connection
from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.throttling import SlidingWindowThrottle
from tests import servers

factory = APIRequestFactory()
pytestmark = pytest.mark.slow


class OneClient(SlidingWindowThrottle):
    scope = "faults"
    rate = "3/min"

    def get_cache_key(self, request, view):
        return request.META.get("HTTP_X_CLIENT", "one-client")


class ThrottledView(APIView):
    throttle_classes = (OneClient,)
    permission_classes = ()

    def get(self, request):
        return Response({"ok": True})


class CachedView(CacheResponseMixin, APIView):
    permission_classes = ()
    cache_per_user = False
    runs = 0

    def get(self, request):
        type(self).runs += 1
        return Response({"payload": "x" * 2000, "run": type(self).runs})


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
