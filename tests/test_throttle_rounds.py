"""One ``check_throttles`` round of one view: what a refusal may take back, and what never.

The take-back for DRF #6491 (a request refused by one throttle must not count
against the others) covers only the round in which the refusal happened. A
request that was served stays counted; a nested or repeated dispatch of one
request is counted like a separate request; a 429 the view answers itself is
not a throttle's refusal.
"""

from __future__ import annotations

import functools

import pytest
from django.core.cache import cache
from rest_framework.exceptions import Throttled
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.middleware import RateLimitHeadersMiddleware
from drf_redis_toolkit.throttling import SlidingWindowThrottle

factory = APIRequestFactory()


class Fixed:
    def get_cache_key(self, request, view):
        return "one-client"


class Outer3(Fixed, SlidingWindowThrottle):
    scope = "outer"
    rate = "3/min"


class Inner1(Fixed, SlidingWindowThrottle):
    scope = "inner"
    rate = "1/min"


class Loose(Fixed, SlidingWindowThrottle):
    scope = "loose"
    rate = "10/min"


class Two(Fixed, SlidingWindowThrottle):
    scope = "two"
    rate = "2/min"


class DrfStrict(UserRateThrottle):
    rate = "1/min"

    def get_cache_key(self, request, view):
        return "drf-strict-rounds"


class InnerView(APIView):
    throttle_classes = (Inner1,)
    permission_classes = ()

    def get(self, request):
        return Response({"inner": True})


class OuterView(APIView):
    """Serves its own answer whatever the inner view said (a batch endpoint)."""

    throttle_classes = (Outer3,)
    permission_classes = ()

    def get(self, request):
        inner = InnerView.as_view()(request._request)
        return Response({"inner_status": inner.status_code})


class BulkView(APIView):
    """Calls a 1/min view five times with one request and reports each status."""

    throttle_classes = ()
    permission_classes = ()

    def get(self, request):
        return Response(
            {"statuses": [InnerView.as_view()(request._request).status_code for _ in range(5)]}
        )


def count(backend, scope):
    return backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, scope, "one-client"))


def make_view(*throttles, second_round=()):
    """A view with ``throttles``; with ``second_round``, its handler checks those too."""

    class View(APIView):
        throttle_classes = throttles
        permission_classes = ()

        def get(self, request):
            if second_round:
                self.throttle_classes = second_round
                self.check_throttles(request)
            return Response({"ok": True})

    return View.as_view()


@pytest.mark.parametrize("with_middleware", [False, True])
def test_nested_dispatch_keeps_the_outer_admission(backend, with_middleware):
    """Outer 3/min calling inner 1/min: the inner refusal must not uncount the outer."""
    view = OuterView.as_view()
    if with_middleware:
        view = RateLimitHeadersMiddleware(view)
    statuses = [view(factory.get("/")).status_code for _ in range(8)]
    assert statuses == [200, 200, 200] + [429] * 5
    assert count(backend, "outer") == 3
    assert count(backend, "inner") == 1


@pytest.mark.parametrize("with_middleware", [False, True])
def test_bulk_dispatch_of_one_request_counts_each_pass(backend, with_middleware):
    view = BulkView.as_view()
    if with_middleware:
        view = RateLimitHeadersMiddleware(view)
    first = view(factory.get("/"))
    assert first.data["statuses"] == [200, 429, 429, 429, 429]
    second = view(factory.get("/"))
    assert second.data["statuses"] == [429] * 5
    assert count(backend, "inner") == 1  # the served pass stays counted


@pytest.mark.parametrize("with_middleware", [False, True])
def test_one_request_object_sent_eight_times(backend, with_middleware):
    """DRF's own tests send one APIRequestFactory request repeatedly: 3 x 200, 5 x 429."""
    view = make_view(Outer3)
    if with_middleware:
        view = RateLimitHeadersMiddleware(view)
    request = factory.get("/")
    statuses = [view(request).status_code for _ in range(8)]
    assert statuses == [200, 200, 200] + [429] * 5
    assert count(backend, "outer") == 3


class UpstreamQuotaView(APIView):
    """Does its work, then answers 429 itself (an upstream quota ran out)."""

    throttle_classes = (Two,)
    permission_classes = ()

    def get(self, request):
        return Response({"detail": "upstream quota"}, status=429)


class RaisesThrottledView(UpstreamQuotaView):
    def get(self, request):
        raise Throttled(wait=30)


class CallsThrottledView(UpstreamQuotaView):
    def get(self, request):
        self.throttled(request, 30)


@pytest.mark.parametrize("view_cls", [UpstreamQuotaView, RaisesThrottledView, CallsThrottledView])
def test_a_429_from_the_view_itself_is_counted(backend, view_cls):
    """Only a throttle's refusal is taken back: 5 requests at 2/min, the view ran twice."""
    ran = []

    class Counting(view_cls):
        def get(self, request):
            ran.append(1)
            return super().get(request)

    view = RateLimitHeadersMiddleware(Counting.as_view())
    statuses = [view(factory.get("/")).status_code for _ in range(5)]
    assert statuses == [429] * 5
    assert len(ran) == 2
    assert count(backend, "two") == 2


@pytest.mark.parametrize("with_middleware", [False, True])
def test_refusal_by_a_drf_throttle_in_the_same_round_is_taken_back(backend, with_middleware):
    cache.clear()
    view = make_view(Loose, DrfStrict)
    if with_middleware:
        view = RateLimitHeadersMiddleware(view)
    statuses = [view(factory.get("/")).status_code for _ in range(4)]
    assert statuses == [200, 429, 429, 429]
    assert count(backend, "loose") == 1


def test_a_second_round_on_one_view_does_not_take_back_the_first(backend):
    """A view that checks throttles twice: a refusal in round two leaves round one counted."""
    view = make_view(Loose, second_round=(Inner1,))
    assert [view(factory.get("/")).status_code for _ in range(3)] == [200, 429, 429]
    assert count(backend, "loose") == 3  # every request passed round one
    assert count(backend, "inner") == 1


def test_headers_come_from_the_view_that_answered(backend):
    """Nested dispatch: the outer view's response carries the outer view's limits."""
    view = RateLimitHeadersMiddleware(OuterView.as_view())
    response = view(factory.get("/"))
    assert response.data == {"inner_status": 200}
    assert response["X-RateLimit-Limit"] == "3"
    assert response["X-RateLimit-Remaining"] == "2"
    response = view(factory.get("/"))
    assert response.data == {"inner_status": 429}
    assert response["X-RateLimit-Remaining"] == "1"


def test_headers_on_a_refusal_taken_back_report_what_is_left(backend):
    cache.clear()
    view = RateLimitHeadersMiddleware(make_view(Loose, DrfStrict))
    assert view(factory.get("/"))["X-RateLimit-Remaining"] == "9"
    refused = view(factory.get("/"))
    assert refused.status_code == 429
    assert refused["X-RateLimit-Remaining"] == "9"  # the refused request was not counted


def test_a_drf_refusal_in_a_later_round_does_not_take_back_an_earlier_one(backend):
    """Round two has only a DRF throttle: its refusal must leave round one's record alone."""
    cache.clear()
    view = make_view(Loose, second_round=(DrfStrict,))
    assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 429, 429, 429]
    assert count(backend, "loose") == 4  # every request passed round one


def test_the_counter_variant_is_taken_back_by_a_drf_refusal_too(backend):
    from drf_redis_toolkit.rates import parse_rate
    from drf_redis_toolkit.throttling import SlidingWindowCounterThrottle

    class LooseCounter(Fixed, SlidingWindowCounterThrottle):
        scope = "loose-counter"
        rate = "10/min"

    cache.clear()
    view = make_view(LooseCounter, DrfStrict)
    assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 429, 429, 429]
    left = ratelimit.decide(
        ratelimit.COUNTER, "loose-counter", "one-client", parse_rate("10/min"), record=False
    )
    assert left.limits[0].remaining == 9


class Wrapping(Loose):
    """A subclass that wraps ``allow_request`` (its frame is not the round's caller)."""

    def allow_request(self, request, view):
        return super().allow_request(request, view)


@pytest.mark.parametrize("custom_throttled", [False, True])
def test_take_back_with_a_wrapped_allow_request_or_a_custom_throttled(backend, custom_throttled):
    """Subclasses overriding ``allow_request`` or the view's ``throttled()`` keep the take-back."""
    from rest_framework.exceptions import Throttled as DrfThrottled

    cache.clear()

    class View(APIView):
        throttle_classes = (Wrapping, DrfStrict)
        permission_classes = ()

        def get(self, request):
            return Response({"ok": True})

        if custom_throttled:

            def throttled(self, request, wait):
                raise DrfThrottled(wait, detail="slow down, custom")

    view = View.as_view()
    responses = [view(factory.get("/")) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 429, 429]
    if custom_throttled:
        assert "custom" in str(responses[1].data["detail"])
    assert count(backend, "loose") == 1


def _logged(method):
    """A decorator as users write them: its wrapper's frame has its own name."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return method(*args, **kwargs)

    return wrapper


class DecoratedLoose(Loose):
    """``allow_request`` behind a decorator (like a tracing or logging wrapper)."""

    allow_request = _logged(Loose.allow_request)


def _own_check_throttles(view, request):
    """A view's own throttle loop under another name (not DRF's ``check_throttles``)."""
    waits = [t.wait() for t in view.get_throttles() if not t.allow_request(request, view)]
    if waits:
        view.throttled(request, max(w for w in waits if w is not None))


@pytest.mark.parametrize("wrapped", ["allow_request", "check_throttles", "both", "renamed"])
def test_take_back_when_the_round_is_run_through_wrappers(backend, wrapped):
    """Decorated ``allow_request``/``check_throttles`` or a loop of the view's own: still one round.

    The round is found by walking up to the view's own method that called the
    throttles, past any wrapper frame (a decorator's, mutmut's trampolines), so a
    DRF refusal still takes back what the toolkit's throttle recorded in it, and
    the toolkit's look-ahead still asks both questions in one call.
    """
    cache.clear()
    loose = DecoratedLoose if wrapped in ("allow_request", "both") else Loose

    class View(APIView):
        throttle_classes = (loose, DrfStrict)
        permission_classes = ()

        if wrapped in ("check_throttles", "both"):
            check_throttles = _logged(APIView.check_throttles)
        elif wrapped == "renamed":
            check_throttles = _own_check_throttles

        def get(self, request):
            return Response({"ok": True})

    view = View.as_view()
    responses = [view(factory.get("/")) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 429, 429]
    assert count(backend, "loose") == 1
