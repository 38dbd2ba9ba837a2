"""Throttle benchmark: the toolkit against DRF's UserRateThrottle (django-redis) and `limits`.

Everything is measured in one run against one real redis-server started here on
loopback, and reported as ratios against anchors measured in the same run:

1. admit path: p50/p99 latency and decisions/s of one `allow_request()` (history
   kept small and equal for all: 100 identities in rotation);
2. cost at the limit: the refusal decision when one client's history holds
   10, 1,000 and 100,000 requests (per hour);
3. over-admission: 8 processes x 4 threads on one identity at 100/min and
   1,000/min, repeated.

    python benchmarks/throttle_bench.py            # pinned: redis-server and us on CPU 0
    python benchmarks/throttle_bench.py --no-pin   # let the scheduler place both
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    benchmark_redis,
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


def table(results: dict[str, dict[str, float]], anchor: str) -> list[str]:
    return ratio_table(results, anchor, first="implementation", rate="decisions/s", digits=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--repeats", type=int, default=10, help="over-admission repeats")
    args = parser.parse_args()

    pinned = not args.no_pin
    with benchmark_redis(pinned) as server:
        configure(server.url)
        import django
        import limits
        import redis
        import rest_framework

        print(f"# Throttle benchmark ({'pinned to CPU 0' if pinned else 'unpinned'})\n")
        print(
            f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
            f"{platform.python_version()}, Django {django.__version__}, DRF "
            f"{rest_framework.__version__}, redis-py {redis.__version__}, limits "
            f"{limits.__version__}, {redis_server_version()}\n"
        )
        print("## Admit path (history <= 40 per identity, 100 identities)\n")
        admit = admit_path(server.url)
        print("\n".join(table(admit, "DRF UserRateThrottle")))
        log, floor = admit["toolkit log"]["p50"], admit["floor: bare EVALSHA"]["p50"]
        print(
            f"\ntoolkit log p50 / floor p50 = {log / floor:.2f}x; "
            f"DRF p50 / toolkit log p50 = {admit['DRF UserRateThrottle']['p50'] / log:.2f}x; "
            f"toolkit log / limits moving window = "
            f"{log / admit['limits moving window']['p50']:.2f}x; toolkit counter / limits "
            f"sliding counter = {admit['toolkit counter']['p50'] / admit['limits sliding counter']['p50']:.2f}x\n"  # noqa: E501
        )
        print("## Refusal at the limit, by history size (per hour)\n")
        scaling = {}
        for limit, samples in ((10, 2000), (1000, 2000), (100_000, 200)):
            scaling[limit] = at_the_limit(server.url, limit, samples)
            print(f"### limit {limit:,}/hour\n")
            print("\n".join(table(scaling[limit], "DRF UserRateThrottle")) + "\n")
        print("p50 growth from limit 10 to 100,000:")
        for name in scaling[10]:
            growth = scaling[100_000][name]["p50"] / scaling[10][name]["p50"]
            print(f"- {name}: {growth:.2f}x")
        print(f"\n## Over-admission, 8 processes x 4 threads, {args.repeats} repeats\n")
        print("| run | admitted in each repeat | max over the limit |")
        print("|---|---|---:|")
        for name, admitted in over_admission(server.url, args.repeats).items():
            limit = int(name.split("@ ")[1].split("/")[0])
            print(f"| {name} | {', '.join(map(str, admitted))} | {max(admitted) - limit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
