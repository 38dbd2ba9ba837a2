"""The cache key's host: ``get_host()``'s answers and refusals, remembered only while they hold.

``request_host.validated_host`` stands in for ``HttpRequest.get_host()`` on every
cached request. These tests pin that it answers and refuses exactly as Django does,
through the cache as well as alone, and that a change to a setting the check reads
is seen on the very next request (``settings`` sends ``setting_changed``).
"""

from __future__ import annotations

import pytest
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.test import RequestFactory
from rest_framework.test import APIClient

from drf_redis_toolkit import request_host
from drf_redis_toolkit.request_host import MAX_HOSTS, validated_host
from tests.caching_views import CALLS
from tests.testapp.models import CachedWidget


@pytest.fixture(autouse=True)
def _fresh_hosts():
    request_host.forget_hosts()
    yield
    request_host.forget_hosts()


def request_for(host: str, **meta: str) -> HttpRequest:
    return RequestFactory().get("/", HTTP_HOST=host, **meta)


def test_a_valid_host_comes_back_as_get_host_returns_it(settings):
    settings.ALLOWED_HOSTS = [".example.com"]
    for host in ("shop.example.com", "SHOP.example.com:8443", "example.com"):
        request = request_for(host)
        assert validated_host(request) == request.get_host() == host
        assert validated_host(request_for(host)) == host  # now remembered


def test_a_refused_host_is_refused_every_time_and_never_remembered(settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    for _ in range(3):
        with pytest.raises(DisallowedHost):
            validated_host(request_for("evil.test"))
    assert "evil.test" not in request_host._passed


def test_a_host_that_passed_is_refused_once_allowed_hosts_no_longer_allows_it(settings):
    settings.ALLOWED_HOSTS = ["example.com", "old.example.com"]
    assert validated_host(request_for("old.example.com")) == "old.example.com"
    settings.ALLOWED_HOSTS = ["example.com"]
    with pytest.raises(DisallowedHost):
        validated_host(request_for("old.example.com"))


def test_debug_localhost_variants_follow_debug(settings):
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = True
    assert validated_host(request_for("localhost")) == "localhost"
    settings.DEBUG = False
    with pytest.raises(DisallowedHost):
        validated_host(request_for("localhost"))


def test_the_forwarded_host_counts_only_while_use_x_forwarded_host_is_on(settings):
    settings.ALLOWED_HOSTS = ["proxy.internal", "public.example.com"]
    settings.USE_X_FORWARDED_HOST = True
    forwarded = {"HTTP_X_FORWARDED_HOST": "public.example.com"}
    assert validated_host(request_for("proxy.internal", **forwarded)) == "public.example.com"
    settings.USE_X_FORWARDED_HOST = False
    assert validated_host(request_for("proxy.internal", **forwarded)) == "proxy.internal"


def test_a_request_class_with_its_own_get_host_is_always_asked(settings):
    settings.ALLOWED_HOSTS = ["example.com"]

    class TenantRequest(HttpRequest):
        def get_host(self) -> str:
            return "tenant-" + super().get_host()

    request = TenantRequest()
    request.META = {"HTTP_HOST": "example.com"}
    assert validated_host(request) == "tenant-example.com"
    assert validated_host(request) == "tenant-example.com"
    plain = request_for("example.com")
    plain.get_host = lambda: "given"  # type: ignore[method-assign]
    assert validated_host(plain) == "given"


def test_the_remembered_hosts_stay_bounded(settings):
    settings.ALLOWED_HOSTS = ["*"]
    for i in range(MAX_HOSTS * 3):
        assert validated_host(request_for(f"h{i}.example.com")) == f"h{i}.example.com"
        assert len(request_host._passed) <= MAX_HOSTS


# -- through the cache ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_cached_answer_is_kept_per_host_and_a_refused_host_never_gets_it(backend, settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    settings.ALLOWED_HOSTS = ["a.example.com", "b.example.com"]
    CALLS.clear()
    CachedWidget.objects.create(name="spanner", price="9.99")
    client = APIClient()
    first = client.get("/widgets/", HTTP_HOST="a.example.com")
    again = client.get("/widgets/", HTTP_HOST="a.example.com")
    other = client.get("/widgets/", HTTP_HOST="b.example.com")
    assert (first["X-Cache"], again["X-Cache"], other["X-Cache"]) == ("MISS", "HIT", "MISS")
    assert CALLS["widgets"] == 2

    settings.ALLOWED_HOSTS = ["b.example.com"]  # a.example.com's entry is still in Redis
    refused = client.get("/widgets/", HTTP_HOST="a.example.com")
    assert refused.status_code == 400
    assert "X-Cache" not in refused
    assert client.get("/widgets/", HTTP_HOST="b.example.com")["X-Cache"] == "HIT"
    assert CALLS["widgets"] == 2
