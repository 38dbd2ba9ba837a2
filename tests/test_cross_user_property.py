"""Property: across random users, credentials and URLs, no cached body reaches another identity.

Hypothesis draws sequences of requests from anonymous clients, ordinary users and
staff, authenticated by token or by session, against per-user cached views whose
bodies name who asked. Every answer, hit or miss, must name the requester. A
second property does the same for what a shared answer depends on besides the
user: the headers it varies on and the URL arguments.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.urls import path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from drf_redis_toolkit.caching import CacheResponseMixin

pytestmark = pytest.mark.django_db


class WhoAmI(CacheResponseMixin, APIView):
    """Per-user by default: the body names the requester and echoes the query."""

    authentication_classes = (TokenAuthentication, SessionAuthentication)
    permission_classes = (AllowAny,)
    cache_namespace = "whoami"

    def get(self, request):
        user = request.user
        who = user.username if user.is_authenticated else "anonymous"
        return Response({"who": who, "query": sorted(request.query_params.items())})


class WhoAmIToo(WhoAmI):
    cache_namespace = "whoami-too"


class Varying(CacheResponseMixin, APIView):
    """Shared; its body depends on two request headers (declared in Vary) and the pk."""

    permission_classes = (AllowAny,)
    cache_per_user = False
    cache_namespace = "varying"

    def get(self, request, pk):
        headers = request.headers
        response = Response(
            {
                "pk": pk,
                "language": headers.get("Accept-Language"),
                "tenant": headers.get("X-Tenant"),
            }
        )
        response["Vary"] = "Accept-Language, X-Tenant"
        return response


urlpatterns = [
    path("me/", WhoAmI.as_view()),
    path("me/too/", WhoAmIToo.as_view()),
    path("varying/<int:pk>/", Varying.as_view()),
]
NAMES = ["anonymous", "alice", "bob", "staff"]


@pytest.fixture
def identities(real_backend, settings):
    settings.ROOT_URLCONF = __name__
    created = {}
    for name in NAMES[1:]:
        user = User.objects.create_user(name, password="pw", is_staff=name == "staff")
        created[name] = (user, Token.objects.create(user=user).key)
    return created


REQUEST = st.tuples(
    st.sampled_from(NAMES),
    st.sampled_from(["token", "session"]),
    st.sampled_from(["/me/", "/me/too/"]),
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["1", "2", "*", "{x}"])), max_size=3
    ),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests=st.lists(REQUEST, min_size=5, max_size=25))
def test_no_cached_body_reaches_another_identity(identities, requests):
    sessions: dict[str, APIClient] = {}
    hits = 0
    for name, how, url, query in requests:
        client = APIClient()
        if name != "anonymous":
            user, token = identities[name]
            if how == "token":
                client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
            else:
                client = sessions.get(name) or sessions.setdefault(name, APIClient())
                client.force_login(user)
        for _ in range(2):  # the second is a hit: the cache is really in play
            response = client.get(url, query)
            assert response.status_code == 200
            body = json.loads(response.content)
            assert body["who"] == name, (name, how, url, query, response.get("X-Cache"))
            hits += response.get("X-Cache") == "HIT"
    assert hits >= len(requests)


VARYING_REQUEST = st.tuples(
    st.integers(1, 3),
    st.sampled_from([None, "fr", "en", "fr, en;q=0.5"]),
    st.sampled_from([None, "acme", "globex"]),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests=st.lists(VARYING_REQUEST, min_size=5, max_size=25))
def test_no_shared_body_reaches_a_request_with_other_headers_or_url_arguments(identities, requests):
    from drf_redis_toolkit.caching import invalidate_namespace

    invalidate_namespace("varying")  # each example starts cold
    seen: set[tuple] = set()
    for pk, language, tenant in requests:
        headers = {}
        if language is not None:
            headers["HTTP_ACCEPT_LANGUAGE"] = language
        if tenant is not None:
            headers["HTTP_X_TENANT"] = tenant
        response = APIClient().get(f"/varying/{pk}/", **headers)
        normalised = None if language is None else language.replace(", ", ",")
        key = (pk, normalised, tenant)
        assert json.loads(response.content) == {"pk": pk, "language": language, "tenant": tenant}
        assert response["X-Cache"] == ("HIT" if key in seen else "MISS"), key
        seen.add(key)
