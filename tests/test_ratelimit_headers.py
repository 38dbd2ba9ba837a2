"""Rate-limit headers on throttled views, and RATELIMIT_RULES for requests outside DRF."""

from __future__ import annotations

import re

import pytest
from django.http import HttpResponse
from django.test import override_settings
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit.middleware import RateLimitHeadersMiddleware, RateLimitMiddleware
from drf_redis_toolkit.throttling import SlidingWindowCounterThrottle, SlidingWindowThrottle

factory = APIRequestFactory()


class Fixed:
    def get_cache_key(self, request, view):
        return "same-client"


class PerMinute(Fixed, SlidingWindowThrottle):
    scope = "burst"
    rate = "3/min"


class PerDay(Fixed, SlidingWindowThrottle):
    scope = "daily"
    rate = "100/day"


class TwoLimits(Fixed, SlidingWindowCounterThrottle):
    scope = "multi"
    rate = "2/10s,50/hour"


def wrapped(*throttles):
    class View(APIView):
        throttle_classes = throttles
        permission_classes = ()

        def get(self, request):
            return Response({"ok": True})

    return RateLimitHeadersMiddleware(View.as_view())


def parse_ratelimit(value):
    match = re.fullmatch(r'"(?P<name>[^"]+)";r=(?P<r>\d+);t=(?P<t>\d+)', value)
    assert match, value
    return match["name"], int(match["r"]), int(match["t"])


def test_legacy_and_ietf_headers_on_admitted_requests(backend):
    view = wrapped(PerMinute, PerDay)
    response = view(factory.get("/"))
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == "3"
    assert response["X-RateLimit-Remaining"] == "2"
    assert 59 <= int(response["X-RateLimit-Reset"]) <= 60
    assert response["RateLimit-Policy"] == '"burst-60s";q=3;w=60, "daily-86400s";q=100;w=86400'
    name, remaining, reset = parse_ratelimit(response["RateLimit"])
    assert (name, remaining) == ("burst-60s", 2)
    assert 59 <= reset <= 60
    assert "Retry-After" not in response


def test_429_carries_retry_after_not_earlier_than_ratelimit_t(backend):
    view = wrapped(PerMinute, PerDay)
    for _ in range(3):
        assert view(factory.get("/")).status_code == 200
    response = view(factory.get("/"))
    assert response.status_code == 429
    assert response["X-RateLimit-Remaining"] == "0"
    _, remaining, reset = parse_ratelimit(response["RateLimit"])
    assert remaining == 0
    assert int(response["Retry-After"]) >= reset >= 59


def test_most_restrictive_limit_is_reported_for_multi_limit_rates(backend):
    view = wrapped(TwoLimits)
    view(factory.get("/"))
    response = view(factory.get("/"))
    assert response["X-RateLimit-Limit"] == "2"
    assert response["X-RateLimit-Remaining"] == "0"
    refused = view(factory.get("/"))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 20


@pytest.mark.parametrize(
    ("style", "present", "absent"),
    [
        ("legacy", ["X-RateLimit-Limit"], ["RateLimit", "RateLimit-Policy"]),
        ("ietf", ["RateLimit", "RateLimit-Policy"], ["X-RateLimit-Limit"]),
        ("both", ["RateLimit", "X-RateLimit-Remaining"], []),
        (None, [], ["RateLimit", "X-RateLimit-Limit"]),
    ],
)
def test_header_styles(backend, settings, style, present, absent):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_HEADERS": style}
    response = wrapped(PerMinute)(factory.get("/"))
    for name in present:
        assert name in response
    for name in absent:
        assert name not in response


def test_unthrottled_views_get_no_headers(backend):
    response = wrapped()(factory.get("/"))
    assert "X-RateLimit-Limit" not in response and "RateLimit" not in response


def _plain_view(request):
    return HttpResponse("login page")


RULES = [{"path": r"^/admin/login/$", "methods": ["POST"], "rate": "5/min", "key": "ip"}]


def test_rules_limit_requests_that_never_reach_drf(backend, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": RULES}
    middleware = RateLimitMiddleware(_plain_view)
    statuses = [
        middleware(factory.post("/admin/login/", REMOTE_ADDR="10.1.1.1")).status_code
        for _ in range(7)
    ]
    assert statuses == [200] * 5 + [429] * 2
    refused = middleware(factory.post("/admin/login/", REMOTE_ADDR="10.1.1.1"))
    assert refused["X-RateLimit-Limit"] == "5"
    assert int(refused["Retry-After"]) >= 59
    assert refused["Content-Type"] == "application/json"
    # Other clients, other methods and other paths are not limited by this rule.
    assert middleware(factory.post("/admin/login/", REMOTE_ADDR="10.1.1.2")).status_code == 200
    assert middleware(factory.get("/admin/login/", REMOTE_ADDR="10.1.1.1")).status_code == 200
    assert middleware(factory.post("/admin/other/", REMOTE_ADDR="10.1.1.1")).status_code == 200


def test_rules_are_validated_at_start_up():
    from django.core.exceptions import ImproperlyConfigured

    from drf_redis_toolkit.conf import toolkit_settings

    bad = [{"path": "^/x", "rate": "5/fortnight"}]
    with override_settings(DRF_REDIS_TOOLKIT={"RATELIMIT_RULES": bad}):
        with pytest.raises(ImproperlyConfigured, match=r"RATELIMIT_RULES.*5/fortnight"):
            toolkit_settings.check()


def test_rules_group_ipv6_clients_by_prefix(backend, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": RULES}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    middleware = RateLimitMiddleware(_plain_view)
    statuses = [
        middleware(factory.post("/admin/login/", REMOTE_ADDR=f"2001:db8:7:7::{n}")).status_code
        for n in range(1, 8)
    ]
    assert statuses == [200] * 5 + [429] * 2
    other = factory.post("/admin/login/", REMOTE_ADDR="2001:db8:7:8::1")
    assert middleware(other).status_code == 200
