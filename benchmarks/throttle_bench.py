"""Throttle benchmark: the toolkit against DRF's UserRateThrottle (django-redis) and `limits`.

Everything is measured in one run against one real redis-server started here on
loopback, and reported as ratios against anchors measured in the same run:

1. admit path: p50/p99 latency and decisions/s of one `allow_request()` (history
   kept small and equal for all: 100 identities in rotation);
2. cost at the limit: the refusal decision when one client's history holds
   10, 1,000 and 100,000 requests (per hour);
3. over-admission: 8 processes x 4 threads on one identity at 100/min and
   1,000/min, repeated.

4. three throttles against one: ``check_throttles()`` of a view with anon + user +
   scoped throttles against a view with one (the toolkit decides them in one call);
5. a profile of one decision, in CPU time: the Python path with a canned Redis reply
   (cProfile), the ways of sending the script, each Lua script alone against the
   floor and `limits`' (server time, ``redis.call``s), and where a view's 3 throttles
   spend more than its 1.

Each admit-path figure is the median of ``--rounds`` runs; the targets table gives
the median and the worst run.

    python benchmarks/throttle_bench.py            # pinned: redis-server and us on CPU 0
    python benchmarks/throttle_bench.py --no-pin   # let the scheduler place both
    python benchmarks/throttle_bench.py --markdown docs/benchmarks.md   # both, into the doc
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    benchmark_redis,
    passes_into_markdown,
    percentile,
    ratio_table,
    redis_server_version,
)

SAMPLES = 3000
WARMUP = 300
IDENTS = 100


def configure(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "drf_redis_toolkit",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}},
        DRF_REDIS_TOOLKIT={"REDIS_URL": url, "SOCKET_TIMEOUT": 5.0, "FAIL_OPEN": False},
        REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {}},
        USE_TZ=True,
    )
    django.setup()


class FakeUser:
    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


def requests_for(count: int, idents: int, first_pk: int = 0):
    """One request object per decision (the toolkit keeps per-request state on it)."""
    from rest_framework.test import APIRequestFactory

    factory = APIRequestFactory()
    out = []
    for i in range(count):
        request = factory.get("/")
        request.user = FakeUser(first_pk + i % idents)
        out.append(request)
    return out


def measure(calls: dict, count: int, batch: int = 50) -> dict[str, dict[str, float]]:
    """Time every call ``count`` times, interleaved in small batches.

    Interleaving spreads any noise on the machine (other processes, frequency
    changes) evenly over the implementations, so their ratios stay fair.
    """
    for call in calls.values():
        for _ in range(WARMUP):
            call(None)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    busy: dict[str, float] = dict.fromkeys(calls, 0.0)
    names = list(calls)
    done = 0
    clock = time.perf_counter_ns
    while done < count:
        size = min(batch, count - done)
        for name in names:
            call, out = calls[name], samples[name]
            for i in range(done, done + size):
                t0 = clock()
                call(i)
                out.append((clock() - t0) / 1000)
            busy[name] += sum(out[-size:])
        names = names[1:] + names[:1]
        done += size
    return {
        name: {
            "p50": statistics.median(values),
            "p99": percentile(values, 0.99),
            "per_s": len(values) / (busy[name] / 1e6),
        }
        for name, values in samples.items()
    }


def throttle_classes(rate: str):
    from rest_framework.throttling import UserRateThrottle

    from drf_redis_toolkit.throttling import (
        UserSlidingWindowCounterThrottle,
        UserSlidingWindowThrottle,
    )

    def sub(base, name):
        return type(name, (base,), {"rate": rate, "scope": name})

    return {
        "toolkit log": sub(UserSlidingWindowThrottle, "bench_log"),
        "toolkit counter": sub(UserSlidingWindowCounterThrottle, "bench_counter"),
        "DRF UserRateThrottle": sub(UserRateThrottle, "bench_drf"),
    }


def limits_strategies(url: str):
    from limits.storage import storage_from_string
    from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    storage = storage_from_string(url)
    return {
        "limits moving window": MovingWindowRateLimiter(storage),
        "limits sliding counter": SlidingWindowCounterRateLimiter(storage),
    }


FLOOR_SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 3600000)
  return 1
end
return 0
"""


def admit_path(url: str) -> dict[str, dict[str, float]]:
    """Every implementation admits; history per identity stays small and equal."""
    import redis
    from limits import parse

    calls = {}
    rate = "10000000/hour"
    for name, cls in throttle_classes(rate).items():
        it = iter(requests_for(SAMPLES + WARMUP, IDENTS))

        def call(_i, cls=cls, it=it):
            assert cls().allow_request(next(it), None)

        calls[name] = call
    item = parse("10000000/hour")
    for name, strategy in limits_strategies(url).items():

        def call(i, strategy=strategy):
            assert strategy.hit(item, "bench", str((i or 0) % IDENTS))

        calls[name] = call
    client = redis.Redis.from_url(url)
    script = client.register_script(FLOOR_SCRIPT)
    counter = iter(range(10**9))

    def floor(i):
        n = next(counter)
        assert script(keys=[f"floor:{n % IDENTS}"], args=[10**7, 3600 * 10**6, n]) == 1

    calls["floor: bare EVALSHA"] = floor
    return measure(calls, SAMPLES)


def at_the_limit(url: str, limit: int, samples: int) -> dict[str, dict[str, float]]:
    """Refusal decisions for one client whose history already holds ``limit`` requests."""
    import redis
    from django.core.cache import cache
    from limits import parse

    from drf_redis_toolkit import keys as keyspace
    from drf_redis_toolkit import ratelimit

    raw = redis.Redis.from_url(url)
    raw.flushall()
    rate = f"{limit}/hour"
    classes = throttle_classes(rate)
    seconds, micros = raw.time()
    now_us = seconds * 1_000_000 + micros
    # Fill each implementation's storage directly (filling through DRF would be O(n^2)).
    log_key = keyspace.throttle_key(ratelimit.LOG, "bench_log", "user:1")
    pipe = raw.pipeline(transaction=False)
    for start in range(0, limit, 10_000):
        chunk = range(start, min(limit, start + 10_000))
        pipe.zadd(log_key, {f"fill:{i}": now_us - (limit - i) for i in chunk})
    pipe.expire(log_key, 3600)
    counter_key = keyspace.throttle_key(ratelimit.COUNTER, "bench_counter", "user:1")
    window_us = 3600 * 1_000_000
    pipe.hset(counter_key, f"{window_us}:{now_us // window_us}", limit)
    pipe.expire(counter_key, 7200)
    pipe.execute()
    drf = classes["DRF UserRateThrottle"]()
    drf_key = drf.cache_format % {"scope": "bench_drf", "ident": 1}
    cache.set(drf_key, [time.time()] * limit, 3600)
    calls = {}
    for name, cls in classes.items():
        it = iter(requests_for(samples + WARMUP, 1, first_pk=1))

        def call(_i, cls=cls, it=it):
            assert not cls().allow_request(next(it), None)

        calls[name] = call
    item = parse(rate)
    for name, strategy in limits_strategies(url).items():
        assert strategy.hit(item, "full", cost=limit)

        def call(_i, strategy=strategy):
            assert not strategy.hit(item, "full")

        calls[name] = call
    return measure(calls, samples)


def over_admission(url: str, repeats: int) -> dict[str, list[int]]:
    import redis

    from tests.test_throttle_concurrency import hammer

    raw = redis.Redis.from_url(url)
    out: dict[str, list[int]] = {}
    for limit in (100, 1000):
        for kind in ("log", "counter", "drf"):
            admitted = []
            for _ in range(repeats):
                raw.flushall()
                admitted.append(hammer(kind, limit)[0])
            out[f"{kind} @ {limit}/min"] = admitted
    return out


def view_classes(rate: str):
    """Views with one and with three throttles (anon + user + scoped), toolkit and DRF."""
    from rest_framework import throttling as drf
    from rest_framework.views import APIView

    from drf_redis_toolkit import throttling as tk

    def sub(base, name, **extra):
        return type(name, (base,), {"rate": rate, "scope": name, **extra})

    scoped_rates = {"THROTTLE_RATES": {"bench_scoped": rate}}
    drf_scoped_rates = {"THROTTLE_RATES": {"bench_dscoped": rate}}
    sets = {
        "toolkit, 1 throttle": (sub(tk.UserSlidingWindowThrottle, "bench_v1"),),
        "toolkit, 3 throttles": (
            sub(tk.AnonSlidingWindowThrottle, "bench_anon"),
            sub(tk.UserSlidingWindowThrottle, "bench_user"),
            type("S", (tk.ScopedSlidingWindowThrottle,), scoped_rates),
        ),
        "DRF, 1 throttle": (sub(drf.UserRateThrottle, "bench_d1"),),
        "DRF, 3 throttles": (
            sub(drf.AnonRateThrottle, "bench_danon"),
            sub(drf.UserRateThrottle, "bench_duser"),
            type("DS", (drf.ScopedRateThrottle,), drf_scoped_rates),
        ),
    }
    views = {}
    for name, classes in sets.items():
        scope = "bench_dscoped" if name.startswith("DRF") else "bench_scoped"
        views[name] = type("V", (APIView,), {"throttle_classes": classes, "throttle_scope": scope})
    return views


def view_caller(view_class: Any, count: int) -> Any:
    """A call running ``check_throttles()`` of a fresh ``view_class`` per request, as DRF's
    dispatch does, on the next of ``count + WARMUP`` anonymous requests (100 addresses)."""
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    factory = APIRequestFactory()
    requests = []
    for i in range(count + WARMUP):
        request = Request(factory.get("/", REMOTE_ADDR=f"10.0.{i % IDENTS}.1"))
        request.user  # noqa: B018 - authenticate (anonymous) outside the timing
        requests.append(request)
    it = iter(requests)
    return lambda _i: view_class().check_throttles(next(it))


def view_path(count: int) -> dict[str, dict[str, float]]:
    """``check_throttles()`` of a fresh view per request, as DRF's dispatch calls it."""
    calls = {
        name: view_caller(view_class, count)
        for name, view_class in view_classes("10000000/hour").items()
    }
    return measure(calls, count)


# -- profile ---------------------------------------------------------------------
#
# CPU time, not only wall time: the machine is shared, and with the benchmark and
# redis-server pinned to one CPU, the server's work is part of every latency.


def _cpu_us(call, count: int) -> float:
    """Client CPU µs per ``call()`` (``time.process_time``: others' load does not count)."""
    for i in range(WARMUP):
        call(i)
    t0 = time.process_time()
    for i in range(count):
        call(i)
    return (time.process_time() - t0) / count * 1e6


def _server_stats(raw, call, count: int) -> tuple[float, float]:
    """``(server µs per call, commands per call)`` of ``call()``, from ``INFO commandstats``.

    The server's own time inside ``EVALSHA`` (its scripts' commands included; wall
    time, so a busy CPU inflates it), and the ``redis.call``s each script made: the
    commands counted besides ``EVALSHA`` itself.
    """
    for i in range(WARMUP):
        call(i)
    raw.config_resetstat()
    for i in range(count):
        call(i)
    stats = raw.info("commandstats")
    evalsha = stats["cmdstat_evalsha"]
    inner = sum(
        v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_config")
    )
    return evalsha["usec"] / evalsha["calls"], inner / evalsha["calls"]


def _canned(name: str, client: Any, keys: list[Any], args: list[Any]) -> Any:
    """A reply shaped like the script's, without Redis (one admitted limit per key)."""
    one = [1, 1, 5, 100, 0]
    return one if name != "throttle_round" else [one] * len(keys)


def profile_python(top: int = 8) -> tuple[float, list[str]]:
    """The toolkit's Python path per decision, the Redis call replaced by a canned reply.

    Returns the client CPU µs per decision (garbage collector off, best of 5) and the
    functions that take the most time of their own (cProfile).
    """
    import cProfile
    import gc
    import pstats

    from drf_redis_toolkit import ratelimit

    cls = throttle_classes("10000000/hour")["toolkit log"]
    real = ratelimit.run_script_direct
    ratelimit.run_script_direct = _canned
    try:
        best = float("inf")
        gc.disable()
        for _ in range(5):
            requests = requests_for(5000, IDENTS)
            t0 = time.process_time()
            for request in requests:
                cls().allow_request(request, None)
            best = min(best, (time.process_time() - t0) / len(requests) * 1e6)
        gc.enable()
        requests = requests_for(5000, IDENTS)
        profiler = cProfile.Profile()
        profiler.enable()
        for request in requests:
            cls().allow_request(request, None)
        profiler.disable()
    finally:
        ratelimit.run_script_direct = real
        gc.enable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    lines = ["| function | calls per decision | own time share |", "|---|---:|---:|"]
    for (filename, line, function), (_cc, ncalls, tottime, _ct, _callers) in rows:
        where = Path(filename).name if filename != "~" else "builtin"
        lines.append(
            f"| `{where}:{line} {function}` | {ncalls / len(requests):.1f} | "
            f"{tottime / total:.0%} |"
        )
    return best, lines


def profile_transport(url: str) -> list[str]:
    """Client CPU per decision of the log script, by the way it is sent (the Python side
    of a round trip; the server's work does not count here): redis-py's ``evalsha``, a
    pooled connection taken and given back per call (the toolkit's path before), and the
    toolkit's kept connection (``run_script_direct``)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from drf_redis_toolkit import scripts

    client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    script = scripts.get_script("sliding_window")
    client.script_load(script.script)
    pool = client.connection_pool
    tokens = iter(range(10**9))

    def args(i: int) -> list[Any]:
        return [1, f"t{next(tokens)}", 1, 10**7, 3600 * 10**6]

    def pooled(i):
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, 1, f"pp:{i % IDENTS}", *args(i))
            conn.read_response()
        finally:
            pool.release(conn)

    rows = {
        "redis-py `client.evalsha()`": _cpu_us(
            lambda i: client.evalsha(script.sha, 1, f"pe:{i % IDENTS}", *args(i)), SAMPLES
        ),
        "a pooled connection per call": _cpu_us(pooled, SAMPLES),
        "a kept connection (`run_script_direct`)": _cpu_us(
            lambda i: scripts.run_script_direct(
                "sliding_window", client, [f"pk:{i % IDENTS}"], args(i)
            ),
            SAMPLES,
        ),
    }
    lines = ["| sent through | client CPU µs per decision |", "|---|---:|"]
    lines += [f"| {label} | {us:.1f} |" for label, us in rows.items()]
    return lines


def profile_lua(url: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The scripts alone, called with ``EVALSHA`` through redis-py, against the floor and
    `limits`' own script; then each one's server time and ``redis.call``s per decision."""
    import redis
    from limits.storage import storage_from_string

    from drf_redis_toolkit.scripts import script_source

    client = redis.Redis.from_url(url)
    log = client.script_load(script_source("sliding_window"))
    counter = client.script_load(script_source("sliding_window_counter"))
    round_ = client.script_load(script_source("throttle_round"))
    floor = client.script_load(FLOOR_SCRIPT)
    empty = client.script_load(b"return {1, 2, 3, 4, 5}")
    limits_script = storage_from_string(url).lua_acquire_moving_window.script
    moving = client.script_load(limits_script)
    tokens = iter(range(10**9))
    window = 3600 * 10**6
    log_args = [1, None, 1, 10**7, window]

    def sw(i):
        return [1, f"t{next(tokens)}", 1, 10**7, window]

    def three(i):
        args: list[Any] = []
        for _ in range(3):
            args += ["sw", len(log_args), *sw(i)]
        k = (i or 0) % IDENTS
        return client.evalsha(round_, 3, f"r1:{k}", f"r2:{k}", f"r3:{k}", *args)

    calls = {
        "log script, 1 limit": lambda i: client.evalsha(log, 1, f"pl:{(i or 0) % IDENTS}", *sw(i)),
        "counter script, 1 limit": lambda i: client.evalsha(
            counter, 1, f"pc:{(i or 0) % IDENTS}", 1, 1, 10**7, window
        ),
        "`limits` moving window script": lambda i: client.evalsha(
            moving, 1, f"pm:{(i or 0) % IDENTS}", time.time(), 10**7, 3600, 1
        ),
        "floor script": lambda i: client.evalsha(
            floor, 1, f"pf:{(i or 0) % IDENTS}", 10**7, window, next(tokens)
        ),
        "script returning 5 numbers": lambda i: client.evalsha(empty, 0),
        "round script, 3 log throttles": three,
    }
    timed = measure({k: v for k, v in calls.items() if not k.startswith("round")}, SAMPLES // 2)
    lines = [
        "| script | server µs per call | `redis.call`s per call |",
        "|---|---:|---:|",
    ]
    for name, call in calls.items():
        server_us, inner = _server_stats(client, call, SAMPLES // 2)
        lines.append(f"| {name} | {server_us:.1f} | {inner:.1f} |")
    return timed, lines


def profile_views(url: str) -> list[str]:
    """Where the extra cost of a view's 3 toolkit throttles over 1 goes: client CPU (whole,
    and with a canned reply: the Python alone) and the server's time per request."""
    import gc

    import redis

    from drf_redis_toolkit import ratelimit

    raw = redis.Redis.from_url(url)
    views = view_classes("10000000/hour")
    names = ["toolkit, 1 throttle", "toolkit, 3 throttles"]

    def caller(view_class):
        return view_caller(view_class, SAMPLES)

    rows = {}
    for name in names:
        cpu = _cpu_us(caller(views[name]), SAMPLES)
        server_us, inner = _server_stats(raw, caller(views[name]), SAMPLES)
        real = ratelimit.run_script_direct
        ratelimit.run_script_direct = _canned
        gc.disable()
        try:
            python = min(_cpu_us(caller(views[name]), SAMPLES) for _ in range(3))
        finally:
            ratelimit.run_script_direct = real
            gc.enable()
        rows[name] = (cpu, python, server_us, inner)
    lines = [
        "| view | client CPU µs | of which Python (canned reply) | server µs | `redis.call`s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (cpu, python, server_us, inner) in rows.items():
        lines.append(f"| {name} | {cpu:.1f} | {python:.1f} | {server_us:.1f} | {inner:.1f} |")
    one, three = rows[names[0]], rows[names[1]]
    lines += [
        "",
        f"Two more throttles add {three[0] - one[0]:.1f} µs of client CPU "
        f"({three[1] - one[1]:.1f} of it Python) and {three[2] - one[2]:.1f} µs of server "
        f"time to a 1-throttle view costing {one[0] + one[2]:.1f} µs of CPU in all; the "
        f"1.1x target allows {0.1 * (one[0] + one[2]):.1f}.",
    ]
    return lines


# -- report ----------------------------------------------------------------------


def table(results: dict[str, dict[str, float]], anchor: str) -> list[str]:
    return ratio_table(results, anchor, first="implementation", rate="decisions/s", digits=1)


def median_results(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per implementation, the median of each figure over the repeated runs."""
    return {
        name: {k: statistics.median(run[name][k] for run in runs) for k in runs[0][name]}
        for name in runs[0]
    }


#: (name, how it is computed from one run, comparison, target)
TARGETS = [
    (
        "single throttle admit p50 / `limits` moving window",
        lambda a, v: a["toolkit log"]["p50"] / a["limits moving window"]["p50"],
        "<=",
        0.9,
    ),
    (
        "DRF UserRateThrottle admit p50 / single throttle",
        lambda a, v: a["DRF UserRateThrottle"]["p50"] / a["toolkit log"]["p50"],
        ">=",
        3.0,
    ),
    (
        "view with 3 toolkit throttles / view with 1 (p50)",
        lambda a, v: v["toolkit, 3 throttles"]["p50"] / v["toolkit, 1 throttle"]["p50"],
        "<=",
        1.1,
    ),
]


def target_lines(admits: list[dict], views: list[dict]) -> list[str]:
    lines = [
        "| target | median of runs | worst run | |",
        "|---|---:|---:|---|",
    ]
    for name, compute, op, goal in TARGETS:
        values = [compute(a, v) for a, v in zip(admits, views, strict=True)]
        worst = max(values) if op == "<=" else min(values)
        median = statistics.median(values)
        met = median <= goal if op == "<=" else median >= goal
        verdict = "met" if met else "**not met**"
        lines.append(f"| {name} {op} {goal}x | {median:.2f}x | {worst:.2f}x | {verdict} |")
    return lines


def run_pass(url: str, pinned: bool, rounds: int, repeats: int, full: bool) -> list[str]:
    """One pass (pinned or not): every measurement, as Markdown lines."""
    label = "pinned to CPU 0" if pinned else "unpinned"
    out = [f"### {label[0].upper()}{label[1:]}", ""]
    admits, views = [], []
    for _ in range(rounds):
        admits.append(admit_path(url))
        views.append(view_path(SAMPLES // 2))
    out += [
        f"Admit path (history <= 40 per identity, 100 identities), median of {rounds} runs:",
        "",
        *table(median_results(admits), "DRF UserRateThrottle"),
        "",
        f"`check_throttles()` of a view, anonymous client, median of {rounds} runs:",
        "",
        *table(median_results(views), "toolkit, 1 throttle"),
        "",
        f"Against the targets ({label}):",
        "",
        *target_lines(admits, views),
        "",
    ]
    if not full:
        return out
    out += ["Refusal at the limit, by history size (per hour):", ""]
    scaling = {}
    for limit, samples in ((10, 2000), (1000, 2000), (100_000, 200)):
        scaling[limit] = at_the_limit(url, limit, samples)
        out += [f"Limit {limit:,}/hour:", "", *table(scaling[limit], "DRF UserRateThrottle"), ""]
    out.append("p50 growth from limit 10 to 100,000:")
    out.append("")
    for name in scaling[10]:
        growth = scaling[100_000][name]["p50"] / scaling[10][name]["p50"]
        out.append(f"- {name}: {growth:.2f}x")
    out += [
        "",
        f"Over-admission, 8 processes x 4 threads on one identity, {repeats} repeats:",
        "",
        "| run | admitted in each repeat | max over the limit |",
        "|---|---|---:|",
    ]
    for name, admitted in over_admission(url, repeats).items():
        limit = int(name.split("@ ")[1].split("/")[0])
        out.append(f"| {name} | {', '.join(map(str, admitted))} | {max(admitted) - limit} |")
    out.append("")
    return out


def profile_section(url: str) -> list[str]:
    python_us, hot = profile_python()
    transport = profile_transport(url)
    lua, server = profile_lua(url)
    views = profile_views(url)
    return [
        "### Profile of one decision",
        "",
        "The client side is measured in CPU time (`time.process_time`), which other jobs "
        "on the machine do not inflate; the server's side is its own time inside each "
        "call (`INFO commandstats`), which they do when they take its CPU, so compare "
        "those rows with each other. Pinned, the server runs on the benchmark's CPU, so "
        "its time is part of every latency.",
        "",
        f"**Python**, the Redis call replaced by a canned reply (best of 5, garbage "
        f"collector off): **{python_us:.1f} µs** of CPU per `allow_request()` of the log "
        "throttle. The functions with the most time of their own (cProfile, one run of "
        "5,000):",
        "",
        *hot,
        "",
        "**Sending the script** (client CPU per decision; the server's part is not in it). "
        "redis-py 7 takes a connection from its pool and gives it back on every command: a "
        "lock, a readiness poll, four observability records and an event, as much CPU as "
        "the rest of the decision's Python. The toolkit keeps its connections out of the "
        "pool (`scripts._Kept`: a list pop and append, a `poll()` for a connection the "
        "server closed) and packs with hiredis directly:",
        "",
        *transport,
        "",
        "**Lua**, each script alone with `EVALSHA` through redis-py (pinned), against the "
        "floor's sorted-set script, `limits`' moving-window script and a script that only "
        "returns 5 numbers (the round trip and redis-py's own work):",
        "",
        *table(lua, "floor script"),
        "",
        "The server's own time per call and the commands each script runs (`redis.call`s, "
        "`TIME` included). The log script admits with `TIME`, `ZREMRANGEBYSCORE`, `ZCARD`, "
        "one `ZRANGE` for the exact reset (none when the window was empty), `ZADD` and "
        "`PEXPIRE`; a refusal at the limit reads one entry, which is both the retry and "
        "the reset. `limits` takes the time from the client, keeps a list trimmed to the "
        "limit and reports no reset: fewer, cheaper commands.",
        "",
        *server,
        "",
        "**Three throttles against one** (`check_throttles()` of a view, anonymous client; "
        "one `EVALSHA` per request in both):",
        "",
        *views,
        "",
    ]


def machine_line() -> str:
    import django
    import limits
    import redis
    import rest_framework

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, Django {django.__version__}, DRF "
        f"{rest_framework.__version__}, redis-py {redis.__version__}, limits "
        f"{limits.__version__}, redis-server {redis_server_version()}; load average "
        f"at the start: {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--repeats", type=int, default=10, help="over-admission repeats")
    parser.add_argument("--rounds", type=int, default=3, help="repeated admit-path runs")
    parser.add_argument(
        "--quick", action="store_true", help="admit paths and targets only (no scaling)"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="run a pinned pass, then an unpinned one (each in its own process), print "
        "both and write them between the throttle markers of this file",
    )
    args = parser.parse_args()

    if args.markdown:
        common = ["--rounds", str(args.rounds), "--repeats", str(args.repeats)]
        passes = [[], ["--no-pin", "--quick"]]
        passes_into_markdown(__file__, common, passes, args.markdown, "throttle-bench")
        return 0

    pinned = not args.no_pin
    with benchmark_redis(pinned) as server:
        configure(server.url)
        lines = [] if args.no_pin else [machine_line(), ""]
        lines += run_pass(server.url, pinned, args.rounds, args.repeats, full=not args.quick)
        if pinned and not args.quick:
            lines += profile_section(server.url)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
