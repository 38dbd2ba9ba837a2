"""caching.py's request path: behaviour mutation testing found unpinned (group c).

What may be stored (``Cache-Control`` directives, ``should_cache_response``),
what ``SessionMiddleware`` still sees after a cached view ran, the arguments a
bypassed handler gets, what a pending invalidation reports, and that only views
that asked for it are refreshed early. Views whose ``@cache_response`` options
matter are decorated inside the test (mutmut's workers imported this module
before the mutant was switched on).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import redis
from django.urls import path
from rest_framework import exceptions, permissions
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import signals
from drf_redis_toolkit.cache_stats import counters, namespace_stats
from drf_redis_toolkit.caching import CacheResponseMixin, cache_response
from drf_redis_toolkit.invalidation import delivery, invalidate_namespace
from tests import servers
from tests.caching_views import CALLS, ran
from tests.test_signals import _outage

pytestmark = pytest.mark.django_db


class Directed(CacheResponseMixin, APIView):
    """Shared; answers with the ``Cache-Control`` header given in ``?cc=``."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-c-directed"

    def get(self, request: Any) -> Response:
        ran("directed")
        response = Response({"ok": True})
        response["Cache-Control"] = request.query_params["cc"]
        return response


class Chooser(CacheResponseMixin, APIView):
    """Shared; its ``should_cache_response`` decides from the answer itself."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-c-chooser"

    def should_cache_response(self, request: Any, response: Any) -> bool:
        return bool(response.data["public"])

    def get(self, request: Any) -> Response:
        ran("chooser")
        if request.query_params["public"] == "raise":
            raise exceptions.APIException("the view failed")
        return Response({"public": request.query_params["public"] == "1"})


class SessionReader(CacheResponseMixin, APIView):
    """No authentication (nothing reads the session before it); the handler does."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-c-session-reader"

    def get(self, request: Any) -> Response:
        ran("session-reader")
        return Response({"seen": request.session.get("seen")})


class AuthenticatedBySession(CacheResponseMixin, APIView):
    """SessionAuthentication reads the session before the handler; the handler does not."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-c-auth-session"

    def get(self, request: Any) -> Response:
        ran("auth-session")
        return Response({"ok": True})


class Uncached(CacheResponseMixin, APIView):
    """``get_cache_key`` returns ``None``: the cache is skipped."""

    permission_classes = [permissions.AllowAny]
    cache_namespace = "core-c-uncached"

    def get_cache_key(self, request: Any) -> None:
        return None

    def get(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        ran("uncached")
        return Response({"path": request.path, "args": list(args), "kwargs": kwargs})


class Plain(CacheResponseMixin, APIView):
    """Shared, one minute, no early refresh."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-c-plain"
    cache_early_refresh = False
    cache_timeout = 60

    def get(self, request: Any) -> Response:
        ran("plain")
        return Response({"n": CALLS["plain"]})


urlpatterns = [
    path("directed/", Directed.as_view()),
    path("chooser/", Chooser.as_view()),
    path("session-reader/", SessionReader.as_view()),
    path("auth-session/", AuthenticatedBySession.as_view()),
    path("plain/", Plain.as_view()),
]


@pytest.fixture(autouse=True)
def _urls(settings):
    settings.ROOT_URLCONF = __name__
    CALLS.clear()
    counters.reset()


# -- _cacheable: which answers may be stored -----------------------------------------


@pytest.mark.parametrize(
    "cache_control",
    [
        "no-store, max-age=60",  # a list: each directive is read, not the whole value
        "max-age=60, no-store",
        "max-age=60,no-cache",
        'no-cache="Set-Cookie"',  # the qualified form (RFC 9111 5.2.2.4): still no-cache
        'no-cache="a=b"',  # the name ends at the first "=", whatever the argument holds
        'private="Authorization", max-age=60',  # private, on a shared view
    ],
)
def test_an_answer_that_forbids_storing_is_never_served_from_the_cache(backend, cache_control):
    client = APIClient()
    url = f"/directed/?cc={cache_control}"
    assert client.get(url)["X-Cache"] == "MISS"
    again = client.get(url)
    assert again["X-Cache"] == "MISS"
    assert again["Cache-Control"] == cache_control
    assert CALLS["directed"] == 2


def test_an_answer_that_allows_storing_is_served_from_the_cache(backend):
    client = APIClient()
    url = "/directed/?cc=public, max-age=60"
    assert client.get(url)["X-Cache"] == "MISS"
    assert client.get(url)["X-Cache"] == "HIT"
    assert CALLS["directed"] == 1


def test_should_cache_response_is_given_the_answer_it_decides_on(backend):
    client = APIClient()
    for _ in range(2):
        assert client.get("/chooser/?public=0")["X-Cache"] == "MISS"
    assert client.get("/chooser/?public=1")["X-Cache"] == "MISS"
    hit = client.get("/chooser/?public=1")
    assert (hit["X-Cache"], hit.json()) == ("HIT", {"public": True})
    assert CALLS["chooser"] == 3


# -- _SessionWatch: SessionMiddleware still sees every access ------------------------


def test_a_handler_that_read_the_session_still_gets_vary_cookie(backend):
    """Only the handler reads it: SessionMiddleware must still say ``Vary: Cookie``."""
    client = APIClient()  # no session cookie: only an access makes it say Vary: Cookie
    for _ in range(2):
        answer = client.get("/session-reader/")
        assert (answer["X-Cache"], answer.json()) == ("MISS", {"seen": None})
        assert "Cookie" in answer.get("Vary", "")
    assert CALLS["session-reader"] == 2  # it read the session: never stored


def test_a_session_read_before_the_handler_still_gets_vary_cookie(backend):
    """Authentication read the session, the handler did not: the answer is stored,
    and ``SessionMiddleware`` still marks the response ``Vary: Cookie``."""
    client = APIClient()
    first = client.get("/auth-session/")
    assert first["X-Cache"] == "MISS"
    assert "Cookie" in first.get("Vary", "")
    assert client.get("/auth-session/")["X-Cache"] == "HIT"
    assert CALLS["auth-session"] == 1


def test_a_session_object_without_accessed_is_left_alone(backend):
    """A session-like object from other middleware (no ``accessed``): cached as usual."""
    view = Plain.as_view()
    answers = []
    for _ in range(2):
        request = APIRequestFactory().get("/plain/")
        request.session = {"seen": "x"}  # a plain mapping, as some middleware sets
        answers.append(view(request))
    assert [a["X-Cache"] for a in answers] == ["MISS", "HIT"]
    assert CALLS["plain"] == 1


# -- _serve: requests that bypass the cache get the handler's arguments -----------------


def test_a_decorated_post_handler_gets_the_request_and_its_arguments(backend):
    class Poster(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(60, namespace="core-c-poster", per_user=False)
        def post(self, request, *args, **kwargs):
            ran("poster")
            return Response({"data": request.data, "args": list(args), "kwargs": kwargs})

    view = Poster.as_view()
    for _ in range(2):
        request = APIRequestFactory().post("/poster/", {"n": 1}, format="json")
        answer = view(request, "first", pk=7)
        answer.render()
        assert answer.data == {"data": {"n": 1}, "args": ["first"], "kwargs": {"pk": 7}}
        assert not answer.has_header("X-Cache")  # a POST never looks the cache up
    assert CALLS["poster"] == 2


def test_a_view_whose_key_is_none_gets_the_request_and_its_arguments(backend):
    view = Uncached.as_view()
    for _ in range(2):
        answer = view(APIRequestFactory().get("/uncached/"), "first", pk=7)
        assert answer.data == {"path": "/uncached/", "args": ["first"], "kwargs": {"pk": 7}}
    assert CALLS["uncached"] == 2


# -- _serve: a pending invalidation ----------------------------------------------------


def test_a_pending_invalidation_reports_a_bypass_and_counts_a_miss(backend):
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.cache_outcome.connect(receiver)
    delivery._pending.in_flight = [delivery._Backlog(delivery.Names(frozenset({"core-c-plain"})))]
    try:
        answer = APIClient().get("/plain/?who=pending")
    finally:
        delivery._pending.clear()
        signals.cache_outcome.disconnect(receiver)
    assert answer["X-Cache"] == "MISS"
    (call,) = seen
    assert call["sender"] is Plain
    assert (call["namespace"], call["outcome"], call["reason"]) == (
        "core-c-plain",
        signals.BYPASS,
        signals.PENDING_INVALIDATION,
    )
    assert call["request"].query_params["who"] == "pending"
    stats = namespace_stats()
    assert stats == {"core-c-plain": {"hits": 0, "misses": 1, "hit_rate": 0.0}}


# -- _serve: early refresh only where asked for ---------------------------------------


def test_a_view_without_early_refresh_is_never_refreshed_early(backend, monkeypatch):
    """Even an entry that took far longer to compute than the time it has left is a hit."""
    monkeypatch.setattr(random, "random", lambda: 0.5)  # the draw early refresh would use
    client = APIClient()
    assert client.get("/plain/")["X-Cache"] == "MISS"
    (key,) = backend.raw.scan_iter(match=b"drt:c:*", count=1000)
    head, rest = backend.raw.get(key).split(b"\n", 1)
    gen, _, etag = head.split(b" ", 2)
    backend.raw.set(key, gen + b" 999999999999 " + etag + b"\n" + rest, px=50_000)
    for _ in range(2):
        hit = client.get("/plain/")
        assert (hit["X-Cache"], hit.json()) == ("HIT", {"n": 1})
    assert CALLS["plain"] == 1


# -- the cache signals: every argument, for every outcome -----------------------------


class Signalled(CacheResponseMixin, APIView):
    """Shared, refreshed early when asked to."""

    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "core-c-signalled"
    cache_early_refresh = True

    def get(self, request: Any) -> Response:
        ran("signalled")
        return Response({"n": CALLS["signalled"]})


urlpatterns.append(path("signalled/", Signalled.as_view()))


def _calls(signal: Any) -> list[dict[str, Any]]:
    """Every call of ``signal`` while the test runs (disconnected by ``_disconnect``)."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        calls.append({"sender": sender, **kwargs})

    signal.connect(receiver, weak=False, dispatch_uid=f"core-c-{id(calls)}")
    _CONNECTED.append((signal, f"core-c-{id(calls)}"))
    return calls


_CONNECTED: list[tuple[Any, str]] = []


@pytest.fixture
def _disconnect():
    yield
    while _CONNECTED:
        signal, uid = _CONNECTED.pop()
        signal.disconnect(dispatch_uid=uid)


def _seen(call: dict[str, Any]) -> tuple[Any, ...]:
    """What a receiver relies on: who sent it, for which namespace and request, and why."""
    return (
        call["sender"],
        call["namespace"],
        call["outcome"],
        call["reason"],
        call["request"].query_params.get("who"),
    )


def test_cache_outcome_receivers_get_the_view_namespace_and_request_of_each_answer(
    backend, monkeypatch, _disconnect
):
    """A miss, a hit, a 304 and an early refresh each reach ``cache_outcome`` with the
    view's class, the namespace and the request that was answered (a receiver that
    logs per route or per client reads them)."""
    monkeypatch.setattr(random, "random", lambda: 0.5)
    outcomes = _calls(signals.cache_outcome)
    client = APIClient()
    first = client.get("/signalled/?who=a")
    assert client.get("/signalled/?who=a")["X-Cache"] == "HIT"
    revalidated = client.get("/signalled/?who=a", HTTP_IF_NONE_MATCH=first["ETag"])
    assert revalidated.status_code == 304
    (key,) = backend.raw.scan_iter(match=b"drt:c:*", count=1000)
    head, rest = backend.raw.get(key).split(b"\n", 1)
    gen, _, etag = head.split(b" ", 2)
    # As if computing it took far longer than the time it has left: refresh now.
    backend.raw.set(key, gen + b" 999999999999 " + etag + b"\n" + rest, px=50_000)
    assert client.get("/signalled/?who=a")["X-Cache"] == "MISS"
    ns = "core-c-signalled"
    assert [_seen(call) for call in outcomes] == [
        (Signalled, ns, signals.MISS, None, "a"),
        (Signalled, ns, signals.HIT, None, "a"),
        (Signalled, ns, signals.NOT_MODIFIED, None, "a"),
        (Signalled, ns, signals.EARLY_REFRESH, None, "a"),
    ]
    assert CALLS["signalled"] == 2


def test_a_failed_lookup_is_reported_as_a_bypass_for_redis_failed(backend, settings, _disconnect):
    """Redis unreachable: the answer is computed, and reported as a bypass whose reason
    is ``redis_failed`` (not a plain miss), with its view and request."""
    outcomes = _calls(signals.cache_outcome)
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "CIRCUIT_BREAKER_COOLDOWN": 60}
    _outage(backend, settings)
    try:
        answer = APIClient().get("/signalled/?who=b")
    finally:
        servers.FAKE_SERVER.connected = True
    assert (answer.status_code, answer.json()) == (200, {"n": 1})
    assert [_seen(call) for call in outcomes] == [
        (Signalled, "core-c-signalled", signals.BYPASS, signals.REDIS_FAILED, "b"),
    ]


def test_cache_not_stored_receivers_get_the_view_namespace_request_and_status(backend, _disconnect):
    """An answer the view's rules refuse to store reaches ``cache_not_stored`` with its
    view, namespace, request, status code and reason; a stored one does not."""
    refused = _calls(signals.cache_not_stored)
    client = APIClient()
    assert client.get("/chooser/?public=1&who=kept")["X-Cache"] == "MISS"
    assert refused == []
    assert client.get("/chooser/?public=0&who=refused")["X-Cache"] == "MISS"
    assert [
        (
            c["sender"],
            c["namespace"],
            c["reason"],
            c["status_code"],
            c["request"].query_params["who"],
        )
        for c in refused
    ] == [(Chooser, "core-c-chooser", "uncacheable", 200, "refused")]


# -- _compute: the view's own ETag, its finalize_response, a miss's round trips --------


def test_an_etag_the_view_sets_is_kept_stored_and_revalidated(backend):
    """A view that sets its own ``ETag`` (a version it knows) keeps it: on the miss, on
    the hit, and a client sending it back gets a 304, from the entry and from a
    recomputed answer alike (the namespace invalidated in between)."""
    versions = {"v": 7}

    class Versioned(CacheResponseMixin, APIView):
        permission_classes = [permissions.AllowAny]
        cache_per_user = False
        cache_namespace = "core-c-versioned"

        def get(self, request: Any) -> Response:
            ran("versioned")
            return Response({"v": versions["v"]}, headers={"ETag": f'"v{versions["v"]}"'})

    view = Versioned.as_view()
    factory = APIRequestFactory()
    first = view(factory.get("/versioned/"))
    first.render()
    assert (first["X-Cache"], first["ETag"]) == ("MISS", '"v7"')
    hit = view(factory.get("/versioned/"))
    assert (hit["X-Cache"], hit["ETag"], hit.content) == ("HIT", '"v7"', first.content)
    revalidated = view(factory.get("/versioned/", HTTP_IF_NONE_MATCH='"v7"'))
    assert (revalidated.status_code, revalidated["ETag"]) == (304, '"v7"')
    invalidate_namespace("core-c-versioned")
    recomputed = view(factory.get("/versioned/", HTTP_IF_NONE_MATCH='"v7"'))
    assert (recomputed.status_code, recomputed["X-Cache"]) == (304, "MISS")
    assert recomputed["ETag"] == '"v7"'
    assert CALLS["versioned"] == 2


def test_a_computed_etag_sent_back_after_an_invalidation_gets_a_304_with_it(backend):
    """The answer is recomputed (a miss) and is the same: the client's copy is still
    good, so a 304 carrying the ETag, not the body."""
    client = APIClient()
    first = client.get("/plain/")
    invalidate_namespace("core-c-plain")
    CALLS["plain"] = 0  # the same body again: {"n": 1}
    again = client.get("/plain/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert (again.status_code, again["X-Cache"], again["ETag"]) == (304, "MISS", first["ETag"])


def test_a_finalize_response_override_gets_the_handlers_arguments(backend):
    """The toolkit renders the answer through the view's ``finalize_response`` before
    storing it, with the URL's arguments, as DRF's ``dispatch()`` does."""
    seen: list[tuple[Any, Any]] = []

    class Finalizing(CacheResponseMixin, APIView):
        permission_classes = [permissions.AllowAny]
        cache_per_user = False
        cache_namespace = "core-c-finalizing"

        def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append((args, kwargs))
            return super().finalize_response(request, response, *args, **kwargs)

        def get(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            return Response({"slug": kwargs.get("slug")})

    view = Finalizing.as_view()
    answer = view(APIRequestFactory().get("/f/x/"), "positional", slug="x")
    assert answer["X-Cache"] == "MISS"
    assert seen and all(call == (("positional",), {"slug": "x"}) for call in seen)


def test_a_stored_miss_makes_two_round_trips(backend, monkeypatch):
    """The lookup (which takes the single-flight lock) and the store (which releases
    it): no third call to release a lock the store already released."""
    replies = [0]
    original = redis.Redis.parse_response

    def counting(self: Any, connection: Any, command_name: Any, **options: Any) -> Any:
        replies[0] += 1
        return original(self, connection, command_name, **options)

    counters.reset()
    monkeypatch.setattr(counters, "_due", math.inf)  # no stats flush inside the count
    client = APIClient()
    client.get("/plain/?who=warm-up")  # the scripts loaded, a cluster's slots learnt
    monkeypatch.setattr(redis.Redis, "parse_response", counting)
    answer = client.get("/plain/?who=trips")
    assert answer["X-Cache"] == "MISS"
    assert replies[0] == 2


# -- uncacheable answers do not queue (docs/caching.md, "Single-flight") ------------------


def _markers(raw: Any) -> dict[Any, int]:
    """The pass-through markers in Redis, with their time left (ms)."""
    found = {}
    for key in raw.scan_iter(match=b"drt:*", count=1000):
        if raw.type(key) in (b"string", "string") and raw.get(key) in (b"!", "!"):
            found[key] = raw.pttl(key)
    return found


@pytest.mark.parametrize("public", ["0", "raise"])
def test_an_uncacheable_answer_or_an_error_leaves_a_pass_through_marker(backend, public):
    """The request that held the lock got an answer that may not be stored, or its view
    raised: it leaves a marker of at most a second, so waiters run the view at once."""
    answer = APIClient().get(f"/chooser/?public={public}")
    assert answer.status_code == (200 if public == "0" else 500)
    markers = _markers(backend.raw)
    assert len(markers) == 1, markers
    assert 0 < next(iter(markers.values())) <= 1000


def test_a_miss_behind_a_pass_through_marker_makes_one_round_trip(backend, monkeypatch):
    """Behind the marker the lookup takes no lock, so there is none to release after an
    answer that is again not stored: the lookup is the only call."""
    client = APIClient()
    client.get("/chooser/?public=0")  # leaves the marker
    replies = [0]
    original = redis.Redis.parse_response

    def counting(self: Any, connection: Any, command_name: Any, **options: Any) -> Any:
        replies[0] += 1
        return original(self, connection, command_name, **options)

    monkeypatch.setattr(counters, "_due", math.inf)  # no stats flush inside the count
    monkeypatch.setattr(redis.Redis, "parse_response", counting)
    assert client.get("/chooser/?public=0")["X-Cache"] == "MISS"
    assert replies[0] == 1


def test_a_decorated_handler_that_varies_on_a_header_keeps_one_answer_per_value(backend):
    """``@cache_response`` on a plain view stores at once (no mixin to defer it): an
    answer with ``Vary: Accept-Language`` is stored per language, never shared."""

    class Greeting(APIView):
        permission_classes = [permissions.AllowAny]

        @cache_response(namespace="core-c-greeting", per_user=False)
        def get(self, request: Any) -> Response:
            ran("greeting")
            language = request.META.get("HTTP_ACCEPT_LANGUAGE", "")
            response = Response({"hello": "bonjour" if language == "fr" else "hello"})
            response["Vary"] = "Accept-Language"
            return response

    view = Greeting.as_view()
    factory = APIRequestFactory()
    answers = [
        view(factory.get("/greeting/", HTTP_ACCEPT_LANGUAGE=language))
        for language in ("fr", "en", "fr", "en")
    ]
    for answer in answers:
        if hasattr(answer, "render"):
            answer.render()
    assert [a["X-Cache"] for a in answers] == ["MISS", "MISS", "HIT", "HIT"]
    assert [a.data["hello"] if hasattr(a, "data") else None for a in answers[:2]] == [
        "bonjour",
        "hello",
    ]
    assert answers[2].content == answers[0].content and answers[3].content == answers[1].content
    assert CALLS["greeting"] == 2
