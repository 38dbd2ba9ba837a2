"""Rate-limit headers for throttled views, and rate limits for requests outside DRF.

``RateLimitHeadersMiddleware`` writes the headers from the decisions the
toolkit's throttles left on the request. ``RateLimitMiddleware`` applies
``RATELIMIT_RULES`` (e.g. ``POST /admin/login/`` at ``5/min`` per IP) with the
same engine before the view runs, and answers 429 itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.functional import LazyObject, empty

from drf_redis_toolkit import ratelimit, signals
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.drivers import Call, Flow, run_async, run_sync
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.throttle_rounds import PASS_ATTR, ThrottleRound
from drf_redis_toolkit.throttling import ThrottlingUnavailable, client_address


def _seconds(value: float) -> int:
    """Whole seconds for a header, rounded up so clients never come back too early."""
    return max(math.ceil(value - 1e-9), 0)


def _policy_name(decision: ratelimit.Decision, state: ratelimit.LimitState) -> str:
    return f"{decision.scope}-{state.window}s"


def apply_rate_limit_headers(response: HttpResponse, decisions: list[ratelimit.Decision]) -> None:
    """Write the ``RATELIMIT_HEADERS`` style headers for the most restrictive limit.

    On a refused request that is the blocking limit with the longest wait, and
    ``Retry-After`` is never earlier than the ``RateLimit`` header's ``t``.
    """
    if not decisions:
        return
    style = toolkit_settings.RATELIMIT_HEADERS
    pairs = [(d, d.most_restrictive()) for d in decisions if d.limits]
    if not pairs:
        return
    blocking = [(d, s) for d, s in pairs if s.retry_after > 0]
    if blocking:
        decision, chosen = max(blocking, key=lambda pair: pair[1].retry_after)
        reset = max(chosen.reset, chosen.retry_after)
    else:
        decision, chosen = min(pairs, key=lambda pair: (pair[1].remaining, -pair[1].reset))
        reset = chosen.reset
    if style in ("legacy", "both"):
        response["X-RateLimit-Limit"] = str(chosen.limit)
        response["X-RateLimit-Remaining"] = str(chosen.remaining)
        response["X-RateLimit-Reset"] = str(_seconds(reset))
    if style in ("ietf", "both"):
        response["RateLimit-Policy"] = ", ".join(
            f'"{_policy_name(d, s)}";q={s.limit};w={s.window}' for d in decisions for s in d.limits
        )
        response["RateLimit"] = (
            f'"{_policy_name(decision, chosen)}";r={chosen.remaining};t={_seconds(reset)}'
        )
    if response.status_code == 429:
        wait = max((d.retry_after for d in decisions), default=0.0)
        current = response.get("Retry-After")
        seconds = max(_seconds(wait), 1)
        if current is None or not current.isdigit() or int(current) < seconds:
            response["Retry-After"] = str(seconds)


def answering_rounds(rounds: list[ThrottleRound], response: HttpResponse) -> list[ThrottleRound]:
    """The rounds of the view that produced ``response`` (DRF keeps it as ``view.response``).

    A batch view calling other views leaves several rounds on one request; the
    headers describe the limits of the view whose answer the client gets. When
    no view claims the response (a wrapper replaced it), the first, outermost,
    dispatch answers.
    """
    own = [r for r in rounds if getattr(r.view, "response", None) is response]
    return own or rounds[:1]


class _BothWays:
    """Django's ``sync_and_async_middleware`` pattern: one instance serves either stack.

    ``get_response`` is a coroutine function under ASGI with an async chain:
    ``__call__`` then returns a coroutine (``_acall``), so the request never
    leaves the event loop here. The logic lives in the subclass's flow, written
    once (see ``drivers``).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return run_sync(self._flow(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return await run_async(self._flow(request))

    def _flow(self, request: HttpRequest) -> Flow[HttpResponse]:
        raise NotImplementedError


class RateLimitHeadersMiddleware(_BothWays):
    """Add ``X-RateLimit-*`` and/or ``RateLimit-Policy``/``RateLimit`` to throttled responses.

    It only reads: the throttles themselves take back what a refused round
    recorded, so a 429 the view answers itself (an upstream quota) stays
    counted. Each pass collects the rounds run under it, so one request object
    sent through it several times never mixes passes. Sync and async capable.
    """

    def _flow(self, request: HttpRequest) -> Flow[HttpResponse]:
        outer = request.__dict__.get(PASS_ATTR)
        rounds: list[ThrottleRound] = []
        setattr(request, PASS_ATTR, rounds)
        try:
            response = yield Call(self.get_response, request)
        finally:
            if outer is None:
                request.__dict__.pop(PASS_ATTR, None)
                for round_ in rounds:
                    round_.close()
            else:
                setattr(request, PASS_ATTR, outer)
                outer.extend(rounds)
        decisions = [d for r in answering_rounds(rounds, response) for d in r.decisions]
        if decisions:
            apply_rate_limit_headers(response, decisions)
        elif response.status_code == 429 and "Retry-After" not in response:
            response["Retry-After"] = "1"
        return response


def _user_unread(request: HttpRequest) -> bool:
    """Whether reading ``request.user`` may still run queries: Django's lazy user not
    yet read. Absent, or already read (or set by hand), it costs nothing to read."""
    user = request.__dict__.get("user")
    return isinstance(user, LazyObject) and user._wrapped is empty


def _user_identity(request: HttpRequest) -> str | None:
    """``"user:<pk>"`` for an authenticated ``request.user``, else ``None``.

    Reading ``request.user`` may run database queries (Django's lazy user reads
    the session and the user table), which must not run on an event loop: the
    flow calls this as a step, in line when sync and in the ORM's thread on ASGI,
    once per pass (one request object sent twice may carry another user).
    """
    user = getattr(request, "user", None)
    return f"user:{user.pk}" if user is not None and user.is_authenticated else None


class RateLimitMiddleware(_BothWays):
    """Apply ``RATELIMIT_RULES`` to every request, DRF view or not, answering 429 itself.

    A rule: ``{"path": regex, "methods": [...], "rate": "5/min", "key": "ip"|"user"}``;
    ``path`` is searched in ``request.path_info``. Rules are read at call time.
    Sync and async capable: under ASGI the decisions use the loop's async client.
    """

    def _flow(self, request: HttpRequest) -> Flow[HttpResponse]:
        rules = toolkit_settings.RATELIMIT_RULES
        decisions: list[ratelimit.Decision] = []
        refused = False
        user: str | None = None
        user_read = False
        for rule in rules:
            if rule["methods"] is not None and request.method not in rule["methods"]:
                continue
            if not rule["path"].search(request.path_info):
                continue
            if rule["key"] == "user" and not user_read:
                if _user_unread(request):  # a step: in the ORM's thread on ASGI
                    user = yield Call(_user_identity, request)
                else:
                    user = _user_identity(request)
                user_read = True
            identity = user if rule["key"] == "user" else None
            question = ratelimit.ask(
                ratelimit.LOG,
                rule["scope"],
                identity or f"ip:{client_address(request)}",
                rule["limits"],
                record=not refused,
            )
            try:
                decision = yield ratelimit.Decide(question)
            except RedisUnavailable:
                if toolkit_settings.FAIL_OPEN:
                    continue
                exc = ThrottlingUnavailable()
                return JsonResponse({"detail": str(exc.detail)}, status=exc.status_code)
            decisions.append(decision)
            signals.throttle(self, request, None, decision)
            if not decision.allowed and not refused:
                refused = True
                try:
                    yield ratelimit.Undo(decisions)
                except RedisUnavailable:
                    pass
        if refused:
            wait = max(d.retry_after for d in decisions)
            response: HttpResponse = JsonResponse(
                {"detail": f"Request was throttled. Expected available in {_seconds(wait)} s."},
                status=429,
            )
        else:
            response = yield Call(self.get_response, request)
        apply_rate_limit_headers(response, decisions)
        return response
