"""A URLconf whose views carry malformed rates on the throttle classes themselves."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from drf_redis_toolkit.throttling import ScopedSlidingWindowThrottle, SlidingWindowThrottle


class BadRateAttr(SlidingWindowThrottle):
    rate = "5/fortnight"

    def get_cache_key(self, request, view):
        return "x"


class BadClassRates(ScopedSlidingWindowThrottle):
    THROTTLE_RATES = {"burst": "1/eon"}


class RateAttrView(APIView):
    throttle_classes = (BadRateAttr,)

    def get(self, request):
        return Response({})


class ClassRatesView(APIView):
    throttle_classes = (BadClassRates,)
    throttle_scope = "burst"

    def get(self, request):
        return Response({})


urlpatterns = [path("a/", RateAttrView.as_view()), path("b/", ClassRatesView.as_view())]
