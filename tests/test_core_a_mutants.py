"""Who shares a cached entry, and how it is kept: caching.py's keys and plans.

Each test pins a behaviour mutation testing found unpinned in ``default_cache_key``,
``_url_arguments``, ``_vary_headers`` and ``_make_plan`` (the mutants are listed in
docs/testing.md). Views whose ``@cache_response`` options matter are decorated
inside the test: mutmut switches a mutant on after the test modules were imported,
so a decorator applied at import time never runs mutated code.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import permissions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.versioning import BaseVersioning
from rest_framework.views import APIView

from drf_redis_toolkit import caching
from drf_redis_toolkit.caching import (
    CacheResponseMixin,
    cache_response,
    invalidate_key,
    invalidate_namespace,
)

pytestmark = pytest.mark.django_db

RUNS: Counter[str] = Counter()
factory = APIRequestFactory()


@pytest.fixture(autouse=True)
def _reset_runs() -> None:
    RUNS.clear()


def entries(backend) -> list[bytes]:
    return sorted(backend.raw.scan_iter(match=b"drt:c:*", count=1000))


class HeaderVersioning(BaseVersioning):
    """An API version read from a custom header: nothing else in the URL tells it."""

    def determine_version(self, request, *args, **kwargs):
        return request.META.get("HTTP_X_API_VERSION", "1")


def _plain_view(name: str, **decorator: Any) -> Any:
    """A public APIView cached by ``@cache_response`` (decorated now, not at import)."""
    options = {"per_user": False, **decorator}
    timeout = options.pop("timeout", 60)

    class View(APIView):
        permission_classes = [permissions.AllowAny]
        versioning_class = HeaderVersioning

        @cache_response(timeout, **options)
        def get(self, request, *args, **kwargs):
            RUNS[name] += 1
            return Response(
                {
                    "version": request.version,
                    "args": list(args),
                    "kwargs": sorted(kwargs.items()),
                    "n": RUNS[name],
                }
            )

    View.__name__ = View.__qualname__ = name
    return View.as_view()


# -- default_cache_key: the API version --------------------------------------------


def test_api_versions_never_share_an_entry(backend):
    view = _plain_view("Versioned")
    v1 = view(factory.get("/versioned/", HTTP_X_API_VERSION="1"))
    v2 = view(factory.get("/versioned/", HTTP_X_API_VERSION="2"))
    assert v1["X-Cache"] == "MISS" and v2["X-Cache"] == "MISS"
    assert v1.data["version"] == "1" and v2.data["version"] == "2"
    again = view(factory.get("/versioned/", HTTP_X_API_VERSION="2"))
    assert again["X-Cache"] == "HIT" and again.content == v2.rendered_content
    assert RUNS["Versioned"] == 2


# -- _url_arguments: a request dispatched with other URL arguments ------------------


def test_positional_url_arguments_never_share_an_entry(backend):
    view = _plain_view("Positional")
    first = view(factory.get("/batch/"), "1")
    second = view(factory.get("/batch/"), "2")
    assert first["X-Cache"] == "MISS" and second["X-Cache"] == "MISS"
    assert second.data["args"] == ["2"] and RUNS["Positional"] == 2
    assert view(factory.get("/batch/"), "2")["X-Cache"] == "HIT"


def test_url_arguments_with_other_names_never_share_an_entry(backend):
    view = _plain_view("Named")
    by_pk = view(factory.get("/lookup/"), pk="7")
    by_slug = view(factory.get("/lookup/"), slug="7")
    assert by_pk["X-Cache"] == "MISS" and by_slug["X-Cache"] == "MISS"
    assert by_slug.data["kwargs"] == [("slug", "7")] and RUNS["Named"] == 2
    assert view(factory.get("/lookup/"), slug="7")["X-Cache"] == "HIT"


# -- _vary_headers ------------------------------------------------------------------


def test_a_response_without_vary_is_shared_whatever_the_request_headers(backend):
    # One renderer: DRF adds no "Vary: Accept", so the response varies on nothing.
    class Unvaried(APIView):
        permission_classes = [permissions.AllowAny]
        renderer_classes = [JSONRenderer]

        @cache_response(60, per_user=False)
        def get(self, request):
            RUNS["Unvaried"] += 1
            return Response({"n": RUNS["Unvaried"]})

    view = Unvaried.as_view()
    first = view(factory.get("/unvaried/"))
    assert first["X-Cache"] == "MISS" and not first.has_header("Vary")
    # Headers the response did not name, among them one called XXXX.
    for headers in ({"HTTP_XXXX": "a"}, {"HTTP_X_REQUEST_ID": "r1", "HTTP_XXXX": "b"}):
        response = view(factory.get("/unvaried/", **headers))
        assert response["X-Cache"] == "HIT" and response.content == first.rendered_content
    assert RUNS["Unvaried"] == 1


def test_an_encoded_body_is_never_served_to_a_client_that_asked_for_another_encoding(backend):
    # The view forgot "Vary: Accept-Encoding": the toolkit adds it for an encoded body.
    class Encoded(APIView):
        permission_classes = [permissions.AllowAny]
        renderer_classes = [JSONRenderer]

        @cache_response(60, per_user=False)
        def get(self, request):
            RUNS["Encoded"] += 1
            response = Response({"n": RUNS["Encoded"]})
            if "br" in request.META.get("HTTP_ACCEPT_ENCODING", ""):
                response["Content-Encoding"] = "br"
            return response

    view = Encoded.as_view()
    encoded = view(factory.get("/encoded/", HTTP_ACCEPT_ENCODING="br"))
    assert encoded["X-Cache"] == "MISS" and encoded["Content-Encoding"] == "br"
    plain = view(factory.get("/encoded/", HTTP_ACCEPT_ENCODING="identity"))
    assert plain["X-Cache"] == "MISS" and not plain.has_header("Content-Encoding")
    assert RUNS["Encoded"] == 2
    # Identity is acceptable to every client: what matters is that the encoded body
    # never reaches one that did not ask for it.
    again = view(factory.get("/encoded/", HTTP_ACCEPT_ENCODING="identity"))
    assert again["X-Cache"] == "HIT" and not again.has_header("Content-Encoding")


# -- _make_plan ---------------------------------------------------------------------


def test_a_key_func_naming_no_view_attribute_says_which_argument(backend):
    class Misnamed(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(60, key_func="no_such_method")
        def get(self, request):
            return Response({})

    with pytest.raises(ImproperlyConfigured) as raised:
        Misnamed.as_view()(factory.get("/misnamed/"))
    assert "@cache_response(key_func='no_such_method') on " in str(raised.value)


class RequestTimeout(CacheResponseMixin, APIView):
    """A timeout decided per request: ``?live=1`` is never cached."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-a-timeout"

    def get_cache_timeout(self, request):
        return 0 if request.query_params.get("live") else 60

    def get(self, request):
        RUNS["RequestTimeout"] += 1
        return Response({"n": RUNS["RequestTimeout"]})


def test_get_cache_timeout_is_asked_with_the_request(backend):
    view = RequestTimeout.as_view()
    assert [view(factory.get("/t/"))["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    live = [view(factory.get("/t/?live=1")) for _ in range(2)]
    assert [r.get("X-Cache") for r in live] == [None, None]
    assert RUNS["RequestTimeout"] == 3


def test_a_one_second_timeout_is_cached(backend):
    view = _plain_view("OneSecond", timeout=1)
    response = view(factory.get("/one-second/"))
    # Cached (a miss that stores), not passed through as a timeout of 0 is.
    assert response["X-Cache"] == "MISS"
    zero = _plain_view("ZeroSeconds", timeout=0)(factory.get("/zero-seconds/"))
    assert zero.get("X-Cache") is None


def test_a_namespace_callable_is_given_the_request(backend):
    view = _plain_view(
        "Tenant", namespace=lambda view, request: f"tenant-{request.query_params['t']}"
    )
    assert view(factory.get("/tenant/?t=a"))["X-Cache"] == "MISS"
    assert view(factory.get("/tenant/?t=b"))["X-Cache"] == "MISS"
    assert invalidate_namespace("tenant-a") is not False
    assert view(factory.get("/tenant/?t=a"))["X-Cache"] == "MISS"
    assert view(factory.get("/tenant/?t=b"))["X-Cache"] == "HIT"
    assert RUNS["Tenant"] == 3


class RequestNamespace(CacheResponseMixin, APIView):
    """A namespace per tenant, read from the request."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False

    def get_cache_namespace(self, request):
        return f"shop-{request.query_params['shop']}"

    def get(self, request):
        RUNS["RequestNamespace"] += 1
        return Response({"n": RUNS["RequestNamespace"]})


def test_get_cache_namespace_is_asked_with_the_request(backend):
    view = RequestNamespace.as_view()
    assert view(factory.get("/shop/?shop=a"))["X-Cache"] == "MISS"
    assert view(factory.get("/shop/?shop=b"))["X-Cache"] == "MISS"
    invalidate_namespace("shop-a")
    assert view(factory.get("/shop/?shop=a"))["X-Cache"] == "MISS"
    assert view(factory.get("/shop/?shop=b"))["X-Cache"] == "HIT"
    assert RUNS["RequestNamespace"] == 3


def test_early_refresh_is_off_unless_asked_for(backend, monkeypatch):
    view = _plain_view("NotEarly", timeout=60)
    assert view(factory.get("/not-early/"))["X-Cache"] == "MISS"
    (entry,) = entries(backend)
    # Computing took 2 minutes and 10 s are left: with early refresh on (XFetch, the
    # draw below near 1), this read would recompute. It is off: a plain hit.
    gen, _delta, rest = backend.raw.get(entry).split(b" ", 2)
    backend.raw.set(entry, b" ".join([gen, b"120000", rest]), px=10_000)
    caching_entries_forget()
    monkeypatch.setattr(caching.random, "random", lambda: 1.0 - 1e-15)
    assert view(factory.get("/not-early/"))["X-Cache"] == "HIT"
    assert RUNS["NotEarly"] == 1


def caching_entries_forget() -> None:
    """Drop the per-process body copies: the next read parses Redis's entry."""
    from drf_redis_toolkit import cache_entries

    cache_entries.local_bodies.clear()


def test_the_views_cache_lock_timeout_bounds_the_lock(backend):
    lock_ttls: list[int] = []

    class SlowLocked(APIView):
        permission_classes = [permissions.AllowAny]
        cache_lock_timeout = 7

        @cache_response(60, per_user=False)
        def get(self, request):
            RUNS["SlowLocked"] += 1
            (lock,) = backend.raw.scan_iter(match=b"drt:cl:*", count=1000)
            lock_ttls.append(backend.raw.pttl(lock))
            return Response({})

    assert SlowLocked.as_view()(factory.get("/locked/"))["X-Cache"] == "MISS"
    # The default is 3 s: the view's 7 s holds the lock (and bounds waiters) longer.
    assert len(lock_ttls) == 1 and 3_000 < lock_ttls[0] <= 7_000, lock_ttls


# -- _key_material: a renderer DRF accepts without a ``format`` ----------------------


class Formatless:
    """A duck-typed renderer: DRF needs a media type, a charset and render(), no format."""

    media_type = "text/x-formatless"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return f"n={data['n']}".encode()


class FormatlessView(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    renderer_classes = [Formatless]
    cache_per_user = False
    cache_namespace = "core-a-formatless"

    def get_cache_key(self, request):
        return "the-key"

    def get(self, request):
        RUNS["Formatless"] += 1
        return Response({"n": RUNS["Formatless"]})


def test_a_renderer_without_a_format_is_cached_and_named_by_an_empty_format(backend):
    view = FormatlessView.as_view()
    assert [view(factory.get("/formatless/"))["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    # invalidate_key() names that entry with format="" (the renderer has none).
    assert invalidate_key("core-a-formatless", "the-key", media_type="text/x-formatless", format="")
    response = view(factory.get("/formatless/"))
    assert response["X-Cache"] == "MISS" and response.content == b"n=2"
    assert RUNS["Formatless"] == 2


def test_a_handler_called_before_content_negotiation_is_cached(backend):
    # DRF renders a response for a request that skipped negotiation (finalize_response
    # negotiates then): a cached handler called that way is cached like any other.
    class Direct(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(
            60, per_user=False, namespace="core-a-direct", key_func=lambda view, request: "direct"
        )
        def get(self, request):
            RUNS["Direct"] += 1
            return Response({"n": RUNS["Direct"]})

    def call() -> Any:
        view = Direct()
        view.args, view.kwargs, view.format_kwarg = (), {}, None
        view.headers = view.default_response_headers
        view.request = request = view.initialize_request(factory.get("/direct/"))
        assert not hasattr(request, "accepted_renderer")
        return view.get(request)

    assert [call()["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert RUNS["Direct"] == 1
    # Its key was named before any media type or format was chosen: empty ones.
    assert invalidate_key("core-a-direct", "direct", media_type="", format="")
    assert call()["X-Cache"] == "MISS" and RUNS["Direct"] == 2
