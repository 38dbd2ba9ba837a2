"""The toolkit's settings: one lazy object over the ``DRF_REDIS_TOOLKIT`` dict.

Read every setting through ``toolkit_settings`` at call time, never copy a value
into a class attribute at import: ``override_settings`` and Django's
``setting_changed`` signal then just work. The object validates the whole dict
the first time it is read (and again after every change), so a misconfiguration
fails at start-up with ``ImproperlyConfigured`` naming the key and its value.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTING_NAME = "DRF_REDIS_TOOLKIT"


def _default_redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


DEFAULTS: dict[str, Any] = {
    "REDIS_URL": _default_redis_url,  # callable: resolved when settings are read
    "CLUSTER": False,
    "SENTINELS": None,
    "SENTINEL_SERVICE_NAME": None,
    "CONNECTION_FACTORY": None,
    "ASYNC_CONNECTION_FACTORY": None,
    "DJANGO_CACHE_ALIAS": None,
    "KEY_PREFIX": "drt",
    "SOCKET_TIMEOUT": 0.25,
    "SOCKET_CONNECT_TIMEOUT": 0.25,
    "FAIL_OPEN": True,
    "CIRCUIT_BREAKER_COOLDOWN": 5.0,
    "CACHE_DEFAULT_TIMEOUT": 300,
    "CACHE_COMPRESS_MIN_BYTES": 1024,
    "RATELIMIT_HEADERS": "both",
    "RATELIMIT_RULES": [],
    "IPV6_PREFIX_LENGTH": 64,
    "INVALIDATION": {},
    "METRICS": False,
    "LOCAL_CACHE": False,
    "LOCAL_CACHE_MAX_BYTES": 32 * 1024 * 1024,
    "LOCAL_CACHE_HEARTBEAT": 1.0,
}

#: Settings whose change means the Redis connection must be rebuilt.
CONNECTION_KEYS = frozenset(
    {
        "REDIS_URL",
        "CLUSTER",
        "SENTINELS",
        "SENTINEL_SERVICE_NAME",
        "CONNECTION_FACTORY",
        "ASYNC_CONNECTION_FACTORY",
        "DJANGO_CACHE_ALIAS",
        "SOCKET_TIMEOUT",
        "SOCKET_CONNECT_TIMEOUT",
        "CIRCUIT_BREAKER_COOLDOWN",
    }
)

_KEY_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def _bad(key: str, value: Any, why: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{SETTING_NAME}[{key!r}] = {value!r} is invalid: {why}")


def _number(key: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(key, value, "expected a number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise _bad(key, value, "must be positive")
    return value


def _validate_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(_URL_SCHEMES):
        raise _bad(key, value, "expected a redis://, rediss:// or unix:// URL")
    return value


def _validate_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, value, "expected True or False")
    return value


def _validate_sentinels(key: str, value: Any) -> Any:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(item, (list, tuple))
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        for item in value
    )
    if not ok or not value:
        raise _bad(key, value, "expected a non-empty list of (host, port) pairs")
    return [tuple(item) for item in value]


def _validate_optional_str(key: str, value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or not value):
        raise _bad(key, value, "expected a non-empty string or None")
    return value


def _validate_factory(key: str, value: Any) -> Any:
    if value is None or callable(value):
        return value
    if not isinstance(value, str) or "." not in value:
        raise _bad(key, value, "expected a dotted path to a callable")
    return value


def _validate_prefix(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _KEY_PREFIX_RE.match(value):
        raise _bad(key, value, "expected 1-64 characters from [A-Za-z0-9_.-]")
    return value


def _validate_timeout(key: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, value, "expected a positive whole number of seconds or None")
    return value


def _validate_nonneg_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(key, value, "expected a whole number of bytes >= 0")
    return value


def _validate_headers(key: str, value: Any) -> Any:
    if value not in ("ietf", "legacy", "both", None):
        raise _bad(key, value, 'expected "ietf", "legacy", "both" or None')
    return value


def _validate_ipv6_prefix(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        raise _bad(key, value, "expected a prefix length from 1 to 128 (128: one address)")
    return value


def _validate_rules(key: str, value: Any) -> list[dict[str, Any]]:
    from drf_redis_toolkit.rates import parse_rate

    if not isinstance(value, (list, tuple)):
        raise _bad(key, value, "expected a list of rule dicts")
    rules = []
    for index, rule in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(rule, dict):
            raise _bad(where, rule, "expected a dict with 'path' and 'rate'")
        unknown = set(rule) - {"path", "methods", "rate", "key", "scope"}
        if unknown:
            raise _bad(where, rule, f"unknown field(s) {sorted(unknown)}")
        path = rule.get("path")
        if not isinstance(path, str):
            raise _bad(where, rule, "'path' must be a regular expression string")
        try:
            compiled = re.compile(path)
        except re.error as exc:
            raise _bad(where, rule, f"'path' does not compile: {exc}") from exc
        methods = rule.get("methods")
        if methods is not None and (
            not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods)
        ):
            raise _bad(where, rule, "'methods' must be a list of HTTP method names")
        ident = rule.get("key", "ip")
        if ident not in ("ip", "user"):
            raise _bad(where, rule, "'key' must be 'ip' or 'user'")
        rate = rule.get("rate")
        limits = parse_rate(rate, setting=f"{SETTING_NAME}[{where!r}]['rate']")
        rules.append(
            {
                "path": compiled,
                "methods": frozenset(m.upper() for m in methods) if methods else None,
                "rate": rate,
                "limits": limits,
                "key": ident,
                "scope": rule.get("scope") or f"rule{index}",
            }
        )
    return rules


def _validate_invalidation(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(key, value, 'expected {"app_label.Model": {"namespaces": [...], "keys": [...]}}')
    for model, spec in value.items():
        where = f"{key}[{model!r}]"
        if not isinstance(model, str) or model.count(".") != 1:
            raise _bad(key, model, "model names look like 'app_label.ModelName'")
        if not isinstance(spec, dict) or set(spec) - {"namespaces", "keys"}:
            raise _bad(where, spec, "expected a dict with 'namespaces' and/or 'keys'")
        for field in ("namespaces", "keys"):
            items = spec.get(field, [])
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise _bad(where, spec, f"{field!r} must be a list of strings")
    return value


def _validate_metrics(key: str, value: Any) -> bool:
    if _validate_bool(key, value) and importlib.util.find_spec("prometheus_client") is None:
        raise _bad(key, value, "prometheus-client is not installed (drf-redis-toolkit[metrics])")
    return value


def _validate_local_cache(key: str, value: Any) -> bool:
    if _validate_bool(key, value):
        import redis

        from drf_redis_toolkit.tracking import push_handlers_available

        if not push_handlers_available():
            raise _bad(
                key,
                value,
                f"redis-py {redis.__version__} cannot deliver RESP3 invalidation messages"
                " (LOCAL_CACHE needs redis-py 5.1 or newer)",
            )
    return value


def _validate_positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, value, "expected a positive whole number of bytes")
    return value


#: The Django cache backends whose Redis connection the toolkit can reuse.
REUSABLE_CACHE_BACKENDS = (
    "django.core.cache.backends.redis.RedisCache",
    "django_redis.cache.RedisCache",
)


def _validate_cache_alias(key: str, value: Any) -> str | None:
    """A ``CACHES`` alias backed by Django's or django-redis' ``RedisCache``, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(key, value, "expected the name of an entry of CACHES")
    caches = getattr(django_settings, "CACHES", {}) or {}
    if value not in caches:
        raise _bad(key, value, f"CACHES has no such alias (it has {sorted(caches)})")
    backend = caches[value].get("BACKEND")
    if backend not in REUSABLE_CACHE_BACKENDS:
        raise _bad(
            key,
            value,
            f"CACHES[{value!r}] uses {backend!r}; expected one of {list(REUSABLE_CACHE_BACKENDS)}",
        )
    return value

VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "REDIS_URL": _validate_url,
    "CLUSTER": _validate_bool,
    "SENTINELS": _validate_sentinels,
    "SENTINEL_SERVICE_NAME": _validate_optional_str,
    "CONNECTION_FACTORY": _validate_factory,
    "ASYNC_CONNECTION_FACTORY": _validate_factory,
    "DJANGO_CACHE_ALIAS": lambda k, v: _validate_cache_alias(k, v),
    "KEY_PREFIX": _validate_prefix,
    "SOCKET_TIMEOUT": lambda k, v: _number(k, v),
    "SOCKET_CONNECT_TIMEOUT": lambda k, v: _number(k, v),
    "FAIL_OPEN": _validate_bool,
    "CIRCUIT_BREAKER_COOLDOWN": lambda k, v: _number(k, v, allow_zero=True),
    "CACHE_DEFAULT_TIMEOUT": _validate_timeout,
    "CACHE_COMPRESS_MIN_BYTES": _validate_nonneg_int,
    "RATELIMIT_HEADERS": _validate_headers,
    "RATELIMIT_RULES": _validate_rules,
    "IPV6_PREFIX_LENGTH": _validate_ipv6_prefix,
    "INVALIDATION": _validate_invalidation,
    "METRICS": _validate_metrics,
    "LOCAL_CACHE": _validate_local_cache,
    "LOCAL_CACHE_MAX_BYTES": _validate_positive_int,
    "LOCAL_CACHE_HEARTBEAT": lambda k, v: _number(k, v),
}


class ToolkitSettings:
    """Attribute access to the validated ``DRF_REDIS_TOOLKIT`` settings.

    Values are resolved and validated once per configuration, on first access,
    and dropped by ``reload()`` when Django reports a change.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[set[str]], None]] = []

    def _load(self) -> dict[str, Any]:
        user = getattr(django_settings, SETTING_NAME, None) or {}
        if not isinstance(user, dict):
            raise ImproperlyConfigured(f"{SETTING_NAME} must be a dict, got {type(user).__name__}")
        unknown = sorted(set(user) - set(DEFAULTS))
        if unknown:
            raise ImproperlyConfigured(
                f"{SETTING_NAME} has unknown key(s) {unknown}; valid keys are {sorted(DEFAULTS)}"
            )
        values: dict[str, Any] = {}
        for key, default in DEFAULTS.items():
            raw = user[key] if key in user else (default() if callable(default) else default)
            values[key] = VALIDATORS[key](key, raw)
        if values["SENTINELS"] and not values["SENTINEL_SERVICE_NAME"]:
            raise _bad("SENTINEL_SERVICE_NAME", None, "required when SENTINELS is set")
        if values["SENTINELS"] and values["CLUSTER"]:
            raise _bad("CLUSTER", True, "SENTINELS and CLUSTER cannot be combined")
        if values["DJANGO_CACHE_ALIAS"] is not None:
            for other in ("CONNECTION_FACTORY", "SENTINELS", "CLUSTER"):
                if values[other]:
                    raise _bad(
                        "DJANGO_CACHE_ALIAS",
                        values["DJANGO_CACHE_ALIAS"],
                        f"cannot be combined with {other} (the cache's connection is used)",
                    )
        return values

    @property
    def values(self) -> dict[str, Any]:
        values = self._values
        if values is None:
            with self._lock:
                if self._values is None:
                    loaded = self._load()
                    # Plain attributes from now on: reading a setting on the hot path is
                    # then an ordinary lookup, not a failed one followed by __getattr__.
                    self.__dict__.update(loaded)
                    self._values = loaded
                values = self._values
        return values

    def __getattr__(self, name: str) -> Any:
        # Only reached before the first load or after a change dropped the attributes.
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"no toolkit setting named {name!r}")
        return self.values[name]

    def _forget(self) -> None:
        self._values = None
        for key in DEFAULTS:
            self.__dict__.pop(key, None)

    def check(self) -> None:
        """Validate the current settings now, raising ``ImproperlyConfigured``."""
        self._forget()
        _ = self.values

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(changed_keys)`` after the settings change."""
        self._listeners.append(listener)

    def reload(self) -> None:
        old = self._values
        self._forget()
        try:
            new = self.values
        except ImproperlyConfigured:
            # Let the next access raise where the caller can see it.
            self._forget()
            changed = set(DEFAULTS)
        else:
            changed = set(DEFAULTS) if old is None else {k for k in DEFAULTS if old[k] != new[k]}
        for listener in list(self._listeners):
            listener(changed)


toolkit_settings = ToolkitSettings()


@receiver(setting_changed, dispatch_uid="drf_redis_toolkit.conf.reload")
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING_NAME, "REST_FRAMEWORK"):
        toolkit_settings.reload()
