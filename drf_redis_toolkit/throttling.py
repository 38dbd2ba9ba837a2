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
import itertools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import FrameType
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

#: Where a view (or, without a view, the request) keeps its current throttle round.
ROUND_ATTR = "_drf_redis_toolkit_throttle_round"
#: Where ``RateLimitHeadersMiddleware`` collects the rounds of one pass through it.
PASS_ATTR = "_drf_redis_toolkit_throttle_rounds"

#: Orders throttle creations and round starts: a throttle made after a round
#: began cannot belong to it (DRF's ``get_throttles()`` makes a round's throttles
#: before calling any of them).
_sequence = itertools.count()


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
    return group_address(_drf_ident.get_ident(request))


# -- one check_throttles round ------------------------------------------------------


def _caller(frame: FrameType | None) -> FrameType | None:
    """The frame that called ``allow_request`` (DRF's ``check_throttles``).

    Frames of ``allow_request`` methods (a subclass calling ``super()``, a
    throttle delegating to another) are skipped.
    """
    for _ in range(16):
        if frame is None or frame.f_code.co_name != "allow_request":
            return frame
        frame = frame.f_back
    return None


@dataclass(eq=False)
class ThrottleRound:
    """The toolkit's decisions in one ``check_throttles`` round of one view.

    DRF calls every throttle of the round, then raises ``Throttled`` if any
    refused. A refusal takes back what the toolkit's throttles recorded *in this
    round only* (DRF #6491), and the throttles after it only report. Nothing
    recorded in another round (an earlier check, a nested view, an earlier
    dispatch of the same request object) is ever taken back: those requests
    were served.
    """

    request: Any
    view: Any
    started: int
    #: The ``check_throttles`` frame running this round. Held, not just its ``id()``:
    #: a later call's frame may reuse a freed frame's address. Dropped once the round
    #: is over (refused, superseded, or its middleware pass ended).
    caller: FrameType | None = None
    decisions: list[ratelimit.Decision] = field(default_factory=list)
    members: list[Any] = field(default_factory=list)
    refused: bool = False

    def admits(self, throttle: Any, request: Any) -> bool:
        """Whether ``throttle``, called with ``request``, is part of this round."""
        created = getattr(throttle, "_round_sequence", None)
        return (
            request is self.request
            and created is not None
            and created < self.started
            and not any(member is throttle for member in self.members)
        )

    def refuse(self) -> None:
        """A throttle refused: take back what this round's throttles recorded."""
        if self.refused:
            return
        self.refused = True
        self.caller = None
        try:
            ratelimit.undo(self.decisions)
        except RedisUnavailable:
            pass  # the records expire with their window; nothing more to do

    def refused_by_caller(self, frame: FrameType) -> bool:
        """Whether ``frame`` (calling the view's ``throttled()``) is this round's caller."""
        return self.caller is not None and frame is self.caller

    def close(self) -> None:
        """The round is over: no later refusal can be its own."""
        self.caller = None


class _RefusalHook:
    """Stands in for one view instance's ``throttled()`` while its round is open.

    DRF's ``check_throttles`` calls ``view.throttled()`` when any throttle of
    the round refused, the toolkit's or another's. Called from the round's own
    ``check_throttles`` call, it takes the round back before DRF raises
    ``Throttled``; called from anywhere else (a handler answering 429 itself),
    it changes nothing. It lives on the view instance of one dispatch only.
    """

    def __init__(self, original: Any, round_: ThrottleRound) -> None:
        self.original = original
        self.round = round_

    def __call__(self, request: Any, wait: Any) -> Any:
        if self.round.refused_by_caller(sys._getframe(1)):
            self.round.refuse()
        return self.original(request, wait)


def _arm(view: Any, round_: ThrottleRound) -> None:
    original = getattr(view, "throttled", None)
    if not callable(original):
        return
    if isinstance(original, _RefusalHook):
        original = original.original
    try:
        view.throttled = _RefusalHook(original, round_)
    except AttributeError:
        pass  # a view that takes no attributes: toolkit refusals still take back


def current_round(throttle: Any, request: Any, view: Any) -> ThrottleRound:
    """The round ``throttle`` takes part in: the view's current one, or a new one.

    A round belongs to one view instance (one dispatch) and one DRF request; a
    throttle joins it only if it was created before the round began and has not
    decided in it yet, so a second ``check_throttles`` on the same view starts a
    new round. Without a view (a throttle called by hand) the round lives on
    the request.
    """
    holder = view if view is not None else request
    round_ = getattr(holder, ROUND_ATTR, None)
    if not isinstance(round_, ThrottleRound) or not round_.admits(throttle, request):
        if isinstance(round_, ThrottleRound):
            round_.close()
        round_ = ThrottleRound(
            request, view, started=next(_sequence), caller=_caller(sys._getframe(1))
        )
        try:
            setattr(holder, ROUND_ATTR, round_)
        except AttributeError:
            pass
        if view is not None:
            _arm(view, round_)
        http_request = getattr(request, "_request", request)
        collected = getattr(http_request, PASS_ATTR, None)
        if isinstance(collected, list):
            collected.append(round_)
    round_.members.append(throttle)
    return round_


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

    def __init__(self) -> None:
        self.decision: ratelimit.Decision | None = None
        self._round_sequence = next(_sequence)

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
        if not self.bind(view):
            return True
        limits = self.get_limits()
        if limits is None:
            return True
        ident = self.identity(request, view)
        if ident is None:
            return True
        cost = self.get_cost(request, view)
        round_ = current_round(self, request, view)
        try:
            # Once another throttle of this round refused, only report: record nothing.
            decision = ratelimit.decide(
                self.algorithm, self.scope_name, ident, limits, cost, record=not round_.refused
            )
        except RedisUnavailable as exc:
            if toolkit_settings.FAIL_OPEN:
                return True
            raise ThrottlingUnavailable() from exc
        self.decision = decision
        round_.decisions.append(decision)
        if decision.allowed:
            return True
        round_.refuse()
        return False

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
