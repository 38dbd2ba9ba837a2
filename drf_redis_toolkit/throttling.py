"""DRF throttle classes on an exact sliding window, decided in one atomic Lua call.

Drop-in for ``REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]``: the same scopes,
rates (``DEFAULT_THROTTLE_RATES``), client identification (``get_ident`` and
``NUM_PROXIES``) and hooks (``get_cache_key``, ``get_rate``, ``wait``) as DRF's
own classes. What changes is the decision: DRF reads a pickled list, edits it
in Python and writes it back, so concurrent requests race and over-admit; here
the whole check-and-record is one script on the Redis server.

Two algorithms with the same interface:

* ``SlidingWindowThrottle`` and friends keep a log of admitted requests in a
  sorted set: exact, memory proportional to the limit.
* ``SlidingWindowCounterThrottle`` and friends keep two counters per window:
  constant memory, approximate (see ``docs/throttling.md`` for the bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.rates import Limit, parse_rate

REQUEST_STATE_ATTR = "_drf_redis_toolkit_throttle"


class ThrottlingUnavailable(APIException):
    """Answered (503) when Redis is unreachable and ``FAIL_OPEN`` is ``False``."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Rate limiting is temporarily unavailable; please retry shortly."
    default_code = "throttling_unavailable"


@dataclass
class RequestThrottleState:
    """The toolkit's throttle decisions for one request (read by the middleware)."""

    decisions: list[ratelimit.Decision] = field(default_factory=list)
    denied: bool = False

    def refuse(self) -> None:
        """Mark the request refused and take back what earlier throttles recorded."""
        if self.denied:
            return
        self.denied = True
        try:
            ratelimit.undo(self.decisions)
        except RedisUnavailable:
            pass  # the records expire with their window; nothing more to do


def request_state(request: Any) -> RequestThrottleState:
    """The state kept on the Django ``HttpRequest`` (DRF's ``Request`` wraps it)."""
    http_request = getattr(request, "_request", request)
    state = getattr(http_request, REQUEST_STATE_ATTR, None)
    if state is None:
        state = RequestThrottleState()
        setattr(http_request, REQUEST_STATE_ATTR, state)
    return state


class SlidingWindowThrottle(BaseThrottle):
    """Base class: limit requests per ``get_cache_key()`` identity on an exact sliding window.

    Subclasses set ``scope`` (the rate comes from ``DEFAULT_THROTTLE_RATES``) or
    ``rate``, and implement ``get_cache_key()``; ``get_cost()`` lets an
    expensive endpoint count as several requests. The rate is read on every
    call, so ``override_settings`` and changed settings take effect at once.
    """

    scope: str | None = None
    rate: str | None = None
    algorithm: str = ratelimit.LOG

    def __init__(self) -> None:
        self.decision: ratelimit.Decision | None = None

    # -- hooks -------------------------------------------------------------

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        """Return the identity to limit (hashed into the Redis key), or ``None`` to skip."""
        raise NotImplementedError(".get_cache_key() must be overridden")

    def get_rate(self) -> str | None:
        """Return the rate string: ``self.rate``, else ``DEFAULT_THROTTLE_RATES[scope]``."""
        if self.rate is not None:
            return self.rate
        if not self.scope:
            raise ImproperlyConfigured(
                f"You must set either `.scope` or `.rate` for '{type(self).__name__}' throttle"
            )
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError as exc:
            raise ImproperlyConfigured(
                f"No default throttle rate set for '{self.scope}' scope"
            ) from exc

    def get_cost(self, request: Any, view: Any) -> int:
        """How many requests this request counts as (default 1)."""
        return 1

    def get_limits(self) -> tuple[Limit, ...] | None:
        """The parsed rate (parsing is cached); ``None`` means "not limited"."""
        rate = self.get_rate()
        if rate is None:
            return None
        try:
            return parse_rate(rate)
        except ImproperlyConfigured:
            # Only now build the setting's name, for the message (the hot path skips it).
            if self.rate is None:
                where = f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'][{self.scope!r}]"
            else:
                where = f"{type(self).__name__}.rate"
            return parse_rate(rate, setting=where)  # raises again, naming the setting

    @property
    def scope_name(self) -> str:
        return self.scope or type(self).__name__

    # -- DRF's throttle interface -----------------------------------------

    def allow_request(self, request: Any, view: Any) -> bool:
        limits = self.get_limits()
        if limits is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        cost = self.get_cost(request, view)
        state = request_state(request)
        try:
            # Once another throttle refused this request, only report: record nothing.
            decision = ratelimit.decide(
                self.algorithm, self.scope_name, ident, limits, cost, record=not state.denied
            )
        except RedisUnavailable as exc:
            if toolkit_settings.FAIL_OPEN:
                return True
            raise ThrottlingUnavailable() from exc
        self.decision = decision
        state.decisions.append(decision)
        if decision.allowed:
            return True
        state.refuse()
        return False

    def wait(self) -> float | None:
        """Exact seconds until a request like the last one would be admitted."""
        if self.decision is None or self.decision.allowed:
            return None
        return self.decision.retry_after

    # -- identification helpers ------------------------------------------

    def ident_for(self, request: Any) -> str:
        """``user:<pk>`` for an authenticated user, else ``ip:<client address>``."""
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        return f"ip:{self.get_ident(request)}"


class AnonSlidingWindowThrottle(SlidingWindowThrottle):
    """Limit anonymous clients by IP (DRF's ``get_ident``, honouring ``NUM_PROXIES``)."""

    scope = "anon"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return None
        return f"ip:{self.get_ident(request)}"


class UserSlidingWindowThrottle(SlidingWindowThrottle):
    """Limit authenticated users by id, and anonymous clients by IP."""

    scope = "user"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.ident_for(request)


class ScopedSlidingWindowThrottle(SlidingWindowThrottle):
    """Limit by the view's ``throttle_scope`` (views without one are not limited)."""

    scope_attr = "throttle_scope"

    def allow_request(self, request: Any, view: Any) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        return super().allow_request(request, view)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.ident_for(request)


class SlidingWindowCounterThrottle(SlidingWindowThrottle):
    """Constant-memory variant: weighted previous + current fixed-window counters."""

    algorithm = ratelimit.COUNTER


class AnonSlidingWindowCounterThrottle(AnonSlidingWindowThrottle):
    algorithm = ratelimit.COUNTER


class UserSlidingWindowCounterThrottle(UserSlidingWindowThrottle):
    algorithm = ratelimit.COUNTER


class ScopedSlidingWindowCounterThrottle(ScopedSlidingWindowThrottle):
    algorithm = ratelimit.COUNTER
