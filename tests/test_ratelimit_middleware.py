"""RateLimitMiddleware's public options on every backend: user keys, several rules, outages."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from redis.crc import key_slot
from rest_framework.test import APIRequestFactory

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.middleware import RateLimitMiddleware
from drf_redis_toolkit.rates import parse_rate
from tests import servers

# Every test: no sync Redis call on the event loop (conftest, tests/loop_guard.py).
pytestmark = pytest.mark.usefixtures("no_sync_redis_on_the_loop")

factory = APIRequestFactory()


def _view(request):
    return HttpResponse("ok")


async def _async_view(request):
    return HttpResponse("ok")


def _middleware(way):
    """The middleware on a sync chain, or on an async one (ASGI) called from sync code.

    On the async chain every decision and take-back goes through the event loop's
    async client (``ratelimit.Decide``/``Undo`` run by ``drivers.run_async``).
    """
    if way == "sync":
        return RateLimitMiddleware(_view)
    middleware = RateLimitMiddleware(_async_view)
    assert iscoroutinefunction(middleware)
    return async_to_sync(middleware)


def _user(pk):
    from django.contrib.auth.models import User

    return User(pk=pk, username=f"u{pk}")


def _post(path, user=None, ip="10.2.2.2"):
    request = factory.post(path, REMOTE_ADDR=ip)
    request.user = user if user is not None else AnonymousUser()
    return request


def _remaining(scope, ident, rate):
    decision = ratelimit.decide(ratelimit.LOG, scope, ident, parse_rate(rate), record=False)
    return decision.limits[0].remaining


def test_a_user_keyed_rule_counts_per_user_and_per_ip_for_anonymous(backend, settings):
    rules = [{"path": r"^/api/orders/$", "rate": "2/min", "key": "user", "scope": "orders"}]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    middleware = RateLimitMiddleware(_view)
    ann, bob = _user(1), _user(2)
    # Same address, two users: two budgets.
    assert [middleware(_post("/api/orders/", ann)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    assert [middleware(_post("/api/orders/", bob)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    # Anonymous requests from that address fall back to the address: a third budget.
    assert middleware(_post("/api/orders/")).status_code == 200
    assert _remaining("orders", "user:1", "2/min") == 0
    assert _remaining("orders", "ip:10.2.2.2", "2/min") == 1


@pytest.mark.django_db(transaction=True)
def test_a_user_keyed_rule_under_asgi_reads_the_session_user_off_the_loop(backend, settings):
    """Django's own chain (sessions, auth) under ASGI: ``request.user`` is lazy, and
    reading it on the event loop raised SynchronousOnlyOperation (a 500 per request)."""
    from django.contrib.auth.models import User
    from django.test import AsyncClient

    rules = [{"path": r"^/async/plain/$", "rate": "2/min", "key": "user", "scope": "plain"}]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    settings.ROOT_URLCONF = "tests.async_views"
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "drf_redis_toolkit.middleware.RateLimitMiddleware"]
    ann = User.objects.create_user("ann-mw", password="pw")
    client = AsyncClient(raise_request_exception=True)
    client.force_login(ann)
    codes = [async_to_sync(client.get)("/async/plain/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert _remaining("plain", f"user:{ann.pk}", "2/min") == 0
    # Logged out, the same client is an address: a budget of its own.
    client.logout()
    assert async_to_sync(client.get)("/async/plain/").status_code == 200
    assert _remaining("plain", "ip:127.0.0.1", "2/min") == 1


def test_a_user_already_read_costs_no_thread_hop_on_asgi(backend, settings, monkeypatch):
    """Only Django's lazy user, not yet read, is read in the ORM's thread: a user set
    by hand (or read already) is read on the loop, where it runs no query."""
    from django.utils.functional import SimpleLazyObject

    from drf_redis_toolkit import drivers, middleware

    rules = [{"path": r"^/api/orders/$", "rate": "5/min", "key": "user", "scope": "orders"}]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    hops: list[object] = []
    real = drivers.sync_to_async

    def recording(func, *args, **kwargs):
        hops.append(func)
        return real(func, *args, **kwargs)

    monkeypatch.setattr(drivers, "sync_to_async", recording)
    chain = _middleware("async")
    assert chain(_post("/api/orders/", _user(7))).status_code == 200
    assert hops == []
    lazy = _post("/api/orders/")
    lazy.user = SimpleLazyObject(lambda: _user(8))  # what AuthenticationMiddleware sets
    assert chain(lazy).status_code == 200
    assert hops == [middleware._user_identity]
    assert _remaining("orders", "user:7", "5/min") == 4
    assert _remaining("orders", "user:8", "5/min") == 4


@pytest.mark.parametrize("way", ["sync", "async"])
def test_one_request_object_sent_twice_with_another_user_counts_each_pass_for_its_user(
    backend, settings, way
):
    """The user is read once per pass, never kept on the request between passes."""
    rules = [{"path": r"^/api/orders/$", "rate": "5/min", "key": "user", "scope": "orders"}]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    middleware = _middleware(way)
    request = _post("/api/orders/", _user(1))
    assert middleware(request).status_code == 200
    request.user = _user(2)
    assert middleware(request).status_code == 200
    assert _remaining("orders", "user:1", "5/min") == 4
    assert _remaining("orders", "user:2", "5/min") == 4


@pytest.mark.parametrize("way", ["sync", "async"])
@pytest.mark.parametrize("order", ["broad-first", "narrow-first"])
def test_a_request_refused_by_one_rule_is_not_counted_by_another(backend, settings, order, way):
    broad = {"path": r"^/api/", "rate": "10/min", "key": "ip", "scope": "broad"}
    narrow = {"path": r"^/api/login/$", "methods": ["POST"], "rate": "2/min", "key": "ip",
              "scope": "narrow"}  # fmt: skip
    rules = [broad, narrow] if order == "broad-first" else [narrow, broad]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    middleware = _middleware(way)
    statuses = [middleware(_post("/api/login/")).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    refused = middleware(_post("/api/login/"))
    assert refused["X-RateLimit-Limit"] == "2"
    # The three refused logins were taken back from (or never recorded in) the broad rule.
    assert _remaining("broad", "ip:10.2.2.2", "10/min") == 8
    assert _remaining("narrow", "ip:10.2.2.2", "2/min") == 0
    # Other paths under the broad rule still have its budget.
    assert [middleware(_post("/api/other/")).status_code for _ in range(9)] == [200] * 8 + [429]


@pytest.mark.parametrize("way", ["sync", "async"])
def test_a_refusal_takes_back_earlier_rules_whose_keys_are_in_other_slots(backend, settings, way):
    """Two rules admitted (a user's key and an address's key), a third refuses: both go back.

    The two keys hash to different cluster slots, so on a cluster the take-back is
    one pipeline over two slots: it must not be a transaction (``MULTI`` over two
    slots is refused), on the sync and the async client alike.
    """
    per_user = {"path": r"^/api/", "rate": "10/min", "key": "user", "scope": "mw_user"}
    per_ip = {"path": r"^/api/", "rate": "10/min", "key": "ip", "scope": "mw_ip"}
    login = {"path": r"^/api/login/$", "rate": "1/min", "key": "ip", "scope": "mw_login"}
    keys = [
        keyspace.throttle_key(ratelimit.LOG, "mw_user", "user:7"),
        keyspace.throttle_key(ratelimit.LOG, "mw_ip", "ip:10.2.2.2"),
    ]
    assert key_slot(keys[0].encode()) != key_slot(keys[1].encode())
    settings.DRF_REDIS_TOOLKIT = {
        **backend.settings,
        "RATELIMIT_RULES": [per_user, per_ip, login],
    }
    middleware = _middleware(way)
    ann = _user(7)
    assert [middleware(_post("/api/login/", ann)).status_code for _ in range(4)] == [
        200,
        429,
        429,
        429,
    ]
    # Only the one admitted login is counted by the two broad rules.
    assert _remaining("mw_user", "user:7", "10/min") == 9
    assert _remaining("mw_ip", "ip:10.2.2.2", "10/min") == 9
    assert [backend.raw.zcard(key) for key in keys] == [1, 1]


def test_an_outage_fails_open_or_answers_503(redis_server, settings):
    server = servers.start_redis()
    rules = [{"path": r"^/login/$", "rate": "1/min", "key": "ip"}]
    base = {"REDIS_URL": server.url, "RATELIMIT_RULES": rules, "CIRCUIT_BREAKER_COOLDOWN": 30}
    try:
        settings.DRF_REDIS_TOOLKIT = base
        middleware = RateLimitMiddleware(_view)
        assert [middleware(_post("/login/")).status_code for _ in range(2)] == [200, 429]
        server.stop()
        # FAIL_OPEN (the default): the rule is skipped, the view answers.
        assert [middleware(_post("/login/")).status_code for _ in range(3)] == [200] * 3
        settings.DRF_REDIS_TOOLKIT = {**base, "FAIL_OPEN": False}
        refused = middleware(_post("/login/"))
        assert refused.status_code == 503
        assert refused["Content-Type"] == "application/json"
        assert b"unavailable" in refused.content
        # Paths no rule matches never touch Redis: they are answered.
        assert middleware(_post("/elsewhere/")).status_code == 200
    finally:
        server.stop()
