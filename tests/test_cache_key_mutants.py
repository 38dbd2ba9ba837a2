"""Cache keys, drf-extensions' mixin attributes and the stored answer's way back:
behaviour of caching.py that mutation testing found unpinned (docs/testing.md).

Which entry a request shares, how long it lives, what a drf-extensions key
function is handed, what a hit in another process keeps, and what happens when
the view fails after its handler. Every option these tests depend on is read per
request (class attributes and hooks), so mutmut's mutants reach it even though
the views are defined at import time.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import generics, mixins, permissions, serializers, viewsets
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.versioning import BaseVersioning
from rest_framework.views import APIView
from rest_framework_extensions.key_constructor.constructors import DefaultKeyConstructor

from drf_redis_toolkit import caching
from drf_redis_toolkit.cache_entries import local_bodies
from drf_redis_toolkit.cache_stats import counters as _counters
from drf_redis_toolkit.caching import CacheResponseMixin
from drf_redis_toolkit.invalidation import delivery
from tests.testapp.models import CachedWidget

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()
RUNS: dict[str, int] = {}
#: What each drf-extensions key function was handed: (kind, view_method, args, kwargs).
SEEN: list[tuple[str, Any, Any, Any]] = []
REFUSE = {"store": False}


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    SEEN.clear()
    REFUSE["store"] = False
    _counters.reset()
    local_bodies.clear()
    yield
    local_bodies.clear()


def ran(name: str) -> None:
    RUNS[name] = RUNS.get(name, 0) + 1


def content(response: Any) -> Any:
    if hasattr(response, "render") and not response.is_rendered:
        response.render()
    return json.loads(response.content)


def entry_keys(backend, namespace: str) -> list[bytes]:
    """The namespace's entry keys (short namespaces are readable in the key)."""
    return sorted(k for k in backend.raw.scan_iter(match=b"drt:c:*") if namespace.encode() in k)


def entry_ttl(backend, namespace: str) -> int:
    (key,) = entry_keys(backend, namespace)
    return int(backend.raw.pttl(key))


def list_key(view_instance, view_method, request, args, kwargs):
    SEEN.append(("list", view_method, args, kwargs))
    return "the-list"  # one entry whatever the query string, as drf-extensions would


def object_key(view_instance, view_method, request, args, kwargs):
    SEEN.append(("object", view_method, args, kwargs))
    return "an-object"


class WidgetSerializer(serializers.ModelSerializer):
    class Meta:
        model = CachedWidget
        fields = ["id", "name"]


class ExtensionsAttributes:
    """drf-extensions' attributes, each timeout distinct from CACHE_DEFAULT_TIMEOUT (300 s).

    First among the bases, so that its ``cache_per_user`` wins over the mixin's.
    """

    queryset = CachedWidget.objects.all()
    serializer_class = WidgetSerializer
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    list_cache_timeout = 30
    object_cache_timeout = 90
    list_cache_key_func = staticmethod(list_key)
    object_cache_key_func = staticmethod(object_key)


class WidgetList(ExtensionsAttributes, CacheResponseMixin, generics.ListAPIView):
    cache_namespace = "ck-list"

    def list(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        ran("list")
        return super().list(request, *args, **kwargs)


class WidgetDetail(ExtensionsAttributes, CacheResponseMixin, generics.RetrieveAPIView):
    cache_namespace = "ck-detail"


class ShopWidgets(ExtensionsAttributes, CacheResponseMixin, generics.ListAPIView):
    """A list under its parent's pk (``shops/<pk>/widgets/``): a list on a detail-shaped route."""

    cache_namespace = "ck-nested"


class Summary(ExtensionsAttributes, CacheResponseMixin, generics.GenericAPIView):
    """A generic view whose ``get`` neither lists nor retrieves."""

    cache_namespace = "ck-summary"

    def get(self, request: Any) -> Response:
        return Response({"widgets": self.get_queryset().count()})


class WidgetViewSet(ExtensionsAttributes, CacheResponseMixin, viewsets.ReadOnlyModelViewSet):
    cache_namespace = "ck-viewset"


# -- drf-extensions' list_cache_* / object_cache_* on generic views -------------------


def test_a_generic_list_view_takes_the_list_timeout_and_key_function(backend):
    view = WidgetList.as_view()
    assert view(factory.get("/widgets/"))["X-Cache"] == "MISS"
    # list_key ignores the query string: the entry is shared, as in drf-extensions.
    assert view(factory.get("/widgets/", {"utm": "mail"}))["X-Cache"] == "HIT"
    assert RUNS == {"list": 1}
    assert 0 < entry_ttl(backend, "ck-list") <= 30_000
    # view_method is the handler's function, as drf-extensions passes it.
    assert SEEN == [("list", generics.ListAPIView.get, (), {})] * 2


def test_head_on_a_generic_view_with_a_key_constructor_is_answered_from_the_get_entry(backend):
    """HEAD is keyed by the GET handler: drf-extensions' UniqueMethodIdKeyBit reads its
    name (a generic view's class has no ``head``: the key function got ``None``, a 500)."""

    class Constructed(WidgetList):
        cache_namespace = "ck-head"
        list_cache_key_func = DefaultKeyConstructor()

    view = Constructed.as_view()
    assert view(factory.get("/widgets/"))["X-Cache"] == "MISS"
    head = view(factory.head("/widgets/"))
    assert (head.status_code, head["X-Cache"]) == (200, "HIT")
    assert RUNS == {"list": 1}


def test_a_generic_detail_view_takes_the_object_timeout_and_key_function(backend):
    widget = CachedWidget.objects.create(name="a", price=1)
    view = WidgetDetail.as_view()
    response = view(factory.get(f"/widgets/{widget.pk}/"), pk=widget.pk)
    assert (content(response), response["X-Cache"]) == ({"id": widget.pk, "name": "a"}, "MISS")
    assert 60_000 < entry_ttl(backend, "ck-detail") <= 90_000
    assert SEEN == [("object", generics.RetrieveAPIView.get, (), {"pk": widget.pk})]


def test_object_settings_never_apply_to_a_list_handler_on_a_route_with_a_pk(backend):
    CachedWidget.objects.create(name="a", price=1)
    view = ShopWidgets.as_view()
    assert view(factory.get("/shops/1/widgets/"), pk=1)["X-Cache"] == "MISS"
    assert [kind for kind, *_ in SEEN] != ["object"]
    assert entry_ttl(backend, "ck-nested") > 90_000


def test_list_settings_never_apply_to_a_generic_view_that_lists_nothing(backend):
    view = Summary.as_view()
    assert content(view(factory.get("/summary/"))) == {"widgets": 0}
    assert SEEN == []
    assert entry_ttl(backend, "ck-summary") > 30_000


def test_key_functions_are_handed_the_views_url_arguments(backend):
    """drf-extensions' contract (its ``ArgsKeyBit`` / ``KwargsKeyBit`` read them)."""
    widget = CachedWidget.objects.create(name="a", price=1)
    listing = WidgetViewSet.as_view({"get": "list"})
    detail = WidgetViewSet.as_view({"get": "retrieve"})
    assert listing(factory.get("/shops/7/widgets/"), "7")["X-Cache"] == "MISS"
    assert detail(factory.get(f"/widgets/{widget.pk}/"), pk=widget.pk)["X-Cache"] == "MISS"
    assert SEEN == [
        ("list", WidgetViewSet.list, ("7",), {}),
        ("object", WidgetViewSet.retrieve, (), {"pk": widget.pk}),
    ]


def test_a_key_function_that_is_not_callable_is_refused_naming_the_view(backend):
    class Misconfigured(WidgetViewSet):
        cache_namespace = "ck-misconfigured"
        list_cache_key_func = "list_key"

    with pytest.raises(ImproperlyConfigured) as raised:
        Misconfigured.as_view({"get": "list"})(factory.get("/widgets/"))
    assert str(raised.value).startswith(
        f"{Misconfigured.__qualname__}: list_cache_key_func / object_cache_key_func must be "
        "callable (a KeyConstructor or a function), not 'list_key'"
    )


# -- the mixin's initial() -------------------------------------------------------------


class PositionalVersioning(BaseVersioning):
    """The version from the URL's first unnamed group (``re_path(r"^api/(v\\d+)/...")``)."""

    def determine_version(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return args[0] if args else self.default_version


class Versioned(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    versioning_class = PositionalVersioning
    cache_per_user = False
    cache_namespace = "ck-versioned"

    def get(self, request: Any, *args: Any) -> Response:
        return Response({"version": request.version})


def test_drfs_checks_see_the_positional_url_arguments(backend):
    view = Versioned.as_view()
    assert content(view(factory.get("/api/v1/things/"), "v1")) == {"version": "v1"}
    assert content(view(factory.get("/api/v2/things/"), "v2")) == {"version": "v2"}


class PostOnly(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]

    def post(self, request: Any) -> Response:
        return Response({"ok": True})


@pytest.mark.parametrize("method", ["get", "head"])
def test_a_get_to_a_view_without_a_get_handler_is_answered_405(backend, method):
    response = PostOnly.as_view()(getattr(factory, method)("/post-only/"))
    assert response.status_code == 405


# -- Vary: the per-user headers ----------------------------------------------------------


class Greeting(CacheResponseMixin, APIView):
    """Per user (the default): its answers say ``Vary: Cookie, Authorization``."""

    permission_classes = [permissions.AllowAny]
    cache_namespace = "ck-greeting"

    def get(self, request: Any) -> Response:
        ran("greeting")
        return Response({"hello": str(request.user)})


def test_a_per_user_entry_is_shared_whatever_the_users_cookies(backend):
    """The entry is already the user's: the credentials the toolkit adds to ``Vary``
    are not keyed by value, or a changing tracking cookie would make every request a miss."""
    view = Greeting.as_view()
    first = view(factory.get("/greeting/", HTTP_COOKIE="theme=dark; visit=1"))
    assert first["X-Cache"] == "MISS"
    assert "Cookie" in first["Vary"] and "Authorization" in first["Vary"]
    second = view(factory.get("/greeting/", HTTP_COOKIE="theme=light; visit=2"))
    assert (second["X-Cache"], content(second)) == ("HIT", {"hello": "AnonymousUser"})
    assert RUNS == {"greeting": 1}


# -- a failure after the handler -------------------------------------------------------


class RaisesAfterHandler(CacheResponseMixin, APIView):
    """Its ``dispatch`` fails once the handler has returned (a decorator, a middleware-like
    wrapper): the answer waits to be stored until then, so it must not be."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "ck-raises"
    cache_lock_timeout = 30.0

    def get(self, request: Any) -> Response:
        ran("raises")
        return Response({"ok": True})

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        super().dispatch(request, *args, **kwargs)
        raise RuntimeError("after the handler")


def test_a_failure_after_the_handler_propagates_stores_nothing_and_frees_the_key(
    backend, caplog, monkeypatch
):
    monkeypatch.setattr(caching, "_last_error_log", [0.0])  # a failed cache call would log now
    view = RaisesAfterHandler.as_view()
    with caplog.at_level(logging.WARNING, logger="drf_redis_toolkit"):
        for run in (1, 2):
            with pytest.raises(RuntimeError, match="after the handler"):
                view(factory.get("/raises/"))
            assert RUNS == {"raises": run}
            assert entry_keys(backend, "ck-raises") == []
            # No later request waits for the lock (30 s): released, or a short
            # pass-through marker saying "run the view yourself".
            locks = [k for k in backend.raw.scan_iter(match=b"drt:cl:*") if b"ck-raises" in k]
            assert [backend.raw.get(k) for k in locks] in ([], [b"!"])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- a hit in a process that did not store the entry ---------------------------------------


class Catalogue(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "ck-catalogue"

    def should_cache_response(self, request: Any, response: Any) -> bool:
        return not REFUSE["store"]

    def get(self, request: Any) -> Response:
        ran("catalogue")
        return Response({"page": request.query_params.get("page"), "filler": "x" * 40})


def test_a_hit_from_another_process_parses_the_entry_and_keeps_its_body(backend):
    view = Catalogue.as_view()
    miss = view(factory.get("/catalogue/"))
    local_bodies.clear()  # as in another worker process
    hit = view(factory.get("/catalogue/"))
    assert (hit.status_code, hit["X-Cache"], hit["ETag"]) == (200, "HIT", miss["ETag"])
    assert hit.content == miss.content
    assert RUNS == {"catalogue": 1}
    # Kept for this process's next hit, which then needs only the entry's head.
    (key,) = entry_keys(backend, "ck-catalogue")
    held = local_bodies.get(key.decode())
    assert held is not None and held.body == miss.content


def test_bodies_kept_after_hits_weigh_on_the_budget_as_after_misses(backend, monkeypatch):
    view = Catalogue.as_view()
    for page in "123":
        view(factory.get("/catalogue/", {"page": page}))
    keys = [key.decode() for key in entry_keys(backend, "ck-catalogue")]
    weights = [local_bodies.get(key).size for key in keys]  # type: ignore[union-attr]
    assert len(set(weights)) == 1
    # Room for two bodies as a miss keeps them; then three hits in a fresh process.
    monkeypatch.setattr(local_bodies, "max_bytes", 2 * weights[0])
    local_bodies.clear()
    for page in "123":
        assert view(factory.get("/catalogue/", {"page": page}))["X-Cache"] == "HIT"
    held = [local_bodies.get(key) for key in keys]
    assert sorted(json.loads(entry.body)["page"] for entry in held if entry is not None) == [
        "2",
        "3",
    ]
    assert RUNS == {"catalogue": 3}


def test_an_entry_with_a_header_django_refuses_is_dropped_from_the_process_too(backend):
    view = Catalogue.as_view()
    view(factory.get("/catalogue/", {"page": "9"}))
    (key,) = entry_keys(backend, "ck-catalogue")
    head, meta_raw, body = backend.raw.get(key).split(b"\n", 2)
    meta = json.loads(meta_raw)
    meta["h"]["X-Note"] = "two\nlines"  # Django refuses a header value with a newline
    corrupt = b"\n".join([head, json.dumps(meta, separators=(",", ":")).encode(), body])
    backend.raw.set(key, corrupt, keepttl=True)
    local_bodies.clear()
    REFUSE["store"] = True  # the recomputed answer is not stored: nothing replaces the entry
    response = view(factory.get("/catalogue/", {"page": "9"}))
    assert (response["X-Cache"], content(response)["page"], "X-Note" in response) == (
        "MISS",
        "9",
        False,
    )
    assert RUNS == {"catalogue": 2}
    assert entry_keys(backend, "ck-catalogue") == []
    assert local_bodies.get(key.decode()) is None


def test_head_on_a_generic_list_view_with_only_a_head_handler_is_cached(backend):
    """A generic list view that answers ``HEAD`` with its own ``head()`` and has no
    ``get()``: its class has no GET handler to hand the key function, which gets
    ``None`` as ``view_method`` (never an ``AttributeError``), and the answer is cached."""

    class HeadOnly(
        ExtensionsAttributes, CacheResponseMixin, mixins.ListModelMixin, generics.GenericAPIView
    ):
        cache_namespace = "ck-head-only"

        def head(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            ran("head-only")
            return self.list(request, *args, **kwargs)

    view = HeadOnly.as_view()
    answers = [view(factory.head("/widgets/")) for _ in range(2)]
    assert [(a.status_code, a["X-Cache"]) for a in answers] == [(200, "MISS"), (200, "HIT")]
    assert RUNS == {"head-only": 1}
    assert [(kind, method) for kind, method, _, _ in SEEN] == [("list", None)] * 2


def test_a_hit_that_rechecks_the_object_still_does_after_a_second_lookup(backend):
    """A detail view that re-checks object permissions on hits, whose answer carries an
    unquoted ``ETag: abc``. A client sending ``W/abc`` names the entry to
    ``cache_get.lua`` (head only) without matching it for a 304, so the toolkit looks
    the entry up again for its body: that hit, too, calls ``get_object()`` first."""
    widget = CachedWidget.objects.create(name="w")

    class Rechecked(ExtensionsAttributes, CacheResponseMixin, generics.RetrieveAPIView):
        cache_namespace = "ck-rechecked"
        cache_recheck_object_permissions = True

        def get_object(self) -> Any:
            ran("get_object")
            return super().get_object()

        def retrieve(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            response = super().retrieve(request, *args, **kwargs)
            response["ETag"] = "abc"
            return response

    view = Rechecked.as_view()
    first = view(factory.get(f"/widgets/{widget.pk}/"), pk=widget.pk)
    assert (first["X-Cache"], first["ETag"]) == ("MISS", "abc")
    local_bodies.clear()
    again = view(factory.get(f"/widgets/{widget.pk}/", HTTP_IF_NONE_MATCH="W/abc"), pk=widget.pk)
    assert (again.status_code, again["X-Cache"]) == (200, "HIT")
    assert content(again) == content(first) == {"id": widget.pk, "name": "w"}
    # The miss's retrieve(), then each replay's re-check (the first replay checks
    # before it learns that the body is missing: one redundant query on this rare path).
    assert RUNS == {"get_object": 3}


def test_an_entry_invalidated_between_a_hits_two_lookups_is_recomputed_and_stored(backend):
    """The rare path above, with a write landing between its two lookups (here, made
    by the first replay's ``get_object()``): the second lookup finds no entry and
    takes the single-flight lock under this request's token. The view runs, its answer
    is stored under the new generation, and no lock is left behind for others to wait
    on: the next request is a hit."""
    widget = CachedWidget.objects.create(name="w")

    class Raced(ExtensionsAttributes, CacheResponseMixin, generics.RetrieveAPIView):
        cache_namespace = "ck-raced"
        cache_recheck_object_permissions = True

        def get_object(self) -> Any:
            ran("get_object")
            if RUNS["get_object"] == 2:  # the first replay's re-check: a write lands
                delivery.invalidate_now(namespaces=["ck-raced"])
            return super().get_object()

        def retrieve(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            ran("retrieve")
            response = super().retrieve(request, *args, **kwargs)
            response["ETag"] = "abc"
            return response

    view = Raced.as_view()
    url = f"/widgets/{widget.pk}/"
    assert view(factory.get(url), pk=widget.pk)["X-Cache"] == "MISS"
    local_bodies.clear()
    raced = view(factory.get(url, HTTP_IF_NONE_MATCH="W/abc"), pk=widget.pk)
    assert (raced.status_code, raced["X-Cache"]) == (200, "MISS")
    assert content(raced) == {"id": widget.pk, "name": "w"}
    assert RUNS["retrieve"] == 2
    assert not list(backend.raw.scan_iter(match=b"drt:cl:*")), "a lock was left behind"
    after = view(factory.get(url), pk=widget.pk)
    assert (after["X-Cache"], RUNS["retrieve"]) == ("HIT", 2)


def test_an_entry_that_falls_due_between_a_hits_two_lookups_is_refreshed(backend, monkeypatch):
    """The same rare path on a view with early refresh: between the two lookups the
    entry is rewritten as due for a refresh (it took far longer to compute than the
    time it has left). The second lookup makes the early-refresh draw too: the answer
    is recomputed rather than served."""
    monkeypatch.setattr(caching.random, "random", lambda: 0.5)
    widget = CachedWidget.objects.create(name="w")

    class DueLater(ExtensionsAttributes, CacheResponseMixin, generics.RetrieveAPIView):
        cache_namespace = "ck-due-later"
        cache_early_refresh = True
        cache_recheck_object_permissions = True

        def get_object(self) -> Any:
            ran("get_object")
            if RUNS["get_object"] == 2:  # the first replay's re-check: the entry falls due
                (key,) = entry_keys(backend, "ck-due-later")
                head, rest = backend.raw.get(key).split(b"\n", 1)
                gen, _, etag = head.split(b" ", 2)
                backend.raw.set(key, gen + b" 999999999999 " + etag + b"\n" + rest, px=50_000)
            return super().get_object()

        def retrieve(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            ran("retrieve")
            response = super().retrieve(request, *args, **kwargs)
            response["ETag"] = "abc"
            return response

    view = DueLater.as_view()
    url = f"/widgets/{widget.pk}/"
    assert view(factory.get(url), pk=widget.pk)["X-Cache"] == "MISS"
    local_bodies.clear()
    again = view(factory.get(url, HTTP_IF_NONE_MATCH="W/abc"), pk=widget.pk)
    assert (again.status_code, again["X-Cache"], RUNS["retrieve"]) == (200, "MISS", 2)


class _OneSideOnly(CacheResponseMixin, viewsets.ReadOnlyModelViewSet):
    queryset = CachedWidget.objects.all()
    serializer_class = WidgetSerializer
    permission_classes = [permissions.AllowAny]
    cache_per_user = False


@pytest.mark.parametrize("side", ["object", "list"])
def test_one_side_of_drf_extensions_attributes_applies_to_its_side_only(backend, side):
    """A view that sets only ``object_cache_timeout`` (or only ``list_cache_timeout``):
    that side takes it, the other side the default (300 s), and neither fails on the
    attribute it lacks."""

    class View(_OneSideOnly):
        cache_namespace = f"ck-only-{side}"

    setattr(View, f"{side}_cache_timeout", 90)
    widget = CachedWidget.objects.create(name="a", price=1)
    lister = View.as_view({"get": "list"})
    getter = View.as_view({"get": "retrieve"})
    assert lister(factory.get("/w/"))["X-Cache"] == "MISS"
    list_ttl = entry_ttl(backend, f"ck-only-{side}")
    backend.raw.delete(*entry_keys(backend, f"ck-only-{side}"))
    assert getter(factory.get(f"/w/{widget.pk}/"), pk=widget.pk)["X-Cache"] == "MISS"
    object_ttl = entry_ttl(backend, f"ck-only-{side}")
    short, default = (object_ttl, list_ttl) if side == "object" else (list_ttl, object_ttl)
    assert 60_000 < short <= 90_000
    assert 240_000 < default <= 300_000


def test_drf_extensions_attributes_on_a_plain_apiview_do_not_apply(backend):
    """A plain ``APIView`` neither lists nor retrieves: a ``list_cache_timeout`` it sets
    (drf-extensions reads it on ``list()`` only) leaves the default timeout, and the route
    analysis a generic view gets is never attempted on it (it has no lookup field)."""

    class Plain(CacheResponseMixin, APIView):
        permission_classes = [permissions.AllowAny]
        cache_per_user = False
        cache_namespace = "ck-plain-attributes"
        list_cache_timeout = 30
        object_cache_timeout = 90

        def get(self, request: Any) -> Response:
            return Response({"plain": True})

    view = Plain.as_view()
    assert view(factory.get("/plain/"))["X-Cache"] == "MISS"
    assert view(factory.get("/plain/"))["X-Cache"] == "HIT"
    assert 240_000 < entry_ttl(backend, "ck-plain-attributes") <= 300_000
