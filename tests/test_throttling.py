"""Sliding-window throttles: exact counts, sliding, multi-limit, cost, wait(), failures."""

from __future__ import annotations

import math
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
from drf_redis_toolkit.rates import Limit, parse_rate
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


def leaves_in(backend, refused, index: int, window: int) -> float:
    """Seconds from the refused decision until the ``index``-th oldest log entry leaves."""
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    score = backend.raw.zrange(key, index, index, withscores=True)[0][1]
    return (score + window * 1_000_000 - refused.decision.now_us) / 1e6


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


def server_us(raw) -> int:
    seconds, micros = raw.time()
    return int(seconds) * 1_000_000 + int(micros)


def window_at(raw, phase: float) -> int:
    """A window length (whole seconds) in which the server's clock now sits at ``phase``.

    Fixed windows start at multiples of their length, so choosing the length chooses
    where "now" falls inside one: a test gets the phase it needs without sleeping.
    Windows of 1000 s and more move by well under 0.1% while a test runs.
    """
    now = server_time(raw)
    for window in range(1000, 100_000):
        if abs((now % window) / window - phase) < 0.01:
            return window
    raise AssertionError(f"no window puts {now} at phase {phase}")


def counter_estimate(decision, window: int, prev: int, cur: int) -> float:
    """What the counter must estimate: previous * (time left of the fixed window / w) + current."""
    w_us = window * 1_000_000
    start = decision.now_us // w_us * w_us
    return prev * ((start + w_us - decision.now_us) / w_us) + cur


@pytest.mark.parametrize("phase", [0.1, 0.5, 0.9])
def test_counter_weights_the_previous_window_by_the_time_left(backend, phase):
    """80 requests in the previous fixed window, 10 in this one: the estimate is 80 * left + 10."""
    window = window_at(backend.raw, phase)
    w_us = window * 1_000_000
    index = server_us(backend.raw) // w_us
    key = keyspace.throttle_key(ratelimit.COUNTER, "t", "ident:fixed")
    backend.raw.hset(key, mapping={f"{w_us}:{index - 1}": 80, f"{w_us}:{index}": 10})
    limits = (Limit(100, window),)
    probe = ratelimit.decide(ratelimit.COUNTER, "t", "ident:fixed", limits, record=False)
    assert probe.now_us // w_us == index  # still the same fixed window
    estimate = counter_estimate(probe, window, 80, 10)
    assert estimate == pytest.approx(10 + 80 * (1 - phase), abs=1.0)
    assert probe.limits[0].remaining == math.floor(100 - estimate)
    # The largest cost that fits is admitted, one more is refused (each judged at its own now).
    fits = probe.limits[0].remaining
    for cost in (fits, fits + 1):
        decision = ratelimit.decide(
            ratelimit.COUNTER, "t", "ident:fixed", limits, cost=cost, record=False
        )
        expected = counter_estimate(decision, window, 80, 10) + cost <= 100
        assert decision.allowed is expected, (cost, decision)
        if not expected:
            # Refused: retry when the previous window's weight has decayed enough to fit.
            needed = (100 - cost - 10) / 80
            start = decision.now_us // w_us * w_us
            retry_us = math.ceil(start + w_us - needed * w_us - decision.now_us)
            assert decision.limits[0].retry_after == pytest.approx(retry_us / 1e6, abs=2e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sliding_not_fixed_right_after_a_fixed_window_boundary(backend, variant):
    """A full previous fixed window still blocks right after the boundary; a fixed window would not.

    The clock is placed 10% into a fixed window by choosing the window's length; the
    earlier requests are written just before the boundary, as the throttle would have.
    """
    base, kind = VARIANTS[variant]
    window = window_at(backend.raw, 0.1)
    w_us = window * 1_000_000
    index = server_us(backend.raw) // w_us
    boundary = index * w_us
    key = keyspace.throttle_key(kind, "t", "ident:fixed")
    if kind == ratelimit.LOG:
        backend.raw.zadd(key, {f"old:{i}": boundary - 1_000_000 + i for i in range(3)})
    else:
        backend.raw.hset(key, f"{w_us}:{index - 1}", 3)
    allowed, refused = hit(make_throttle(base, f"3/{window}s"))
    assert refused.decision.now_us // w_us == index
    assert allowed is False
    if kind == ratelimit.LOG:
        oldest_leaves = boundary - 1_000_000 + window * 1_000_000
        assert refused.wait() == pytest.approx((oldest_leaves - refused.decision.now_us) / 1e6)
    else:
        assert refused.wait() > 0


def test_log_refuses_while_the_oldest_entry_is_just_inside_the_window(backend):
    """An entry 0.9 s from the window's trailing edge still counts; one past the edge does not."""
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    limits = parse_rate("2/10s")
    for _attempt in range(5):
        backend.raw.delete(key)
        now = server_us(backend.raw)
        edge = now - 10_000_000 + 900_000
        backend.raw.zadd(key, {"old:1": edge, "new:1": now - 1_000_000})
        decision = ratelimit.decide(ratelimit.LOG, "t", "ident:fixed", limits)
        if decision.now_us - 10_000_000 < edge:  # the script ran while it was still inside
            break
    else:
        pytest.fail("the script never ran within 0.9 s of reading the clock")
    assert decision.allowed is False
    assert decision.limits[0].remaining == 0
    expected = (edge + 10_000_000 - decision.now_us) / 1e6
    assert decision.limits[0].retry_after == pytest.approx(expected, abs=1e-6)
    assert backend.raw.zcard(key) == 2
    # At the edge (score == now - window) an entry has left: it is trimmed, the request admitted.
    backend.raw.delete(key)
    now = server_us(backend.raw)
    backend.raw.zadd(key, {"old:1": now - 10_000_000, "new:1": now - 1_000_000})
    decision = ratelimit.decide(ratelimit.LOG, "t", "ident:fixed", limits)
    assert decision.allowed is True
    assert backend.raw.zrange(key, 0, -1)[0] == b"new:1"
    assert backend.raw.zcard(key) == 2


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
    assert refused.wait() == pytest.approx(leaves_in(backend, refused, 1, 10), abs=1e-6)


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
# -- edges found by the Lua mutants (tests/lua_mutants.py) ------------------------------------


def test_log_shorter_windows_count_only_their_own_span(backend):
    """Entries 5 s old count for the minute, not for the second."""
    key = keyspace.throttle_key(ratelimit.LOG, "t", "ident:fixed")
    now = server_us(backend.raw)
    backend.raw.zadd(key, {f"old:{i}": now - 5_000_000 + i for i in range(3)})
    decision = ratelimit.decide(ratelimit.LOG, "t", "ident:fixed", parse_rate("2/s,10/min"))
    assert decision.allowed is True
    second, minute = decision.limits
    assert (second.window, second.remaining) == (1, 1)
    assert (minute.window, minute.remaining) == (60, 6)


def test_log_cost_equal_to_the_limit_waits_for_the_window_to_empty(backend):
    throttle = make_throttle(SlidingWindowThrottle, "3/10s")
    hit(throttle)
    allowed, refused = hit(make_throttle(SlidingWindowThrottle, "3/10s", cost=3))
    assert allowed is False
    assert refused.wait() == pytest.approx(leaves_in(backend, refused, 0, 10), abs=1e-6)
    assert refused.wait() < 10


def test_log_remaining_is_never_negative_under_a_lowered_rate(backend):
    for _ in range(5):
        hit(make_throttle(SlidingWindowThrottle, "10/min"))
    allowed, refused = hit(make_throttle(SlidingWindowThrottle, "2/min"))
    assert allowed is False
    assert refused.decision.limits[0].remaining == 0


def test_counter_cost_equal_to_the_limit_waits_for_the_previous_window_to_decay(backend):
    """Nothing in this fixed window: a cost of the whole limit fits once the previous one left."""
    window = window_at(backend.raw, 0.5)
    w_us = window * 1_000_000
    index = server_us(backend.raw) // w_us
    key = keyspace.throttle_key(ratelimit.COUNTER, "t", "ident:fixed")
    backend.raw.hset(key, f"{w_us}:{index - 1}", 4)
    limits = (Limit(10, window),)
    decision = ratelimit.decide(
        ratelimit.COUNTER, "t", "ident:fixed", limits, cost=10, record=False
    )
    assert decision.allowed is False
    end_of_window = (index + 1) * w_us - decision.now_us
    assert decision.limits[0].retry_after == pytest.approx(end_of_window / 1e6, abs=2e-6)


def test_counter_keeps_the_previous_window_and_drops_older_ones(backend):
    """The first request of a fixed window deletes older counters, never the previous one."""
    window = window_at(backend.raw, 0.5)
    w_us = window * 1_000_000
    index = server_us(backend.raw) // w_us
    key = keyspace.throttle_key(ratelimit.COUNTER, "t", "ident:fixed")
    backend.raw.hset(key, mapping={f"{w_us}:{index - 2}": 7, f"{w_us}:{index - 1}": 8})
    limits = (Limit(100, window),)
    first = ratelimit.decide(ratelimit.COUNTER, "t", "ident:fixed", limits)
    assert first.now_us // w_us == index
    fields = {k.decode(): int(v) for k, v in backend.raw.hgetall(key).items()}
    assert fields == {f"{w_us}:{index - 1}": 8, f"{w_us}:{index}": 1}
    second = ratelimit.decide(ratelimit.COUNTER, "t", "ident:fixed", limits, record=False)
    estimate = counter_estimate(second, window, 8, 1)
    assert second.limits[0].remaining == math.floor(100 - estimate)


def test_counter_key_lives_for_two_windows(backend):
    """The previous window's count is needed for one more window: the key outlives it."""
    hit(make_throttle(SlidingWindowCounterThrottle, "5/min"))
    key = keyspace.throttle_key(ratelimit.COUNTER, "t", "ident:fixed")
    assert 60_000 < backend.raw.pttl(key) <= 120_000
