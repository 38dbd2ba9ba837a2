"""caching.py's lookups (``_lookup``, ``_offer``, ``_find``) and ``_checks_objects``:
behaviour mutation testing found unpinned (docs/testing.md, "Mutation testing").

What Redis sends back is measured at redis-py's reply parser (``Redis.parse_response``,
which fakeredis, a real server and each cluster node's client all go through): the
documented promise is that a revalidation, or a hit on a body this process holds,
gets the entry's head only, never the body. Views are built inside the tests
(mutmut's workers import this module before switching a mutant on).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis
from django.test import override_settings
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import tracking
from drf_redis_toolkit.cache_entries import local_bodies
from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.local_cache import local_cache

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()
#: Random hex compresses to about half: the stored body stays far above the head's size.
BODY_CHARS = 40_000
HEAD_LIMIT = 4_000


def _size(reply: Any) -> int:
    if isinstance(reply, bytes | str):
        return len(reply)
    if isinstance(reply, list | tuple):
        return sum(_size(part) for part in reply)
    return 0


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes of every reply redis-py parses (one counter for the whole test)."""
    total = [0]
    original = redis.Redis.parse_response

    def counting(self: Any, connection: Any, command_name: Any, **options: Any) -> Any:
        reply = original(self, connection, command_name, **options)
        total[0] += _size(reply)
        return reply

    monkeypatch.setattr(redis.Redis, "parse_response", counting)
    return total


def _view(namespace: str, answer: Any, permission: Any = permissions.AllowAny) -> Any:
    """A shared cached view answering ``answer(request)`` (built per test, see above)."""

    class View(CacheResponseMixin, APIView):
        authentication_classes = ()
        permission_classes = [permission]
        cache_per_user = False
        cache_namespace = namespace

        def get(self, request: Any) -> Response:
            return answer(request)

    return View.as_view()


def _big_view(runs: list[int]) -> Any:
    pad = os.urandom(BODY_CHARS // 2).hex()

    def answer(request: Any) -> Response:
        runs[0] += 1
        return Response({"pad": pad})

    return _view("core-b-big", answer)


def _get(view: Any, received: list[int], **headers: str) -> tuple[Any, int]:
    before = received[0]
    response = view(factory.get("/big/", **headers))
    if hasattr(response, "render"):
        response.render()
    return response, received[0] - before


@pytest.mark.parametrize("form", ["strong", "weak", "spaced"])
def test_a_revalidation_gets_304_and_only_the_entrys_head_from_redis(backend, received, form):
    """docs/caching.md, "ETag and 304": Redis does not even send the body."""
    runs = [0]
    view = _big_view(runs)
    first, _ = _get(view, received)
    assert first["X-Cache"] == "MISS" and first.status_code == 200
    etag = first["ETag"]
    header = {"strong": etag, "weak": f"W/{etag}", "spaced": f"  {etag} "}[form]
    # A body held by this process is offered instead of the client's ETag: drop it.
    local_bodies.clear()
    response, size = _get(view, received, HTTP_IF_NONE_MATCH=header)
    assert response.status_code == 304 and response["X-Cache"] == "HIT"
    assert response["ETag"] == etag
    assert size < HEAD_LIMIT, size
    # The same lookup without a matching ETag does ship the body (the measure works).
    local_bodies.clear()
    response, size = _get(view, received, HTTP_IF_NONE_MATCH='"another"')
    assert response.status_code == 200 and response["X-Cache"] == "HIT"
    assert size > BODY_CHARS // 4, size
    assert runs == [1]


def test_a_hit_on_a_body_held_here_gets_only_the_head_from_redis(backend, received):
    """docs/caching.md, "In-process bodies": no transfer of the body."""
    runs = [0]
    view = _big_view(runs)
    first, _ = _get(view, received)
    assert first["X-Cache"] == "MISS"
    response, size = _get(view, received)
    assert response.status_code == 200 and response["X-Cache"] == "HIT"
    assert response.content == first.content and response["ETag"] == first["ETag"]
    assert size < HEAD_LIMIT, size
    local_bodies.clear()
    response, size = _get(view, received)
    assert response.content == first.content and size > BODY_CHARS // 4, size
    assert runs == [1]


def test_another_worker_keeps_the_body_it_fetched_once(backend, received):
    """A worker that did not compute the entry (its in-process bodies hold nothing)
    fetches the body once, then keeps it: its next hit gets the head only. The entry
    says the ETag is the body's hash, which is what lets a worker keep it."""
    runs = [0]
    view = _big_view(runs)
    first, _ = _get(view, received)
    local_bodies.clear()  # as another worker sees the entry
    response, size = _get(view, received)
    assert response.content == first.content and size > BODY_CHARS // 4, size
    response, size = _get(view, received)
    assert response.content == first.content and response["ETag"] == first["ETag"]
    assert size < HEAD_LIMIT, size
    assert runs == [1]


@pytest.mark.skipif(
    not tracking.push_handlers_available(),
    reason="LOCAL_CACHE needs redis-py 5.1 or newer (RESP3 push handlers); refused at start-up",
)
def test_local_cache_without_tracking_still_caches_through_redis(backend):
    """``LOCAL_CACHE`` on: fakeredis cannot track, so every lookup asks Redis; a real
    server may answer from memory. Either way: one run, then hits with the same body."""
    runs = [0]
    view = _big_view(runs)
    local_cache.reset()
    try:
        with override_settings(DRF_REDIS_TOOLKIT={**backend.settings, "LOCAL_CACHE": True}):
            first = view(factory.get("/big/"))
            first.render()
            assert first["X-Cache"] == "MISS"
            for _ in range(2):
                local_bodies.clear()
                again = view(factory.get("/big/"))
                if hasattr(again, "render"):
                    again.render()
                assert again["X-Cache"] == "HIT"
                assert again.content == first.content
    finally:
        local_cache.reset()
    assert runs == [1]


def _entries(raw: Any) -> dict[Any, bytes]:
    found = {}
    for key in raw.scan_iter():
        if raw.type(key) in (b"string", "string"):
            value = raw.get(key)
            if value is not None and b"\n" in value:
                found[key] = value
    return found


def test_a_vary_record_where_a_variant_belongs_is_dropped_and_the_view_answers(backend):
    """A variant key holding a vary record (damage, or a foreign write) is not
    followed a second time: it is deleted, the view runs, its answer is stored again."""
    runs = [0]

    def answer(request: Any) -> Response:
        runs[0] += 1
        response = Response({"lang": request.headers.get("Accept-Language")})
        response["Vary"] = "Accept-Language"
        return response

    view = _view("core-b-vary", answer)

    def get() -> Any:
        response = view(factory.get("/vary/", HTTP_ACCEPT_LANGUAGE="fr"))
        if hasattr(response, "render"):
            response.render()
        return response

    assert get()["X-Cache"] == "MISS"
    entries = _entries(backend.raw)
    records = {k: v for k, v in entries.items() if v.split(b"\n", 1)[0].split(b" ")[1] == b"V"}
    variants = {k: v for k, v in entries.items() if k not in records}
    assert len(records) == 1 and len(variants) == 1
    (variant_key,) = variants
    (record,) = records.values()
    backend.raw.set(variant_key, record)
    local_bodies.clear()
    response = get()
    assert response.status_code == 200 and response["X-Cache"] == "MISS"
    assert json.loads(response.content) == {"lang": "fr"}
    assert runs == [2]
    local_bodies.clear()
    again = get()
    assert again["X-Cache"] == "HIT" and again.content == response.content
    assert runs == [2]


class _OwnerOnly(permissions.BasePermission):
    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return False


@pytest.mark.parametrize(
    "permission",
    [
        _OwnerOnly & permissions.AllowAny,
        permissions.AllowAny | _OwnerOnly,
        ~permissions.IsAuthenticated,
    ],
    ids=["checker-and-allow", "allow-or-checker", "not"],
)
def test_a_plain_apiview_whose_composed_permission_checks_objects_is_not_cached(
    backend, permission
):
    """A plain ``APIView`` checks objects in code a hit cannot replay (docs/caching.md):
    an operand that checks objects, on either side, or a ``NOT`` (which refuses every
    object) means no caching."""
    runs = [0]

    def answer(request: Any) -> Response:
        runs[0] += 1
        return Response({"ok": True})

    view = _view("core-b-plain", answer, permission)
    for _ in range(2):
        response = view(factory.get("/plain/"))
        assert response.status_code == 200 and not response.has_header("X-Cache")
    assert runs == [2]


@pytest.mark.parametrize("header", ["W/abc", " abc"])
def test_a_client_etag_that_names_the_entry_but_is_no_match_still_gets_the_body(backend, header):
    """A view that sets an unquoted ``ETag: abc`` (malformed, but views do): a client
    sending ``W/abc`` or `` abc`` names the entry to ``cache_get.lua``, which then sends
    the head only, yet that header is no match for a 304 (``parse_etags`` reads no tag
    in it). The hit must fetch the body again and answer 200 from the cache."""
    runs = [0]

    def answer(request: Any) -> Response:
        runs[0] += 1
        return Response({"n": runs[0]}, headers={"ETag": "abc"})

    view = _view("core-b-unquoted", answer)
    first = view(factory.get("/u/"))
    first.render()
    assert (first["X-Cache"], first["ETag"]) == ("MISS", "abc")
    local_bodies.clear()  # nothing held here: the client's header is what is offered
    again = view(factory.get("/u/", HTTP_IF_NONE_MATCH=header))
    assert (again.status_code, again["X-Cache"], again["ETag"]) == (200, "HIT", "abc")
    assert again.content == first.content
    assert runs == [1]


class _StrictWhenAsked(APIView):
    """A plain view whose own ``get_permissions()`` adds an object check on ``?strict=1``."""

    authentication_classes = ()
    permission_classes = [permissions.AllowAny]

    def get_permissions(self) -> list[Any]:
        if self.request.query_params.get("strict"):
            return [_OwnerOnly()]
        return super().get_permissions()


def test_a_view_s_own_get_permissions_is_asked_on_every_request(backend):
    """``permission_classes`` answer for DRF's ``get_permissions()`` only (and are kept
    per tuple of classes); an override may differ per request, so it is asked each time:
    a request it gives an object check is not cached, the others are."""
    runs = [0]

    class View(CacheResponseMixin, _StrictWhenAsked):
        cache_per_user = False
        cache_namespace = "core-b-own-permissions"

        def get(self, request: Any) -> Response:
            runs[0] += 1
            return Response({"strict": request.query_params.get("strict", "")})

    view = View.as_view()
    for query, cached in (("/s/?strict=1", False), ("/s/", True), ("/s/?strict=1", False)):
        for _ in range(2):
            response = view(factory.get(query))
            assert response.status_code == 200
            assert response.has_header("X-Cache") is cached
    assert runs == [5]  # ?strict=1 ran four times, the plain query once


def test_get_permissions_given_to_as_view_is_asked_too(backend):
    """``as_view(get_permissions=...)`` sets it on the instance: asked, like an override."""
    runs = [0]

    class View(CacheResponseMixin, APIView):
        authentication_classes = ()
        permission_classes = [permissions.AllowAny]
        cache_per_user = False
        cache_namespace = "core-b-given-permissions"

        def get(self, request: Any) -> Response:
            runs[0] += 1
            return Response({"ok": True})

    checked = View.as_view(get_permissions=lambda: [_OwnerOnly()])
    plain = View.as_view()
    for _ in range(2):
        assert not checked(factory.get("/g/")).has_header("X-Cache")
    assert runs == [2]
    assert [plain(factory.get("/g/"))["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert runs == [3]


def test_permission_classes_are_judged_per_view_whatever_was_judged_before(backend):
    """Two views, one tuple of classes each: the kept answer of one never decides the
    other's (an object check on one, none on the other, in either order)."""
    runs = [0]

    def answer(request: Any) -> Response:
        runs[0] += 1
        return Response({"ok": True})

    open_view = _view("core-b-open", answer)
    checked_view = _view("core-b-checked", answer, _OwnerOnly)
    for _ in range(2):
        assert not checked_view(factory.get("/c/")).has_header("X-Cache")
        assert open_view(factory.get("/o/")).has_header("X-Cache")
    assert runs == [3]
