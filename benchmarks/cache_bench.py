"""Response-caching benchmark: the toolkit against drf-extensions and Django's ``cache_page``.

One run, one real redis-server started here on loopback, an in-process Django
test client, a DRF list view of 100 products read from SQLite. Contenders are
measured interleaved (one request of each in turn), so background load on the
machine hits them all alike:

- uncached: the list view as is;
- our hit / our 304: ``CacheResponseMixin`` (shared, and per-user as anonymous),
  and a conditional GET answered ``304``;
- our miss: a new query string on every request (lookup, view, store);
- drf-extensions ``@cache_response`` and Django's ``cache_page``, both on django-redis;
- empty DRF view: ``Response({})``, the floor of any hit that still runs DRF's ``initial()``.

Also reported: bytes stored per entry (value length and ``MEMORY USAGE``) and
Redis commands per request (from ``INFO commandstats``).

    python benchmarks/cache_bench.py            # redis-server and this process on CPU 0
    python benchmarks/cache_bench.py --no-pin   # let the scheduler place both
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    benchmark_redis,
    percentile,
    ratio_table,
    redis_server_version,
)

sys.path.insert(0, str(ROOT / "benchmarks"))  # the cache_bench_app Django app

PRODUCTS = 100


def configure(url: str, local_cache: bool = False) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="cache_bench_app.urls",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "rest_framework",
            "drf_redis_toolkit",
            "cache_bench_app",
        ],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}},
        DRF_REDIS_TOOLKIT={"REDIS_URL": url, "SOCKET_TIMEOUT": 5.0, "LOCAL_CACHE": local_cache},
        REST_FRAMEWORK={"DEFAULT_THROTTLE_CLASSES": []},
        REST_FRAMEWORK_EXTENSIONS={"DEFAULT_CACHE_RESPONSE_TIMEOUT": 300},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    from cache_bench_app.models import BenchProduct

    BenchProduct.objects.bulk_create(
        BenchProduct(
            name=f"Product {i:03d} {'deluxe ' * (i % 3)}edition",
            description=(
                f"Item {i}: a sturdy, well-made thing for everyday use; ships in "
                f"{1 + i % 5} days from warehouse {i % 7}."
            ),
            price=f"{(i * 37) % 1000 + 0.99:.2f}",
            stock=(i * 13) % 250,
            category_id=1 + i % 10,
            sku=f"SKU-{i:06d}-{(i * 7919) % 100000:05d}",
        )
        for i in range(PRODUCTS)
    )


def run_interleaved(
    contenders: dict[str, tuple[str, dict[str, str]]], samples: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Time one request of each contender per round, in a new random order every round.

    A request runs measurably slower right after a heavy one (cold CPU caches, a
    garbage collection it did not cause), so a fixed order would favour whoever
    follows a light request.
    """
    from django.test import Client

    client = Client()
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    shuffle = random.Random(1234).shuffle
    clock = time.perf_counter_ns
    for i in range(warmup + samples):
        shuffle(names)
        for name in names:
            path, headers = contenders[name]
            if "{i}" in path:
                path = path.format(i=i)
            started = clock()
            response = client.get(path, headers=headers)
            elapsed = clock() - started
            if response.status_code not in (200, 304):
                raise RuntimeError(f"{name}: {path} answered {response.status_code}")
            if i >= warmup:
                timings[name].append(elapsed / 1000)
    return {
        name: {
            "p50": statistics.median(values),
            "p99": percentile(values, 0.99),
            "per_s": 1e6 / statistics.fmean(values),
        }
        for name, values in timings.items()
    }


def commands_per_request(raw: Any, path: str, headers: dict[str, str], count: int = 200) -> str:
    from django.test import Client

    client = Client()

    def calls() -> dict[str, int]:
        stats = raw.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    before = calls()
    for i in range(count):
        client.get(path.format(i=10_000_000 + i), headers=headers)
    after = calls()
    used = {
        name: (after[name] - before.get(name, 0)) / count
        for name in after
        if after[name] != before.get(name, 0) and name not in ("info",)
    }
    return ", ".join(f"{n:g} {name.upper()}" for name, n in sorted(used.items())) or "none"


def stored_bytes(raw: Any, path: str) -> tuple[int, int, int]:
    """(keys, value bytes, MEMORY USAGE bytes) written by one cold GET of ``path``."""
    from django.test import Client

    raw.flushall()
    Client().get(path)
    keys = [k for k in raw.scan_iter(count=1000) if b":gen:" not in k and b"cstats" not in k]
    value = sum(raw.strlen(k) for k in keys)
    memory = sum(raw.memory_usage(k, samples=0) or 0 for k in keys)
    return len(keys), value, memory


def table(results: dict[str, dict[str, float]], anchor: str) -> list[str]:
    return ratio_table(results, anchor, first="path", rate="requests/s", digits=0)


def machine() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import django
    import django_redis
    import redis
    import rest_framework

    try:
        ext = version("drf-extensions")
    except PackageNotFoundError:
        ext = "?"
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{os.cpu_count()} CPUs ({model}), {int(meminfo) // 1024} MiB RAM, Python "
        f"{platform.python_version()}, Django {django.__version__}, DRF "
        f"{rest_framework.__version__}, redis-py {redis.__version__}, django-redis "
        f"{django_redis.__version__}, drf-extensions {ext}, {redis_server_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--samples", type=int, default=2000, help="timed requests per path")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per path")
    parser.add_argument(
        "--local-cache", action="store_true", help="LOCAL_CACHE on (hits from process memory)"
    )
    args = parser.parse_args()

    pinned = not args.no_pin
    with benchmark_redis(pinned) as server:
        configure(server.url, args.local_cache)
        raw = server.client()
        print(f"# Response-caching benchmark ({'pinned to CPU 0' if pinned else 'unpinned'})\n")
        print(f"LOCAL_CACHE: {args.local_cache}\n")
        print(f"machine: {machine()}\n")

        from django.test import Client

        etag = Client().get("/ours/")["ETag"]
        light = {
            "empty DRF view (floor)": ("/empty/", {}),
            "empty DRF view + one Redis GET": ("/empty-get/", {}),
            "our hit": ("/ours/", {}),
            "our hit, per-user (anonymous)": ("/ours-per-user/", {}),
            "our 304": ("/ours/", {"If-None-Match": etag}),
            "drf-extensions hit": ("/ext/", {}),
            "cache_page hit": ("/cache-page/", {}),
        }
        heavy = {
            "uncached list": ("/uncached/", {}),
            "our miss (new query each time)": ("/ours/?miss={i}", {}),
        }
        # Hits and misses in separate runs: a hit timed right after a miss pays
        # for the miss's cold caches.
        from drf_redis_toolkit.caching import namespace_stats

        raw.set("bench:probe", b"x")
        results = run_interleaved(light, args.samples, args.warmup)
        results.update(run_interleaved(heavy, max(200, args.samples // 5), args.warmup // 5))
        stats = namespace_stats()  # before the storage section flushes the server
        print(f"## Latency, {args.samples} requests per hit path (fewer for the heavy ones)\n")
        print("\n".join(table(results, "drf-extensions hit")))

        ext, floor = results["drf-extensions hit"]["p50"], results["empty DRF view (floor)"]["p50"]
        hit, not_modified = results["our hit"]["p50"], results["our 304"]["p50"]
        print("\n## Storage per entry (one cold GET)\n")
        print("| path | keys | value bytes | MEMORY USAGE bytes |")
        print("|---|---:|---:|---:|")
        sizes = {}
        for name, path in (
            ("ours", "/ours/"),
            ("drf-extensions", "/ext/"),
            ("cache_page", "/cache-page/"),
        ):
            sizes[name] = stored_bytes(raw, path)
            keys, value, memory = sizes[name]
            print(f"| {name} | {keys} | {value:,} | {memory:,} |")
        body = len(Client().get("/uncached/").content)
        print(f"\n(the rendered body is {body:,} bytes)\n")

        print("## Redis commands per request\n")
        raw.flushall()
        Client().get("/ours/")
        Client().get("/ext/")
        Client().get("/cache-page/")
        for name, path, headers in (
            ("our hit", "/ours/", {}),
            ("our 304", "/ours/", {"If-None-Match": etag}),
            ("our miss", "/ours/?miss={i}", {}),
            ("drf-extensions hit", "/ext/", {}),
            ("cache_page hit", "/cache-page/", {}),
        ):
            print(f"- {name}: {commands_per_request(raw, path, headers)}")

        print("\n## Targets\n")
        get_us = _one_get_us(raw)
        floor_get = results["empty DRF view + one Redis GET"]["p50"]
        rows = [
            ("our hit p50 / drf-extensions hit p50", hit / ext, "<= 0.80"),
            ("our 304 p50 / (empty view + one GET, as one view) p50", not_modified / floor_get,
             "<= 1.20"),
            ("our 304 p50 / (empty view p50 + a GET timed alone)", not_modified / (floor + get_us),
             "<= 1.20"),
            ("bytes stored: ours / drf-extensions", sizes["ours"][1] / sizes["drf-extensions"][1],
             "<= 0.50"),
        ]  # fmt: skip
        for label, ratio, target in rows:
            print(f"- {label}: {ratio:.2f} (target {target})")
        print(f"- one redis-py GET round trip timed alone (p50): {get_us:.0f} µs")
        print(f"- above the empty view (p50): our hit {hit - floor:.0f} µs, drf-extensions hit "
              f"{ext - floor:.0f} µs")  # fmt: skip
        extra = results["our miss (new query each time)"]["p50"] - results["uncached list"]["p50"]
        print(f"- our miss p50 - uncached p50: {extra:.0f} µs")
        print(f"- namespace_stats() after the latency runs: {stats}")
        namespace_stats()  # flush this process's counters while the server is up
    return 0


def _one_get_us(raw: Any, count: int = 2000) -> float:
    raw.set("bench:probe", b"x")
    clock = time.perf_counter_ns
    values = []
    for _ in range(count):
        started = clock()
        raw.get("bench:probe")
        values.append((clock() - started) / 1000)
    return statistics.median(values)


if __name__ == "__main__":
    sys.exit(main())
