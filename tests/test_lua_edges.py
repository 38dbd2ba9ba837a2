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


# -- the cache scripts' contracts, called directly (their headers document them) -------------


def _cache_keys():
    entry = keyspace.cache_entry_key("edges", "material")
    return keyspace.generation_key("edges"), entry, keyspace.cache_lock_key(entry)


def _cache_get(client, offer="", token="me"):
    from drf_redis_toolkit.scripts import get_script

    gen_key, entry, lock = _cache_keys()
    gen, value, state, _ = get_script("cache_get")(
        keys=[gen_key, entry, lock], args=[token, 5000, "0", offer], client=client
    )
    return int(gen), value, int(state)


def _unlock(client, token, pass_through_ms):
    from drf_redis_toolkit.scripts import get_script

    _, _, lock = _cache_keys()
    return get_script("cache_unlock")(keys=[lock], args=[token, pass_through_ms], client=client)


def test_cache_unlock_releases_only_its_own_lock_and_can_leave_a_pass_through(backend):
    _, _, lock = _cache_keys()
    backend.raw.set(lock, "holder", px=60_000)
    assert _unlock(backend.raw, "someone-else", 1000) == 0
    assert backend.raw.get(lock) == b"holder"
    assert _unlock(backend.raw, "holder", 1000) == 1
    assert backend.raw.get(lock) == b"!" and 0 < backend.raw.pttl(lock) <= 1000
    # A miss that finds the pass-through marker runs the view at once (state 3).
    assert _cache_get(backend.raw)[2] == 3
    backend.raw.set(lock, "holder", px=60_000)
    assert _unlock(backend.raw, "holder", 0) == 1
    assert backend.raw.exists(lock) == 0


def test_cache_get_deletes_an_entry_of_an_older_generation(backend):
    gen, _, state = _cache_get(backend.raw)
    assert state == 1  # a miss: the caller holds the lock
    _, entry, lock = _cache_keys()
    backend.raw.delete(lock)
    backend.raw.set(entry, f"{gen - 1} 3 etag\nmeta\nbody")
    assert _cache_get(backend.raw)[2] == 1
    assert backend.raw.exists(entry) == 0


def test_cache_get_answers_a_known_etag_without_the_body(backend):
    gen, _, _ = _cache_get(backend.raw)
    _, entry, lock = _cache_keys()
    backend.raw.delete(lock)
    stored = f"{gen} 3 etag-1\nmeta\n" + "body" * 100
    backend.raw.set(entry, stored)
    _, value, state = _cache_get(backend.raw, offer="etag-1")
    assert (state, value) == (5, f"{gen} 3 etag-1\nmeta\n".encode())
    _, value, state = _cache_get(backend.raw, offer="etag-2")
    assert (state, value) == (0, stored.encode())


def test_cache_get_tells_the_remaining_lifetime_when_asked(backend):
    """``ARGV[5] = "1"`` (``LOCAL_CACHE``): the PTTL of a hit and of a vary record."""
    from drf_redis_toolkit.scripts import get_script

    gen, _, _ = _cache_get(backend.raw)
    gen_key, entry, lock = _cache_keys()
    backend.raw.delete(lock)
    backend.raw.set(entry, f"{gen} 3 etag-1\nmeta\nbody", px=60_000)

    def ask(flag):
        return get_script("cache_get")(
            keys=[gen_key, entry, lock], args=["me", 5000, "0", "", flag], client=backend.raw
        )

    _, _, state, pttl = ask("1")
    assert state == 0 and 59_000 < pttl <= 60_000
    assert ask("0")[3] == -1  # not asked: as before
    backend.raw.persist(entry)
    assert ask("1")[2:] == [0, -1]  # no expiry
    backend.raw.set(entry, f"{gen} V abc accept-encoding\n", px=30_000)
    _, _, state, pttl = ask("1")
    assert state == 6 and 29_000 < pttl <= 30_000
    assert ask("0")[2:] == [6, -1]
