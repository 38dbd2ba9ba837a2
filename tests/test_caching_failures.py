"""Response caching under stress and failure, on real redis-server processes.

Stampedes (many threads on one cold key), a lock holder that died (on fakeredis
too: no threads, and mutation testing runs it), a Redis that stops or hangs: the
view must still answer 200, and run as few times as the design promises.
Assertions are about behaviour (how often the view ran, what was answered), never
about how long anything took.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading

import pytest
from rest_framework.test import APIClient

from drf_redis_toolkit import connection
from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.cache_stats import counters as _counters
from drf_redis_toolkit.caching import invalidate_namespace, namespace_stats
from drf_redis_toolkit.exceptions import RedisUnavailable
from tests import servers
from tests.caching_views import CALLS
from tests.conftest import toolkit_settings_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _urls(settings):
    settings.ROOT_URLCONF = "tests.caching_views"
    CALLS.clear()
    _counters.reset()


@pytest.fixture(params=["real", "cluster"])
def server_backend(request, settings):
    """A real standalone server, then a real cluster (threads need a real server)."""
    chosen = toolkit_settings_for(request.param, request)
    settings.DRF_REDIS_TOOLKIT = chosen.settings
    yield chosen
    chosen.raw.close()


@pytest.fixture
def own_server(redis_server, settings):
    """A redis-server this test alone uses, and may stop or freeze."""
    server = servers.start_redis()
    settings.DRF_REDIS_TOOLKIT = {
        "REDIS_URL": server.url,
        "SOCKET_TIMEOUT": 0.2,
        "SOCKET_CONNECT_TIMEOUT": 0.2,
        "CIRCUIT_BREAKER_COOLDOWN": 30,
    }
    try:
        yield server
    finally:
        server.stop()


def _entry_key(raw) -> bytes:
    (key,) = list(raw.scan_iter(match=b"drt:c:*", count=1000))
    return key


def test_concurrent_cold_requests_run_the_view_once(server_backend):
    threads_count = 16
    barrier = threading.Barrier(threads_count)
    results: list = [None] * threads_count

    def fetch(index: int) -> None:
        client = APIClient()
        barrier.wait(timeout=30)
        results[index] = client.get("/slow/?sleep=0.3")

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(not thread.is_alive() for thread in threads)
    assert CALLS["slow"] == 1
    assert all(r.status_code == 200 for r in results)
    assert len({r.content for r in results}) == 1
    assert sorted(r["X-Cache"] for r in results) == ["HIT"] * (threads_count - 1) + ["MISS"]


def test_a_crashed_lock_holder_blocks_its_key_only_until_the_lock_expires(backend):
    client = APIClient()
    first = client.get("/slow/?sleep=0")
    entry = _entry_key(backend.raw)
    lock = keyspace.cache_lock_key(entry.decode()).encode()
    # A holder took the lock, then its process died: nobody will release it.
    backend.raw.delete(entry)
    backend.raw.set(lock, b"dead-holder", px=300)
    response = client.get("/slow/?sleep=0")
    assert response.status_code == 200 and response.content == first.content
    assert response["X-Cache"] == "MISS"  # it waited, took the expired lock, and computed
    assert CALLS["slow"] == 2
    assert backend.raw.get(lock) is None  # released by the store
    assert client.get("/slow/?sleep=0")["X-Cache"] == "HIT"


def test_waiters_give_up_after_the_lock_lifetime_and_run_the_view(backend):
    client = APIClient()
    client.get("/impatient/?sleep=0")
    entry = _entry_key(backend.raw)
    lock = keyspace.cache_lock_key(entry.decode()).encode()
    backend.raw.delete(entry)
    backend.raw.set(lock, b"hung-holder", px=600_000)  # a holder that never finishes
    response = client.get("/impatient/?sleep=0")  # cache_lock_timeout = 1 s
    assert response.status_code == 200 and response["X-Cache"] == "MISS"
    assert CALLS["slow"] == 2
    assert backend.raw.get(lock) == b"hung-holder"  # not stolen
    assert client.get("/impatient/?sleep=0")["X-Cache"] == "HIT"  # and its answer was stored


def test_redis_stopped_means_uncached_200s_logged_once(own_server, caplog):
    client = APIClient()
    first = client.get("/echo/?o=1")
    assert client.get("/echo/?o=1")["X-Cache"] == "HIT"
    own_server.stop()
    with caplog.at_level(logging.WARNING, logger="drf_redis_toolkit"):
        for _ in range(5):
            response = client.get("/echo/?o=1")
            assert response.status_code == 200 and response["X-Cache"] == "MISS"
            assert response.content == first.content
    assert CALLS["echo"] == 6
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    with pytest.raises(RedisUnavailable):
        invalidate_namespace("echo")


def test_a_hung_redis_costs_one_timeout_then_requests_skip_the_cache(own_server):
    client = APIClient()
    client.get("/echo/?p=1")
    assert client.get("/echo/?p=1")["X-Cache"] == "HIT"
    connection.reset_stats()
    own_server.pause()
    try:
        for _ in range(3):
            response = client.get("/echo/?p=1")
            assert response.status_code == 200 and response["X-Cache"] == "MISS"
        counts = connection.stats()
        breaker_open = connection.get_breaker().is_open
    finally:
        own_server.resume()
    assert CALLS["echo"] == 4
    # The first request paid the one socket timeout; the breaker then skipped Redis.
    assert counts["timeouts"] == 1 and counts["failures"] == 1, counts
    assert counts["skips"] >= 2, counts
    assert breaker_open


def _flush_in_child() -> None:
    namespace_stats()  # flushes the child's own (empty) counts


def test_a_forked_worker_does_not_flush_its_parents_counts(real_backend, settings):
    client = APIClient()
    client.get("/echo/?fork=1")
    client.get("/echo/?fork=1")
    child = multiprocessing.get_context("fork").Process(target=_flush_in_child)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert namespace_stats()["echo"] == {"hits": 1, "misses": 1, "hit_rate": 50.0}


def _draw_token_after_seeding(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import random

    from drf_redis_toolkit import caching

    random.seed(7)  # what a seeded worker or test does
    queue.put(caching._lock_token())


def test_lock_tokens_differ_between_forked_workers_that_seed_random_alike():
    """Two workers holding one token would release each other's single-flight lock.

    Lock tokens do not come from ``random``'s shared generator, which user code seeds,
    and the toolkit's own generator is seeded again in every forked child.
    """
    import random

    from drf_redis_toolkit import caching

    saved = random.getstate()  # other tests draw from the shared generator too
    try:
        random.seed(7)
        first = caching._lock_token()
        random.seed(7)
        second = caching._lock_token()
    finally:
        random.setstate(saved)
    assert second != first
    assert len(first) == 16 and int(first, 16) >= 0

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_draw_token_after_seeding, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    tokens = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert tokens[0] != tokens[1]
    assert first not in tokens
