"""Views the fault tests call directly: one throttled (3/min for one client), one cached."""

from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import APIView

from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.throttling import SlidingWindowThrottle


class OneClient(SlidingWindowThrottle):
    scope = "faults"
    rate = "3/min"

    def get_cache_key(self, request, view):
        return request.META.get("HTTP_X_CLIENT", "one-client")


class ThrottledView(APIView):
    throttle_classes = (OneClient,)
    permission_classes = ()

    def get(self, request):
        return Response({"ok": True})


class CachedView(CacheResponseMixin, APIView):
    permission_classes = ()
    cache_per_user = False
    runs = 0

    def get(self, request):
        type(self).runs += 1
        return Response({"payload": "x" * 2000, "run": type(self).runs})
