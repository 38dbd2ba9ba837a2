"""What the observability signals add to the hot paths (``docs/observability.md``, "Cost").

Times each helper of ``drf_redis_toolkit.signals`` that a cache hit or a
throttle decision calls: with no receiver (what every request pays), then with
the Prometheus exporter connected. No Redis is involved: the helpers are the
whole added cost. Run from the repository root:
``python benchmarks/signals_bench.py``.
"""

from __future__ import annotations

import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.http import HttpResponse  # noqa: E402

from drf_redis_toolkit import signals  # noqa: E402
from drf_redis_toolkit.ratelimit import Decision  # noqa: E402

NUMBER, REPEAT = 1_000_000, 5


def per_call_ns(call) -> float:
    return min(timeit.repeat(call, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e9


def main() -> None:
    response = HttpResponse(b"{}")
    decision = Decision("user", True, [], "drt:log:user:{0123abcd}", "log")
    calls = {
        "cache_served (a hit)": lambda: signals.cache_served("ns", response, None, None),
        "throttle (a decision)": lambda: signals.throttle(None, None, None, decision),
        "cache_missed (a miss)": lambda: signals.cache_missed("ns", None, None),
        "an empty call, for scale": lambda: None,
    }
    print(f"no receiver (best of {REPEAT} x {NUMBER:,} calls):")
    for name, call in calls.items():
        print(f"  {name:28s} {per_call_ns(call):6.0f} ns")
    try:
        from drf_redis_toolkit import metrics
    except ImportError:
        return
    metrics.connect()
    print("Prometheus exporter connected:")
    for name, call in list(calls.items())[:3]:
        print(f"  {name:28s} {per_call_ns(call):6.0f} ns")


if __name__ == "__main__":
    main()
