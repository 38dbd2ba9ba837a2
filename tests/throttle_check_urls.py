"""A URLconf for the throttle system checks: views reached through include(), a router, @api_view.

Every rate here comes from ``DEFAULT_THROTTLE_RATES`` by scope, so each test
makes exactly one of them bad and checks that the error names it.
"""

from django.urls import include, path
from rest_framework.decorators import action, api_view, throttle_classes
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import APIView
from rest_framework.viewsets import ViewSet

from drf_redis_toolkit.throttling import (
    AnonSlidingWindowThrottle,
    ScopedSlidingWindowThrottle,
    SlidingWindowThrottle,
)


class Fixed(SlidingWindowThrottle):
    def get_cache_key(self, request, view):
        return "x"


class PlainThrottle(Fixed):
    scope = "plain"


class FnThrottle(Fixed):
    scope = "fn"


class ActionThrottle(Fixed):
    scope = "export"


class PlainView(APIView):
    throttle_classes = (PlainThrottle,)

    def get(self, request):
        return Response({})


class ScopedView(APIView):
    throttle_classes = (ScopedSlidingWindowThrottle,)
    throttle_scope = "scoped_view"

    def get(self, request):
        return Response({})


class Unscoped(APIView):
    throttle_classes = (ScopedSlidingWindowThrottle, AnonSlidingWindowThrottle)
    throttle_scope = None

    def get(self, request):
        return Response({})


@api_view(["GET"])
@throttle_classes([FnThrottle])
def fn_view(request):
    return Response({})


class ThingViewSet(ViewSet):
    throttle_classes = ()

    def list(self, request):
        return Response([])

    @action(detail=False, throttle_classes=[ActionThrottle])
    def export(self, request):
        return Response([])


router = DefaultRouter()
router.register("things", ThingViewSet, basename="thing")

inner = [
    path("plain/", PlainView.as_view()),
    path("scoped/", ScopedView.as_view()),
    # initkwargs override the class: this one is scoped "kw_scope".
    path("kw/", Unscoped.as_view(throttle_scope="kw_scope")),
    path("unscoped/", Unscoped.as_view()),
]

urlpatterns = [
    path("api/", include(inner)),
    path("deeper/", include([path("r/", include(router.urls))])),
    path("fn/", fn_view),
]
