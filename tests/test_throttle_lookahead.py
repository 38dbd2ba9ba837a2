"""The look-ahead asks no throttle DRF would not reach.

DRF's ``check_throttles`` calls a view's throttles in order, and an exception in one
(an ``APIException`` its hook raises on purpose, or a bug) ends the request there:
the throttles after it are never called and record nothing. The round's look-ahead
(one script call for all of a view's toolkit throttles) must stop at the same place:
a throttle whose question raises ends the look-ahead, so nothing after it is recorded.
"""

from __future__ import annotations

from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit.throttling import AnonSlidingWindowThrottle

factory = APIRequestFactory()


class First(AnonSlidingWindowThrottle):
    scope = "la_first"
    rate = "5/min"


class Raising(AnonSlidingWindowThrottle):
    scope = "la_raising"
    rate = "5/min"

    def identity(self, request, view):
        raise PermissionDenied("this client may not be identified")


class Last(AnonSlidingWindowThrottle):
    scope = "la_last"
    rate = "5/min"


class View(APIView):
    throttle_classes = (First, Raising, Last)
    authentication_classes = ()
    permission_classes = ()

    def get(self, request):
        return Response({"ok": True})


def recorded(backend, scope: str) -> list[bytes]:
    return list(backend.raw.scan_iter(match=f"drt:sw:{scope}:*".encode(), count=1000))


def test_a_throttle_that_raises_ends_the_look_ahead_where_drf_stops(backend):
    response = View.as_view()(factory.get("/", REMOTE_ADDR="198.51.100.9"))
    assert response.status_code == 403
    assert len(recorded(backend, "la_first")) == 1  # DRF called it first: counted
    assert recorded(backend, "la_last") == []  # DRF never reached it: nothing recorded
