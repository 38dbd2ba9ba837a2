"""adrf async views the async tests mount (``ROOT_URLCONF = "tests.async_views"``).

Each view counts how often its handler really ran in ``CALLS``, so a test can tell
a cache hit from a miss without timing anything. ``tests/asgi_app.py`` serves
these URLs under uvicorn.
"""

from __future__ import annotations

from typing import Any

from adrf.generics import GenericAPIView as AsyncGenericAPIView
from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpResponse
from django.urls import path
from rest_framework import permissions
from rest_framework.response import Response

from drf_redis_toolkit.caching import CacheResponseMixin, cache_response, invalidate_namespace
from drf_redis_toolkit.throttling import AnonSlidingWindowThrottle
from tests.caching_views import CALLS, ran
from tests.testapp.models import CachedWidget

__all__ = ["CALLS"]


class AsyncCounted(CacheResponseMixin, AsyncAPIView):
    """The mixin on an adrf view: the handler is a coroutine."""

    permission_classes = [permissions.AllowAny]
    cache_namespace = "async-counted"
    cache_per_user = False

    async def get(self, request: Any) -> Response:
        ran("async-counted")
        return Response({"calls": CALLS["async-counted"]})


class AsyncPerUser(CacheResponseMixin, AsyncAPIView):
    """Per-user entries (the default) on an adrf view."""

    permission_classes = [permissions.AllowAny]
    cache_namespace = "async-user"

    async def get(self, request: Any) -> Response:
        ran("async-user")
        return Response({"user": request.user.username or "anon"})


class AsyncDecorated(AsyncAPIView):
    """``@cache_response`` on an async handler, no mixin."""

    permission_classes = [permissions.AllowAny]

    @cache_response(per_user=False, namespace="async-deco", timeout=30)
    async def get(self, request: Any) -> Response:
        ran("async-deco")
        return Response({"calls": CALLS["async-deco"]})


def _save_price(pk: int, price: str) -> None:
    with transaction.atomic():
        CachedWidget.objects.filter(pk=pk).update(price=price)
        transaction.on_commit(lambda: invalidate_namespace(f"awidget:{pk}"))


class AsyncWidget(CacheResponseMixin, AsyncAPIView):
    """A cached async detail and its writer: the write answers after the invalidation."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get_cache_namespace(self, request: Any) -> str:
        return f"awidget:{self.kwargs['pk']}"

    async def get(self, request: Any, pk: int) -> Response:
        ran("async-widget")
        widget = await CachedWidget.objects.aget(pk=pk)
        return Response({"price": str(widget.price)})

    async def put(self, request: Any, pk: int) -> Response:
        await sync_to_async(_save_price)(pk, request.data["price"])
        return Response({"price": request.data["price"]})


class AsyncAnonThrottle(AnonSlidingWindowThrottle):
    rate = "5/min"


class AsyncWidgetSignals(AsyncWidget):
    """The same detail, written with ``asave()``: only the signal rules invalidate."""

    async def put(self, request: Any, pk: int) -> Response:
        widget = await CachedWidget.objects.aget(pk=pk)
        widget.price = request.data["price"]
        await widget.asave()
        return Response({"price": request.data["price"]})


class OwnerOnly(permissions.BasePermission):
    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return bool(obj.owner_id is not None and obj.owner_id == request.user.pk)


class AsyncOwnedWidget(CacheResponseMixin, AsyncGenericAPIView):
    """A shared entry behind an object permission: every hit re-checks it (``get_object()``)."""

    permission_classes = [OwnerOnly]
    queryset = CachedWidget.objects.all()
    cache_namespace = "async-owned"
    cache_per_user = False

    async def get(self, request: Any, pk: int) -> Response:
        ran("async-owned")
        widget = await self.aget_object()
        return Response({"name": widget.name})


class AsyncThrottled(AsyncAPIView):
    """The toolkit's throttle on an adrf view (``async-throttle`` scope)."""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [AsyncAnonThrottle]

    async def get(self, request: Any) -> Response:
        ran("async-throttle")
        return Response({"ok": True})


class WideThrottle(AnonSlidingWindowThrottle):
    scope = "async-wide"
    rate = "5/min"


class NarrowThrottle(AnonSlidingWindowThrottle):
    scope = "async-narrow"
    rate = "3/min"


class AsyncTwoThrottles(AsyncAPIView):
    """Two toolkit throttles in one round: a refusal by one takes back the other's count."""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [WideThrottle, NarrowThrottle]

    async def get(self, request: Any) -> Response:
        return Response({"ok": True})


async def plain_async_view(request: Any) -> HttpResponse:
    """A plain Django async view (no DRF): for the middleware under ASGI."""
    return HttpResponse("ok")


urlpatterns = [
    path("async/plain/", plain_async_view),
    path("async/two-throttles/", AsyncTwoThrottles.as_view()),
    path("async/counted/", AsyncCounted.as_view()),
    path("async/user/", AsyncPerUser.as_view()),
    path("async/deco/", AsyncDecorated.as_view()),
    path("async/widget/<int:pk>/", AsyncWidget.as_view()),
    path("async/widget-signals/<int:pk>/", AsyncWidgetSignals.as_view()),
    path("async/throttled/", AsyncThrottled.as_view()),
    path("async/owned/<int:pk>/", AsyncOwnedWidget.as_view()),
]
