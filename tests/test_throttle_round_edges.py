"""One script call for a view's throttles: what the refusal inside the script must do.

Found by the Lua mutants of ``throttle_round.lua`` (``tests/lua_mutants.py``): after
one throttle refuses, the ones after it only report, and the ones before it are
taken back, in their Redis records (log members, counter fields) and in what their
replies report, exactly as deciding them one call at a time would.
"""

from __future__ import annotations

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.throttling import SlidingWindowCounterThrottle, SlidingWindowThrottle

factory = APIRequestFactory()
CLIENT = "198.51.100.9"
MADE: list = []  # every throttle instance, in creation order (DRF makes them per round)


class Recorded:
    def __init__(self) -> None:
        super().__init__()
        MADE.append(self)

    def get_cache_key(self, request, view):
        return f"ip:{CLIENT}"


class First(Recorded, SlidingWindowThrottle):
    scope, rate = "edge_first", "5/min"


class FirstCounter(Recorded, SlidingWindowCounterThrottle):
    scope, rate = "edge_first_counter", "5/min"


class Refuser(Recorded, SlidingWindowThrottle):
    scope, rate = "edge_refuser", "1/min"


class Last(Recorded, SlidingWindowThrottle):
    scope, rate = "edge_last", "5/min"


def view_with(*classes):
    class Throttled(APIView):
        throttle_classes = classes
        authentication_classes = ()
        permission_classes = ()

        def get(self, request):
            return Response({"ok": True})

    return Throttled.as_view()


@pytest.fixture(autouse=True)
def _fresh():
    MADE.clear()


def _get(view):
    MADE.clear()
    return view(factory.get("/", REMOTE_ADDR=CLIENT)), list(MADE)


def test_throttles_after_the_refusal_record_nothing_and_earlier_ones_are_taken_back(backend):
    view = view_with(First, Refuser, Last)
    assert _get(view)[0].status_code == 200
    refused, made = _get(view)
    assert refused.status_code == 429
    log = {cls: keyspace.throttle_key(ratelimit.LOG, cls.scope, f"ip:{CLIENT}") for cls in
           (First, Refuser, Last)}  # fmt: skip
    assert {cls.__name__: backend.raw.zcard(key) for cls, key in log.items()} == {
        "First": 1,  # admitted, then taken back
        "Refuser": 1,
        "Last": 1,  # only reported
    }
    first, last = (next(t for t in made if type(t) is cls) for cls in (First, Last))
    # What the taken-back throttle reports is what is left after the take-back.
    assert first.decision.limits[0].remaining == 4
    assert last.decision.limits[0].remaining == 4


def test_a_counter_is_taken_back_in_the_window_it_was_counted_in(backend):
    view = view_with(FirstCounter, Refuser)
    assert _get(view)[0].status_code == 200
    refused, made = _get(view)
    assert refused.status_code == 429
    key = keyspace.throttle_key(ratelimit.COUNTER, FirstCounter.scope, f"ip:{CLIENT}")
    counts = {k.decode(): int(v) for k, v in backend.raw.hgetall(key).items()}
    assert sorted(counts.values()) == [1], counts  # the first request's count, nothing else
    counter = next(t for t in made if type(t) is FirstCounter)
    assert counter.decision.limits[0].remaining == 4
