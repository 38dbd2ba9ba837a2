"""``DJANGO_CACHE_ALIAS``: the toolkit on the Redis a project's ``CACHES`` already names.

Django's own ``RedisCache`` and django-redis' are both reused, on a real
redis-server: the toolkit writes to that server and database, with its own
timeouts (the project's cache pool has none, and keeps none), so a hung Redis
costs one timeout and then the breaker, never a hung request.
"""

from __future__ import annotations

import threading

import pytest
import redis
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from drf_redis_toolkit import connection
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.exceptions import RedisUnavailable
from tests import servers

pytestmark = pytest.mark.real_redis

BACKENDS = {
    "django": "django.core.cache.backends.redis.RedisCache",
    "django-redis": "django_redis.cache.RedisCache",
}


@pytest.fixture
def redis_server(redis_server):
    redis_server.client().flushall()
    return redis_server


def _caches(url: str, backend: str) -> dict:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": BACKENDS[backend], "LOCATION": url},
    }


@pytest.fixture(params=sorted(BACKENDS))
def reused(request, redis_server):
    """The toolkit pointed at the ``shared`` cache (database 3 of the test server)."""
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    with override_settings(
        CACHES=_caches(url, request.param),
        DRF_REDIS_TOOLKIT={"DJANGO_CACHE_ALIAS": "shared", "KEY_PREFIX": "reuse"},
    ):
        connection.reset_connection()
        yield redis_server
        caches["shared"].close()
    connection.reset_connection()


def test_the_toolkit_writes_where_the_cache_points(reused):
    redis_client.set("user:1", {"id": 1}, timeout=60)
    assert redis_client.get("user:1") == {"id": 1}
    assert reused.client(db=3).get("reuse:user:1") == b'{"id":1}'
    assert reused.client(db=0).exists("reuse:user:1") == 0
    # The project's cache still works beside it, on its own keys.
    caches["shared"].set("k", "v")
    assert caches["shared"].get("k") == "v"


def test_the_toolkit_timeouts_apply_and_the_caches_pool_is_left_alone(reused):
    client = connection.get_client()
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == toolkit_settings.SOCKET_TIMEOUT
    assert kwargs["socket_connect_timeout"] == toolkit_settings.SOCKET_CONNECT_TIMEOUT
    assert kwargs["db"] == 3
    theirs = connection.django_cache_client("shared").connection_pool
    assert theirs is not client.connection_pool
    assert theirs.connection_kwargs.get("socket_timeout") is None


def test_a_hung_redis_behind_a_reused_cache_costs_one_timeout_not_a_hang(reused):
    redis_client.set("warm", 1)  # connected
    outcome: list[Exception | None] = []

    def call() -> None:
        try:
            redis_client.get("warm")
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001  (recorded: the test asserts what it was)
            outcome.append(exc)

    reused.pause()
    try:
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(timeout=30)  # liveness bound only: without a timeout this never ends
        assert not worker.is_alive(), "the call hung on a frozen Redis"
        assert isinstance(outcome[0], RedisUnavailable)
        with pytest.raises(RedisUnavailable, match="breaker"):
            redis_client.get("warm")  # skipped while the breaker is open
    finally:
        reused.resume()


def test_a_factory_client_without_timeouts_gets_the_toolkits(redis_server):
    def factory() -> redis.Redis:
        return redis.Redis.from_url(redis_server.url)  # socket_timeout None

    with override_settings(DRF_REDIS_TOOLKIT={"CONNECTION_FACTORY": factory}):
        connection.reset_connection()
        try:
            pool = connection.get_client().connection_pool
            assert pool.connection_kwargs["socket_timeout"] == toolkit_settings.SOCKET_TIMEOUT
            assert redis_client.ping() is True
        finally:
            connection.reset_connection()


def test_clients_it_cannot_copy_are_used_as_they_are():
    fake = servers.fake_redis()
    assert connection.with_toolkit_timeouts(fake) is fake


@pytest.mark.parametrize(
    ("caches_setting", "toolkit", "message"),
    [
        ({}, {"DJANGO_CACHE_ALIAS": "nope"}, "CACHES has no such alias"),
        (
            {"x": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            {"DJANGO_CACHE_ALIAS": "x"},
            "LocMemCache",
        ),
        (
            {"x": {"BACKEND": BACKENDS["django"], "LOCATION": "redis://127.0.0.1:1/0"}},
            {"DJANGO_CACHE_ALIAS": "x", "CLUSTER": True},
            "cannot be combined with CLUSTER",
        ),
        ({}, {"DJANGO_CACHE_ALIAS": ""}, "expected the name of an entry of CACHES"),
    ],
)
def test_a_bad_alias_fails_naming_the_setting(caches_setting, toolkit, message):
    with override_settings(CACHES=caches_setting or {"default": {}}, DRF_REDIS_TOOLKIT=toolkit):
        with pytest.raises(ImproperlyConfigured, match="DJANGO_CACHE_ALIAS") as excinfo:
            toolkit_settings.check()
        assert message in str(excinfo.value)
