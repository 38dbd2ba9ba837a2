"""Exactness under real concurrency: 8 processes x 4 threads hammer one identity on a real Redis.

The toolkit's log variant must admit exactly the limit, in every repeat. DRF's
``UserRateThrottle`` on a django-redis cache runs the same load beside it; its
figures are printed (not asserted) to show what users get today.
"""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from django.test import override_settings
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import UserRateThrottle

from drf_redis_toolkit.throttling import (
    SlidingWindowCounterThrottle,
    SlidingWindowThrottle,
    ThrottlingUnavailable,
)
from tests.workers import Workers

PROCESSES = 8
THREADS = 4
REPEATS = 3
pytestmark = pytest.mark.slow


class OneClient:
    def get_cache_key(self, request, view):
        return "hammered-client"


class DrfOneClient(UserRateThrottle):
    def get_cache_key(self, request, view):
        return "throttle_drf_hammered"


def _make(kind: str, rate: str):
    base = {
        "log": (OneClient, SlidingWindowThrottle),
        "counter": (OneClient, SlidingWindowCounterThrottle),
        "drf": (DrfOneClient,),
    }[kind]
    return type(f"Hammer_{kind}", base, {"rate": rate, "scope": f"hammer_{kind}"})


def _process(kind, rate, attempts, barrier, results):
    """Run THREADS workers; report (admitted, refused by outage, attempts made, deaths)."""
    throttle_cls = _make(kind, rate)
    factory = APIRequestFactory()
    admitted = [0] * THREADS
    errors = [0] * THREADS
    made = [0] * THREADS

    def thread(index):
        barrier.wait(timeout=30)
        for _ in range(attempts):
            try:
                if throttle_cls().allow_request(factory.get("/"), None):
                    admitted[index] += 1
            except ThrottlingUnavailable:
                errors[index] += 1
            made[index] += 1

    workers = Workers(thread, THREADS, "hammer").start()
    try:
        workers.join(timeout=60)
        deaths = ""
    except AssertionError as exc:  # reported to the test through the queue
        deaths = str(exc)
    results.put((sum(admitted), sum(errors), sum(made), deaths))


def hammer(kind: str, limit: int) -> tuple[int, int, int]:
    """Return (admitted, errors, attempts) for one run of PROCESSES x THREADS workers.

    Every thread of every process must have made all its attempts: a worker that
    died (or a process that did not report) fails the test here, so the admitted
    count is never judged on part of the load.
    """
    attempts = max(10, (limit * 3 // 2) // (PROCESSES * THREADS) + 1)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES * THREADS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_process, args=(kind, f"{limit}/min", attempts, barrier, results))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    deaths = [d for _, _, _, d in outcomes if d]
    assert not deaths, deaths
    total = attempts * PROCESSES * THREADS
    assert sum(m for _, _, m, _ in outcomes) == total  # every attempt was made
    admitted = sum(a for a, _, _, _ in outcomes)
    errors = sum(e for _, e, _, _ in outcomes)
    return admitted, errors, total


@pytest.fixture
def generous(real_backend, settings):
    """A long socket timeout and FAIL_OPEN=False: a stall shows as a refusal, never an admission."""
    settings.DRF_REDIS_TOOLKIT = {
        **real_backend.settings,
        "SOCKET_TIMEOUT": 5.0,
        "SOCKET_CONNECT_TIMEOUT": 5.0,
        "FAIL_OPEN": False,
    }
    return real_backend


@pytest.mark.parametrize("limit", [100, 1000])
def test_log_variant_admits_exactly_the_limit_every_time(generous, limit, capsys):
    caches = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": generous.server.url,
        }
    }
    report = []
    for repeat in range(REPEATS):
        generous.raw.flushall()
        admitted, errors, attempts = hammer("log", limit)
        report.append(f"toolkit log     repeat {repeat}: admitted {admitted} of {attempts}")
        assert errors == 0
        assert admitted == limit
        generous.raw.flushall()
        with override_settings(CACHES=caches):
            drf_admitted, _, _ = hammer("drf", limit)
        report.append(f"DRF UserRate    repeat {repeat}: admitted {drf_admitted} of {attempts}")
    with capsys.disabled():
        print(f"\n[limit {limit}/min, {PROCESSES} processes x {THREADS} threads]")
        print("\n".join(report))


@pytest.mark.parametrize("limit", [100, 1000])
def test_counter_variant_never_exceeds_the_limit_within_one_window(generous, limit, capsys):
    generous.raw.flushall()
    admitted, errors, attempts = hammer("counter", limit)
    with capsys.disabled():
        print(f"\ntoolkit counter: admitted {admitted} of {attempts} at {limit}/min")
    assert errors == 0
    # The whole run fits in one minute: at most the limit, plus what the previous fixed
    # window's decay can free if the run straddles a minute boundary (under 2%).
    assert limit * 0.98 <= admitted <= limit + limit // 50 + 1


def _tokens_in_child(queue):
    from drf_redis_toolkit.ratelimit import _tokens

    out: list[str] = []
    lock = threading.Lock()

    def thread():
        mine = [_tokens.next() for _ in range(200)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=thread) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    queue.put(out)


def test_log_members_never_collide_across_forked_processes():
    """Colliding members would make ZADD update instead of add: admitted but not counted."""
    from drf_redis_toolkit.ratelimit import _tokens

    parent = {_tokens.next() for _ in range(10)}  # the parent has used its prefix already
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_tokens_in_child, args=(queue,)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    tokens = [token for _ in procs for token in queue.get(timeout=60)]
    for proc in procs:
        proc.join(timeout=30)
    assert len(tokens) == PROCESSES * THREADS * 200
    assert len(set(tokens)) == len(tokens)
    assert not parent & set(tokens)
