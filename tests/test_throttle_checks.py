"""``manage.py check`` fails for every toolkit throttle it can find with a bad or missing rate."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from drf_redis_toolkit.checks import check_client_identification, check_throttle_rates

GOOD = {
    "plain": "5/min",
    "fn": "5/min",
    "export": "5/min",
    "scoped_view": "5/min",
    "kw_scope": "5/min",
    "anon": "5/min",
}


def run(rates, urlconf="tests.throttle_check_urls", **rest):
    settings = {"DEFAULT_THROTTLE_CLASSES": [], "DEFAULT_THROTTLE_RATES": rates, **rest}
    with override_settings(ROOT_URLCONF=urlconf, REST_FRAMEWORK=settings):
        return check_throttle_rates()


def test_good_rates_pass():
    assert run(GOOD) == []


@pytest.mark.parametrize(
    ("scope", "names"),
    [
        ("plain", ["PlainThrottle", "tests.throttle_check_urls.PlainView"]),  # include()
        ("fn", ["FnThrottle", "WrappedAPIView"]),  # @api_view + @throttle_classes
        ("export", ["ActionThrottle", "ThingViewSet"]),  # a router's @action(throttle_classes=)
        ("scoped_view", ["ScopedSlidingWindowThrottle", "ScopedView"]),  # throttle_scope
        ("kw_scope", ["ScopedSlidingWindowThrottle", "Unscoped"]),  # as_view(throttle_scope=)
    ],
)
def test_a_malformed_rate_used_only_by_one_view_is_an_error(scope, names):
    messages = run({**GOOD, scope: "10/fortnight"})
    assert [m.id for m in messages] == ["drf_redis_toolkit.E002"]
    assert messages[0].level >= 40  # an error, although no default class is the toolkit's
    assert f"'{scope}'" in messages[0].msg and "10/fortnight" in messages[0].msg
    for name in names:
        assert name in messages[0].msg


@pytest.mark.parametrize(
    ("scope", "names"),
    [
        ("plain", ["PlainThrottle", "tests.throttle_check_urls.PlainView"]),
        ("fn", ["FnThrottle", "WrappedAPIView"]),
        ("export", ["ActionThrottle", "ThingViewSet"]),
        ("scoped_view", ["ScopedSlidingWindowThrottle", "ScopedView"]),
        ("kw_scope", ["ScopedSlidingWindowThrottle", "Unscoped"]),
    ],
)
def test_a_missing_rate_used_by_a_view_is_an_error_naming_view_and_class(scope, names):
    rates = {k: v for k, v in GOOD.items() if k != scope}
    messages = run(rates)
    assert [m.id for m in messages] == ["drf_redis_toolkit.E003"]
    assert messages[0].level >= 40
    assert f"'{scope}'" in messages[0].msg
    for name in names:
        assert name in messages[0].msg


def test_an_unused_malformed_rate_is_only_a_warning():
    messages = run({**GOOD, "drf_only": "100/month"})
    assert [(m.id, m.level) for m in messages] == [("drf_redis_toolkit.E002", 30)]


def test_malformed_rates_on_throttle_classes_are_errors():
    messages = run({}, urlconf="tests.throttle_check_class_urls")
    assert [m.id for m in messages] == ["drf_redis_toolkit.E003"] * 2
    text = " ".join(m.msg for m in messages)
    assert "BadRateAttr.rate" in text and "5/fortnight" in text
    assert "BadClassRates.THROTTLE_RATES['burst']" in text and "1/eon" in text


def test_manage_py_check_fails():
    rest = {"DEFAULT_THROTTLE_CLASSES": [], "DEFAULT_THROTTLE_RATES": {}, "NUM_PROXIES": 0}
    with override_settings(ROOT_URLCONF="tests.throttle_check_class_urls", REST_FRAMEWORK=rest):
        with pytest.raises(SystemCheckError, match=r"drf_redis_toolkit\.E003.*5/fortnight"):
            call_command("check")


def test_default_classes_are_checked_as_configured_now():
    rest = {
        "DEFAULT_THROTTLE_CLASSES": ["drf_redis_toolkit.throttling.UserSlidingWindowThrottle"],
        "DEFAULT_THROTTLE_RATES": {},
    }
    with override_settings(ROOT_URLCONF="tests.urls", REST_FRAMEWORK=rest):
        messages = check_throttle_rates()
    assert [m.id for m in messages] == ["drf_redis_toolkit.E003"]
    assert "'user'" in messages[0].msg and "DEFAULT_THROTTLE_CLASSES" in messages[0].msg


# -- NUM_PROXIES ------------------------------------------------------------------------


def identification(urlconf="tests.throttle_check_urls", **rest):
    settings = {"DEFAULT_THROTTLE_CLASSES": [], "DEFAULT_THROTTLE_RATES": GOOD, **rest}
    with override_settings(ROOT_URLCONF=urlconf, REST_FRAMEWORK=settings):
        return check_client_identification()


def test_ip_throttles_without_num_proxies_warn():
    messages = identification()
    assert [m.id for m in messages] == ["drf_redis_toolkit.W001"]
    assert "AnonSlidingWindowThrottle" in messages[0].msg
    assert "X-Forwarded-For" in messages[0].msg and "NUM_PROXIES" in messages[0].hint


def test_num_proxies_set_or_no_ip_throttle_is_quiet():
    assert identification(NUM_PROXIES=0) == []
    assert identification(NUM_PROXIES=1) == []
    assert identification(urlconf="tests.urls") == []  # no throttle identifying by IP


def test_ratelimit_rules_without_num_proxies_warn(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "drf_redis_toolkit.middleware.RateLimitMiddleware"]
    settings.DRF_REDIS_TOOLKIT = {
        **settings.DRF_REDIS_TOOLKIT,
        "RATELIMIT_RULES": [{"path": "^/login/$", "rate": "5/min"}],
    }
    messages = identification(urlconf="tests.urls")
    assert [m.id for m in messages] == ["drf_redis_toolkit.W001"]
    assert "RateLimitMiddleware" in messages[0].msg
