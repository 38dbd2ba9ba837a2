"""The throttle_status command and memory per client at the limit for both variants."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from rest_framework.test import APIRequestFactory

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.rates import parse_rate
from drf_redis_toolkit.throttling import UserSlidingWindowThrottle

REST = {"DEFAULT_THROTTLE_RATES": {"user": "5/min,100/day"}}


def test_throttle_status_reports_and_resets(backend):
    factory = APIRequestFactory()
    with override_settings(REST_FRAMEWORK=REST):
        for _ in range(3):
            UserSlidingWindowThrottle().allow_request(factory.get("/", REMOTE_ADDR="9.9.9.9"), None)
        out = StringIO()
        call_command("throttle_status", "--scope", "user", "--ident", "ip:9.9.9.9", stdout=out)
        text = out.getvalue()
        assert "5/60s: used 3, remaining 2" in text
        assert "100/86400s: used 3, remaining 97" in text
        call_command(
            "throttle_status", "--scope", "user", "--ident", "ip:9.9.9.9", "--reset", stdout=out
        )
        out = StringIO()
        call_command("throttle_status", "--scope", "user", "--ident", "ip:9.9.9.9", stdout=out)
        assert "used 0, remaining 5" in out.getvalue()


def test_throttle_status_needs_a_rate(backend):
    with pytest.raises(CommandError, match="no rate"):
        call_command("throttle_status", "--scope", "nothing", "--ident", "ip:1.1.1.1")


@pytest.mark.parametrize("limit", [100, 1000])
def test_memory_per_client_at_the_limit(real_backend, limit, capsys):
    """Report MEMORY USAGE of one client's key at the limit, for both variants."""
    limits = parse_rate(f"{limit}/hour")
    sizes = {}
    for kind in (ratelimit.LOG, ratelimit.COUNTER):
        for _ in range(limit):
            assert ratelimit.decide(kind, "mem", "client", limits).allowed
        assert not ratelimit.decide(kind, "mem", "client", limits).allowed
        key = keyspace.throttle_key(kind, "mem", "client")
        sizes[kind] = real_backend.raw.memory_usage(key, samples=0)
    with capsys.disabled():
        print(f"\nMEMORY USAGE at {limit}/hour: log {sizes['sw']} B, counter {sizes['swc']} B")
    assert sizes[ratelimit.COUNTER] < 200
    assert sizes[ratelimit.LOG] > limit * 20


def test_counter_memory_stays_constant_whatever_the_gaps(backend):
    """Counters of windows older than the previous one are dropped, even after idle windows."""
    limits = parse_rate("5/min,100/hour")
    key = keyspace.throttle_key(ratelimit.COUNTER, "gaps", "client")
    seconds, _ = backend.raw.time()
    minute, hour = 60_000_000, 3_600_000_000
    now_us = seconds * 1_000_000
    stale = {f"{minute}:{now_us // minute - n}": 1 for n in (2, 3, 7)}
    stale[f"{hour}:{now_us // hour - 4}"] = 1
    backend.raw.hset(key, mapping=stale)
    assert ratelimit.decide(ratelimit.COUNTER, "gaps", "client", limits).allowed
    fields = {f.decode() for f in backend.raw.hkeys(key)}
    assert not fields & set(stale)
    assert len(fields) == 2  # this minute's and this hour's counters


def test_reset_forgets_one_client_the_python_way(backend):
    """The toolkit's answer to DRF's ``cache.delete(throttle.get_cache_key(...))``."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from drf_redis_toolkit.throttling import ScopedSlidingWindowThrottle, reset_throttle

    factory = APIRequestFactory()

    class View(APIView):
        throttle_classes = (ScopedSlidingWindowThrottle,)
        throttle_scope = "reset_me"
        permission_classes = ()

        def get(self, request):
            return Response({"ok": True})

    rest = {"DEFAULT_THROTTLE_RATES": {"reset_me": "1/min"}}
    with override_settings(REST_FRAMEWORK=rest):
        view = View.as_view()

        def call(ip="9.9.9.1"):
            return view(factory.get("/", REMOTE_ADDR=ip)).status_code

        assert [call(), call(), call("9.9.9.2")] == [200, 429, 200]
        request = View().initialize_request(factory.get("/", REMOTE_ADDR="9.9.9.1"))
        assert ScopedSlidingWindowThrottle().reset(request, View()) is True
        assert [call(), call("9.9.9.2")] == [200, 429]  # only that client was reset
        assert reset_throttle("reset_me", "ip:9.9.9.2") == 1
        assert call("9.9.9.2") == 200
        assert ScopedSlidingWindowThrottle().reset(request, View()) is True
        assert reset_throttle("reset_me", "ip:9.9.9.1") == 0  # nothing left to forget
        with pytest.raises(ValueError, match="throttle_scope"):
            reset_throttle(ScopedSlidingWindowThrottle, "ip:9.9.9.1")


def test_reset_by_class_and_int_identity(backend):
    from drf_redis_toolkit.throttling import reset_throttle

    with override_settings(REST_FRAMEWORK=REST):
        request = APIRequestFactory().get("/")
        from django.contrib.auth.models import User

        request.user = User(pk=42, username="u42")
        for _ in range(5):
            UserSlidingWindowThrottle().allow_request(request, None)
        assert UserSlidingWindowThrottle().allow_request(request, None) is False
        assert reset_throttle(UserSlidingWindowThrottle, "user:42") == 1
        assert UserSlidingWindowThrottle().allow_request(request, None) is True


def test_reset_says_whether_anything_was_forgotten(backend):
    """``reset()`` is ``True`` only when a history was deleted; not limited is ``False``."""
    from django.contrib.auth.models import User
    from django.test import RequestFactory

    from drf_redis_toolkit.throttling import (
        AnonSlidingWindowThrottle,
        ScopedSlidingWindowThrottle,
        SlidingWindowThrottle,
    )

    class PerArticle(SlidingWindowThrottle):
        """An identity taken from the view (its URL kwargs), as DRF's hooks allow."""

        rate = "1/min"

        def get_cache_key(self, request, view):
            return f"article:{view.kwargs['pk']}"

    class View:
        kwargs = {"pk": 7}
        throttle_scope = None

    request = APIRequestFactory().get("/", REMOTE_ADDR="9.9.9.3")
    assert PerArticle().reset(request, View()) is False  # nothing recorded yet
    assert PerArticle().allow_request(request, View()) is True
    assert PerArticle().allow_request(request, View()) is False
    assert PerArticle().reset(request, View()) is True
    assert PerArticle().allow_request(request, View()) is True
    # Not limited: a view without a scope, an authenticated user for the anon throttle.
    assert ScopedSlidingWindowThrottle().reset(request, View()) is False
    signed_in = APIRequestFactory().get("/")
    signed_in.user = User(pk=3, username="u3")
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"anon": "1/min"}}):
        anon = AnonSlidingWindowThrottle()
        assert anon.allow_request(request, None) is True
        assert anon.reset(signed_in, None) is False
        assert anon.reset(request, None) is True
        # A bare Django request (no authentication ran: no ``user``) is anonymous.
        bare = RequestFactory().get("/", REMOTE_ADDR="9.9.9.4")
        assert anon.get_cache_key(bare, None) == "ip:9.9.9.4"


def test_reset_throttle_takes_a_non_string_identity_and_a_class_named_scope(backend):
    from drf_redis_toolkit.throttling import SlidingWindowThrottle, reset_throttle

    class ByPk(SlidingWindowThrottle):
        """No scope: its class name is the scope; an int identity (DRF allows any value)."""

        rate = "1/min"

        def get_cache_key(self, request, view):
            return 42

    request = APIRequestFactory().get("/")
    assert ByPk().allow_request(request, None) is True
    assert ByPk().allow_request(request, None) is False
    assert reset_throttle(ByPk, 42) == 1
    assert ByPk().allow_request(request, None) is True
    assert reset_throttle(ByPk, "42") == 1  # the same identity as a string


def test_a_bad_rate_names_where_it_was_set():
    from django.core.exceptions import ImproperlyConfigured

    from drf_redis_toolkit.throttling import SlidingWindowThrottle

    class Hourly(SlidingWindowThrottle):
        rate = "100/fortnight"

    with pytest.raises(ImproperlyConfigured, match=r"^Hourly\.rate: unknown unit 'fortnight'"):
        Hourly().get_limits()


def test_drfs_messages_for_a_missing_key_hook_scope_or_rate():
    """The same words as DRF's own throttles, naming the class (and its THROTTLE_RATES)."""
    from django.core.exceptions import ImproperlyConfigured

    from drf_redis_toolkit.throttling import SlidingWindowThrottle

    class Bare(SlidingWindowThrottle):
        pass

    class Scoped(SlidingWindowThrottle):
        scope = "nowhere"

    class OwnRates(SlidingWindowThrottle):
        scope = "nowhere"
        THROTTLE_RATES = {"elsewhere": "1/min"}

    with pytest.raises(NotImplementedError, match=r"^\.get_cache_key\(\) must be overridden$"):
        SlidingWindowThrottle().get_cache_key(None, None)
    with pytest.raises(ImproperlyConfigured) as bare:
        Bare().get_rate()
    assert str(bare.value) == "You must set either `.scope` or `.rate` for 'Bare' throttle"
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {}}):
        with pytest.raises(ImproperlyConfigured) as scoped:
            Scoped().get_rate()
    assert str(scoped.value) == "No default throttle rate set for 'nowhere' scope"
    with pytest.raises(ImproperlyConfigured) as own:
        OwnRates().get_rate()
    assert str(own.value) == (
        "No default throttle rate set for 'nowhere' scope in OwnRates.THROTTLE_RATES"
    )


def test_wait_is_none_until_a_refusal(backend):
    from drf_redis_toolkit.throttling import SlidingWindowThrottle

    class One(SlidingWindowThrottle):
        rate = "1/min"

        def get_cache_key(self, request, view):
            return "wait-client"

    throttle = One()
    assert throttle.decision is None and throttle.wait() is None  # nothing decided yet
    request = APIRequestFactory().get("/")
    assert throttle.allow_request(request, None) is True
    assert throttle.wait() is None
    assert throttle.allow_request(request, None) is False
    assert 59 < throttle.wait() <= 60


def test_identity_and_cost_hooks_get_the_request_and_the_view(backend):
    """``get_cache_key`` and ``get_cost`` see the real request and view on every path."""
    from drf_redis_toolkit.throttling import SlidingWindowThrottle

    class PerArticle(SlidingWindowThrottle):
        rate = "10/min"

        def get_cache_key(self, request, view):
            return f"article:{view.kwargs['pk']}"

        def get_cost(self, request, view):
            return int(request.GET["weight"]) * view.kwargs["unit"]

    class View:
        kwargs = {"pk": 7, "unit": 2}

    request = APIRequestFactory().get("/?weight=2")
    throttle = PerArticle()
    assert throttle.allow_request(request, View()) is True
    assert throttle.decision.cost == 4
    question = PerArticle().question(request, View())
    assert question is not None and (question.cost, question.scope) == (4, "PerArticle")
    assert question.key == keyspace.throttle_key(ratelimit.LOG, "PerArticle", "article:7")
    assert PerArticle().allow_request(request, View()) is True
    assert PerArticle().allow_request(request, View()) is False  # 8 used, 4 more do not fit


def test_after_a_refusal_a_throttle_deciding_alone_only_reports(backend):
    """A refusal first; then a throttle that overrides ``allow_request`` (so it decides in
    its own call, not in the round's script) must record nothing for the refused request."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from drf_redis_toolkit.throttling import SlidingWindowThrottle

    class Strict(SlidingWindowThrottle):
        scope = "alone_strict"
        rate = "1/min"

        def get_cache_key(self, request, view):
            return "alone-client"

    class Loose(Strict):
        scope = "alone_loose"
        rate = "10/min"

        def allow_request(self, request, view):
            return super().allow_request(request, view)

    class View(APIView):
        throttle_classes = (Strict, Loose)
        permission_classes = ()

        def get(self, request):
            return Response({"ok": True})

    view = View.as_view()
    factory = APIRequestFactory()
    assert [view(factory.get("/")).status_code for _ in range(3)] == [200, 429, 429]
    loose = keyspace.throttle_key(ratelimit.LOG, "alone_loose", "alone-client")
    from drf_redis_toolkit.connection import get_client

    assert get_client().zcard(loose) == 1  # only the admitted request


def test_one_requests_address_is_worked_out_once(backend, monkeypatch, settings):
    """The middleware's rule, the view's throttles, the look-ahead and a nested view's
    throttles all ask for the client's address: ``get_ident`` runs once per request,
    and again only when the settings it depends on change."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from drf_redis_toolkit import throttling
    from drf_redis_toolkit.middleware import RateLimitMiddleware
    from drf_redis_toolkit.throttling import AnonSlidingWindowThrottle

    calls = []
    real = throttling._drf_ident.get_ident

    def counting(request):
        calls.append(1)
        return real(request)

    monkeypatch.setattr(throttling._drf_ident, "get_ident", counting)

    class A(AnonSlidingWindowThrottle):
        scope = "once_a"
        rate = "10/min"

    class B(AnonSlidingWindowThrottle):
        scope = "once_b"
        rate = "10/min"

    class Inner(APIView):
        throttle_classes = (A,)
        permission_classes = ()
        authentication_classes = ()

        def get(self, request):
            return Response({"inner": True})

    class Outer(APIView):
        throttle_classes = (A, B)
        permission_classes = ()
        authentication_classes = ()

        def get(self, request):
            return Response({"inner": Inner.as_view()(request._request).status_code})

    rules = [{"path": r"^/", "rate": "10/min", "key": "ip", "scope": "once_rule"}]
    settings.DRF_REDIS_TOOLKIT = {**backend.settings, "RATELIMIT_RULES": rules}
    middleware = RateLimitMiddleware(Outer.as_view())
    request = APIRequestFactory().get("/", REMOTE_ADDR="9.9.9.5")
    response = middleware(request)
    assert response.status_code == 200 and response.data == {"inner": 200}
    assert len(calls) == 1
    assert throttling.client_address(request) == "9.9.9.5" and len(calls) == 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
    assert throttling.client_address(request) == "9.9.9.5" and len(calls) == 2
    # Without the middleware the view's throttles ask first (through DRF's Request):
    # the answer is kept on the HttpRequest, where the nested view's Request finds it.
    calls.clear()
    response = Outer.as_view()(APIRequestFactory().get("/", REMOTE_ADDR="9.9.9.6"))
    assert response.status_code == 200 and response.data == {"inner": 200}
    assert len(calls) == 1
