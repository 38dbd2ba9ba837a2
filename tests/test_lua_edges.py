"""Edges of the Lua scripts that the mutants in tests/lua_mutants.py showed no test watched."""

from __future__ import annotations

import pytest
from rest_framework import permissions
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.caching import CacheResponseMixin, invalidate_namespace
from drf_redis_toolkit.client import get_popular_products, track_product_view
from drf_redis_toolkit.generations import bump_generations, read_generations

factory = APIRequestFactory()
pytestmark = pytest.mark.django_db


class Shared(CacheResponseMixin, APIView):
    permission_classes = [permissions.AllowAny]
    cache_per_user = False
    cache_namespace = "edges"
    runs = 0
    invalidate_while_running = False

    def get(self, request):
        type(self).runs += 1
        if type(self).invalidate_while_running:
            invalidate_namespace("edges")  # a write lands while this answer is computed
        return Response({"run": type(self).runs})


@pytest.fixture(autouse=True)
def _fresh_view():
    Shared.runs = 0
    Shared.invalidate_while_running = False


def _entries(backend) -> list[bytes]:
    return list(backend.raw.scan_iter(match=b"drt:c:*", count=1000))


def test_an_entry_expires_after_the_cache_timeout(backend):
    view = Shared.as_view()
    assert view(factory.get("/e"))["X-Cache"] == "MISS"
    (entry,) = _entries(backend)
    assert 299_000 < backend.raw.pttl(entry) <= 300_000  # CACHE_DEFAULT_TIMEOUT


def test_an_answer_computed_across_an_invalidation_is_not_stored(backend):
    view = Shared.as_view()
    Shared.invalidate_while_running = True
    first = view(factory.get("/e"))
    assert first["X-Cache"] == "MISS"
    assert _entries(backend) == []  # stale by the time it was ready: not stored
    Shared.invalidate_while_running = False
    assert view(factory.get("/e"))["X-Cache"] == "MISS"
    assert view(factory.get("/e"))["X-Cache"] == "HIT"
    assert Shared.runs == 2


def test_a_bump_moves_a_generation_ahead_of_the_clock_by_one(backend):
    ahead = read_generations("edges")["edges"] + 10**12  # e.g. set by a server with a fast clock
    backend.raw.set(keyspace.generation_key("edges"), ahead)
    assert bump_generations("edges")["edges"] == ahead + 1


def test_popular_products_leaves_no_scratch_key(backend):
    track_product_view(1)
    before = sorted(backend.raw.scan_iter(count=1000))
    assert get_popular_products() == [(1, 1)]
    assert sorted(backend.raw.scan_iter(count=1000)) == before
