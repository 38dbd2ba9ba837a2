"""Cache keys that cover everything an answer depends on (issue 10, items 8 to 11, 16).

Each test uses a combination users make: views that vary on request headers, one
request dispatched through two views or sent several times, views that read the
session or put a CSRF token in their body. Hits and misses are told apart by
``X-Cache`` and by counting handler runs (``tests.caching_views.CALLS``).
"""

from __future__ import annotations

import gzip
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils.decorators import method_decorator
from django.views.decorators.vary import vary_on_headers
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.caching import CacheResponseMixin, invalidate_key, invalidate_view
from drf_redis_toolkit.throttling import ScopedSlidingWindowThrottle
from tests.caching_views import CALLS, DecoratedPkDetail, PkDetail
from tests.test_caching import _urls  # noqa: F401  (the autouse URLconf and counters reset)

pytestmark = pytest.mark.django_db


def body(response) -> object:
    if hasattr(response, "render") and not response.is_rendered:
        response.render()
    return json.loads(response.content)


# -- item 8: every Vary header is in the key by its value -------------------------


def test_a_view_choosing_its_language_from_the_header_is_keyed_on_that_header(backend):
    # No LocaleMiddleware: the active language is LANGUAGE_CODE for every client.
    french, english = APIClient(), APIClient()
    first = french.get("/greeting/", HTTP_ACCEPT_LANGUAGE="fr-FR,en;q=0.5")
    assert (first["X-Cache"], first.json()) == ("MISS", {"greeting": "bonjour"})
    other = english.get("/greeting/", HTTP_ACCEPT_LANGUAGE="en-US")
    assert other.json() == {"greeting": "hello"} and other["Content-Language"] == "en"
    assert other["X-Cache"] == "MISS"
    # The same value (spacing normalised) is answered from the French entry...
    again = french.get("/greeting/", HTTP_ACCEPT_LANGUAGE="fr-FR, en;q=0.5")
    assert (again["X-Cache"], again.json()) == ("HIT", {"greeting": "bonjour"})
    # ...and so is English, from its own; no header at all is a third variant.
    assert english.get("/greeting/", HTTP_ACCEPT_LANGUAGE="en-US")["X-Cache"] == "HIT"
    bare = APIClient().get("/greeting/")
    assert (bare["X-Cache"], bare.json()) == ("MISS", {"greeting": "hello"})
    assert CALLS["greeting"] == 3


def test_a_gzip_body_is_never_served_to_a_client_that_asked_for_identity(backend):
    zipped = APIClient().get("/compressed/", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert zipped["Content-Encoding"] == "gzip" and zipped["X-Cache"] == "MISS"
    plain = APIClient().get("/compressed/", HTTP_ACCEPT_ENCODING="identity")
    assert not plain.has_header("Content-Encoding")
    assert json.loads(plain.content)["payload"] == "z" * 2000
    again = APIClient().get("/compressed/", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert again["X-Cache"] == "HIT" and again["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(again.content))["payload"] == "z" * 2000
    assert APIClient().get("/compressed/", HTTP_ACCEPT_ENCODING="identity")["X-Cache"] == "HIT"
    assert CALLS["compressed"] == 2


def test_vary_cookie_on_a_shared_view_is_keyed_on_the_cookie_header(backend):
    dark, light = APIClient(), APIClient()
    dark.cookies["theme"] = "dark"
    assert dark.get("/themed/").json() == {"theme": "dark"}
    answer = light.get("/themed/")
    assert (answer["X-Cache"], answer.json()) == ("MISS", {"theme": "light"})
    assert dark.get("/themed/")["X-Cache"] == "HIT"
    assert CALLS["themed"] == 2


def test_vary_star_is_never_stored(backend):
    for _ in range(2):
        assert APIClient().get("/echo/?vary=*")["X-Cache"] == "MISS"
    assert CALLS["echo"] == 2


def test_deleting_a_varying_entry_drops_every_variant(backend):
    """``invalidate_view`` deletes the vary record; the variants it named are unreachable."""
    for language in ("fr", "en", "fr", "en"):
        APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE=language)
    assert CALLS["greeting"] == 2
    assert invalidate_view("http://testserver/greeting/") is True
    for language in ("fr", "en"):
        assert APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE=language)["X-Cache"] == "MISS"
    assert CALLS["greeting"] == 4


@method_decorator(vary_on_headers("X-Tenant"), name="dispatch")
class TenantOnDispatch(CacheResponseMixin, APIView):
    """Reads a header and says so with a decorator on ``dispatch``, outside the handler."""

    cache_per_user = False
    permission_classes = ()
    throttle_classes = ()

    def get(self, request):
        CALLS["tenant"] += 1
        return Response({"tenant": request.headers.get("X-Tenant")})


def test_a_vary_added_on_dispatch_is_in_the_key_too(backend):
    view, factory = TenantOnDispatch.as_view(), APIRequestFactory()

    def ask(tenant):
        return view(factory.get("/tenant/", HTTP_X_TENANT=tenant))

    assert body(ask("a")) == {"tenant": "a"}
    other = ask("b")
    assert (other["X-Cache"], body(other)) == ("MISS", {"tenant": "b"})
    again = ask("a")
    assert (again["X-Cache"], body(again)) == ("HIT", {"tenant": "a"})
    assert ask("b")["X-Cache"] == "HIT"
    assert CALLS["tenant"] == 2
    assert other["Vary"].endswith("X-Tenant")


# -- item 9: the view's URL arguments are in the key --------------------------------


@pytest.mark.parametrize("view_class", [PkDetail, DecoratedPkDetail], ids=["mixin", "decorator"])
def test_one_request_sent_with_two_pks_gets_two_answers(backend, view_class):
    request = APIRequestFactory().get("/pk/")
    view = view_class.as_view()
    assert body(view(request, pk=1)) == {"pk": 1}
    second = view(request, pk=2)
    assert (second["X-Cache"], body(second)) == ("MISS", {"pk": 2})
    again = view(request, pk=1)
    assert (again["X-Cache"], body(again)) == ("HIT", {"pk": 1})


def test_a_bulk_endpoint_dispatching_one_request_to_a_detail_view(backend):
    answers = APIClient().get("/batch/?id=1&id=2&id=1").json()
    assert answers == [["MISS", {"pk": 1}], ["MISS", {"pk": 2}], ["HIT", {"pk": 1}]]


def test_invalidate_key_names_the_url_arguments(backend):
    APIClient().get("/pk/7/")
    namespace = "pk-detail"
    key = "('http', 'testserver', '/pk/7/', '', '')"
    assert invalidate_key(namespace, key, url_kwargs={"pk": 8}) is False
    assert invalidate_key(namespace, key, url_kwargs={"pk": 7}) is True


# -- item 10: a CSRF token is never in a stored entry -------------------------------


@pytest.fixture
def csrf_middleware(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware"]


def test_every_anonymous_client_gets_its_own_csrf_token_and_can_post(backend, csrf_middleware):
    for _ in range(3):
        client = Client(enforce_csrf_checks=True)
        form = client.get("/csrf-form/")
        assert form.status_code == 200 and "csrftoken" in form.cookies
        posted = client.post("/submit/", HTTP_X_CSRFTOKEN=form.json()["csrf"])
        assert posted.status_code == 200, posted.content[:200]  # not 403: its own token
        assert form["X-Cache"] == "MISS"
    assert CALLS["csrf-form"] == 3
    assert list(backend.raw.scan_iter(match=b"drt:c:*")) == []


def test_a_client_that_already_has_a_csrf_cookie_is_not_stored_either(backend, csrf_middleware):
    """The token was read before the view (ensure_csrf_cookie): the flag never changes."""
    client = Client(enforce_csrf_checks=True)
    client.get("/csrf-form/")
    for _ in range(2):
        assert client.get("/csrf-form/")["X-Cache"] == "MISS"
    assert CALLS["csrf-form"] == 3


def test_a_token_from_a_nested_view_that_already_sent_its_cookie_is_not_stored(backend):
    """The inner view's csrf decorator reset the flag; the new secret still tells."""
    for _ in range(2):
        answer = APIClient().get("/embeds-form/")
        assert answer["X-Cache"] == "MISS" and answer.json()["inner"]["csrf"]
    assert CALLS["embeds-form"] == 2


# -- item 11: an answer that read the session is never served to another session -----


@pytest.mark.parametrize("url", ["/session-echo/", "/shared-session-echo/"])
def test_an_answer_that_read_the_session_is_never_shared(backend, url):
    alice = Client()
    alice.get("/remember/?value=alice")
    assert alice.get(url).json() == {"seen": "alice"}
    stranger = Client().get(url)
    assert (stranger["X-Cache"], stranger.json()) == ("MISS", {"seen": None})
    bob = Client()
    bob.get("/remember/?value=bob")
    assert bob.get(url).json() == {"seen": "bob"}
    assert CALLS["session-echo"] == 3
    # The session was still marked as read, so SessionMiddleware says Vary: Cookie.
    assert "Cookie" in bob.get(url)["Vary"]


def test_session_authentication_alone_does_not_stop_caching(backend):
    """DRF's SessionAuthentication reads the session before the handler: per user, fine."""
    User.objects.create_user("sam", password="pw")
    client = Client()
    assert client.login(username="sam", password="pw")
    assert client.get("/whoami/").json() == {"user": "sam"}
    hit = client.get("/whoami/")
    assert (hit["X-Cache"], hit.json()) == ("HIT", {"user": "sam"})


# -- item 16: which answers carry X-Cache -------------------------------------------


class OnceAMinute(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    throttle_classes = [ScopedSlidingWindowThrottle]
    throttle_scope = "seams-once"
    cache_per_user = False

    def get(self, request):
        return Response({"ok": True})


def test_a_throttled_answer_has_no_x_cache_the_cache_was_never_asked(backend, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"seams-once": "1/min"},
    }
    view = OnceAMinute.as_view()
    factory = APIRequestFactory()
    served = view(factory.get("/once/", REMOTE_ADDR="10.9.9.9"))
    assert served.status_code == 200 and served["X-Cache"] == "MISS"
    refused = view(factory.get("/once/", REMOTE_ADDR="10.9.9.9"))
    assert refused.status_code == 429 and "X-Cache" not in refused


def test_keys_of_variants_share_the_namespace_slot(backend):
    APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE="fr")
    keys = list(backend.raw.scan_iter(match=b"drt:c:*"))
    assert len(keys) == 2  # the vary record and the French variant
    tag = keyspace.namespace_tag("tests.caching_views.Greeting").encode()
    assert all(tag in key for key in keys)


def test_concurrent_cold_requests_in_several_languages_each_get_their_own(backend):
    """Waiters on the request's lock find the vary record, then their own variant."""
    import threading

    languages = ["fr", "en", "fr-CA", "de"] * 3
    barrier = threading.Barrier(len(languages))
    answers: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def ask(language: str) -> None:
        barrier.wait(timeout=10)
        response = APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE=language)
        with lock:
            answers.append((language, response.json()["greeting"], response["X-Cache"]))

    threads = [threading.Thread(target=ask, args=(language,)) for language in languages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == len(languages)
    for language, greeting, _ in answers:
        assert greeting == ("bonjour" if language.startswith("fr") else "hello"), answers
    # Afterwards each language is served its own variant. (A waiter that gave up
    # after the lock's lifetime on a starved machine may have started a new vary
    # record, so one sequential pass first: after it, every language must hit.)
    for expect_hit in (False, True):
        for language in sorted(set(languages)):
            again = APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE=language)
            wanted = "bonjour" if language.startswith("fr") else "hello"
            assert again.json()["greeting"] == wanted
            assert again["X-Cache"] == "HIT" or not expect_hit


# -- vary records: the edges the Lua mutants found (tests/lua_mutants.py) -----------------


def _vary_records(backend) -> dict[bytes, bytes]:
    """Every vary record stored (``<gen> V <epoch> <headers>``), by key."""
    from tests.test_caching import entry_keys

    found = {key: backend.raw.get(key) for key in entry_keys(backend)}
    return {key: value for key, value in found.items() if value and b" V " in value[:32]}


def test_a_vary_record_expires_with_its_variants(backend):
    from tests.test_caching import entry_keys

    APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE="fr")
    assert len(_vary_records(backend)) == 1
    keys = entry_keys(backend)
    assert len(keys) == 2  # the record and the French variant
    for key in keys:
        assert 0 < backend.raw.pttl(key) <= 300_000, key  # CACHE_DEFAULT_TIMEOUT


def test_a_vary_record_deleted_while_a_variant_is_computed_is_not_brought_back(backend):
    """The answer computed under a record that was dropped meanwhile is not stored.

    Storing it would write the old record again, and with it make reachable every
    variant the invalidation had dropped.
    """
    get = APIClient().get
    assert get("/racing/", HTTP_ACCEPT_LANGUAGE="fr")["X-Cache"] == "MISS"
    assert get("/racing/", HTTP_ACCEPT_LANGUAGE="fr")["X-Cache"] == "HIT"
    english = get("/racing/", HTTP_ACCEPT_LANGUAGE="en")  # invalidates the view as it runs
    assert english["X-Cache"] == "MISS" and english.json() == {"greeting": "hello"}
    assert _vary_records(backend) == {}
    assert get("/racing/", HTTP_ACCEPT_LANGUAGE="fr")["X-Cache"] == "MISS"


def test_a_vary_record_of_an_older_generation_is_replaced_not_followed(backend):
    APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE="fr")
    ((key, old),) = _vary_records(backend).items()
    tag = key[key.index(b"{") : key.index(b"}") + 1]
    backend.raw.incr(b"drt:gen:" + tag)  # the namespace is invalidated
    again = APIClient().get("/greeting/", HTTP_ACCEPT_LANGUAGE="fr")
    assert again["X-Cache"] == "MISS"
    ((_, new),) = _vary_records(backend).items()
    assert int(new.split(b" ", 1)[0]) == int(old.split(b" ", 1)[0]) + 1  # the new generation
