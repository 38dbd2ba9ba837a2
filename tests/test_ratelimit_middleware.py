"""RateLimitMiddleware's public options on every backend: user keys, several rules, outages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from rest_framework.test import APIRequestFactory

from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.middleware import RateLimitMiddleware
from drf_redis_toolkit.rates import parse_rate
from tests import servers

factory = APIRequestFactory()


def _view(request):
    return HttpResponse("ok")


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


@pytest.mark.parametrize("order", ["broad-first", "narrow-first"])
def test_a_request_refused_by_one_rule_is_not_counted_by_another(backend, settings, order):
    broad = {"path": r"^/api/", "rate": "10/min", "key": "ip", "scope": "broad"}
    narrow = {"path": r"^/api/login/$", "methods": ["POST"], "rate": "2/min", "key": "ip",
              "scope": "narrow"}  # fmt: skip
    rules = [broad, narrow] if order == "broad-first" else [narrow, broad]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    middleware = RateLimitMiddleware(_view)
    statuses = [middleware(_post("/api/login/")).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    refused = middleware(_post("/api/login/"))
    assert refused["X-RateLimit-Limit"] == "2"
    # The three refused logins were taken back from (or never recorded in) the broad rule.
    assert _remaining("broad", "ip:10.2.2.2", "10/min") == 8
    assert _remaining("narrow", "ip:10.2.2.2", "2/min") == 0
    # Other paths under the broad rule still have its budget.
    assert [middleware(_post("/api/other/")).status_code for _ in range(9)] == [200] * 8 + [429]


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
