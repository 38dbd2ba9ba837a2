"""Behaviour of caching.py that mutation testing found unpinned (docs/testing.md, "Scores").

Each test names what it pins; the mutmut mutants it kills are listed in
docs/testing.md. Views whose ``@cache_response`` options matter are decorated
inside the test: mutmut runs every mutant in a process that imported the test
modules before the mutant was switched on, so a decorator applied at import
time never runs mutated code.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import time
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import path, re_path
from django.utils import translation
from rest_framework import permissions, viewsets
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.urlpatterns import format_suffix_patterns
from rest_framework.versioning import QueryParameterVersioning, URLPathVersioning
from rest_framework.views import APIView

from drf_redis_toolkit import drivers
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.cache_stats import counters as _counters
from drf_redis_toolkit.caching import (
    CacheResponseMixin,
    cache_response,
    invalidate_key,
    invalidate_namespace,
    invalidate_view,
)
from tests import caching_views
from tests.caching_views import CALLS, ran

pytestmark = pytest.mark.django_db


REFUSE = {"store": False}


class Shared(CacheResponseMixin, APIView):
    """Shared entries; the namespace and a timeout of 0 can come from ``as_view()``."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "mut-shared"

    def should_cache_response(self, request, response):
        return not REFUSE["store"]

    def get(self, request, *args, **kwargs):
        ran("shared")
        return Response({"args": list(args), "kwargs": kwargs})


class PerUser(Shared):
    cache_per_user = True
    cache_namespace = "mut-per-user"


class SharedViewSet(CacheResponseMixin, viewsets.ViewSet):
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "mut-viewset"

    def retrieve(self, request, pk=None):
        ran("viewset")
        return Response({"pk": pk})


class PathVersioned(Shared):
    versioning_class = URLPathVersioning
    cache_namespace = "mut-path-versioned"


class QueryVersioned(Shared):
    versioning_class = QueryParameterVersioning
    cache_namespace = "mut-query-versioned"


class VaryTwice(CacheResponseMixin, APIView):
    """Varies on two request headers, and on ``Content-Length`` when asked."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "mut-vary"

    def get(self, request):
        ran("vary")
        response = Response({"lang": request.headers.get("Accept-Language")})
        response["Vary"] = request.query_params.get("vary", "Accept-Language, X-Tenant")
        return response


class ByRequest(Shared):
    """Its namespace comes from ``self.request``, as many ``get_cache_namespace`` do."""

    def get_cache_namespace(self, request):
        return f"mut-ns:{self.request.query_params.get('ns')}"


class NotCached(APIView):
    permission_classes = [permissions.AllowAny]

    def get(self, request):
        return Response({"ok": True})


class PostOnly(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]

    def post(self, request):
        return Response({"ok": True})


class DecoratedViewSet(viewsets.ViewSet):
    permission_classes = [permissions.AllowAny]

    @cache_response(per_user=False, namespace="mut-decorated-viewset")
    def retrieve(self, request, pk=None):
        return Response({"pk": pk})


class PlainText(BaseRenderer):
    media_type = "text/plain"
    format = "txt"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return repr(data).encode()


class TwoFormats(Shared):
    """JSON by default, plain text for a ``.txt`` suffix (``format_suffix_patterns``)."""

    renderer_classes = [JSONRenderer, PlainText]
    cache_namespace = "mut-formats"


class Waited(Shared):
    """A long single-flight lock: its waiters poll until the holder stores (or 30 s)."""

    cache_namespace = "mut-waited"
    cache_lock_timeout = 30.0


class InTest(APIView):
    """Its ``get`` is decorated inside the tests that route to it (``monkeypatch``)."""

    permission_classes = [permissions.AllowAny]


def plain_function(request):  # a route that is no DRF view
    from django.http import HttpResponse

    return HttpResponse(b"plain")


urlpatterns = [
    *caching_views.urlpatterns,
    path("mut/shared/", Shared.as_view()),
    path("mut/renamed/", Shared.as_view(cache_namespace="mut-from-initkwargs")),
    path("mut/per-user/", PerUser.as_view()),
    path("mut/uncached/", Shared.as_view(cache_timeout=0)),
    re_path(r"^mut/positional/(\d+)/$", Shared.as_view()),
    path("mut/viewset/<str:pk>/", SharedViewSet.as_view({"get": "retrieve"})),
    path("mut/<str:version>/path-versioned/", PathVersioned.as_view()),
    path("mut/query-versioned/", QueryVersioned.as_view()),
    path("mut/vary/", VaryTwice.as_view()),
    path("mut/plain/", plain_function),
    path("mut/by-request/", ByRequest.as_view()),
    path("mut/not-cached/", NotCached.as_view()),
    path("mut/post-only/", PostOnly.as_view()),
    path("mut/decorated-viewset/<str:pk>/", DecoratedViewSet.as_view({"get": "retrieve"})),
    *format_suffix_patterns([path("mut/formats/", TwoFormats.as_view())]),
    path("mut/waited/", Waited.as_view()),
    path("mut/in-test/", InTest.as_view()),
]


@pytest.fixture(autouse=True)
def _urls(settings):
    settings.ROOT_URLCONF = __name__
    REFUSE["store"] = False
    CALLS.clear()
    _counters.reset()


def entries(backend) -> list[bytes]:
    return sorted(backend.raw.scan_iter(match=b"drt:c:*", count=1000))


# -- 304 answers -------------------------------------------------------------------


def test_a_304_from_the_cache_repeats_the_stored_cache_control_and_vary(backend):
    client = APIClient()
    first = client.get("/whoami/")  # per user: private, varies on Cookie and Authorization
    assert first["Cache-Control"] == "private"
    revalidated = client.get("/whoami/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert revalidated.status_code == 304 and revalidated["X-Cache"] == "HIT"
    assert revalidated["Cache-Control"] == "private"
    assert revalidated["Vary"] == first["Vary"] and "Cookie, Authorization" in first["Vary"]
    assert revalidated["ETag"] == first["ETag"]


# -- invalidate_view and invalidate_key --------------------------------------------


def test_invalidate_view_finds_a_viewset_route(backend):
    client = APIClient()
    assert client.get("/mut/viewset/a/")["X-Cache"] == "MISS"
    assert invalidate_view("/mut/viewset/a/") is True
    assert client.get("/mut/viewset/a/")["X-Cache"] == "MISS"
    assert CALLS["viewset"] == 2


def test_invalidate_view_uses_the_routes_as_view_arguments(backend):
    client = APIClient()
    client.get("/mut/renamed/")
    assert len(entries(backend)) == 1
    assert invalidate_view("/mut/renamed/") is True
    assert entries(backend) == []


def test_as_view_arguments_reach_the_cached_view(backend):
    view = Shared.as_view(cache_namespace="mut-as-view")  # made inside the test
    assert view(APIRequestFactory().get("/x/"))["X-Cache"] == "MISS"
    assert view(APIRequestFactory().get("/x/"))["X-Cache"] == "HIT"
    invalidate_namespace("mut-as-view")
    assert view(APIRequestFactory().get("/x/"))["X-Cache"] == "MISS"


def test_invalidate_view_keys_on_the_host_and_the_scheme(backend):
    client = APIClient()
    client.get("/mut/shared/", HTTP_HOST="shop.example")
    client.get("/mut/shared/", secure=True)
    assert len(entries(backend)) == 2
    assert invalidate_view("http://testserver/mut/shared/") is False
    assert invalidate_view("http://shop.example/mut/shared/") is True
    assert invalidate_view("https://testserver/mut/shared/") is True
    assert entries(backend) == []


@pytest.mark.parametrize(
    "urls",
    [
        pytest.param(
            ("/mut/v2/path-versioned/", "/mut/query-versioned/?version=3"), id="api-version"
        ),
        # A hook reading self.request, and an action decorated on a plain viewset.
        pytest.param(("/mut/by-request/?ns=a", "/mut/decorated-viewset/b/"), id="hooks-viewset"),
    ],
)
def test_invalidate_view_resolves_what_the_request_did(backend, urls):
    client = APIClient()
    for url in urls:
        client.get(url)
    assert len(entries(backend)) == len(urls)
    assert [invalidate_view(url) for url in urls] == [True] * len(urls)
    assert entries(backend) == []


def test_invalidate_view_is_false_for_routes_that_cache_nothing(backend):
    APIClient().get("/mut/uncached/")
    assert entries(backend) == []
    assert invalidate_view("/mut/uncached/") is False
    assert invalidate_view("/mut/plain/") is False
    assert invalidate_view("/mut/not-cached/") is False  # no mixin, no decorator
    assert invalidate_view("/mut/post-only/") is False  # no GET handler


def test_invalidate_key_names_positional_url_arguments(backend):
    client = APIClient()
    assert client.get("/mut/positional/7/").json() == {"args": ["7"], "kwargs": {}}
    key = repr(("http", "testserver", "/mut/positional/7/", "", ""))
    # Without the positional argument the key names another entry.
    assert invalidate_key("mut-shared", key) is False
    assert invalidate_key("mut-shared", key, url_args=(7,)) is True
    assert client.get("/mut/positional/7/")["X-Cache"] == "MISS"
    assert invalidate_view("/mut/positional/7/") is True  # the route's positional argument


def test_per_user_keys_hold_the_users_model_label_and_primary_key(backend, django_user_model):
    """A stored format: the user part of a key is ``<app_label.model>:<pk>``, or the
    class name for a user that is no model (renaming it forgets every user's entries)."""
    alice = django_user_model.objects.create_user("alice", password="x")
    language = translation.get_language() or ""

    def stored_for(user, identity):
        client = APIClient()
        client.force_authenticate(user=user)
        assert client.get("/mut/per-user/")["X-Cache"] == "MISS"
        hook_key = repr(("http", "testserver", "/mut/per-user/", "", ""))
        material = repr(
            ("GET", "application/json", "json", language, identity, hook_key, repr(((), ())))
        )
        return backend.raw.exists(keyspace.cache_entry_key("mut-per-user", material)) == 1

    assert stored_for(alice, f"auth.user:{alice.pk}")
    assert stored_for(_TokenUser(), "_TokenUser:7")
    assert stored_for(AnonymousUser(), "anon")
    # Anything that is not an authenticated user is the anonymous entry.
    assert invalidate_key("mut-per-user", "absent", user=object()) is False
    APIClient().get("/mut/per-user/")
    key = repr(("http", "testserver", "/mut/per-user/", "", ""))
    assert invalidate_key("mut-per-user", key, user=object()) is True


class _TokenUser:
    """An authenticated user that is no Django model (a token backend's)."""

    is_authenticated = True
    pk = 7


def test_invalidate_key_without_an_active_language(backend):
    client = APIClient()
    key = repr(("http", "testserver", "/mut/shared/", "", ""))
    with translation.override(None):
        assert client.get("/mut/shared/")["X-Cache"] == "MISS"
        assert invalidate_key("mut-shared", key) is True


class _NamelessUser:
    """Authenticated, but with no primary key: no entry can belong to it."""

    is_authenticated = True
    pk = None


class _NoPkUser:
    """Authenticated, and without even a ``pk`` attribute."""

    is_authenticated = True


def test_invalidate_key_of_a_user_without_a_primary_key_deletes_nothing(backend):
    assert invalidate_key("mut-shared", "anything", user=_NamelessUser()) is False
    assert invalidate_key("mut-shared", "anything", user=_NoPkUser()) is False
    assert invalidate_key("mut-shared", "anything", user=AnonymousUser()) is False


# -- vary records --------------------------------------------------------------------


def test_an_answer_varying_on_two_headers_is_a_hit_for_the_same_values(backend):
    client = APIClient()
    headers = {"HTTP_ACCEPT_LANGUAGE": "fr", "HTTP_X_TENANT": "acme"}
    assert client.get("/mut/vary/", **headers)["X-Cache"] == "MISS"
    assert client.get("/mut/vary/", **headers)["X-Cache"] == "HIT"
    assert (
        client.get("/mut/vary/", HTTP_ACCEPT_LANGUAGE="fr", HTTP_X_TENANT="other")["X-Cache"]
        == "MISS"
    )
    assert CALLS["vary"] == 2


def test_content_length_is_read_from_its_own_meta_name(backend):
    client = APIClient()
    url = "/mut/vary/?vary=Content-Length"
    assert client.get(url, CONTENT_LENGTH="0")["X-Cache"] == "MISS"
    assert client.get(url, CONTENT_LENGTH="0")["X-Cache"] == "HIT"
    assert client.get(url, CONTENT_LENGTH="3")["X-Cache"] == "MISS"
    assert CALLS["vary"] == 2


def test_content_type_is_read_from_its_own_meta_name(backend):
    """``Content-Type`` lives in ``META["CONTENT_TYPE"]``, not ``HTTP_CONTENT_TYPE``.

    Sent with ``headers=``: DRF's test factory overwrites a ``CONTENT_TYPE=`` extra
    with its own ``content_type`` argument (``application/octet-stream``), so two
    requests "with different content types" sent that way carry the same one.
    """
    client = APIClient()
    url = "/mut/vary/?vary=Content-Type"
    csv, json_ = {"Content-Type": "text/csv"}, {"Content-Type": "application/json"}
    assert client.get(url, headers=csv)["X-Cache"] == "MISS"
    assert client.get(url, headers=csv)["X-Cache"] == "HIT"
    assert client.get(url, headers=json_)["X-Cache"] == "MISS"
    assert CALLS["vary"] == 2


def test_a_vary_record_with_a_bad_epoch_is_discarded(backend):
    client = APIClient()
    client.get("/mut/vary/", HTTP_ACCEPT_LANGUAGE="fr")
    records = [k for k in entries(backend) if backend.raw.get(k).split(b" ")[1:2] == [b"V"]]
    (record_key,) = records
    gen, marker, _epoch, names = backend.raw.get(record_key).split(b" ")
    planted = b" ".join((gen, marker, b"not-alnum", names))
    backend.raw.set(record_key, planted)
    assert client.get("/mut/vary/", HTTP_ACCEPT_LANGUAGE="fr")["X-Cache"] == "MISS"
    # Unreadable, so deleted; the answer then stored its own, good record.
    assert backend.raw.get(record_key) != planted
    assert client.get("/mut/vary/", HTTP_ACCEPT_LANGUAGE="fr")["X-Cache"] == "HIT"


def test_a_corrupt_entry_is_deleted_even_when_the_answer_is_not_stored(backend):
    client = APIClient()
    client.get("/mut/shared/")
    (entry,) = entries(backend)
    gen_line = backend.raw.get(entry).split(b"\n", 1)[0]  # the current generation's
    backend.raw.set(entry, gen_line + b"\n{not json\nbody")
    REFUSE["store"] = True  # should_cache_response() says no this time
    assert client.get("/mut/shared/")["X-Cache"] == "MISS"
    assert backend.raw.exists(entry) == 0
    assert CALLS["shared"] == 2


def test_a_failed_cache_call_is_logged_with_its_error_at_most_once_a_minute(
    backend, caplog, monkeypatch
):
    from drf_redis_toolkit import caching

    client = APIClient()
    client.get("/mut/shared/")
    (entry,) = entries(backend)
    backend.raw.delete(entry)
    backend.raw.rpush(entry, b"not a string")  # WRONGTYPE inside the lookup script
    # The last warning was exactly a minute ago: this failure is logged again.
    monkeypatch.setattr(caching, "_last_error_log", [time.monotonic() - 60])
    with caplog.at_level("WARNING", logger="drf_redis_toolkit"):
        assert client.get("/mut/shared/")["X-Cache"] == "MISS"
        assert client.get("/mut/shared/")["X-Cache"] == "MISS"
    (record,) = [r for r in caplog.records if "cache call failed" in r.getMessage()]
    assert record.getMessage().startswith(
        "drf_redis_toolkit: cache call failed (ResponseError: "
    ) and record.getMessage().endswith("); serving uncached")
    assert "WRONGTYPE" in record.getMessage()


# -- @cache_response, decorated inside the tests ---------------------------------------


def _serve(view_class, url="/x/", **extra):
    return view_class.as_view()(APIRequestFactory().get(url, **extra))


def test_cache_response_used_bare_caches(backend):
    class Bare(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response
        def get(self, request):
            ran("bare")
            return Response({"ok": True})

    assert [_serve(Bare)["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert CALLS["bare"] == 1


def test_cache_response_keeps_each_option_in_its_place(backend):
    class Named(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(60, namespace="mut-named", key_func=lambda view, request: "one")
        def get(self, request):
            ran("named")
            return Response({"ok": True})

    assert _serve(Named, "/a/")["X-Cache"] == "MISS"
    assert _serve(Named, "/b/")["X-Cache"] == "HIT"  # the key function ignores the URL
    invalidate_namespace("mut-named")
    assert _serve(Named, "/a/")["X-Cache"] == "MISS"
    (entry,) = entries(backend)
    assert 55_000 < backend.raw.pttl(entry) <= 60_000
    assert CALLS["named"] == 2


def test_cache_response_early_refresh_is_passed_on(backend, monkeypatch):
    from drf_redis_toolkit import caching

    class Early(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(60, per_user=False, early_refresh=True)
        def get(self, request):
            ran("early")
            time.sleep(0.05)  # a compute time of at least 50 ms, stored with the entry
            return Response({"ok": True})

    assert _serve(Early)["X-Cache"] == "MISS"
    (entry,) = entries(backend)
    backend.raw.pexpire(entry, 1_500)
    # XFetch refreshes when compute time x -ln(1 - u) reaches the time left: with u
    # close to 1 that is at least 50 ms x 34.5 = 1.7 s > 1.5 s.
    monkeypatch.setattr(caching.random, "random", lambda: 1.0 - 1e-15)
    assert _serve(Early)["X-Cache"] == "MISS"
    assert CALLS["early"] == 2


def test_a_decorated_handler_on_the_mixin_is_cached_once(backend):
    class Both(CacheResponseMixin, APIView):
        permission_classes = [permissions.AllowAny]
        cache_per_user = False

        @cache_response(per_user=False, namespace="mut-decorated")
        def get(self, request):
            ran("both")
            return Response({"ok": True})

    assert _serve(Both)["X-Cache"] == "MISS"
    assert len(entries(backend)) == 1  # the decorator's entry only, not the mixin's too
    assert _serve(Both)["X-Cache"] == "HIT"


def test_cache_response_on_an_async_handler_stays_async():
    async def handler(view, request):
        return None

    wrapped = cache_response(per_user=False)(handler)
    assert inspect.iscoroutinefunction(wrapped) or asyncio.iscoroutinefunction(wrapped)
    assert wrapped._drt_cache_options.per_user is False


def test_a_key_function_named_by_string_is_called_with_the_request(backend):
    class ByName(APIView):
        permission_classes = [permissions.AllowAny]

        def calculate(self, request):
            return f"by-name:{request.query_params.get('k')}"

        @cache_response(per_user=False, key_func="calculate")
        def get(self, request):
            ran("by-name")
            return Response({"ok": True})

    assert _serve(ByName, "/a/?k=1")["X-Cache"] == "MISS"
    assert _serve(ByName, "/b/?k=1")["X-Cache"] == "HIT"
    assert _serve(ByName, "/a/?k=2")["X-Cache"] == "MISS"


def test_a_named_attribute_the_view_lacks_is_reported_with_the_views_name(backend):
    from django.core.exceptions import ImproperlyConfigured

    class Lacking(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(timeout="list_cache_timeout")
        def get(self, request):
            return Response({"ok": True})

    message = (
        "@cache_response(timeout='list_cache_timeout') on "
        "test_a_named_attribute_the_view_lacks_is_reported_with_the_views_name.<locals>"
        ".Lacking: the view has no attribute 'list_cache_timeout'"
    )
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        _serve(Lacking)


def test_the_mixin_after_the_drf_view_is_refused_with_the_reason():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as refused:

        class Late(APIView, CacheResponseMixin):
            pass

    assert str(refused.value) == (
        "test_the_mixin_after_the_drf_view_is_refused_with_the_reason.<locals>.Late: put "
        "CacheResponseMixin before the DRF view class in its bases, or the cache is never "
        "consulted"
    )


class _UnhashableKeyConstructor:
    """A drf-extensions style key function that cannot be hashed (it defines ``__eq__``)."""

    def __init__(self):
        self.seen = []

    def __eq__(self, other):
        return self is other

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, view_instance, view_method, request, args, kwargs):
        self.seen.append((args, kwargs))
        return "unhashable"


def test_an_unhashable_extensions_key_function_gets_keywords_with_the_url_arguments(backend):
    key_func = _UnhashableKeyConstructor()

    class Keyed(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(per_user=False, key_func=key_func)
        def get(self, request, *args, **kwargs):
            return Response({"ok": True})

    view = Keyed.as_view()
    assert view(APIRequestFactory().get("/p/5/"), "5", slot="s")["X-Cache"] == "MISS"
    assert key_func.seen == [(("5",), {"slot": "s"})]


# -- cache_response's refusals name the mistake ---------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: cache_response(30, "k"),
            "cache_response() takes only timeout by position; pass the others by name, e.g. "
            "cache_response(30, key_func=...) (drf-extensions' second positional argument is "
            "key_func; here it would be lost): got ('k',)",
            id="misplaced",
        ),
        pytest.param(
            lambda: cache_response(cache_errors=True),
            "cache_response(cache_errors=True) is not supported: only 200 answers are ever "
            "cached (an error served from the cache would hide the recovery)",
            id="cache-errors",
        ),
        pytest.param(
            lambda: cache_response(cache="default"),
            "cache_response(cache='default') is not supported: responses are cached in the "
            "toolkit's Redis (DRF_REDIS_TOOLKIT['REDIS_URL']), not in a Django cache alias",
            id="cache-alias",
        ),
        pytest.param(
            lambda: cache_response(timeout="not an attribute"),
            "cache_response(timeout='not an attribute'): a string must name an attribute of "
            "the view",
            id="timeout-name",
        ),
        pytest.param(
            lambda: cache_response(key_func="not an attribute"),
            "cache_response(key_func='not an attribute'): a string must name an attribute of "
            "the view",
            id="key-func-name",
        ),
        pytest.param(
            lambda: cache_response(timeout=[30]),
            "cache_response(timeout=[30]): seconds, or a view attribute name",
            id="timeout-type",
        ),
        pytest.param(
            lambda: cache_response(key_func=3),
            "cache_response(key_func=3): a callable or a method name",
            id="key-func-type",
        ),
    ],
)
def test_cache_response_refusals_name_the_mistake(call, message):
    with pytest.raises(TypeError) as refused:
        call()
    assert str(refused.value) == message


# -- options decorated inside the test (mutmut switches mutants on after imports) ------


def test_cache_response_lock_timeout_reaches_the_single_flight_lock(backend):
    """The lock lives ``lock_timeout`` seconds while the view computes (not the default)."""
    ttls: list[int] = []

    class Locked(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(per_user=False, namespace="mut-locked", lock_timeout=7.5)
        def get(self, request):
            ttls.extend(backend.raw.pttl(key) for key in backend.raw.scan_iter(b"drt:cl:*"))
            return Response({"ok": True})

    assert _serve(Locked)["X-Cache"] == "MISS"
    assert ttls and all(7_000 < ttl <= 7_500 for ttl in ttls), ttls


def test_a_plain_key_function_is_called_with_the_view_and_the_request(backend):
    seen: list[Any] = []

    class Keyed(APIView):
        permission_classes = [permissions.AllowAny]
        tenant = "acme"

        @cache_response(
            per_user=False, key_func=lambda view, request: seen.append(view) or view.tenant
        )
        def get(self, request):
            ran("keyed-by-view")
            return Response({"ok": True})

    assert _serve(Keyed, "/a/")["X-Cache"] == "MISS"
    assert _serve(Keyed, "/b/")["X-Cache"] == "HIT"  # the key is the view's tenant only
    assert [type(view) for view in seen] == [Keyed, Keyed]
    assert CALLS["keyed-by-view"] == 1


def test_a_plain_list_cache_key_func_is_called_with_the_view_and_the_request(backend):
    """drf-extensions' ``list_cache_key_func`` as a plain function (not a KeyConstructor)."""
    seen: list[Any] = []

    class Listed(CacheResponseMixin, viewsets.ViewSet):
        permission_classes = [permissions.AllowAny]
        cache_per_user = False
        list_cache_key_func = staticmethod(lambda view, request: seen.append(view) or "all")

        def list(self, request):
            ran("listed")
            return Response({"ok": True})

    view = Listed.as_view({"get": "list"})
    assert view(APIRequestFactory().get("/l/?page=1"))["X-Cache"] == "MISS"
    assert view(APIRequestFactory().get("/l/?page=2"))["X-Cache"] == "HIT"  # one key: "all"
    assert [type(v) for v in seen] == [Listed, Listed]
    assert CALLS["listed"] == 1


# -- invalidate_view: the format suffix and the handler --------------------------------


def test_invalidate_view_negotiates_the_format_a_url_suffix_names(backend):
    client = APIClient()
    text = client.get("/mut/formats.txt")
    assert text["Content-Type"].startswith("text/plain") and text["X-Cache"] == "MISS"
    assert client.get("/mut/formats.txt")["X-Cache"] == "HIT"
    assert invalidate_view("http://testserver/mut/formats.txt") is True
    assert client.get("/mut/formats.txt")["X-Cache"] == "MISS"


def test_invalidate_view_gives_an_extensions_key_function_the_handler(backend, monkeypatch):
    from rest_framework_extensions.key_constructor.constructors import DefaultKeyConstructor

    # DefaultKeyConstructor's unique_method_id bit reads view_method.__name__.
    @cache_response(per_user=False, namespace="mut-in-test", key_func=DefaultKeyConstructor())
    def get(self, request):
        ran("in-test")
        return Response({"ok": True})

    monkeypatch.setattr(InTest, "get", get, raising=False)
    client = APIClient()
    assert client.get("/mut/in-test/")["X-Cache"] == "MISS"
    assert client.get("/mut/in-test/")["X-Cache"] == "HIT"
    assert invalidate_view("/mut/in-test/") is True
    assert client.get("/mut/in-test/")["X-Cache"] == "MISS"
    assert CALLS["in-test"] == 2


# -- a request that waited for another's lock ------------------------------------------


@pytest.fixture
def cache_get_replies(monkeypatch) -> list[Any]:
    """What Redis answered each ``cache_get`` of the sync driver (the real call still runs)."""
    replies: list[Any] = []
    original = drivers.Script.run

    def recording(self):
        reply = original(self)
        if self.name == "cache_get":
            replies.append(reply)
        return reply

    monkeypatch.setattr(drivers.Script, "run", recording)
    return replies


def _stored_while_waiting(backend, compute_ms: int | None = None) -> tuple[bytes, threading.Thread]:
    """Cache ``/mut/waited/``, then make the next request wait for a holder that stores it.

    The entry and the generation are removed and a holder takes the lock; a thread
    waits (bounded) until the waiting request's first lookup has created the new
    generation (that same atomic lookup found the lock taken: the request now polls),
    then stores the entry under it, as the holder would, and releases the lock.
    ``compute_ms`` rewrites how long the holder took to compute it.
    """
    first = APIClient().get("/mut/waited/")
    assert first["X-Cache"] == "MISS"
    (entry,) = [k for k in backend.raw.scan_iter(match=b"drt:c:*", count=1000)]
    lock = keyspace.cache_lock_key(entry.decode()).encode()
    gen_key = keyspace.generation_key("mut-waited").encode()
    raw = backend.raw.get(entry)
    _gen, delta, rest = raw.split(b" ", 2)
    if compute_ms is not None:
        delta = str(compute_ms).encode()
    backend.raw.delete(entry, gen_key)
    backend.raw.set(lock, b"holder", px=60_000)

    def holder() -> None:
        for _ in range(10_000):  # at most ~10 s
            generation = backend.raw.get(gen_key)
            if generation is not None:
                backend.raw.set(entry, b" ".join([generation, delta, rest]), px=60_000)
                backend.raw.delete(lock)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=holder)
    thread.start()
    return first, thread


def test_a_waiter_holding_the_etag_gets_a_304_from_the_entrys_head_only(backend, cache_get_replies):
    first, holder = _stored_while_waiting(backend)
    try:
        response = APIClient().get("/mut/waited/", HTTP_IF_NONE_MATCH=first["ETag"])
    finally:
        holder.join(timeout=30)
    assert not holder.is_alive()
    assert response.status_code == 304 and response["X-Cache"] == "HIT"
    assert CALLS["shared"] == 1
    if backend.settings.get("LOCAL_CACHE"):
        return  # a copy kept in memory needs the whole entry: no ETag is offered then
    assert int(cache_get_replies[-1][2]) == 5  # "a hit, and its ETag is the one offered"
    # As documented (docs/caching.md, "ETag and 304"): Redis never sent the body.
    assert all(first.content not in (reply[1] or b"") for reply in cache_get_replies)


def test_a_waiter_serves_a_slow_views_entry_without_refreshing_it(backend):
    # Computing took 2 minutes, longer than the entry has left: only early refresh
    # (off here) would recompute it, and never for a request that waited for it.
    first, holder = _stored_while_waiting(backend, compute_ms=120_000)
    try:
        response = APIClient().get("/mut/waited/")
    finally:
        holder.join(timeout=30)
    assert not holder.is_alive()
    assert response.status_code == 200 and response["X-Cache"] == "HIT"
    assert response.content == first.content
    assert CALLS["shared"] == 1
