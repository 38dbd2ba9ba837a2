"""A 15-second run of ``make load``'s whole pipeline, so the locustfile and runner cannot rot.

It starts a real redis-server, gunicorn with two workers and headless Locust,
exactly as ``loadtests/run.py`` does for ``make load``, and asserts correctness
only (no stale read, no over-admission, no unexpected error, checks actually
ran), never throughput: it must pass on a busy two-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.checks import REQUIRED_CHECKS
from tests import servers
from tests.conftest import REQUIRE_REDIS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.real_redis]


def _needs(what: str, present: bool) -> None:
    if present:
        return
    if REQUIRE_REDIS:
        pytest.fail(f"{what} is missing (DRT_REQUIRE_REDIS=1 forbids skipping)")
    pytest.skip(f"{what} is missing")


def test_load_smoke(tmp_path: Path) -> None:
    _needs("redis-server", servers.redis_server_binary() is not None)
    for module in ("locust", "gunicorn"):
        _needs(f"the {module} package (the 'load' extra)", bool(importlib.util.find_spec(module)))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "USERS", "MODE", "SWEEP")
    }
    args = [
        sys.executable, str(ROOT / "loadtests" / "run.py"),
        "--users", "10", "--spawn-rate", "10", "--duration", "15",
        "--workers", "2", "--threads", "2", "--products", "120",
        "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    summary_file = tmp_path / "summary.json"
    assert summary_file.exists(), output
    summary = json.loads(summary_file.read_text())

    assert summary["failed_because"] == [], output
    assert summary["locust_exit"] == 0, output
    assert summary["stale_reads"] == 0, output
    assert summary["over_admission"] == 0, output
    assert summary["early_refusals"] == 0, output
    assert summary["errors"] == 0, output
    assert summary["violations"] == {}, output
    assert result.returncode == 0, output

    # The run did what it is there for: requests, and every kind of check.
    assert summary["requests"] > 0
    # The browse mix (MODE=saturate's target) is the browsers' requests: some, not all.
    client = json.loads((tmp_path / "toolkit" / "client.json").read_text())
    browse = client["stats"]["browse"]
    assert browse["shared_names"] == [], browse
    assert 0 < summary["browse"]["requests"] < summary["requests"], summary["browse"]
    paced = ("(staff)", "(shopper)", "(abuser)")  # the other users' catalogue reads
    browsing = sum(
        e["requests"]
        for e in client["stats"]["entries"].values()
        if e["type"] != "CHECK"
        and not e["name"].endswith(paced)
        and not e["name"].startswith(("/api/cart", "/api/auth/"))
    )
    assert summary["browse"]["requests"] == browsing, (summary["browse"], browsing)
    checked = summary["checked"]
    print(f"\nload smoke: checked {checked}; abuse {summary['abuse']['admitted']} admitted")
    for kind in REQUIRED_CHECKS:
        assert checked.get(kind, 0) > 0, (kind, checked)
    assert summary["abuse"]["throttled"] > 0, summary["abuse"]
    assert summary["abuse"]["admitted"] > 0, summary["abuse"]
    assert summary["cache_hit_rate"]["server"], "no cache statistics"
    # The server's own counts, read from /metrics (all gunicorn workers summed).
    assert summary["metrics"]["cache_requests"] > 0, summary["metrics"]
    assert sum(summary["metrics"]["throttle_refused"].values()) > 0, summary["metrics"]
    # Reports written where make load writes them.
    for name in ("locust_stats.csv", "report.html", "client.json", "cache_stats.json"):
        assert (tmp_path / "toolkit" / name).exists(), name
