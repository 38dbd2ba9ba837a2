"""adrf async views with the cache mixin, the decorator and the throttles (issue 12, item 1).

Requests go through Django's ``AsyncClient`` (the ASGI handler, on an event
loop) on every backend; ``tests/test_async_server.py`` does the same under a
real uvicorn with concurrent clients.
"""

from __future__ import annotations

import asyncio
import functools
import math

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from drf_redis_toolkit import connection
from drf_redis_toolkit.cache_stats import counters as _counters
from tests.async_views import CALLS
from tests.testapp.models import CachedWidget

# Every test: no sync Redis call on the event loop (conftest, tests/loop_guard.py).
pytestmark = pytest.mark.usefixtures("no_sync_redis_on_the_loop")


@pytest.fixture(autouse=True)
def _urls(settings):
    settings.ROOT_URLCONF = "tests.async_views"
    CALLS.clear()
    _counters.reset()


def get(path: str, **headers: str):
    return async_to_sync(AsyncClient().get)(path, headers=headers)


def flush_due_on_every_count(monkeypatch) -> None:
    """The hit/miss counters find their flush due on every count, not every 5 s."""
    monkeypatch.setattr(_counters, "interval", 0.0)
    monkeypatch.setattr(_counters, "_due", -math.inf)


def miss_then_hit(settings, way: str) -> list:
    """Two requests to one cached view, on an async view or a sync one."""
    if way == "async":
        return [get("/async/counted/"), get("/async/counted/")]
    settings.ROOT_URLCONF = "tests.caching_views"
    return [Client().get("/widgets/"), Client().get("/widgets/")]


def entry_keys(backend) -> list[bytes]:
    return sorted(backend.raw.scan_iter(match=b"drt:c:*", count=1000))


@pytest.mark.parametrize("path", ["/async/counted/", "/async/deco/"])
def test_an_async_view_misses_then_hits_with_identical_bytes(backend, path):
    first = get(path)
    second = get(path)
    assert first.status_code == second.status_code == 200
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert first.content == second.content
    assert sum(CALLS.values()) == 1
    assert entry_keys(backend)


def test_the_async_path_uses_a_redis_asyncio_client_on_real_redis(backend):
    """The cache's Redis calls on the loop go through the loop's async client."""
    seen: list[object] = []

    async def fetch():
        response = await AsyncClient().get("/async/counted/")
        seen.append(connection.get_async_client())
        return response

    assert async_to_sync(fetch)().status_code == 200
    client = seen[0]
    if backend.name == "real":
        import redis.asyncio

        assert isinstance(client, redis.asyncio.Redis)
    elif backend.name == "cluster":  # the sync cluster client, in worker threads
        assert isinstance(client, connection._ThreadedClient)
    else:
        import fakeredis

        assert isinstance(client, fakeredis.FakeAsyncRedis)


def test_if_none_match_gets_304_from_an_async_view(backend):
    etag = get("/async/counted/")["ETag"]
    revalidated = get("/async/counted/", **{"If-None-Match": etag})
    assert revalidated.status_code == 304
    assert revalidated["ETag"] == etag
    assert revalidated["X-Cache"] == "HIT"
    assert CALLS["async-counted"] == 1


@pytest.mark.django_db
def test_async_per_user_entries_are_never_shared(backend):
    alice = User.objects.create_user("alice", password="x")
    bob = User.objects.create_user("bob", password="x")

    def as_user(user):
        client = AsyncClient()
        client.force_login(user)  # aforce_login is Django 5.0+
        return async_to_sync(client.get)("/async/user/")

    assert as_user(alice).json() == {"user": "alice"}
    assert as_user(bob).json() == {"user": "bob"}
    assert as_user(alice).json() == {"user": "alice"}
    assert get("/async/user/").json() == {"user": "anon"}
    assert CALLS["async-user"] == 3


@pytest.mark.django_db(transaction=True)
def test_no_stale_read_after_an_acknowledged_async_write(backend):
    widget = CachedWidget.objects.create(name="w", price="1.00")
    path = f"/async/widget/{widget.pk}/"
    assert get(path).json() == {"price": "1.00"}
    assert get(path)["X-Cache"] == "HIT"
    for price in ("2.00", "3.00", "4.00"):
        put = async_to_sync(AsyncClient().put)(
            path, {"price": price}, content_type="application/json"
        )
        assert put.status_code == 200
        assert get(path).json() == {"price": price}


def test_redis_down_is_a_miss_on_an_async_view(backend, settings):
    if backend.is_real:
        settings.DRF_REDIS_TOOLKIT = {**backend.settings, "REDIS_URL": _dead_url()}
    else:
        from tests import servers

        servers.FAKE_SERVER.connected = False
    try:
        for _ in range(3):
            response = get("/async/counted/")
            assert response.status_code == 200
            assert response["X-Cache"] == "MISS"
    finally:
        from tests import servers

        servers.FAKE_SERVER.connected = True
    assert CALLS["async-counted"] == 3


def test_async_throttle_admits_exactly_the_limit(backend):
    codes = [get("/async/throttled/").status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3
    assert CALLS["async-throttle"] == 5


def _dead_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


# -- the middlewares on the async stack --------------------------------------------

_TOOLKIT_MIDDLEWARE = [
    "drf_redis_toolkit.middleware.RateLimitHeadersMiddleware",
    "drf_redis_toolkit.middleware.RateLimitMiddleware",
]


def test_both_middlewares_declare_sync_and_async_and_stay_async_on_an_async_chain():
    from asgiref.sync import iscoroutinefunction
    from django.http import HttpResponse

    from drf_redis_toolkit.middleware import RateLimitHeadersMiddleware, RateLimitMiddleware

    async def async_view(request):
        return HttpResponse("ok")

    def sync_view(request):
        return HttpResponse("ok")

    for middleware in (RateLimitHeadersMiddleware, RateLimitMiddleware):
        assert middleware.sync_capable and middleware.async_capable
        assert iscoroutinefunction(middleware(async_view))
        assert not iscoroutinefunction(middleware(sync_view))


def test_rate_limit_rules_under_asgi_admit_exactly_the_limit(backend, settings):
    rules = [{"path": r"^/async/counted/$", "rate": "3/min", "key": "ip"}]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, *_TOOLKIT_MIDDLEWARE]
    responses = [get("/async/counted/") for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 3 + [429] * 2
    assert responses[-1]["X-RateLimit-Limit"] == "3"
    assert int(responses[-1]["Retry-After"]) >= 59
    assert CALLS["async-counted"] == 1  # the other two admitted were cache hits


def test_throttle_headers_under_asgi(backend, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, *_TOOLKIT_MIDDLEWARE]
    responses = [get("/async/throttled/") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r["X-RateLimit-Remaining"] for r in responses[:5]] == ["4", "3", "2", "1", "0"]
    assert int(responses[-1]["Retry-After"]) >= 1


def test_rate_limit_rules_under_asgi_fail_open_when_redis_is_down(backend, settings):
    from tests import servers

    rules = [{"path": r"^/async/counted/$", "rate": "1/min", "key": "ip"}]
    dead = {"REDIS_URL": _dead_url()} if backend.is_real else {}
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules, **dead}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, *_TOOLKIT_MIDDLEWARE]
    servers.FAKE_SERVER.connected = False
    try:
        assert [get("/async/counted/").status_code for _ in range(3)] == [200] * 3
        settings.DRF_REDIS_TOOLKIT = {**settings.DRF_REDIS_TOOLKIT, "FAIL_OPEN": False}
        assert get("/async/counted/").status_code == 503
    finally:
        servers.FAKE_SERVER.connected = True


def test_the_invalidating_viewset_mixins_refuse_an_adrf_async_viewset_by_name():
    """They wrap ``dispatch()`` synchronously: on an async view that would be a 500 per write."""
    from adrf.viewsets import ModelViewSet
    from django.core.exceptions import ImproperlyConfigured

    from drf_redis_toolkit.mixins import CartCacheMixin, ProductCacheMixin

    for mixin in (ProductCacheMixin, CartCacheMixin):
        with pytest.raises(ImproperlyConfigured, match="sync views only"):
            type("AsyncWidgets", (mixin, ModelViewSet), {"queryset": CachedWidget.objects.all()})


# -- ASYNC_CONNECTION_FACTORY --------------------------------------------------------


def test_async_connection_factory_is_validated_like_connection_factory():
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from drf_redis_toolkit.conf import toolkit_settings

    with override_settings(DRF_REDIS_TOOLKIT={"ASYNC_CONNECTION_FACTORY": "nodots"}):
        with pytest.raises(ImproperlyConfigured, match="ASYNC_CONNECTION_FACTORY"):
            toolkit_settings.check()


def test_without_an_async_factory_a_connection_factory_client_runs_in_worker_threads(settings):
    """A CONNECTION_FACTORY alone: the async path uses that very client, off the loop."""
    import threading

    from tests import servers

    settings.DRF_REDIS_TOOLKIT = {"CONNECTION_FACTORY": "tests.servers.fake_redis"}
    # (thread, whether it was running an event loop) for every script call. Thread
    # idents alone cannot tell: the OS hands a finished thread's ident to the next.
    calls: list[tuple[threading.Thread, bool]] = []
    real_evalsha = servers.fakeredis.FakeRedis.evalsha

    def evalsha(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((threading.current_thread(), on_loop))
        return real_evalsha(self, *args, **kwargs)

    async def fetch():
        first = await AsyncClient().get("/async/counted/")
        second = await AsyncClient().get("/async/counted/")
        return first, second, connection.get_async_client()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(servers.fakeredis.FakeRedis, "evalsha", evalsha)
        first, second, client = async_to_sync(fetch)()
    assert isinstance(client, connection._ThreadedClient)
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert calls and not [thread.name for thread, on_loop in calls if on_loop]
    assert threading.main_thread() not in {thread for thread, _ in calls}


def test_a_due_statistics_flush_on_an_async_view_runs_off_the_loop_and_reaches_redis(
    backend, monkeypatch
):
    """The hit/miss counters flush every few seconds from whichever request finds
    them due: on an async view that request's flush runs in a worker thread (it once
    ran the sync client on the event loop, one request in a few seconds' worth)."""
    from drf_redis_toolkit.cache_stats import namespace_stats

    flush_due_on_every_count(monkeypatch)
    first, second = get("/async/counted/"), get("/async/counted/")
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert _counters._pending == {}  # both counts left the process
    stats = namespace_stats()["async-counted"]
    assert (stats["hits"], stats["misses"]) == (1, 1)


def test_two_throttles_in_one_async_round_count_only_admitted_requests(backend):
    """adrf's own ``check_throttles``: a refusal still takes back the other throttle's count."""
    from drf_redis_toolkit import keys as keyspace
    from drf_redis_toolkit import ratelimit

    codes = [get("/async/two-throttles/").status_code for _ in range(8)]
    assert codes == [200] * 3 + [429] * 5
    wide = keyspace.throttle_key(ratelimit.LOG, "async-wide", "ip:127.0.0.1")
    assert backend.raw.zcard(wide) == 3


def test_the_async_path_trips_and_closes_the_one_breaker(settings):
    """An outage seen on the loop opens the breaker the sync code uses, and the
    first async call after the cool-down probes, recovers and closes it."""
    import time

    from drf_redis_toolkit.exceptions import RedisUnavailable
    from tests import servers
    from tests.conftest import FAKE_SETTINGS

    settings.DRF_REDIS_TOOLKIT = {**FAKE_SETTINGS, "CIRCUIT_BREAKER_COOLDOWN": 0.2}
    servers.FAKE_SERVER.connected = False
    try:
        assert get("/async/counted/")["X-Cache"] == "MISS"
        breaker = connection.get_breaker()
        assert breaker.is_open
        with pytest.raises(RedisUnavailable, match="circuit breaker is open"):
            with connection.guarded():
                pass
    finally:
        servers.FAKE_SERVER.connected = True
    deadline = time.monotonic() + 10
    while breaker.is_tripped and time.monotonic() < deadline:
        get("/async/counted/")
        time.sleep(0.05)
    assert not breaker.is_tripped
    assert get("/async/counted/")["X-Cache"] == "HIT"


@pytest.mark.django_db(transaction=True)
def test_signal_rules_invalidate_an_async_write(backend):
    """``asave()`` from an async view: the model signals' rules reach Redis before the answer."""
    from drf_redis_toolkit import invalidation

    invalidation.register(CachedWidget, namespaces=["awidget:{id}"])
    try:
        widget = CachedWidget.objects.create(name="w", price="1.00")
        path = f"/async/widget-signals/{widget.pk}/"
        assert get(path).json() == {"price": "1.00"}
        assert get(path)["X-Cache"] == "HIT"
        for price in ("2.00", "3.00"):
            put = async_to_sync(AsyncClient().put)(
                path, {"price": price}, content_type="application/json"
            )
            assert put.status_code == 200
            assert get(path).json() == {"price": price}
    finally:
        invalidation.unregister(CachedWidget)


def test_the_async_client_follows_sentinels(settings):
    """``SENTINELS``: the async path asks the sentinels for the master, as the sync one does."""
    import redis.asyncio

    from tests import servers

    if servers.redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    setup = servers.start_sentinel_setup()
    try:
        settings.DRF_REDIS_TOOLKIT = {
            "SENTINELS": setup.sentinels,
            "SENTINEL_SERVICE_NAME": setup.service_name,
        }

        async def fetch():
            first = await AsyncClient().get("/async/counted/")
            second = await AsyncClient().get("/async/counted/")
            return first, second, connection.get_async_client()

        first, second, client = async_to_sync(fetch)()
        assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
        assert isinstance(client, redis.asyncio.Redis)
        assert type(client.connection_pool).__name__ == "SentinelConnectionPool"
        master = setup.master.client()
        assert any(key.startswith(b"drt:c:") for key in master.scan_iter(count=1000))
        master.close()
    finally:
        setup.stop()


def test_head_on_an_async_view_is_answered_from_the_get_entry(backend):
    assert get("/async/counted/")["X-Cache"] == "MISS"
    head = async_to_sync(AsyncClient().head)("/async/counted/")
    assert head.status_code == 200
    assert head["X-Cache"] == "HIT"
    assert head.content == b""
    assert CALLS["async-counted"] == 1


@pytest.mark.django_db
def test_a_hit_on_an_async_generic_view_rechecks_object_permissions(backend):
    """The shared entry is served to its owner only: ``get_object()`` runs on every hit."""
    owner = User.objects.create_user("owner", password="x")
    other = User.objects.create_user("other", password="x")
    widget = CachedWidget.objects.create(name="mine", owner=owner)

    def as_user(user):
        client = AsyncClient()
        client.force_login(user)  # aforce_login is Django 5.0+
        return async_to_sync(client.get)(f"/async/owned/{widget.pk}/")

    assert as_user(owner).json() == {"name": "mine"}
    assert as_user(owner)["X-Cache"] == "HIT"
    assert as_user(other).status_code == 403
    assert CALLS["async-owned"] == 1


def test_async_views_use_the_redis_of_a_reused_django_cache(redis_server, settings):
    """``DJANGO_CACHE_ALIAS``: the async path writes where the cache points, not to REDIS_URL."""
    from django.core.cache import caches

    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url},
    }
    settings.DRF_REDIS_TOOLKIT = {"DJANGO_CACHE_ALIAS": "shared", "KEY_PREFIX": "areuse"}
    db5 = redis_server.client(db=5)
    db5.flushdb()
    try:
        assert get("/async/counted/")["X-Cache"] == "MISS"
        assert get("/async/counted/")["X-Cache"] == "HIT"
        assert any(key.startswith(b"areuse:") for key in db5.scan_iter(count=1000))
    finally:
        db5.close()
        caches["shared"].close()


def test_is_async_answers_for_bound_methods_per_function_and_stays_bounded():
    from drf_redis_toolkit import drivers

    class View:
        async def aget(self):
            return None

        def get(self):
            return None

    drivers._ASYNC_FUNCTIONS.clear()
    first, second = View(), View()
    assert drivers.is_async(first.aget) is True
    assert drivers.is_async(second.aget) is True  # the same function: answered from memory
    assert drivers.is_async(first.get) is False
    assert drivers.is_async(second.get) is False
    assert set(drivers._ASYNC_FUNCTIONS) == {View.aget, View.get}
    assert drivers.is_async(functools.partial(View.aget, first)) is True  # no __func__
    for i in range(drivers._ASYNC_FUNCTIONS_MAX + 10):
        code = f"def f{i}(self): pass\nasync def a{i}(self): pass"
        scope: dict = {}
        exec(code, scope)
        View.f, View.a = scope[f"f{i}"], scope[f"a{i}"]
        assert drivers.is_async(first.f) is False and drivers.is_async(first.a) is True
        assert len(drivers._ASYNC_FUNCTIONS) <= drivers._ASYNC_FUNCTIONS_MAX


@pytest.mark.parametrize("way", ["async", "sync"])
@pytest.mark.django_db
def test_a_statistics_flush_that_fails_in_any_way_never_fails_the_request(
    backend, settings, monkeypatch, way
):
    """Not only a Redis error: a cluster client's own exception (not a ``RedisError``)
    once escaped the flow as a 500. The counts stay in the process for the next flush."""
    from redis.exceptions import RedisClusterException

    from drf_redis_toolkit import cache_stats

    def broken(name):
        def call(**kwargs):
            raise RedisClusterException(f"{name}: no node answers")

        return call

    monkeypatch.setattr(cache_stats, "get_script", broken)
    flush_due_on_every_count(monkeypatch)
    responses = miss_then_hit(settings, way)
    assert [r.status_code for r in responses] == [200, 200]
    assert [r["X-Cache"] for r in responses] == ["MISS", "HIT"]
    assert list(_counters._pending.values()) == [[1, 1]], _counters._pending  # one namespace


@pytest.mark.parametrize("way", ["async", "sync"])
@pytest.mark.django_db
def test_a_flush_step_that_cannot_run_never_fails_the_request(backend, settings, monkeypatch, way):
    """The step itself failing (``asyncio.to_thread`` on a loop whose default executor
    is shut down raises ``RuntimeError``) is caught around the step, not only inside
    ``flush()``: the request is answered, and the counts wait for the next flush."""
    from drf_redis_toolkit import caching

    class Unrunnable:
        def __init__(self, func):
            self.func = func

        def run(self):
            raise RuntimeError("cannot schedule new futures after shutdown")

        async def arun(self):
            raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(caching, "Offload", Unrunnable)
    flush_due_on_every_count(monkeypatch)
    responses = miss_then_hit(settings, way)
    assert [r.status_code for r in responses] == [200, 200]
    assert [r["X-Cache"] for r in responses] == ["MISS", "HIT"]
    assert list(_counters._pending.values()) == [[1, 1]], _counters._pending
