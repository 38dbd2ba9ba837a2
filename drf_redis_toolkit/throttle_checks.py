"""System checks for the throttles a project really uses, found in settings and the URLconf.

A rate is only read when a request reaches the view that uses it, so a
malformed or missing rate on one view's ``throttle_classes`` would otherwise
be a 500 at its first request. These checks find every toolkit throttle they
can (``DEFAULT_THROTTLE_CLASSES``, and each DRF view the URLconf routes to,
through ``include()``, routers and ``as_view(**initkwargs)``) and ask each for
its rate the way a request would. Throttles chosen at request time by an
overridden ``get_throttles()`` cannot be found; they are checked at their
first request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver

from drf_redis_toolkit.rates import parse_rate

DEFAULTS_NAME = "REST_FRAMEWORK['DEFAULT_THROTTLE_CLASSES']"


@dataclass(frozen=True)
class ThrottleUse:
    """One throttle class as one view (or the defaults) uses it."""

    throttle: type
    where: str  # the view's dotted path, or DEFAULTS_NAME
    view: Any  # what the throttle is given as ``view`` (scoped classes read it)


class _ViewStandIn:
    """Answers attribute reads like the view instance ``as_view(**initkwargs)`` builds."""

    def __init__(self, cls: type | None, initkwargs: dict[str, Any]) -> None:
        self._cls = cls
        self._initkwargs = initkwargs

    def __getattr__(self, name: str) -> Any:
        if name in self._initkwargs:
            return self._initkwargs[name]
        return getattr(self._cls, name, None)


def _patterns(patterns: list[Any]) -> Iterator[URLPattern]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry.url_patterns)
        elif isinstance(entry, URLPattern):
            yield entry


def routed_views() -> Iterator[tuple[str, type, dict[str, Any]]]:
    """``(dotted name, view class, initkwargs)`` of each class-based view in the URLconf."""
    try:
        patterns = get_resolver().url_patterns
    except (ImportError, ImproperlyConfigured):
        return  # Django's own URL checks report a broken URLconf
    for pattern in _patterns(patterns):
        callback = pattern.callback
        cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        if not isinstance(cls, type):
            continue
        initkwargs = getattr(callback, "initkwargs", None)
        if initkwargs is None:
            initkwargs = getattr(callback, "view_initkwargs", None) or {}
        yield f"{cls.__module__}.{cls.__qualname__}", cls, dict(initkwargs)


def throttle_uses() -> Iterator[ThrottleUse]:
    """Every throttle class the defaults and the routed DRF views use."""
    from rest_framework.settings import api_settings
    from rest_framework.views import APIView

    defaults = list(api_settings.DEFAULT_THROTTLE_CLASSES or ())
    for throttle in defaults:
        yield ThrottleUse(throttle, DEFAULTS_NAME, _ViewStandIn(None, {}))
    for where, cls, initkwargs in routed_views():
        if not issubclass(cls, APIView):
            continue
        throttles = initkwargs.get("throttle_classes", getattr(cls, "throttle_classes", ()))
        if throttles is APIView.throttle_classes:
            throttles = defaults  # not overridden: the defaults, as configured now
        view = _ViewStandIn(cls, initkwargs)
        for throttle in throttles or ():
            if isinstance(throttle, type):
                yield ThrottleUse(throttle, where, view)


def _toolkit_uses() -> list[ThrottleUse]:
    from drf_redis_toolkit.throttling import SlidingWindowThrottle

    return [use for use in throttle_uses() if issubclass(use.throttle, SlidingWindowThrottle)]


def _error(error: str, users: list[ThrottleUse], check_id: str) -> checks.Error:
    """An error naming the first throttle and view that read the bad rate."""
    first = users[0]
    others = len({use.where for use in users}) - 1
    more = f" (and {others} more view{'s' if others > 1 else ''})" if others else ""
    throttle = f"{first.throttle.__module__}.{first.throttle.__qualname__}"
    return checks.Error(
        f"{error}: read by throttle {throttle} on {first.where}{more}",
        hint="Fix the rate, or the first request to that view answers 500.",
        id=check_id,
    )


def _rate_error(use: ThrottleUse) -> str | None:
    """Read ``use``'s rate as a request would; the error message, or ``None`` if it is fine."""
    try:
        throttle = use.throttle()
        if throttle.bind(use.view):
            throttle.get_limits()
    except ImproperlyConfigured as exc:
        return str(exc)
    return None


@checks.register(checks.Tags.compatibility)
def check_throttle_rates(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check ``DEFAULT_THROTTLE_RATES`` and the rate of every toolkit throttle in use.

    ``drf_redis_toolkit.E002``: a ``DEFAULT_THROTTLE_RATES`` entry the toolkit's
    grammar refuses: an error when a toolkit throttle uses it (or sits among
    ``DEFAULT_THROTTLE_CLASSES``), a warning otherwise, since DRF's own throttles
    accept rates (``"100/month"``) that mean something else than they say.
    ``drf_redis_toolkit.E003``: a toolkit throttle on a view (or in the defaults)
    whose rate is malformed or missing, wherever it comes from (``rate``,
    ``THROTTLE_RATES``, the view's ``throttle_scope``).
    """
    from rest_framework.settings import api_settings

    uses = _toolkit_uses()
    problems: dict[str, list[ThrottleUse]] = {}
    for use in uses:
        error = _rate_error(use)
        if error is not None:
            problems.setdefault(error, []).append(use)

    toolkit_default = any(use.where == DEFAULTS_NAME for use in uses)
    messages: list[checks.CheckMessage] = []
    reported = set()
    for scope, rate in (api_settings.DEFAULT_THROTTLE_RATES or {}).items():
        if rate is None:
            continue
        try:
            parse_rate(rate, setting=f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'][{scope!r}]")
        except ImproperlyConfigured as exc:
            error = str(exc)
            reported.add(error)
            if error in problems:
                messages.append(_error(error, problems[error], "drf_redis_toolkit.E002"))
            else:
                level = checks.Error if toolkit_default else checks.Warning
                messages.append(level(error, id="drf_redis_toolkit.E002"))
    for error, users in problems.items():
        if error not in reported:
            messages.append(_error(error, users, "drf_redis_toolkit.E003"))
    return messages


def _identifies_by_ip(throttle: type) -> bool:
    from drf_redis_toolkit import throttling

    own = (
        throttling.AnonSlidingWindowThrottle.get_cache_key,
        throttling.UserSlidingWindowThrottle.get_cache_key,
        throttling.ScopedSlidingWindowThrottle.get_cache_key,
    )
    return getattr(throttle, "get_cache_key", None) in own


@checks.register(checks.Tags.security)
def check_client_identification(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``drf_redis_toolkit.W001``: clients identified by IP while ``NUM_PROXIES`` is ``None``.

    DRF's ``get_ident`` then returns the whole ``X-Forwarded-For`` header when
    a request has one, and any client can send a new one with every request.
    """
    from rest_framework.settings import api_settings

    if api_settings.NUM_PROXIES is not None:
        return []
    users = sorted(
        {use.throttle.__qualname__ for use in _toolkit_uses() if _identifies_by_ip(use.throttle)}
    )
    from drf_redis_toolkit.conf import toolkit_settings

    middleware = "drf_redis_toolkit.middleware.RateLimitMiddleware"
    try:
        rules = toolkit_settings.RATELIMIT_RULES
    except ImproperlyConfigured:
        rules = []  # drf_redis_toolkit.E001 reports it
    if rules and middleware in getattr(settings, "MIDDLEWARE", ()):
        users.append("RateLimitMiddleware (RATELIMIT_RULES)")
    if not users:
        return []
    return [
        checks.Warning(
            f"REST_FRAMEWORK['NUM_PROXIES'] is None, so {', '.join(users)} identify clients by "
            "the whole X-Forwarded-For header when a request sends one: any client can pick a "
            "new identity with every request and escape its limit.",
            hint="Set REST_FRAMEWORK['NUM_PROXIES'] to the number of proxies in front of "
            "Django, or to 0 without one.",
            id="drf_redis_toolkit.W001",
        )
    ]
