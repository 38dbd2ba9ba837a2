"""Sliding-window throttles: exact counts, sliding, multi-limit, cost, wait(), failures."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.rates import parse_rate
from drf_redis_toolkit.throttling import (
    AnonSlidingWindowCounterThrottle,
    AnonSlidingWindowThrottle,
    ScopedSlidingWindowCounterThrottle,
    ScopedSlidingWindowThrottle,
    SlidingWindowCounterThrottle,
    SlidingWindowThrottle,
    UserSlidingWindowCounterThrottle,
    UserSlidingWindowThrottle,
)
from tests import servers

factory = APIRequestFactory()
VARIANTS = {
    "log": (SlidingWindowThrottle, ratelimit.LOG),
    "counter": (SlidingWindowCounterThrottle, ratelimit.COUNTER),
}


class FixedIdent:
    """A throttle mixin that limits one fixed identity at a rate set per test."""

    def get_cache_key(self, request, view):
        return "ident:fixed"


def make_throttle(base, rate, scope="t", cost=1):
    attrs = {"rate": rate, "scope": scope, "get_cost": lambda self, request, view: cost}
    return type("T", (FixedIdent, base), attrs)


def hit(throttle_cls, request=None):
    request = request or factory.get("/")
    throttle = throttle_cls()
    return throttle.allow_request(request, None), throttle


def server_time(raw) -> float:
    seconds, micros = raw.time()
    return seconds + micros / 1e6


@pytest.mark.parametrize("variant", VARIANTS)
def test_admits_exactly_the_limit_then_refuses(backend, variant):
    throttle = make_throttle(VARIANTS[variant][0], "5/min")
    results = [hit(throttle)[0] for _ in range(8)]
    assert results == [True] * 5 + [False] * 3


def test_refused_requests_are_not_counted(backend):
    throttle = make_throttle(SlidingWindowThrottle, "3/min")
    for _ in range(10):
        hit(throttle)
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    assert backend.raw.zcard(key) == 3


def test_keys_share_one_hash_tag_and_expire(backend):
    throttle = make_throttle(SlidingWindowThrottle, "3/min,10/hour")
    hit(throttle)
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    assert key.startswith("drt:") and key.count("{") == 1 and key.endswith("}")
    assert 3590 <= backend.raw.ttl(key) <= 3600


def test_sliding_not_fixed_across_a_window_boundary(backend):
    """A fixed window would admit again right after its boundary; a sliding one must not."""
    throttle = make_throttle(SlidingWindowThrottle, "3/2s")
    start = server_time(backend.raw)
    assert [hit(throttle)[0] for _ in range(3)] == [True] * 3
    boundary = (int(start) // 2 + 1) * 2  # the next fixed 2 s window starts here
    deadline = time.monotonic() + 3
    while server_time(backend.raw) < boundary + 0.05 and time.monotonic() < deadline:
        time.sleep(0.02)
    if server_time(backend.raw) < start + 1.9:
        assert hit(throttle)[0] is False  # still inside the sliding window
    while server_time(backend.raw) < start + 2.1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hit(throttle)[0] is True


@pytest.mark.parametrize("variant", VARIANTS)
def test_multiple_limits_are_all_or_nothing(backend, variant):
    base, kind = VARIANTS[variant]
    throttle = make_throttle(base, "2/s,3/min")
    assert [hit(throttle)[0] for _ in range(4)] == [True, True, False, False]
    # The two refused requests consumed nothing in the minute limit either:
    decision = ratelimit.decide(kind, "t", "ident:fixed", parse_rate("2/s,3/min"), record=False)
    minute = next(s for s in decision.limits if s.window == 60)
    assert minute.remaining == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_cost_counts_as_several_requests(backend, variant):
    base = VARIANTS[variant][0]
    assert hit(make_throttle(base, "5/min", cost=3))[0] is True
    assert hit(make_throttle(base, "5/min", cost=3))[0] is False
    assert hit(make_throttle(base, "5/min", cost=2))[0] is True
    assert hit(make_throttle(base, "5/min", cost=1))[0] is False


def test_cost_larger_than_the_limit_is_never_admitted(backend):
    allowed, throttle = hit(make_throttle(SlidingWindowThrottle, "5/min", cost=6))
    assert allowed is False
    assert throttle.wait() == 60


def test_wait_is_exact(backend):
    """wait() is when the oldest blocking entry leaves the window, to the microsecond."""
    throttle = make_throttle(SlidingWindowThrottle, "2/10s")
    hit(throttle)
    hit(throttle)
    allowed, refused = hit(throttle)
    assert allowed is False
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    oldest = backend.raw.zrange(key, 0, 0, withscores=True)[0][1]
    expected = (oldest + 10_000_000 - refused.decision.now_us) / 1e6
    assert refused.wait() == pytest.approx(expected, abs=1e-6)
    assert 9 < refused.wait() <= 10


def test_wait_with_cost_points_at_the_entry_that_must_leave(backend):
    throttle = make_throttle(SlidingWindowThrottle, "3/10s")
    for _ in range(3):
        hit(throttle)
    allowed, refused = hit(make_throttle(SlidingWindowThrottle, "3/10s", cost=2))
    assert allowed is False
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    second_oldest = backend.raw.zrange(key, 1, 1, withscores=True)[0][1]
    expected = (second_oldest + 10_000_000 - refused.decision.now_us) / 1e6
    assert refused.wait() == pytest.approx(expected, abs=1e-6)


def test_wait_when_history_exceeds_a_lowered_rate(backend):
    """DRF's wait() returns None here, and its 429 then lacks Retry-After."""
    for _ in range(10):
        hit(make_throttle(SlidingWindowThrottle, "10/min"))
    allowed, refused = hit(make_throttle(SlidingWindowThrottle, "2/min"))
    assert allowed is False
    assert 59 < refused.wait() <= 60


def test_counter_wait_admits_when_it_says(backend):
    throttle = make_throttle(SlidingWindowCounterThrottle, "3/s")
    for _ in range(3):
        hit(throttle)
    allowed, refused = hit(throttle)
    assert allowed is False
    wait = refused.wait()
    assert 0 < wait <= 2
    time.sleep(wait + 0.02)
    assert hit(throttle)[0] is True


def test_malformed_rate_at_call_time_names_scope_and_value(backend):
    rest = {"DEFAULT_THROTTLE_CLASSES": [], "DEFAULT_THROTTLE_RATES": {"user": "100/month"}}
    request = factory.get("/")
    with override_settings(REST_FRAMEWORK=rest):
        with pytest.raises(ImproperlyConfigured, match=r"'user'.*'100/month'"):
            UserSlidingWindowThrottle().allow_request(request, None)


def test_missing_rate_is_improperly_configured(backend):
    rest = {"DEFAULT_THROTTLE_CLASSES": [], "DEFAULT_THROTTLE_RATES": {}}
    with override_settings(REST_FRAMEWORK=rest):
        with pytest.raises(ImproperlyConfigured, match="'user'"):
            UserSlidingWindowThrottle().allow_request(factory.get("/"), None)


def test_rates_are_read_at_call_time(backend):
    for rate, expected in (("1/min", [True, False]), ("3/min", [True, True, True, False])):
        backend.raw.flushall()
        rest = {"DEFAULT_THROTTLE_RATES": {"user": rate}}
        with override_settings(REST_FRAMEWORK=rest):
            got = [
                UserSlidingWindowThrottle().allow_request(factory.get("/"), None) for _ in expected
            ]
        assert got == expected


def test_none_rate_means_unlimited(backend):
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"user": None}}):
        assert all(
            UserSlidingWindowThrottle().allow_request(factory.get("/"), None) for _ in range(5)
        )


def _user(pk):
    from django.contrib.auth.models import User

    return User(pk=pk, username=f"u{pk}")


@pytest.mark.parametrize("counter", [False, True])
def test_identification_like_drf(backend, counter):
    anon_cls = AnonSlidingWindowCounterThrottle if counter else AnonSlidingWindowThrottle
    user_cls = UserSlidingWindowCounterThrottle if counter else UserSlidingWindowThrottle
    rest = {"DEFAULT_THROTTLE_RATES": {"anon": "1/min", "user": "1/min"}}
    with override_settings(REST_FRAMEWORK=rest):
        anon = factory.get("/", REMOTE_ADDR="10.0.0.1")
        anon.user = AnonymousUser()
        other_ip = factory.get("/", REMOTE_ADDR="10.0.0.2")
        other_ip.user = AnonymousUser()
        assert anon_cls().allow_request(anon, None) is True
        assert anon_cls().allow_request(anon, None) is False
        assert anon_cls().allow_request(other_ip, None) is True
        authed = factory.get("/", REMOTE_ADDR="10.0.0.1")
        authed.user = _user(1)
        assert anon_cls().allow_request(authed, None) is True  # not limited by anon
        assert user_cls().allow_request(authed, None) is True
        assert user_cls().allow_request(authed, None) is False
        second = factory.get("/", REMOTE_ADDR="10.0.0.1")
        second.user = _user(2)
        assert user_cls().allow_request(second, None) is True


def test_num_proxies_is_honoured(backend):
    rest = {"NUM_PROXIES": 1, "DEFAULT_THROTTLE_RATES": {"anon": "1/min"}}
    with override_settings(REST_FRAMEWORK=rest):
        first = factory.get("/", REMOTE_ADDR="127.0.0.9", HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2")
        second = factory.get("/", REMOTE_ADDR="127.0.0.9", HTTP_X_FORWARDED_FOR="3.3.3.3, 2.2.2.2")
        other = factory.get("/", REMOTE_ADDR="127.0.0.9", HTTP_X_FORWARDED_FOR="2.2.2.3")
        for request in (first, second, other):
            request.user = AnonymousUser()
        assert AnonSlidingWindowThrottle().allow_request(first, None) is True
        # Same last proxy-appended address: spoofing the left part does not escape.
        assert AnonSlidingWindowThrottle().allow_request(second, None) is False
        assert AnonSlidingWindowThrottle().allow_request(other, None) is True


@pytest.mark.parametrize("cls", [ScopedSlidingWindowThrottle, ScopedSlidingWindowCounterThrottle])
def test_scoped_throttle_uses_the_view_scope(backend, cls):
    class Cart:
        throttle_scope = "cart_write"

    class Free:
        pass

    rest = {"DEFAULT_THROTTLE_RATES": {"cart_write": "2/min"}}
    with override_settings(REST_FRAMEWORK=rest):

        def request():
            new = factory.post("/")
            new.user = _user(1)
            return new

        assert [cls().allow_request(request(), Cart()) for _ in range(3)] == [True, True, False]
        assert all(cls().allow_request(request(), Free()) for _ in range(5))


# -- views, headers and several throttles ------------------------------------


class StrictThrottle(FixedIdent, SlidingWindowThrottle):
    scope = "strict"
    rate = "1/min"


class LooseThrottle(FixedIdent, SlidingWindowThrottle):
    scope = "loose"
    rate = "10/min"


class DrfStrict(UserRateThrottle):
    rate = "1/min"

    def get_cache_key(self, request, view):
        return "drf-strict"


def view_with(*throttles):
    class View(APIView):
        throttle_classes = throttles
        permission_classes = ()

        def get(self, request):
            return Response({"ok": True})

    return View.as_view()


def loose_count(backend):
    key = keyspace.throttle_key(ratelimit.LOG, "loose", "ident:fixed")
    return backend.raw.zcard(key)


@pytest.mark.parametrize("order", ["loose-first", "strict-first"])
def test_a_request_refused_by_one_throttle_is_not_counted_by_another(backend, order):
    """DRF counts a request refused by throttle B against throttle A (DRF issue 6491)."""
    throttles = (LooseThrottle, StrictThrottle)
    view = view_with(*(throttles if order == "loose-first" else reversed(throttles)))
    statuses = [view(factory.get("/")).status_code for _ in range(4)]
    assert statuses == [200, 429, 429, 429]
    assert loose_count(backend) == 1


def test_refusal_by_a_non_toolkit_throttle_is_taken_back_by_the_middleware(backend):
    from django.core.cache import cache

    from drf_redis_toolkit.middleware import RateLimitHeadersMiddleware

    cache.clear()
    view = view_with(LooseThrottle, DrfStrict)
    middleware = RateLimitHeadersMiddleware(view)
    statuses = [middleware(factory.get("/")).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    assert loose_count(backend) == 1


def test_fail_open_admits_and_fail_closed_answers_503(redis_server):
    server = servers.start_redis()
    try:
        settings = {"REDIS_URL": server.url, "CIRCUIT_BREAKER_COOLDOWN": 30}
        view = view_with(StrictThrottle)
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            assert view(factory.get("/")).status_code == 200
            assert view(factory.get("/")).status_code == 429
            server.stop()
            assert [view(factory.get("/")).status_code for _ in range(3)] == [200] * 3
        with override_settings(DRF_REDIS_TOOLKIT={**settings, "FAIL_OPEN": False}):
            response = view(factory.get("/"))
            assert response.status_code == 503
            assert "unavailable" in response.data["detail"]
    finally:
        server.stop()


def test_fail_open_logs_once_per_breaker_trip(redis_server, caplog):
    server = servers.start_redis()
    try:
        settings = {"REDIS_URL": server.url, "CIRCUIT_BREAKER_COOLDOWN": 30}
        view = view_with(StrictThrottle)
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            view(factory.get("/"))
            server.stop()
            with caplog.at_level("WARNING", logger="drf_redis_toolkit"):
                for _ in range(10):
                    view(factory.get("/"))
    finally:
        server.stop()
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


def test_scripts_are_reloaded_after_script_flush(backend):
    """A restarted Redis has no scripts: EVALSHA's NOSCRIPT is answered by loading it again."""
    throttle = make_throttle(SlidingWindowThrottle, "2/min")
    assert hit(throttle)[0] is True
    backend.raw.script_flush()
    assert [hit(throttle)[0] for _ in range(2)] == [True, False]


# -- rates on the class, identities of any type --------------------------------------


class Burst(ScopedSlidingWindowThrottle):
    """DRF's documented pattern: a subclass carrying its own rates."""

    THROTTLE_RATES = {"burst": "1/day"}


class BurstView:
    throttle_scope = "burst"


def _scoped_request():
    request = factory.get("/")
    request.user = _user(7)
    return request


def test_throttle_rates_on_a_subclass_are_honoured(backend):
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {}}):
        got = [Burst().allow_request(_scoped_request(), BurstView()) for _ in range(2)]
    assert got == [True, False]


def test_throttle_rates_on_a_subclass_win_over_the_setting(backend):
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"burst": "100/min"}}):
        got = [Burst().allow_request(_scoped_request(), BurstView()) for _ in range(2)]
        # A class without THROTTLE_RATES still reads the setting, at call time.
        plain = [
            ScopedSlidingWindowCounterThrottle().allow_request(_scoped_request(), BurstView())
            for _ in range(2)
        ]
    assert got == [True, False]
    assert plain == [True, True]


def test_a_scope_missing_from_the_class_rates_names_the_class(backend):
    class Other:
        throttle_scope = "other"

    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"other": "5/min"}}):
        with pytest.raises(ImproperlyConfigured, match=r"'other'.*Burst\.THROTTLE_RATES"):
            Burst().allow_request(_scoped_request(), Other())


def test_a_malformed_class_rate_names_the_class_attribute(backend):
    class Bad(Burst):
        THROTTLE_RATES = {"burst": "1/fortnight"}

    with pytest.raises(ImproperlyConfigured, match=r"Bad\.THROTTLE_RATES\['burst'\].*fortnight"):
        Bad().allow_request(_scoped_request(), BurstView())


class ByPk(SlidingWindowThrottle):
    scope = "bypk"
    rate = "2/min"

    def get_cache_key(self, request, view):
        return request.user.pk  # an int, as DRF allows


def test_a_non_string_identity_works_like_its_string(backend):
    request = _scoped_request()
    assert [ByPk().allow_request(request, None) for _ in range(3)] == [True, True, False]
    key = keyspace.throttle_key(ratelimit.LOG, "bypk", "7")
    assert backend.raw.zcard(key) == 2


# -- IPv6 clients are grouped by prefix ----------------------------------------------


def _anon(ip, **extra):
    request = factory.get("/", REMOTE_ADDR=ip, **extra)
    request.user = AnonymousUser()
    return request


def test_ipv6_addresses_in_one_64_share_a_limit(backend):
    """Rotating addresses inside one /64 allocation does not escape the limit."""
    rest = {"NUM_PROXIES": 0, "DEFAULT_THROTTLE_RATES": {"anon": "2/min"}}
    with override_settings(REST_FRAMEWORK=rest):
        same = [f"2001:db8:1:2::{n:x}" for n in range(1, 5)]
        assert [AnonSlidingWindowThrottle().allow_request(_anon(ip), None) for ip in same] == [
            True,
            True,
            False,
            False,
        ]
        # The next /64 is another client.
        assert AnonSlidingWindowThrottle().allow_request(_anon("2001:db8:1:3::1"), None) is True


def test_ipv6_prefix_length_is_a_setting(backend):
    settings = {**backend.settings, "IPV6_PREFIX_LENGTH": 128}
    rest = {"NUM_PROXIES": 0, "DEFAULT_THROTTLE_RATES": {"anon": "1/min"}}
    with override_settings(REST_FRAMEWORK=rest, DRF_REDIS_TOOLKIT=settings):
        assert AnonSlidingWindowThrottle().allow_request(_anon("2001:db8::1"), None) is True
        assert AnonSlidingWindowThrottle().allow_request(_anon("2001:db8::2"), None) is True
        assert AnonSlidingWindowThrottle().allow_request(_anon("2001:db8::2"), None) is False
    settings = {**backend.settings, "IPV6_PREFIX_LENGTH": 48}
    with override_settings(REST_FRAMEWORK=rest, DRF_REDIS_TOOLKIT=settings):
        assert AnonSlidingWindowThrottle().allow_request(_anon("2001:db8:5:1::1"), None) is True
        assert AnonSlidingWindowThrottle().allow_request(_anon("2001:db8:5:ff::1"), None) is False


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: the IPv4 client
        ("192.0.2.7", "192.0.2.7"),
        ("1.1.1.1,2.2.2.2", "1.1.1.1,2.2.2.2"),  # not one address: unchanged
        (None, None),
    ],
)
def test_group_address(address, expected):
    from drf_redis_toolkit.throttling import group_address

    assert group_address(address) == expected


@pytest.mark.parametrize("value", [0, 129, "64", True, 6.4])
def test_ipv6_prefix_length_is_validated(value):
    from drf_redis_toolkit.conf import toolkit_settings

    with override_settings(DRF_REDIS_TOOLKIT={"IPV6_PREFIX_LENGTH": value}):
        with pytest.raises(ImproperlyConfigured, match=r"IPV6_PREFIX_LENGTH.*1 to 128"):
            toolkit_settings.check()
