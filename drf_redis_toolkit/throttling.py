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

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from drf_redis_toolkit import ratelimit, signals
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.keys import throttle_key
from drf_redis_toolkit.rates import Limit, parse_rate
from drf_redis_toolkit.throttle_rounds import ROUND_ATTR, creation_number, current_round


class ThrottlingUnavailable(APIException):
    """Answered (503) when Redis is unreachable and ``FAIL_OPEN`` is ``False``."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Rate limiting is temporarily unavailable; please retry shortly."
    default_code = "throttling_unavailable"


# -- client identification -------------------------------------------------------


_drf_ident = BaseThrottle()


@lru_cache(maxsize=4096)
def _group_address(address: str, prefix_length: int) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not one address (e.g. a whole X-Forwarded-For): leave it alone
    if ip.version == 4:
        return address
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip), prefix_length), strict=False))


def group_address(address: str | None) -> str | None:
    """Return an IPv6 ``address`` as its ``IPV6_PREFIX_LENGTH`` network, others unchanged.

    One IPv6 client usually owns a whole /64 and can rotate addresses inside it
    at will; limiting per address would let it escape. IPv4-mapped IPv6
    addresses count as their IPv4 address.
    """
    if not address:
        return address
    return _group_address(address, toolkit_settings.IPV6_PREFIX_LENGTH)


def client_address(request: Any) -> str | None:
    """The client's address as the toolkit limits it: DRF's ``get_ident``, IPv6 grouped.

    ``get_ident`` honours ``NUM_PROXIES``; when it is ``None`` DRF returns the
    whole ``X-Forwarded-For`` header if there is one, which any client can set
    (the system check ``drf_redis_toolkit.W001`` warns about it).
    """
    http_request = getattr(request, "_request", request)
    settings_now = (api_settings.NUM_PROXIES, toolkit_settings.IPV6_PREFIX_LENGTH)
    known = getattr(http_request, _ADDRESS_ATTR, None)
    if known is not None and known[0] == settings_now:
        return known[1]  # the view's other throttles (and the look-ahead) ask again
    address = group_address(_drf_ident.get_ident(request))
    try:
        setattr(http_request, _ADDRESS_ATTR, (settings_now, address))
    except AttributeError:
        pass  # a request that takes no attributes: work it out each time
    return address


#: Where ``client_address`` keeps its answer on the request, with the settings it used.
_ADDRESS_ATTR = "_drf_redis_toolkit_client_address"


#: ``SimpleRateThrottle`` hooks a subclass might override, and what to do instead. Defined
#: on a toolkit throttle they would be silently ignored, so the class is refused.
_DRF_ONLY_HOOKS = {
    "parse_rate": "write the rate in the toolkit's grammar ('5/10s', '10/s,1000/day')",
    "throttle_success": "connect a receiver to drf_redis_toolkit.signals.throttle_decided",
    "throttle_failure": "connect a receiver to drf_redis_toolkit.signals.throttle_decided",
    "timer": "the clock is the Redis server's; tests wait on conditions or use a short rate",
}


class SlidingWindowThrottle(BaseThrottle):
    """Base class: limit requests per ``get_cache_key()`` identity on an exact sliding window.

    Subclasses set ``scope`` (the rate comes from ``DEFAULT_THROTTLE_RATES``,
    or from the class's own ``THROTTLE_RATES`` as in DRF) or ``rate``, and
    implement ``get_cache_key()``; ``get_cost()`` lets an expensive endpoint
    count as several requests. The setting is read on every call, so
    ``override_settings`` and changed settings take effect at once.
    """

    scope: str | None = None
    rate: str | None = None
    #: Rates by scope for this class only, replacing ``DEFAULT_THROTTLE_RATES`` (as in DRF);
    #: ``None``: read ``DEFAULT_THROTTLE_RATES`` at call time.
    THROTTLE_RATES: Mapping[str, str | None] | None = None
    algorithm: str = ratelimit.LOG
    #: Set when the throttle is made; tells which ``check_throttles`` round it can join.
    _round_sequence: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, instead in _DRF_ONLY_HOOKS.items():
            if name in vars(cls):
                raise ImproperlyConfigured(
                    f"{cls.__qualname__}.{name}: DRF's SimpleRateThrottle calls it, this "
                    f"throttle never would (the decision is one Lua call on Redis): {instead}"
                )

    def __init__(self) -> None:
        self.decision: ratelimit.Decision | None = None
        self._round_sequence = creation_number()

    # -- hooks -------------------------------------------------------------

    def get_cache_key(self, request: Any, view: Any) -> Any:
        """Return the identity to limit (hashed into the Redis key), or ``None`` to skip.

        Unlike DRF's, this is the identity alone (``"user:42"``, or any value:
        it is turned into a string), not a cache key: use ``reset()`` to forget
        a client.
        """
        raise NotImplementedError(".get_cache_key() must be overridden")

    def get_rate(self) -> str | None:
        """Return ``self.rate``, else the scope's rate in ``THROTTLE_RATES`` or the setting."""
        if self.rate is not None:
            return self.rate
        if not self.scope:
            raise ImproperlyConfigured(
                f"You must set either `.scope` or `.rate` for '{type(self).__name__}' throttle"
            )
        rates = self.THROTTLE_RATES
        if rates is None:
            rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        try:
            return rates[self.scope]
        except KeyError as exc:
            where = (
                "" if self.THROTTLE_RATES is None else f" in {type(self).__name__}.THROTTLE_RATES"
            )
            raise ImproperlyConfigured(
                f"No default throttle rate set for '{self.scope}' scope{where}"
            ) from exc

    def rate_source(self) -> str:
        """Name where the rate comes from, for error messages."""
        if self.rate is not None:
            return f"{type(self).__name__}.rate"
        if self.THROTTLE_RATES is not None:
            return f"{type(self).__name__}.THROTTLE_RATES[{self.scope!r}]"
        return f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'][{self.scope!r}]"

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
            return parse_rate(rate, setting=self.rate_source())  # raises again, naming it

    @property
    def scope_name(self) -> str:
        return self.scope or type(self).__name__

    def bind(self, view: Any) -> bool:
        """Prepare for ``view`` (the scoped classes read its scope); ``False``: not limited."""
        return True

    def identity(self, request: Any, view: Any) -> str | None:
        """``get_cache_key()`` as a string (DRF accepts any value there, e.g. an int pk)."""
        ident = self.get_cache_key(request, view)
        if ident is None or isinstance(ident, str):
            return ident
        return str(ident)

    # -- DRF's throttle interface -----------------------------------------

    def allow_request(self, request: Any, view: Any) -> bool:
        asked = self.what_to_ask(request, view)
        if asked is None:
            return True
        limits, ident, cost = asked
        round_ = current_round(self, request, view)
        # Once another throttle of this round refused, only report: record nothing.
        record = not round_.refused
        try:
            decision = None
            if round_.pending:  # decided ahead by the round's first throttle?
                key = throttle_key(self.algorithm, self.scope_name, ident)
                decision = round_.answer(self.algorithm, key, limits, cost, record)
            if decision is None:
                question = ratelimit.ask(
                    self.algorithm, self.scope_name, ident, limits, cost, record=record
                )
                later = _later_questions(self, question, request, view)
                decision = round_.decide([question, *later])
        except RedisUnavailable as exc:
            if toolkit_settings.FAIL_OPEN:
                return True
            raise ThrottlingUnavailable() from exc
        self.decision = decision
        signals.throttle(self, request, view, decision)
        if decision.allowed:
            return True
        round_.refuse()
        return False

    def what_to_ask(self, request: Any, view: Any) -> tuple[tuple[Limit, ...], str, int] | None:
        """``(limits, identity, cost)`` of ``request``, or ``None`` when it is not limited."""
        if not self.bind(view):
            return None
        limits = self.get_limits()
        if limits is None:
            return None
        ident = self.identity(request, view)
        if ident is None:
            return None
        return limits, ident, self.get_cost(request, view)

    def question(self, request: Any, view: Any) -> ratelimit.Question | None:
        """What ``allow_request`` would ask Redis (recording), or ``None`` if not limited."""
        asked = self.what_to_ask(request, view)
        if asked is None:
            return None
        limits, ident, cost = asked
        return ratelimit.ask(self.algorithm, self.scope_name, ident, limits, cost)

    def wait(self) -> float | None:
        """Exact seconds until a request like the last one would be admitted."""
        if self.decision is None or self.decision.allowed:
            return None
        return self.decision.retry_after

    def reset(self, request: Any, view: Any = None) -> bool:
        """Forget what this throttle recorded for ``request``'s client; ``True`` if any.

        The toolkit's answer to DRF's ``cache.delete(throttle.get_cache_key(request, view))``.
        """
        if not self.bind(view):
            return False
        ident = self.identity(request, view)
        if ident is None:
            return False
        return ratelimit.reset(self.algorithm, self.scope_name, ident) > 0

    # -- identification helpers ------------------------------------------

    def get_ident(self, request: Any) -> Any:
        """DRF's ``get_ident`` (``NUM_PROXIES``), with IPv6 grouped by ``IPV6_PREFIX_LENGTH``."""
        return client_address(request)

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

    def bind(self, view: Any) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        return bool(self.scope)

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


@lru_cache(maxsize=1)
def _drf_round() -> tuple[Any, Any]:
    """DRF's ``check_throttles`` code and ``get_throttles`` (imported late: DRF's
    settings import the throttle classes while ``rest_framework.views`` loads)."""
    from rest_framework.views import APIView

    return APIView.check_throttles.__code__, APIView.get_throttles


def _later_questions(
    first: SlidingWindowThrottle, asked: ratelimit.Question, request: Any, view: Any
) -> list[ratelimit.Question]:
    """The questions of the toolkit throttles DRF will call after ``first`` in this round.

    Only when that is certain: ``first`` is the round's first toolkit throttle,
    called by DRF's own ``check_throttles`` (which calls every throttle of
    ``get_throttles()`` in turn) on a view that keeps DRF's ``get_throttles``,
    and only the throttles after ``first`` in that list whose ``allow_request``
    is this class's own. A key already asked is left to its throttle's own call
    (it must see this request recorded). Anything else decides alone, as before.
    """
    if view is None or len(getattr(view, "throttle_classes", ())) < 2:
        return []  # by hand, or nothing after it: nothing to look ahead at
    round_ = getattr(view, ROUND_ATTR, None)
    check_throttles, get_throttles = _drf_round()
    if (
        round_ is None
        or round_.decisions
        or len(round_.members) != 1
        or round_.caller is None
        or round_.caller.f_code is not check_throttles
        or getattr(type(view), "get_throttles", None) is not get_throttles
    ):
        return []
    found_first = False
    seen = {(asked.kind, asked.key)}
    questions: list[ratelimit.Question] = []
    for throttle in view.get_throttles():
        if not isinstance(throttle, SlidingWindowThrottle):
            continue
        if not found_first:
            found_first = type(throttle) is type(first)
            continue
        if type(throttle).allow_request is not SlidingWindowThrottle.allow_request:
            continue
        try:
            question = throttle.question(request, view)
        except Exception:  # noqa: BLE001 - its own call raises it again, in DRF's order,
            break  # and DRF then calls no throttle after it: ask none of them ahead
        if question is None or (question.kind, question.key) in seen:
            continue
        seen.add((question.kind, question.key))
        questions.append(question)
    return questions


def reset_throttle(throttle: type[SlidingWindowThrottle] | str, ident: object) -> int:
    """Forget ``ident``'s history in a throttle class's scope, or in a scope; return keys deleted.

    ``ident`` is what ``get_cache_key()`` returns (``"user:42"``, ``"ip:203.0.113.9"``).
    Given a scope name, both variants (log and counter) are reset; given a class,
    its own. The scoped classes have no scope of their own: pass the view's
    ``throttle_scope``.
    """
    ident = ident if isinstance(ident, str) else str(ident)
    if isinstance(throttle, str):
        return sum(
            ratelimit.reset(kind, throttle, ident) for kind in (ratelimit.LOG, ratelimit.COUNTER)
        )
    if issubclass(throttle, ScopedSlidingWindowThrottle) and not throttle.scope:
        raise ValueError(
            f"{throttle.__name__} takes its scope from the view: pass the view's throttle_scope"
        )
    return ratelimit.reset(throttle.algorithm, throttle.scope or throttle.__name__, ident)
