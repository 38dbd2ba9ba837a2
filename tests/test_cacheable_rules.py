"""What is never stored (whatever a hook says), what still is, and weak ETags.

Answers that belong to one client must never reach another: the browsable API's
HTML page, a response that sets a cookie (through ``set_cookie()`` or a raw
header), and one carrying a CSRF token. A request that merely *carries* a CSRF
cookie is still served from the cache. ``If-None-Match`` compares weakly, as
RFC 9110 says for it. Every backend; views are called with Django's CSRF
middleware around them where the cookie matters.
"""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.middleware.csrf import CsrfViewMiddleware, get_token
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit.cache_entries import LOCAL_BODY_MAX_BYTES, Entry, LocalBodies
from drf_redis_toolkit.caching import CacheResponseMixin

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()
RUNS: list[str] = []
COOKIE = "abcdefghijklmnopqrstuvwxyzABCDEF"  # a CSRF secret as Django makes them (32 chars)


class Page(CacheResponseMixin, APIView):
    cache_namespace = "rules"
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    def get(self, request):
        RUNS.append("page")
        return Response({"page": 1})


class QuietBrowsable(BrowsableAPIRenderer):
    """A browsable renderer whose page reads no CSRF token (a project's own template)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return b"<html>the page of one user</html>"


class QuietPage(Page):
    renderer_classes = [JSONRenderer, QuietBrowsable]


class RawCookie(CacheResponseMixin, APIView):
    cache_namespace = "rules"

    def get(self, request):
        RUNS.append("raw-cookie")
        response = HttpResponse(b"hello", content_type="text/plain")
        response["Set-Cookie"] = "seen=1; Path=/"  # a header, not set_cookie()
        return response


class Token(CacheResponseMixin, APIView):
    cache_namespace = "rules"

    def get(self, request):
        RUNS.append("token")
        if request.query_params.get("token"):
            return Response({"csrf": get_token(request._request)})
        return Response({"csrf": None})


class Weak(CacheResponseMixin, APIView):
    cache_namespace = "rules"

    def get(self, request):
        RUNS.append("weak")
        response = HttpResponse(b"v1 body", content_type="text/plain")
        response["ETag"] = 'W/"v1"'
        return response


def call(view_class, path: str = "/r", csrf_cookie: str | None = None, **headers: str):
    if csrf_cookie is not None:
        headers["HTTP_COOKIE"] = f"csrftoken={csrf_cookie}"
    handler = CsrfViewMiddleware(view_class.as_view())
    response = handler(factory.get(path, **headers))
    if hasattr(response, "render") and not response.is_rendered:
        response.render()
    return response


@pytest.fixture(autouse=True)
def _runs():
    RUNS.clear()


def test_the_browsable_api_page_is_never_stored(backend):
    for _ in range(2):
        page = call(Page, HTTP_ACCEPT="text/html")
        assert page.status_code == 200 and b"<html" in page.content.lower()
        assert page["X-Cache"] != "HIT"
    assert RUNS == ["page", "page"]
    assert call(Page, HTTP_ACCEPT="application/json")["X-Cache"] == "MISS"
    assert call(Page, HTTP_ACCEPT="application/json")["X-Cache"] == "HIT"  # JSON is


def test_a_browsable_page_that_reads_no_csrf_token_is_never_stored_either(backend):
    for _ in range(2):
        assert call(QuietPage, HTTP_ACCEPT="text/html")["X-Cache"] != "HIT"
    assert RUNS == ["page", "page"]


def test_a_response_setting_a_cookie_by_header_is_never_stored(backend):
    for _ in range(2):
        response = call(RawCookie)
        assert response["Set-Cookie"] == "seen=1; Path=/" and response["X-Cache"] != "HIT"
    assert RUNS == ["raw-cookie", "raw-cookie"]


def test_an_answer_holding_a_csrf_token_is_never_stored(backend):
    """The client already has a CSRF cookie (so the secret does not change): reading
    the token in the view is what makes the answer this client's."""
    for _ in range(2):
        response = call(Token, "/r?token=1", csrf_cookie=COOKIE)
        assert response.data["csrf"] and response["X-Cache"] != "HIT"
    assert RUNS == ["token", "token"]


def test_a_request_that_only_carries_a_csrf_cookie_is_served_from_the_cache(backend):
    assert call(Token, csrf_cookie=COOKIE)["X-Cache"] == "MISS"
    assert call(Token, csrf_cookie=COOKIE)["X-Cache"] == "HIT"
    assert call(Token)["X-Cache"] == "HIT"  # and to a client without one
    assert RUNS == ["token"]


def test_if_none_match_compares_weakly(backend):
    assert call(Weak)["ETag"] == 'W/"v1"'
    for sent in ('"v1"', '"other", "v1"', 'W/"v1"', '"other", W/"v1"'):
        again = call(Weak, HTTP_IF_NONE_MATCH=sent)
        assert again.status_code == 304, sent
    assert call(Weak, HTTP_IF_NONE_MATCH='"v2"').status_code == 200
    assert RUNS == ["weak"]


# -- the per-process body store ----------------------------------------------------


def entry(size: int, hashed: bool = True, body: bool = True) -> Entry:
    return Entry('"e"', b"m" * 10, 200, {}, hashed, b"b" * size if body else None)


def test_the_body_store_keeps_hashed_bodies_up_to_its_size_limit():
    store = LocalBodies(10 * LOCAL_BODY_MAX_BYTES)
    store.put("fits", entry(LOCAL_BODY_MAX_BYTES))
    store.put("too-big", entry(LOCAL_BODY_MAX_BYTES + 1))
    store.put("view-etag", entry(10, hashed=False))  # the view's own ETag: not the bytes'
    store.put("no-body", entry(10, body=False))
    assert store.get("fits") is not None
    assert [store.get(key) for key in ("too-big", "view-etag", "no-body")] == [None] * 3


def test_the_body_store_counts_each_entry_once_and_drops_the_least_recent():
    one = entry(100).size
    assert one == 100 + 10 + 200  # body, metadata, and a fixed allowance
    store = LocalBodies(3 * one)
    store.put("a", entry(100))
    store.put("a", entry(100))  # replaced, not counted twice
    store.put("b", entry(100))
    store.put("c", entry(100))
    assert store._bytes == 3 * one
    store.get("a")  # used: now the most recent
    store.put("d", entry(100))
    assert [key for key in "abcd" if store.get(key) is not None] == ["a", "c", "d"]
    assert store._bytes == 3 * one
    store.put("e", entry(250))  # larger: two older ones make room
    assert [key for key in "acde" if store.get(key) is not None] == ["d", "e"]
    assert store._bytes == one + entry(250).size


def test_an_emptied_body_store_has_its_whole_room_again():
    store = LocalBodies(entry(100).size)  # room for exactly one
    store.put("a", entry(100))
    store.clear()
    store.put("b", entry(100))
    assert store.get("a") is None and store.get("b") is not None


def test_the_body_store_is_emptied_when_redis_or_the_prefix_changes(backend):
    from django.test import override_settings

    from drf_redis_toolkit.cache_entries import local_bodies

    local_bodies.clear()
    local_bodies.put("k", entry(10))
    with override_settings(DRF_REDIS_TOOLKIT={**backend.settings, "CACHE_DEFAULT_TIMEOUT": 99}):
        assert local_bodies.get("k") is not None  # nothing about where bodies come from
    assert local_bodies.get("k") is not None
    with override_settings(DRF_REDIS_TOOLKIT={**backend.settings, "KEY_PREFIX": "elsewhere"}):
        assert local_bodies.get("k") is None  # bodies belong to the prefix they came from
    local_bodies.put("k", entry(10))
    with override_settings(
        DRF_REDIS_TOOLKIT={**backend.settings, "REDIS_URL": "redis://127.0.0.1:1/0"}
    ):
        assert local_bodies.get("k") is None  # and to the Redis
    local_bodies.clear()
