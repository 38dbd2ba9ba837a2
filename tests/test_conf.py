"""Settings: defaults, validation naming the key, and reloads on ``override_settings``."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.rates import Limit, parse_rate


def test_defaults(settings, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings.DRF_REDIS_TOOLKIT = {}
    assert toolkit_settings.REDIS_URL == "redis://127.0.0.1:6379/0"
    assert toolkit_settings.KEY_PREFIX == "drt"
    assert toolkit_settings.SOCKET_TIMEOUT == 0.25
    assert toolkit_settings.SOCKET_CONNECT_TIMEOUT == 0.25
    assert toolkit_settings.FAIL_OPEN is True
    assert toolkit_settings.CIRCUIT_BREAKER_COOLDOWN == 5
    assert toolkit_settings.CACHE_DEFAULT_TIMEOUT == 300
    assert toolkit_settings.CACHE_COMPRESS_MIN_BYTES == 1024
    assert toolkit_settings.RATELIMIT_HEADERS == "both"
    assert toolkit_settings.RATELIMIT_RULES == []
    assert toolkit_settings.INVALIDATION == {}
    assert toolkit_settings.CLUSTER is False


def test_redis_url_from_environment(settings, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/2")
    settings.DRF_REDIS_TOOLKIT = {}
    assert toolkit_settings.REDIS_URL == "redis://127.0.0.1:6390/2"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SOCKET_TIMEOUT", "fast"),
        ("SOCKET_TIMEOUT", -1),
        ("SOCKET_CONNECT_TIMEOUT", True),
        ("REDIS_URL", "http://example"),
        ("CLUSTER", "yes"),
        ("KEY_PREFIX", "bad prefix{}"),
        ("FAIL_OPEN", 1),
        ("CIRCUIT_BREAKER_COOLDOWN", "5"),
        ("CACHE_DEFAULT_TIMEOUT", 1.5),
        ("CACHE_COMPRESS_MIN_BYTES", -1),
        ("RATELIMIT_HEADERS", "all"),
        ("RATELIMIT_RULES", [{"path": "^/admin/", "rate": "5/month"}]),
        ("RATELIMIT_RULES", [{"path": "(", "rate": "5/min"}]),
        ("RATELIMIT_RULES", [{"path": "^/x", "rate": "5/min", "key": "session"}]),
        ("INVALIDATION", {"Product": {"keys": []}}),
        ("INVALIDATION", {"shop.Product": {"keys": "product:{pk}"}}),
        ("SENTINELS", [("127.0.0.1", "26379")]),
        ("CONNECTION_FACTORY", 42),
    ],
)
def test_bad_settings_name_the_key(key, value):
    with override_settings(DRF_REDIS_TOOLKIT={key: value}):
        with pytest.raises(ImproperlyConfigured) as info:
            toolkit_settings.check()
    assert key in str(info.value)


def test_unknown_key_is_named():
    with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URI": "redis://x"}):
        with pytest.raises(ImproperlyConfigured, match="REDIS_URI"):
            toolkit_settings.check()


def test_local_cache_needs_redis_py_push_handlers(monkeypatch):
    """redis-py 5.0 reads RESP3 invalidation messages and drops them: refused at start-up."""
    from drf_redis_toolkit import tracking

    monkeypatch.setattr(tracking, "push_handlers_available", lambda: False)
    with override_settings(DRF_REDIS_TOOLKIT={"LOCAL_CACHE": True}):
        with pytest.raises(ImproperlyConfigured, match=r"LOCAL_CACHE.*redis-py 5\.1 or newer"):
            toolkit_settings.check()
    with override_settings(DRF_REDIS_TOOLKIT={"LOCAL_CACHE": False}):
        toolkit_settings.check()  # off: any redis-py will do


def test_push_handlers_are_found_on_this_redis_py():
    """The probe names the real attribute: on redis-py 5.1+ it must say yes."""
    import redis

    from drf_redis_toolkit import tracking

    version = tuple(int(part) for part in redis.__version__.split(".")[:2])
    assert tracking.push_handlers_available() is (version >= (5, 1))


def test_sentinels_need_a_service_name():
    with override_settings(DRF_REDIS_TOOLKIT={"SENTINELS": [("127.0.0.1", 26379)]}):
        with pytest.raises(ImproperlyConfigured, match="SENTINEL_SERVICE_NAME"):
            toolkit_settings.check()


def test_system_check_reports_bad_settings():
    with override_settings(DRF_REDIS_TOOLKIT={"SOCKET_TIMEOUT": "fast"}):
        with pytest.raises(SystemCheckError, match="SOCKET_TIMEOUT"):
            call_command("check")


def test_system_check_reports_bad_throttle_rates():
    rest = {
        "DEFAULT_THROTTLE_CLASSES": [],
        "DEFAULT_THROTTLE_RATES": {"anon": "100/month"},
    }
    with override_settings(REST_FRAMEWORK=rest):
        from drf_redis_toolkit.checks import check_throttle_rates

        messages = check_throttle_rates()
    assert len(messages) == 1
    assert "anon" in messages[0].msg and "100/month" in messages[0].msg


def test_override_settings_is_seen_at_call_time():
    with override_settings(DRF_REDIS_TOOLKIT={"KEY_PREFIX": "one"}):
        assert toolkit_settings.KEY_PREFIX == "one"
        with override_settings(DRF_REDIS_TOOLKIT={"KEY_PREFIX": "two"}):
            assert toolkit_settings.KEY_PREFIX == "two"
        assert toolkit_settings.KEY_PREFIX == "one"


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("100/hour", (Limit(100, 3600),)),
        ("5/10s", (Limit(5, 10),)),
        ("300/15m", (Limit(300, 900),)),
        ("1/sec", (Limit(1, 1),)),
        ("2/minute", (Limit(2, 60),)),
        ("3/d", (Limit(3, 86400),)),
        ("1000/day,10/s", (Limit(10, 1), Limit(1000, 86400))),
        (" 10 / s , 10/s ", (Limit(10, 1),)),
    ],
)
def test_rate_grammar(rate, expected):
    assert parse_rate(rate) == expected


@pytest.mark.parametrize(
    "rate", ["100/month", "100", "/min", "x/min", "0/min", "5/0s", "10/s,", "5/400d", "", "1e3/s"]
)
def test_malformed_rates_raise_naming_the_value(rate):
    with pytest.raises(ImproperlyConfigured) as info:
        parse_rate(rate, setting="DEFAULT_THROTTLE_RATES['anon']")
    assert repr(rate) in str(info.value)
    assert "DEFAULT_THROTTLE_RATES['anon']" in str(info.value)


def test_non_string_rate():
    with pytest.raises(ImproperlyConfigured, match="must be a string"):
        parse_rate(100)
