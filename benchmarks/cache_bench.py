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
    python benchmarks/cache_bench.py --local-cache   # LOCAL_CACHE on
    python benchmarks/cache_bench.py --markdown docs/benchmarks.md   # all four, into the doc
"""

from __future__ import annotations

import argparse
import math
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
    passes_into_markdown,
    percentile,
    ratio_table,
    redis_server_version,
    verdict,
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


#: The targets each pass is judged against: (label, numerator, denominator, target).
#: "our hit" is the shared entry; the 304 answers it conditionally.
TARGETS_OFF = [
    ("our hit p50 / drf-extensions hit p50", "our hit", "drf-extensions hit", "<= 0.80"),
    ("our 304 p50 / (empty view + one GET) p50", "our 304", "empty DRF view + one Redis GET",
     "<= 1.20"),
    ("our 304 p50 / our hit p50", "our 304", "our hit", "<= 1.00"),
]  # fmt: skip
TARGETS_LOCAL = [
    ("our hit p50 / drf-extensions hit p50", "our hit", "drf-extensions hit", "<= 0.60"),
    ("our hit p50 / empty DRF view p50", "our hit", "empty DRF view (floor)", "<= 1.15"),
    ("our 304 p50 / our hit p50", "our 304", "our hit", "<= 1.00"),
]


def median_of_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per path, the median over runs of each statistic."""
    return {
        name: {stat: statistics.median(run[name][stat] for run in runs) for stat in runs[0][name]}
        for name in runs[0]
    }


def target_table(runs: list[dict[str, dict[str, float]]], targets: list[Any]) -> list[str]:
    """Each ratio's median over the runs and its worst run, against its target."""
    lines = ["| target | median of runs | worst run | |", "|---|---:|---:|---|"]
    for label, top, bottom, target in targets:
        ratios = [run[top]["p50"] / run[bottom]["p50"] for run in runs]
        worst = max(ratios) if target.startswith("<=") else min(ratios)
        lines.append(
            f"| {label} {target}x | {statistics.median(ratios):.2f}x | {worst:.2f}x "
            f"| {verdict(worst, target)} |"
        )
    return lines


def run_pass(args: argparse.Namespace) -> list[str]:
    """One process's pass: its own redis-server, ``args.rounds`` interleaved runs."""
    pinned = not args.no_pin
    out: list[str] = []
    with benchmark_redis(pinned) as server:
        configure(server.url, args.local_cache)
        raw = server.client()
        where = "pinned to CPU 0" if pinned else "unpinned"
        out += [f"### {where}, `LOCAL_CACHE` {'on' if args.local_cache else 'off'}", ""]
        if pinned and not args.local_cache:
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            out += [f"machine: {machine()}; load average at the start: {load}", ""]

        from django.test import Client

        etag = Client().get("/ours/")["ETag"]
        # Every light request carries one header of the same size, so that the 304's
        # If-None-Match costs the test client no more than the others' requests.
        other = {"X-Request-Id": "x" * len(etag)}
        light = {
            "empty DRF view (floor)": ("/empty/", other),
            "empty DRF view + one Redis GET": ("/empty-get/", other),
            "our hit": ("/ours/", other),
            "our hit, per-user (anonymous)": ("/ours-per-user/", other),
            "our 304": ("/ours/", {"If-None-Match": etag}),
            "drf-extensions hit": ("/ext/", other),
            "cache_page hit": ("/cache-page/", other),
        }
        heavy = {
            "uncached list": ("/uncached/", {}),
            "our miss (new query each time)": ("/ours/?miss={i}", {}),
        }
        raw.set("bench:probe", b"x")
        # Hits and misses in separate runs: a hit timed right after a miss pays
        # for the miss's cold caches.
        runs = [run_interleaved(light, args.samples, args.warmup) for _ in range(args.rounds)]
        results = median_of_runs(runs)
        results.update(run_interleaved(heavy, max(200, args.samples // 5), args.warmup // 5))
        out += [
            f"Median of {args.rounds} runs of {args.samples:,} requests per hit path "
            "(the heavy paths: one run):",
            "",
            *table(results, "drf-extensions hit"),
            "",
        ]
        out += [
            "Redis commands per request (`INFO commandstats` over 200 requests; the calls a "
            "script makes are counted too):",
            "",
        ]
        raw.flushall()
        for path in ("/ours/", "/ext/", "/cache-page/"):
            Client().get(path)
        for name, path, headers in (
            ("our hit", "/ours/", {}),
            ("our 304", "/ours/", {"If-None-Match": etag}),
            ("our miss", "/ours/?miss={i}", {}),
            ("drf-extensions hit", "/ext/", {}),
            ("cache_page hit", "/cache-page/", {}),
        ):
            out.append(f"- {name}: {commands_per_request(raw, path, headers)}")
        if args.local_cache:
            from drf_redis_toolkit import local_cache

            out.append(f"- `local_cache.stats()` at the end: {local_cache.stats()}")
        out.append("")
        if pinned and not args.local_cache:
            out += ["Storage per entry (one cold GET):", ""]
            out += ["| path | keys | value bytes | MEMORY USAGE bytes |", "|---|---:|---:|---:|"]
            for name, path in (
                ("ours", "/ours/"),
                ("drf-extensions", "/ext/"),
                ("cache_page", "/cache-page/"),
            ):
                keys, value, memory = stored_bytes(raw, path)
                out.append(f"| {name} | {keys} | {value:,} | {memory:,} |")
            body = len(Client().get("/uncached/").content)
            out += ["", f"(the rendered body is {body:,} bytes)", ""]
        if pinned:
            out += hit_profile()
        out += ["Against the targets (each run's ratios; the verdict is the worst run's):", ""]
        out += target_table(runs, TARGETS_LOCAL if args.local_cache else TARGETS_OFF)
        floor = results["empty DRF view (floor)"]["p50"]
        out += [
            "",
            f"- above the empty view (p50): our hit {results['our hit']['p50'] - floor:.0f} µs, "
            f"drf-extensions hit {results['drf-extensions hit']['p50'] - floor:.0f} µs",
            f"- one redis-py GET round trip timed alone (p50): {_one_get_us(raw):.0f} µs",
            "",
        ]
    return out


def hit_profile() -> list[str]:
    """Where a hit's own time goes: each step of ``_serve`` timed alone, in this process,
    on one DRF request that went through ``initial()`` (best of 5 loops)."""
    from cache_bench_app.urls import OurProductList
    from django.http import HttpResponse
    from django.test.client import RequestFactory
    from rest_framework.views import APIView

    from drf_redis_toolkit import caching
    from drf_redis_toolkit.drivers import run_sync
    from drf_redis_toolkit.request_host import validated_host

    def timed(call: Any, count: int = 5000) -> float:
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(count):
                call()
            best = min(best, (time.perf_counter() - started) / count * 1e6)
        return best

    view = OurProductList()
    view.args, view.kwargs, view.headers, view.format_kwarg = (), {}, {}, None
    request = view.initialize_request(RequestFactory().get("/ours/"))
    view.request = request
    APIView.initial(view, request)
    handler = view.get
    plan = caching._make_plan(view, request, None, handler, (), {})
    assert plan is not None
    run_sync(caching._serve(view, request, handler, (), {}, None))  # stored, then a hit
    _, _, raw, _, known = run_sync(caching._find(plan, request, "t", 0))
    entry = caching.local_bodies.get(plan.entry_key)
    assert entry is not None and entry.body is not None
    django_request = request._request
    steps = [
        ("the whole cached path (`_serve`, a hit)",
         lambda: run_sync(caching._serve(view, request, handler, (), {}, None))),
        ("the plan (`_make_plan`: hooks, key, namespace, timeout)",
         lambda: caching._make_plan(view, request, None, handler, (), {})),
        ("of that: the host (`validated_host()`: Django's `get_host()` once per host)",
         lambda: validated_host(django_request)),
        ("of that: the default key (`default_cache_key`)",
         lambda: caching.default_cache_key(view, request)),
        ("the lookup (`_find`: the generation and the entry)",
         lambda: run_sync(caching._find(plan, request, "t", 0))),
        ("the answer (`_replay`: the stored entry as a response)",
         lambda: run_sync(caching._replay(view, request, plan, raw, known))),
        ("of that: Django's `HttpResponse(body, headers=...)`",
         lambda: HttpResponse(entry.body, status=200, headers=entry.headers)),
    ]  # fmt: skip
    lines = [
        "Where a hit's own time goes (each step timed alone on one request that went "
        "through DRF's `initial()`, best of 5 loops of 5,000):",
        "",
        "| step | µs |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {timed(call):.1f} |" for label, call in steps]
    return [*lines, ""]


PASSES = [["--local-cache"], [], ["--no-pin", "--local-cache"], ["--no-pin"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--samples", type=int, default=2000, help="timed requests per path")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per path")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of the hit paths")
    parser.add_argument(
        "--local-cache", action="store_true", help="LOCAL_CACHE on (hits from process memory)"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="run the four passes (pinned and not, LOCAL_CACHE on and off), each in its own "
        "process, print them and write them between the cache-bench markers of this file",
    )
    args = parser.parse_args()
    if args.markdown:
        common = ["--samples", str(args.samples), "--warmup", str(args.warmup)]
        common += ["--rounds", str(args.rounds)]
        passes_into_markdown(__file__, common, PASSES, args.markdown, "cache-bench")
        return 0
    print("\n".join(run_pass(args)))
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
