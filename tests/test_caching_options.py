"""The caching options users can set, each exercised on every backend (fake, real, cluster).

Hits and misses are told apart by ``X-Cache`` and by how often the view ran; the
stored entries are read straight from Redis.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.urls import path
from django.utils import translation
from rest_framework import permissions, serializers
from rest_framework.generics import RetrieveAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import caching
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.caching import (
    CacheResponseMixin,
    cache_response,
    default_cache_key,
    default_namespace,
    invalidate_key,
    invalidate_namespace,
    invalidate_view,
)
from drf_redis_toolkit.connection import get_client
from tests.caching_views import IsOwner
from tests.testapp.models import CachedWidget

pytestmark = pytest.mark.django_db
RUNS: Counter[str] = Counter()
LOCK_TTLS: list[int] = []


class PlainText(BaseRenderer):
    """A second format, so that entries differ by media type and format."""

    media_type = "text/plain"
    format = "txt"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return repr(data).encode()


class Public(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    renderer_classes = [JSONRenderer, PlainText]
    cache_per_user = False

    def get(self, request):
        RUNS[type(self).__name__] += 1
        return Response({"q": sorted(request.query_params.lists()), "filler": "abc " * 600})


class Vetoed(Public):
    def should_cache_response(self, request, response):
        return "keep" in request.query_params


class Never(Public):
    cache_timeout = 0


class Default(Public):
    cache_timeout = None


class Named(Public):
    cache_namespace = "named"

    def get_cache_key(self, request):
        return f"named:{request.query_params.get('id', 'all')}"


class Bare(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response
    def get(self, request):
        RUNS["Bare"] += 1
        return Response({"n": RUNS["Bare"]})


class Keyed(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(
        per_user=False,
        namespace="keyed",
        key_func=lambda view, request: request.query_params.get("sku"),  # None: not cached
        lock_timeout=7.5,
    )
    def get(self, request):
        RUNS["Keyed"] += 1
        # The single-flight lock is held while the view computes: note how long it lives.
        client = get_client()
        LOCK_TTLS.extend(client.pttl(key) for key in client.scan_iter("drt:cl:*"))
        return Response({"sku": request.query_params.get("sku"), "n": RUNS["Keyed"]})


class Refreshed(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(per_user=False, namespace="refreshed", early_refresh=True)
    def get(self, request):
        RUNS["Refreshed"] += 1
        time.sleep(0.4)  # a compute time the entry records (XFetch weighs it)
        return Response({"n": RUNS["Refreshed"]})


class TrustedPlain(Public):
    """A plain APIView whose permissions check objects, declared safe to serve from the cache."""

    permission_classes = [IsOwner]
    cache_recheck_object_permissions = False


class WidgetSerializer(serializers.ModelSerializer):
    class Meta:
        model = CachedWidget
        fields = ["id", "name"]


class WidgetDetail(CacheResponseMixin, RetrieveAPIView):
    """No object permission: by default a hit does not look the row up again."""

    permission_classes = [permissions.AllowAny]
    serializer_class = WidgetSerializer
    queryset = CachedWidget.objects.all()
    cache_per_user = False


class RecheckedWidgetDetail(WidgetDetail):
    cache_recheck_object_permissions = True  # a hit runs get_object() first


urlpatterns = [
    path("trusted/", TrustedPlain.as_view()),
    path("widget/<int:pk>/", WidgetDetail.as_view()),
    path("rechecked/<int:pk>/", RecheckedWidgetDetail.as_view()),
    path("public/", Public.as_view()),
    path("vetoed/", Vetoed.as_view()),
    path("never/", Never.as_view()),
    path("default/", Default.as_view()),
    path("named/", Named.as_view()),
    path("bare/", Bare.as_view()),
    path("keyed/", Keyed.as_view()),
    path("refreshed/", Refreshed.as_view()),
]


@pytest.fixture(autouse=True)
def _urls(settings, backend):
    settings.ROOT_URLCONF = __name__
    RUNS.clear()
    LOCK_TTLS.clear()


def entries(backend) -> list[bytes]:
    return sorted(backend.raw.scan_iter(match=b"drt:c:*", count=1000))


def statuses(url: str, times: int = 2, **extra) -> list[str]:
    client = APIClient()
    return [client.get(url, **extra)["X-Cache"] for _ in range(times)]


def test_should_cache_response_can_veto(backend):
    assert statuses("/vetoed/?a=1") == ["MISS", "MISS"]
    assert RUNS["Vetoed"] == 2 and entries(backend) == []
    assert statuses("/vetoed/?keep=1") == ["MISS", "HIT"]


def test_cache_timeout_zero_never_stores(backend):
    client = APIClient()
    assert ["X-Cache" in client.get("/never/") for _ in range(3)] == [False] * 3
    assert RUNS["Never"] == 3 and entries(backend) == []


def test_cache_timeout_none_uses_the_default_timeout(backend, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CACHE_DEFAULT_TIMEOUT": 120}
    assert statuses("/default/") == ["MISS", "HIT"]
    (entry,) = entries(backend)
    assert 119_000 < backend.raw.pttl(entry) <= 120_000


def test_cache_default_timeout_none_means_no_expiry(backend, settings):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CACHE_DEFAULT_TIMEOUT": None}
    assert statuses("/default/") == ["MISS", "HIT"]
    (entry,) = entries(backend)
    assert backend.raw.pttl(entry) == -1


@pytest.mark.parametrize(("threshold", "compressed"), [(100, True), (1_000_000, False)])
def test_cache_compress_min_bytes(backend, settings, threshold, compressed):
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CACHE_COMPRESS_MIN_BYTES": threshold}
    client = APIClient()
    body = client.get("/public/").content
    (entry,) = entries(backend)
    stored = backend.raw.strlen(entry)
    assert (stored < len(body) // 4) is compressed, (stored, len(body))
    assert client.get("/public/").content == body  # served back identical either way


def test_bare_decorator_caches(backend):
    assert statuses("/bare/", 3) == ["MISS", "HIT", "HIT"]
    assert RUNS["Bare"] == 1


def test_key_func_names_the_entry_and_none_skips_the_cache(backend):
    client = APIClient()
    assert client.get("/keyed/?sku=a&x=1")["X-Cache"] == "MISS"
    assert client.get("/keyed/?x=2&sku=a")["X-Cache"] == "HIT"  # same key: only sku counts
    assert client.get("/keyed/?sku=b")["X-Cache"] == "MISS"
    assert ["X-Cache" in client.get("/keyed/") for _ in range(2)] == [False, False]
    assert RUNS["Keyed"] == 4
    # lock_timeout: the single-flight lock held while the view ran lived 7.5 s.
    assert LOCK_TTLS and all(7_000 < ttl <= 7_500 for ttl in LOCK_TTLS), LOCK_TTLS


def test_early_refresh_recomputes_an_entry_about_to_expire(backend, monkeypatch):
    client = APIClient()
    assert client.get("/refreshed/")["X-Cache"] == "MISS"
    (entry,) = entries(backend)
    backend.raw.pexpire(entry, 10_000)
    # XFetch refreshes when compute time x -ln(1 - u) reaches the time left: with u close
    # to 1 that is 0.4 s x 34.5 = 13.8 s > 10 s, so this read must refresh.
    monkeypatch.setattr(caching.random, "random", lambda: 1.0 - 1e-15)
    refreshed = client.get("/refreshed/")
    assert refreshed["X-Cache"] == "MISS" and RUNS["Refreshed"] == 2
    # With u close to 0 the draw is tiny: a plain hit.
    monkeypatch.setattr(caching.random, "random", lambda: 0.0)
    assert client.get("/refreshed/")["X-Cache"] == "HIT" and RUNS["Refreshed"] == 2


def test_default_namespace_and_default_cache_key(backend):
    assert default_namespace(Public) == f"{__name__}.Public"
    assert statuses("/public/?b=2&a=1") == ["MISS", "HIT"]
    # default_cache_key sorts the query by name: the same entry.
    assert statuses("/public/?a=1&b=2", 1) == ["HIT"]
    view = Public()
    request = view.initialize_request(APIRequestFactory().get("/public/"))
    request.version = None
    assert default_cache_key(view, request) == repr(("http", "testserver", "/public/", "", ""))
    invalidate_namespace(default_namespace(Public))
    assert statuses("/public/?a=1&b=2", 1) == ["MISS"]


def test_invalidate_key_names_media_type_format_and_language(backend):
    client = APIClient()
    client.get("/named/?id=3")
    client.get("/named/?id=3&format=txt")
    with translation.override("fr"):
        client.get("/named/?id=3")
    assert len(entries(backend)) == 3
    assert invalidate_key("named", "named:3", media_type="text/plain", format="txt") is True
    assert invalidate_key("named", "named:3", language="fr") is True
    assert len(entries(backend)) == 1
    assert client.get("/named/?id=3")["X-Cache"] == "HIT"  # the JSON entry, default language
    assert invalidate_key("named", "named:3") is True
    assert entries(backend) == []


def test_invalidate_view_names_accept_and_language(backend):
    client = APIClient()
    client.get("/public/?p=1", HTTP_ACCEPT="text/plain")
    with translation.override("fr"):
        client.get("/public/?p=1")
    client.get("/public/?p=1")
    assert len(entries(backend)) == 3
    assert invalidate_view("http://testserver/public/?p=1", accept="text/plain") is True
    assert invalidate_view("http://testserver/public/?p=1", language="fr") is True
    assert invalidate_view("http://testserver/public/?p=1", language="fr") is False
    assert len(entries(backend)) == 1
    assert client.get("/public/?p=1")["X-Cache"] == "HIT"


def test_entry_and_lock_keys_share_a_slot(backend):
    entry = keyspace.cache_entry_key("named", "material")
    assert keyspace.cache_lock_key(entry).endswith(entry[len("drt:c:") :])


def test_recheck_false_lets_a_plain_apiview_with_object_permissions_cache(backend):
    assert statuses("/trusted/", 3) == ["MISS", "HIT", "HIT"]
    assert RUNS["TrustedPlain"] == 1


def test_recheck_true_looks_the_object_up_on_every_hit(backend):
    widget = CachedWidget.objects.create(name="w")
    client = APIClient()
    for prefix in ("widget", "rechecked"):
        assert client.get(f"/{prefix}/{widget.pk}/")["X-Cache"] == "MISS"
        assert client.get(f"/{prefix}/{widget.pk}/")["X-Cache"] == "HIT"
    pk = widget.pk
    widget.delete()  # gone, without any invalidation
    assert client.get(f"/widget/{pk}/").status_code == 200  # default: not looked up
    assert client.get(f"/rechecked/{pk}/").status_code == 404  # re-checked: 404


def test_empty_names_invalidate_nothing(backend):
    from drf_redis_toolkit.invalidation import EMPTY, Names, names_for

    assert not EMPTY and EMPTY == Names()
    some = Names(namespaces=frozenset({"a"}), keys=frozenset({"k"}))
    assert EMPTY | some == some == some | EMPTY
    assert names_for([]) == EMPTY
    assert names_for(CachedWidget(name="unregistered")) == EMPTY  # no rule for this model
