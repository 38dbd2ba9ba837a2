"""Views and URLs the response-caching tests mount (``ROOT_URLCONF = "tests.caching_views"``).

Each view counts how often its handler really ran in ``CALLS``, so the tests can
tell a cache hit (the handler did not run) from a miss without timing anything.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.urls import path
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from drf_redis_toolkit.caching import CacheResponseMixin, cache_response
from tests.testapp.models import CachedWidget

CALLS: Counter[str] = Counter()
_calls_lock = threading.Lock()


def ran(name: str) -> None:
    with _calls_lock:
        CALLS[name] += 1


class WidgetSerializer(serializers.ModelSerializer):
    class Meta:
        model = CachedWidget
        fields = ["id", "name", "price", "owner"]


class WidgetList(CacheResponseMixin, ListAPIView):
    """Shared list of every widget: the namespace the writers invalidate."""

    serializer_class = WidgetSerializer
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "widgets:all"

    def get_queryset(self) -> Any:
        ran("widgets")
        return CachedWidget.objects.all()


class WhoAmI(CacheResponseMixin, APIView):
    """Per-user (the default): the body names the user, so a leak would show."""

    permission_classes = [permissions.AllowAny]

    def get(self, request: Any) -> Response:
        ran("whoami")
        user = request.user
        return Response({"user": user.username if user.is_authenticated else None})

    def post(self, request: Any) -> Response:
        ran("whoami-post")
        return Response({"posted": True})


class Echo(CacheResponseMixin, APIView):
    """Shared; echoes its query string, and misbehaves on demand."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "echo"

    def get(self, request: Any) -> Any:
        ran("echo")
        params = request.query_params
        if "stream" in params:
            return StreamingHttpResponse(iter([b"a", b"b"]))
        if "boom" in params:
            raise RuntimeError("the view failed")
        status = int(params.get("status", 200))
        response = Response({"query": sorted(params.lists())}, status=status)
        if "cookie" in params:
            response.set_cookie("flavour", "oat")
        if "cc" in params:
            response["Cache-Control"] = params["cc"]
        if "vary" in params:
            response["Vary"] = params["vary"]
        if "big" in params:
            response.data = {"filler": "widget " * int(params["big"])}
        if "csrf" in params:
            response.data = {"form_token": get_token(request._request)}
        return response


class CategoryEcho(CacheResponseMixin, APIView):
    """Names its entries itself, as the seed guide did by hand (``products:category:<id>``)."""

    permission_classes = [permissions.AllowAny]

    def get_cache_key(self, request: Any) -> str:
        category = request.query_params.get("category")
        return f"products:category:{category}" if category else "products:all"

    def get(self, request: Any) -> Response:
        ran("category")
        return Response({"category": request.query_params.get("category")})


class Slow(CacheResponseMixin, APIView):
    """Takes a while, so that concurrent cold requests overlap (no database: threads)."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "slow"
    cache_lock_timeout = 5.0

    def get(self, request: Any) -> Response:
        ran("slow")
        time.sleep(float(request.query_params.get("sleep", "0.3")))
        return Response({"computed": "once", "padding": "x" * 3000})


class ImpatientSlow(Slow):
    cache_namespace = "impatient"
    cache_lock_timeout = 1.0


class Refreshing(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "refreshing"
    cache_early_refresh = True
    cache_timeout = 60

    def get(self, request: Any) -> Response:
        ran("refreshing")
        return Response({"n": CALLS["refreshing"]})


class IsOwner(permissions.BasePermission):
    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return obj.owner_id == request.user.id


class OwnedWidgets(CacheResponseMixin, viewsets.ReadOnlyModelViewSet):
    """Per-user detail behind an object permission: a hit must re-check it."""

    serializer_class = WidgetSerializer
    permission_classes = [permissions.IsAuthenticated & IsOwner]
    queryset = CachedWidget.objects.all()

    def get_cache_namespace(self, request: Any) -> str:
        pk = self.kwargs.get("pk")
        return f"widget:{pk}" if pk is not None else "widgets:all"

    def retrieve(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        ran("owned-retrieve")
        return super().retrieve(request, *args, **kwargs)

    @action(detail=False)
    @cache_response(per_user=False, namespace="widgets:all", timeout=30)
    def count(self, request: Any) -> Response:
        ran("owned-count")
        return Response({"count": CachedWidget.objects.count()})


class PlainObjectCheck(CacheResponseMixin, APIView):
    """A plain APIView with object permissions: the toolkit cannot replay them."""

    permission_classes = [IsOwner]

    def get(self, request: Any) -> Response:
        ran("plain-object")
        return Response({"ok": True})


class Decorated(APIView):
    """No mixin: the decorator alone, with a namespace from the URL."""

    permission_classes = [permissions.AllowAny]

    @cache_response(per_user=False, namespace=lambda view, request: f"deco:{view.kwargs['slot']}")
    def get(self, request: Any, slot: str) -> Response:
        ran("decorated")
        return Response({"slot": slot, "n": CALLS["decorated"]})


class Greeting(CacheResponseMixin, APIView):
    """Picks its language from ``Accept-Language`` itself (no ``LocaleMiddleware``)."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get(self, request: Any) -> Response:
        ran("greeting")
        wanted = request.headers.get("Accept-Language", "")
        french = wanted.lower().startswith("fr")
        response = Response({"greeting": "bonjour" if french else "hello"})
        response["Content-Language"] = "fr" if french else "en"
        response["Vary"] = "Accept-Language"
        return response


class RacingGreeting(CacheResponseMixin, APIView):
    """Varies on ``Accept-Language``; its English answer is invalidated while it is computed."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get(self, request: Any) -> Response:
        from drf_redis_toolkit.caching import invalidate_view

        english = not request.headers.get("Accept-Language", "").startswith("fr")
        if english:
            assert invalidate_view("http://testserver/racing/") is True
        response = Response({"greeting": "hello" if english else "bonjour"})
        response["Vary"] = "Accept-Language"
        return response


class Compressed(CacheResponseMixin, APIView):
    """Compresses its body itself when the client accepts gzip (``Vary: Accept-Encoding``)."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get(self, request: Any) -> HttpResponse:
        ran("compressed")
        body = b'{"payload": "' + b"z" * 2000 + b'"}'
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response = HttpResponse(gzip.compress(body), content_type="application/json")
            response["Content-Encoding"] = "gzip"
        else:
            response = HttpResponse(body, content_type="application/json")
        response["Vary"] = "Accept-Encoding"
        return response


class Themed(CacheResponseMixin, APIView):
    """Reads a cookie that is not the session, and says ``Vary: Cookie``."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get(self, request: Any) -> Response:
        ran("themed")
        response = Response({"theme": request.COOKIES.get("theme", "light")})
        response["Vary"] = "Cookie"
        return response


class PkDetail(CacheResponseMixin, APIView):
    """A detail view of the mixin kind: its answer depends on the URL argument only."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "pk-detail"

    def get(self, request: Any, pk: int) -> Response:
        ran("pk-detail")
        return Response({"pk": pk})


class DecoratedPkDetail(APIView):
    """The same with the decorator, and a custom key that forgot the URL argument."""

    permission_classes = [permissions.AllowAny]

    @cache_response(per_user=False, namespace="pk-deco", key_func=lambda view, request: "detail")
    def get(self, request: Any, pk: int) -> Response:
        ran("pk-deco")
        return Response({"pk": pk})


class Batch(APIView):
    """Dispatches the one request it got to a detail view, once per id (a bulk endpoint)."""

    permission_classes = [permissions.AllowAny]

    def get(self, request: Any) -> Response:
        detail = PkDetail.as_view()
        answers = []
        for pk in request.query_params.getlist("id"):
            answer = detail(request._request, pk=int(pk))
            if hasattr(answer, "render") and not answer.is_rendered:
                answer.render()
            answers.append([answer["X-Cache"], json.loads(answer.content)])
        return Response(answers)


class CsrfForm(CacheResponseMixin, APIView):
    """A form's data: the body holds this client's CSRF token (under ``ensure_csrf_cookie``)."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get(self, request: Any) -> Response:
        ran("csrf-form")
        return Response({"csrf": get_token(request._request)})


class EmbedsForm(CacheResponseMixin, APIView):
    """Shared; embeds the answer of a view under ``ensure_csrf_cookie`` (a nested dispatch)."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get(self, request: Any) -> Response:
        ran("embeds-form")
        inner = ensure_csrf_cookie(CsrfForm.as_view())(request._request)
        return Response({"inner": json.loads(inner.rendered_content)})


def submit(request: Any) -> HttpResponse:
    """A plain Django view, CSRF-protected by ``CsrfViewMiddleware``."""
    return HttpResponse(b"accepted")


class SessionEcho(CacheResponseMixin, APIView):
    """Per user (the default): an anonymous answer that reads the session."""

    permission_classes = [permissions.AllowAny]

    def get(self, request: Any) -> Response:
        ran("session-echo")
        return Response({"seen": request.session.get("seen")})


class SharedSessionEcho(SessionEcho):
    cache_per_user = False


@csrf_exempt
def remember(request: Any) -> HttpResponse:
    request.session["seen"] = request.GET["value"]
    return HttpResponse(b"remembered")


urlpatterns = [
    path("widgets/", WidgetList.as_view()),
    path("whoami/", WhoAmI.as_view()),
    path("echo/", Echo.as_view()),
    path("category/", CategoryEcho.as_view()),
    path("slow/", Slow.as_view()),
    path("impatient/", ImpatientSlow.as_view()),
    path("refreshing/", Refreshing.as_view()),
    path("owned/", OwnedWidgets.as_view({"get": "list"})),
    path("owned/count/", OwnedWidgets.as_view({"get": "count"})),
    path("owned/<int:pk>/", OwnedWidgets.as_view({"get": "retrieve"})),
    path("plain-object/", PlainObjectCheck.as_view()),
    path("deco/<str:slot>/", Decorated.as_view()),
    path("greeting/", Greeting.as_view()),
    path("racing/", RacingGreeting.as_view()),
    path("compressed/", Compressed.as_view()),
    path("themed/", Themed.as_view()),
    path("pk/<int:pk>/", PkDetail.as_view()),
    path("pk-deco/<int:pk>/", DecoratedPkDetail.as_view()),
    path("batch/", Batch.as_view()),
    path("csrf-form/", ensure_csrf_cookie(CsrfForm.as_view())),
    path("submit/", submit),
    path("embeds-form/", EmbedsForm.as_view()),
    path("session-echo/", SessionEcho.as_view()),
    path("shared-session-echo/", SharedSessionEcho.as_view()),
    path("remember/", remember),
]
