"""The throttle behaviours DRF documents, one by one, next to DRF's own classes.

Each test runs DRF's ``AnonRateThrottle``/``UserRateThrottle``/``ScopedRateThrottle``
(on Django's local-memory cache) and the toolkit's class side by side on the
same requests. A test either asserts that both answer alike, or pins the
difference that ``docs/migrating.md`` ("From DRF's throttles") lists with its
reason. The toolkit side runs on every backend (fakeredis, Redis, Cluster).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import (
    AnonRateThrottle,
    BaseThrottle,
    ScopedRateThrottle,
    SimpleRateThrottle,
    UserRateThrottle,
)
from rest_framework.views import APIView

from drf_redis_toolkit.throttling import (
    AnonSlidingWindowThrottle,
    ScopedSlidingWindowThrottle,
    SlidingWindowThrottle,
    UserSlidingWindowThrottle,
    reset_throttle,
)

factory = APIRequestFactory()


@pytest.fixture(autouse=True)
def _clear_drf_cache():
    cache.clear()
    yield
    cache.clear()


def anon(ip="10.0.0.1", **extra):
    request = factory.get("/", REMOTE_ADDR=ip, **extra)
    request.user = AnonymousUser()
    return request


def user(pk, ip="10.0.0.1"):
    request = factory.get("/", REMOTE_ADDR=ip)
    request.user = User(pk=pk, username=f"u{pk}")
    return request


def answers(throttle_cls, requests, view=None):
    """What a fresh throttle of ``throttle_cls`` says to each request, in order."""
    return [throttle_cls().allow_request(request, view) for request in requests]


def view_of(*throttles, scope=None, body=None):
    class View(APIView):
        throttle_classes = throttles
        throttle_scope = scope
        permission_classes = ()
        authentication_classes = ()

        def get(self, request):
            return Response(body(request) if body else {"ok": True})

    return View


# -- scopes --------------------------------------------------------------------------------


class DrfAnon(AnonRateThrottle):
    THROTTLE_RATES = {"anon": "2/min"}


class ToolkitAnon(AnonSlidingWindowThrottle):
    THROTTLE_RATES = {"anon": "2/min"}


class DrfUser(UserRateThrottle):
    THROTTLE_RATES = {"user": "2/min"}


class ToolkitUser(UserSlidingWindowThrottle):
    THROTTLE_RATES = {"user": "2/min"}


class DrfScoped(ScopedRateThrottle):
    THROTTLE_RATES = {"a": "2/min", "b": "3/min"}


class ToolkitScoped(ScopedSlidingWindowThrottle):
    THROTTLE_RATES = {"a": "2/min", "b": "3/min"}


def anon_traffic():
    return [anon("10.0.0.1")] * 3 + [anon("10.0.0.2"), user(1), user(1), user(1)]


def test_anon_scope_like_drf(backend):
    """Anonymous clients by IP; authenticated requests are not limited by ``anon``."""
    drf = answers(DrfAnon, anon_traffic())
    assert drf == [True, True, False, True, True, True, True]
    assert answers(ToolkitAnon, anon_traffic()) == drf


def user_traffic():
    return [user(1)] * 3 + [user(2), anon("10.0.0.9"), anon("10.0.0.9"), anon("10.0.0.9")]


def test_user_scope_like_drf(backend):
    """Users by id, anonymous requests by IP."""
    drf = answers(DrfUser, user_traffic())
    assert drf == [True, True, False, True, True, True, False]
    assert answers(ToolkitUser, user_traffic()) == drf


def scoped_traffic():
    view_a, view_b, free = view_of(scope="a")(), view_of(scope="b")(), view_of()()
    return [(user(1), view_a)] * 3 + [(user(1), view_b)] * 4 + [(user(1), free)] * 5


def test_scoped_throttle_like_drf(backend):
    """Each view's ``throttle_scope`` has its own rate and count; no scope: not limited."""
    drf = [DrfScoped().allow_request(r, v) for r, v in scoped_traffic()]
    assert drf == [True, True, False] + [True, True, True, False] + [True] * 5
    assert [ToolkitScoped().allow_request(r, v) for r, v in scoped_traffic()] == drf


# -- where rates come from --------------------------------------------------------------


def test_rate_attribute_on_the_class_like_drf(backend):
    class DrfRate(UserRateThrottle):
        rate = "3/min"

    class ToolkitRate(UserSlidingWindowThrottle):
        rate = "3/min"

    traffic = [user(5)] * 5
    assert answers(DrfRate, traffic) == answers(ToolkitRate, traffic) == [True] * 3 + [False] * 2


def test_throttle_rates_on_the_class_win_like_drf(backend):
    """``THROTTLE_RATES`` on a subclass replaces the setting for that class (DRF's pattern)."""
    rest = {"DEFAULT_THROTTLE_RATES": {"user": "100/min"}}
    with override_settings(REST_FRAMEWORK=rest):
        traffic = [user(6)] * 3
        assert answers(DrfUser, traffic) == answers(ToolkitUser, traffic) == [True, True, False]


def test_a_scope_missing_from_the_rates_is_improperly_configured_like_drf(backend):
    class DrfNone(UserRateThrottle):
        THROTTLE_RATES: dict[str, str] = {}

    class ToolkitNone(UserSlidingWindowThrottle):
        THROTTLE_RATES: dict[str, str] = {}

    with pytest.raises(ImproperlyConfigured, match="'user' scope"):
        DrfNone()  # DRF: when the throttle is made
    throttle = ToolkitNone()  # the toolkit: when it decides (and at `manage.py check`)
    with pytest.raises(ImproperlyConfigured, match="'user' scope"):
        throttle.allow_request(user(1), None)


def test_a_none_rate_means_not_limited_like_drf(backend):
    class DrfOff(UserRateThrottle):
        THROTTLE_RATES = {"user": None}

    class ToolkitOff(UserSlidingWindowThrottle):
        THROTTLE_RATES = {"user": None}

    traffic = [user(1)] * 5
    assert answers(DrfOff, traffic) == answers(ToolkitOff, traffic) == [True] * 5


def test_difference_settings_are_read_at_call_time(backend):
    """DRF copies ``DEFAULT_THROTTLE_RATES`` at import; the toolkit reads it on each call."""
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"user": "1/min"}}):
        traffic = [user(8)] * 3
        assert answers(UserRateThrottle, traffic) == [True] * 3  # still the start-up 100/min
        assert answers(UserSlidingWindowThrottle, traffic) == [True, False, False]


def test_difference_rate_grammar(backend):
    """DRF reads the unit's first letter; the toolkit refuses what it cannot read exactly."""

    class DrfMonth(UserRateThrottle):
        rate = "1/month"

    class ToolkitMonth(UserSlidingWindowThrottle):
        rate = "1/month"

    assert DrfMonth().duration == 60  # "per month" silently means per minute in DRF
    with pytest.raises(ImproperlyConfigured, match="month"):
        ToolkitMonth().allow_request(user(1), None)

    class DrfTenSeconds(UserRateThrottle):
        rate = "5/10s"

    class ToolkitTenSeconds(UserSlidingWindowThrottle):
        rate = "5/10s"

    with pytest.raises(KeyError):
        DrfTenSeconds()  # DRF has no multiplier
    assert answers(ToolkitTenSeconds, [user(1)] * 6) == [True] * 5 + [False]


# -- identification -------------------------------------------------------------------


IDENT_CASES = [
    {"REMOTE_ADDR": "10.1.1.1"},
    {"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1"},
    {"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2"},
    {"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": " 3.3.3.3 ,4.4.4.4, 5.5.5.5 "},
]


@pytest.mark.parametrize("num_proxies", [None, 0, 1, 2])
@pytest.mark.parametrize("meta", IDENT_CASES)
def test_get_ident_and_num_proxies_like_drf(num_proxies, meta):
    with override_settings(REST_FRAMEWORK={"NUM_PROXIES": num_proxies}):
        request = factory.get("/", **meta)
        assert SlidingWindowThrottle().get_ident(request) == BaseThrottle().get_ident(request)


def test_num_proxies_none_trusts_x_forwarded_for_like_drf(backend):
    """With ``NUM_PROXIES = None`` both take the whole header: a client can pick its identity.

    The toolkit warns about it (system check ``drf_redis_toolkit.W001``).
    """
    traffic = [anon("10.0.0.1", HTTP_X_FORWARDED_FOR=f"7.7.7.{n}") for n in range(5)]
    with override_settings(REST_FRAMEWORK={"NUM_PROXIES": None}):
        assert answers(DrfAnon, traffic) == answers(ToolkitAnon, traffic) == [True] * 5
    cache.clear()
    with override_settings(REST_FRAMEWORK={"NUM_PROXIES": 0}):
        assert (
            answers(DrfAnon, traffic) == answers(ToolkitAnon, traffic) == [True, True] + [False] * 3
        )


def test_difference_ipv6_clients_are_grouped_by_prefix(backend):
    """DRF limits each IPv6 address; the toolkit each /64 (``IPV6_PREFIX_LENGTH``)."""
    traffic = [anon(f"2001:db8::{n}") for n in range(1, 5)]
    with override_settings(REST_FRAMEWORK={"NUM_PROXIES": 0}):
        assert answers(DrfAnon, traffic) == [True] * 4
        assert answers(ToolkitAnon, traffic) == [True, True, False, False]


def test_get_cache_key_none_means_not_limited_like_drf(backend):
    class DrfSkip(UserRateThrottle):
        rate = "1/min"

        def get_cache_key(self, request, view):
            return None

    class ToolkitSkip(UserSlidingWindowThrottle):
        rate = "1/min"

        def get_cache_key(self, request, view):
            return None

    traffic = [user(1)] * 3
    assert answers(DrfSkip, traffic) == answers(ToolkitSkip, traffic) == [True] * 3


def test_difference_get_cache_key_is_the_identity_and_reset_is_an_api(backend):
    """DRF's ``get_cache_key`` is a cache key to delete; the toolkit's is the identity."""
    request = user(3)
    drf, toolkit = DrfUser(), ToolkitUser()
    assert drf.get_cache_key(request, None) == "throttle_user_3"
    assert toolkit.get_cache_key(request, None) == "user:3"
    assert answers(ToolkitUser, [request] * 3) == [True, True, False]
    assert toolkit.reset(request) is True  # or reset_throttle("user", "user:3")
    assert answers(ToolkitUser, [request] * 2) == [True, True]
    assert reset_throttle(ToolkitUser, "user:3") == 1


# -- wait() ---------------------------------------------------------------------------------


def test_wait_like_drf_at_the_limit(backend):
    """Refused at the limit: both wait until the oldest request leaves the window."""
    drf = [DrfUser() for _ in range(3)]
    toolkit = [ToolkitUser() for _ in range(3)]
    for throttle in drf:
        throttle.allow_request(user(4), None)
    for throttle in toolkit:
        throttle.allow_request(user(4), None)
    assert drf[2].wait() is not None and toolkit[2].wait() is not None
    # Two clocks (the app's, Redis's) and two moments: close, not equal.
    assert toolkit[2].wait() == pytest.approx(drf[2].wait(), abs=1.0)
    assert 58 < toolkit[2].wait() <= 60


def test_difference_wait_when_the_history_exceeds_a_lowered_rate(backend):
    """DRF's ``wait()`` is ``None`` there (a 429 without ``Retry-After``); ours is exact."""

    class DrfWide(UserRateThrottle):
        rate = "5/min"

    class DrfNarrow(UserRateThrottle):
        rate = "2/min"

    class ToolkitWide(UserSlidingWindowThrottle):
        rate = "5/min"
        scope = "lowered"

    class ToolkitNarrow(UserSlidingWindowThrottle):
        rate = "2/min"
        scope = "lowered"

    answers(DrfWide, [user(9)] * 5)
    answers(ToolkitWide, [user(9)] * 5)
    drf, toolkit = DrfNarrow(), ToolkitNarrow()
    assert drf.allow_request(user(9), None) is False
    assert toolkit.allow_request(user(9), None) is False
    assert drf.wait() is None
    assert 58 < toolkit.wait() <= 60


def test_retry_after_on_a_429_like_drf(backend):
    for throttle in (DrfUser, ToolkitUser):
        view = view_of(throttle).as_view()
        responses = [view(factory.get("/", REMOTE_ADDR="10.3.3.3")) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert 59 <= int(responses[2]["Retry-After"]) <= 60


# -- refused requests, repeated and nested dispatch, several throttles -----------------


def test_refused_requests_are_not_counted_like_drf(backend):
    """Neither records a refused request: its history holds only the admitted ones."""
    drf_last, toolkit_last = DrfUser(), ToolkitUser()
    answers(DrfUser, [user(2)] * 6)
    answers(ToolkitUser, [user(2)] * 6)
    drf_last.allow_request(user(2), None)
    toolkit_last.allow_request(user(2), None)
    assert len(drf_last.history) == 2
    assert toolkit_last.decision.limits[0].remaining == 0
    assert toolkit_last.decision.limits[0].limit - toolkit_last.decision.limits[0].remaining == 2


@pytest.mark.parametrize("pair", [(DrfUser, ToolkitUser)], ids=["user"])
def test_one_request_object_sent_repeatedly_like_drf(backend, pair):
    """DRF's own tests send one factory request again and again: each pass counts."""
    for throttle in pair:

        class Three(throttle):
            THROTTLE_RATES = {"user": "3/min"}

        view = view_of(Three).as_view()
        request = factory.get("/", REMOTE_ADDR="10.4.4.4")
        assert [view(request).status_code for _ in range(8)] == [200] * 3 + [429] * 5


def test_nested_dispatch_like_drf(backend):
    """A batch view calling another view: both views count the request, each on its own."""
    results = {}
    for name, outer_base, inner_base in (
        ("drf", UserRateThrottle, UserRateThrottle),
        ("toolkit", UserSlidingWindowThrottle, UserSlidingWindowThrottle),
    ):

        class Outer(outer_base):
            scope = "outer"
            THROTTLE_RATES = {"outer": "3/min"}

        class Inner(inner_base):
            scope = "inner"
            THROTTLE_RATES = {"inner": "1/min"}

        inner_view = view_of(Inner).as_view()
        outer = view_of(
            Outer, body=lambda request, v=inner_view: {"inner": v(request._request).status_code}
        ).as_view()
        responses = [outer(factory.get("/", REMOTE_ADDR="10.5.5.5")) for _ in range(5)]
        results[name] = [(r.status_code, (r.data or {}).get("inner")) for r in responses]
    expected = [(200, 200), (200, 429), (200, 429), (429, None), (429, None)]
    assert results["drf"] == results["toolkit"] == expected


def test_difference_a_refusal_does_not_count_against_the_other_throttles(backend):
    """DRF #6491: DRF counts a request refused by one throttle against the others."""
    counts = {}
    for name, base in (("drf", UserRateThrottle), ("toolkit", UserSlidingWindowThrottle)):

        class Loose(base):
            scope = f"{name}-loose"
            THROTTLE_RATES = {f"{name}-loose": "10/min"}

        class Strict(base):
            scope = f"{name}-strict"
            THROTTLE_RATES = {f"{name}-strict": "1/min"}

        view = view_of(Loose, Strict).as_view()
        statuses = [view(factory.get("/", REMOTE_ADDR="10.6.6.6")).status_code for _ in range(4)]
        assert statuses == [200, 429, 429, 429]
        # What the loose throttle has left for this client afterwards:
        loose_only = view_of(Loose).as_view()
        counts[name] = sum(
            loose_only(factory.get("/", REMOTE_ADDR="10.6.6.6")).status_code == 200
            for _ in range(10)
        )
    assert counts == {"drf": 6, "toolkit": 9}


# -- cost --------------------------------------------------------------------------------


def test_difference_cost_one_is_drf_and_other_costs_are_an_extension(backend):
    """DRF counts every request once; ``get_cost()`` (default 1) is the toolkit's own."""

    class Heavy(ToolkitUser):
        def get_cost(self, request, view):
            return 2

    assert not hasattr(SimpleRateThrottle, "get_cost")
    traffic = [user(11)] * 3
    assert answers(ToolkitUser, traffic) == answers(DrfUser, traffic)
    assert answers(Heavy, [user(12)] * 2) == [True, False]


def test_difference_no_timer_or_history_attributes(backend):
    """DRF's throttles keep ``timer``, ``history``...; the toolkit keeps the decision."""
    drf, toolkit = DrfUser(), ToolkitUser()
    drf.allow_request(user(13), None)
    toolkit.allow_request(user(13), None)
    assert {"timer", "cache"} <= set(dir(drf)) and {"history", "now", "key"} <= set(vars(drf))
    assert not {"timer", "cache", "history", "now", "key"} & set(dir(toolkit))
    assert toolkit.decision.allowed and toolkit.decision.limits[0].remaining == 1


@pytest.mark.parametrize("hook", ["parse_rate", "throttle_success", "throttle_failure", "timer"])
def test_difference_drf_only_hooks_are_refused_not_ignored(hook):
    """A subclass overriding a ``SimpleRateThrottle`` hook the toolkit never calls fails at once."""
    with pytest.raises(ImproperlyConfigured, match=f"Ported.{hook}: DRF's SimpleRateThrottle"):
        type("Ported", (UserSlidingWindowThrottle,), {hook: lambda self, *args: None})
