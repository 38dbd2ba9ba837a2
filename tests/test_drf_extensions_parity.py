"""drf-extensions' documented caching behaviours, one by one, against the toolkit.

Each test either shows the toolkit behaving as drf-extensions documents
(``cache_response`` and its arguments, ``CacheResponseMixin`` and its
``list_cache_*`` / ``object_cache_*`` attributes, key constructors), or pins the
difference listed, with its reason, in docs/migrating.md ("From drf-extensions'
caching"). Where it helps, drf-extensions itself (installed in the test
environment) runs side by side.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework import permissions, serializers, viewsets
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView
from rest_framework_extensions.cache.decorators import cache_response as extensions_cache_response
from rest_framework_extensions.key_constructor import bits
from rest_framework_extensions.key_constructor.constructors import (
    DefaultKeyConstructor,
    KeyConstructor,
)

from drf_redis_toolkit.cache_stats import counters as _counters
from drf_redis_toolkit.caching import CacheResponseMixin, cache_response
from tests.testapp.models import CachedWidget

pytestmark = pytest.mark.django_db

factory = APIRequestFactory()
RUNS: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    _counters.reset()


def ran(name: str) -> int:
    RUNS[name] = RUNS.get(name, 0) + 1
    return RUNS[name]


def content(response: Any) -> Any:
    if hasattr(response, "render") and not response.is_rendered:
        response.render()
    return json.loads(response.content)


def entry_ttls(backend, namespace_fragment: str) -> list[int]:
    keys = [k for k in backend.raw.scan_iter(match=b"drt:c:*") if namespace_fragment in k]
    return [backend.raw.pttl(key) for key in keys]


# -- cache_response: the decorator ---------------------------------------------------


class Cities(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response()
    def get(self, request: Any) -> Response:
        return Response({"cities": ["Moscow", "London"], "run": ran("cities")})


def test_decorated_get_runs_once_and_the_second_answer_comes_from_the_cache(backend):
    """drf-extensions: "the second request will hit the cache. No SQL evaluation"."""
    view = Cities.as_view()
    first, second = view(factory.get("/cities/")), view(factory.get("/cities/"))
    assert content(first) == content(second) == {"cities": ["Moscow", "London"], "run": 1}
    assert second["Content-Type"] == "application/json"


class Timed(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(60 * 15)
    def get(self, request: Any) -> Response:
        return Response({"run": ran("timed")})


def test_timeout_given_by_position_is_the_entry_lifetime(backend):
    view = Timed.as_view()
    view(factory.get("/timed/"))
    assert content(view(factory.get("/timed/"))) == {"run": 1}
    (ttl,) = entry_ttls(backend, b"Timed")
    assert 14 * 60 * 1000 < ttl <= 15 * 60 * 1000


class GroupedKey(APIView):
    """drf-extensions' documented key function: a view method named by a string."""

    permission_classes = [permissions.AllowAny]
    list_cache_timeout = 120

    def calculate_cache_key(self, view_instance, view_method, request, args, kwargs):
        assert view_instance is self and view_method.__name__ == "get"
        return ".".join([view_method.__name__, request.query_params.get("group", "")])

    @cache_response(timeout="list_cache_timeout", key_func="calculate_cache_key")
    def get(self, request: Any) -> Response:
        return Response({"group": request.query_params.get("group"), "run": ran("grouped")})


def test_string_timeout_and_key_func_name_an_attribute_and_a_method_of_the_view(backend):
    view = GroupedKey.as_view()
    assert content(view(factory.get("/g/", {"group": "a", "x": "1"}))) == {"group": "a", "run": 1}
    # The key function ignores "x": the entry is shared, as drf-extensions would.
    assert content(view(factory.get("/g/", {"group": "a", "x": "2"}))) == {"group": "a", "run": 1}
    assert content(view(factory.get("/g/", {"group": "b"}))) == {"group": "b", "run": 2}
    assert all(60_000 < ttl <= 120_000 for ttl in entry_ttls(backend, b"GroupedKey"))


def by_group(view_instance, view_method, request, args, kwargs):
    return f"group:{request.query_params.get('group')}"


class FunctionKey(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(60, key_func=by_group)
    def get(self, request: Any) -> Response:
        return Response({"run": ran("function-key")})


def test_a_key_function_with_drf_extensions_signature_is_called_with_its_keywords(backend):
    view = FunctionKey.as_view()
    view(factory.get("/f/", {"group": "a", "noise": "1"}))
    assert content(view(factory.get("/f/", {"group": "a", "noise": "2"}))) == {"run": 1}
    assert content(view(factory.get("/f/", {"group": "b"}))) == {"run": 2}


class QueryKeyConstructor(KeyConstructor):
    unique_method_id = bits.UniqueMethodIdKeyBit()
    format = bits.FormatKeyBit()
    query = bits.QueryParamsKeyBit(["page"])


class Constructed(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(key_func=DefaultKeyConstructor())
    def get(self, request: Any) -> Response:
        return Response({"run": ran("constructed")})


class QueryConstructed(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(key_func=QueryKeyConstructor())
    def get(self, request: Any) -> Response:
        return Response({"run": ran("query-constructed")})


def test_key_constructors_name_entries_as_in_drf_extensions(backend):
    # DefaultKeyConstructor has no query bit: ?page=2 shares the entry of ?page=1.
    view = Constructed.as_view()
    view(factory.get("/c/", {"page": 1}))
    assert content(view(factory.get("/c/", {"page": 2}))) == {"run": 1}
    # A constructor with QueryParamsKeyBit(["page"]) tells pages apart, and nothing else.
    view = QueryConstructed.as_view()
    view(factory.get("/q/", {"page": 1}))
    assert content(view(factory.get("/q/", {"page": 1, "utm": "x"}))) == {"run": 1}
    assert content(view(factory.get("/q/", {"page": 2}))) == {"run": 2}


# -- arguments the toolkit refuses at decoration -------------------------------------


def test_a_second_positional_argument_is_refused_when_the_decorator_is_applied():
    """drf-extensions' order is (timeout, key_func): ``@cache_response(60, fn)``."""
    with pytest.raises(TypeError, match="key_func"):
        cache_response(60, by_group)


def test_a_django_cache_alias_is_refused():
    with pytest.raises(TypeError, match="cache="):
        cache_response(60, cache="default")


def test_a_string_that_is_no_attribute_name_is_refused():
    with pytest.raises(TypeError, match="attribute"):
        cache_response(timeout="list cache timeout")


class MisnamedTimeout(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(timeout="list_cache_timeout")
    def get(self, request: Any) -> Response:
        return Response({})


def test_a_string_naming_a_missing_attribute_says_which(backend):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="no attribute 'list_cache_timeout'"):
        MisnamedTimeout.as_view()(factory.get("/n/"))


# -- errors are not cached ----------------------------------------------------------


class Missing(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(60)
    def get(self, request: Any) -> Response:
        return Response({"run": ran("missing")}, status=int(request.query_params["status"]))


class ExtensionsMissing(APIView):
    permission_classes = [permissions.AllowAny]

    @extensions_cache_response(60)
    def get(self, request: Any) -> Response:
        return Response({"run": ran("ext-missing")}, status=404)


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_errors_are_never_cached(backend, status):
    view = Missing.as_view()
    for run in (1, 2):
        assert content(view(factory.get("/m/", {"status": status}))) == {"run": run}


def test_cache_errors_false_is_accepted_and_true_is_refused(backend):
    """drf-extensions 0.8 caches errors by default (``DEFAULT_CACHE_ERRORS = True``)."""
    cache_response(60, cache_errors=False)
    with pytest.raises(TypeError, match="cache_errors"):
        cache_response(60, cache_errors=True)
    # Side by side: drf-extensions serves its cached 404 to the second request.
    view = ExtensionsMissing.as_view()
    view(factory.get("/em/"))
    assert content(view(factory.get("/em/"))) == {"run": 1}


@pytest.mark.parametrize("status", [201, 204, 301])
def test_only_200_is_cached_where_drf_extensions_caches_every_status_below_400(backend, status):
    view = Missing.as_view()
    view(factory.get("/m/", {"status": status}))
    view(factory.get("/m/", {"status": status}))
    assert RUNS["missing"] == 2


# -- CacheResponseMixin -----------------------------------------------------------


class WidgetSerializer(serializers.ModelSerializer):
    class Meta:
        model = CachedWidget
        fields = ["id", "name"]


def list_key(view_instance, view_method, request, args, kwargs):
    return "widgets-list"


class ExtensionsStyleWidgets(CacheResponseMixin, viewsets.ReadOnlyModelViewSet):
    """A viewset written for drf-extensions' mixin, only the import changed."""

    queryset = CachedWidget.objects.all()
    serializer_class = WidgetSerializer
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "ext-widgets"
    list_cache_timeout = 30
    object_cache_timeout = 90
    list_cache_key_func = staticmethod(list_key)
    object_cache_key_func = DefaultKeyConstructor()

    def list(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        ran("widget-list")
        return super().list(request, *args, **kwargs)

    def retrieve(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        ran("widget-retrieve")
        return super().retrieve(request, *args, **kwargs)


def test_the_mixin_caches_list_and_retrieve_with_drf_extensions_attributes(backend):
    first = CachedWidget.objects.create(name="a", price=1)
    second = CachedWidget.objects.create(name="b", price=2)
    listing = ExtensionsStyleWidgets.as_view({"get": "list"})
    detail = ExtensionsStyleWidgets.as_view({"get": "retrieve"})
    listing(factory.get("/w/"))
    # list_cache_key_func ignores the query string: shared, as drf-extensions would.
    assert listing(factory.get("/w/", {"utm": "1"}))["X-Cache"] == "HIT"
    assert content(detail(factory.get("/w/1/"), pk=first.pk))["name"] == "a"
    # DefaultKeyConstructor ignores the pk; the toolkit keys URL arguments anyway.
    assert content(detail(factory.get("/w/2/"), pk=second.pk))["name"] == "b"
    assert detail(factory.get("/w/1/"), pk=first.pk)["X-Cache"] == "HIT"
    assert (RUNS["widget-list"], RUNS["widget-retrieve"]) == (1, 2)
    ttls = sorted(entry_ttls(backend, b"ext-widgets"))
    assert len(ttls) == 3
    assert 0 < ttls[0] <= 30_000 < 60_000 < ttls[1] <= ttls[2] <= 90_000


def test_cache_timeout_wins_over_drf_extensions_timeouts(backend):
    class Explicit(ExtensionsStyleWidgets):
        cache_timeout = 5
        cache_namespace = "ext-explicit"

    Explicit.as_view({"get": "list"})(factory.get("/w/"))
    (ttl,) = entry_ttls(backend, b"ext-explicit")
    assert 0 < ttl <= 5_000


# -- differences listed in docs/migrating.md ------------------------------------------


class Profile(APIView):
    permission_classes = [permissions.AllowAny]

    @cache_response(60)
    def get(self, request: Any) -> Response:
        return Response({"user": request.user.username or None})

    @cache_response(60)
    def post(self, request: Any) -> Response:
        return Response({"run": ran("profile-post")})


def test_entries_are_per_user_by_default(backend):
    """drf-extensions' DefaultKeyConstructor has no user bit: one user's answer for all."""
    alice = User.objects.create_user("alice-ext")
    bob = User.objects.create_user("bob-ext")
    view = Profile.as_view()
    for user in (alice, bob):
        request = factory.get("/p/")
        force_authenticate(request, user=user)
        assert content(view(request)) == {"user": user.username}


def test_only_get_and_head_are_cached(backend):
    """drf-extensions caches whatever method it decorates, POST included."""
    view = Profile.as_view()
    view(factory.post("/p/"))
    assert content(view(factory.post("/p/"))) == {"run": 2}


def test_the_default_key_holds_the_query_string(backend):
    """drf-extensions' default key ignores query parameters (``?page=2`` answered from page 1)."""
    view = Cities.as_view()
    view(factory.get("/cities/", {"page": 1}))
    assert content(view(factory.get("/cities/", {"page": 2})))["run"] == 2


def test_manage_py_check_names_a_string_argument_the_view_lacks():
    """The string forms are read at request time: ``manage.py check`` catches a typo first."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    from drf_redis_toolkit.checks import check_cache_response_arguments

    with override_settings(ROOT_URLCONF="tests.cache_check_urls"):
        messages = check_cache_response_arguments()
        assert [(m.id, m.level >= 40) for m in messages] == [("drf_redis_toolkit.E004", True)] * 2
        assert "timeout='list_cache_timout'" in messages[0].msg
        assert "tests.cache_check_urls.Misspelt.get" in messages[0].msg
        assert "key_func='key_name'" in messages[1].msg and "not callable" in messages[1].msg
        with pytest.raises(SystemCheckError, match="E004"):
            call_command("check")
