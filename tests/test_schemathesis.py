"""Schemathesis against the sample API's OpenAPI schema (drf-spectacular): no 500s.

The API runs under gunicorn with a real redis-server, so every generated request
goes through the toolkit's throttles, cache and invalidation. Requests are sent
anonymously and as staff (who may write products); the run is bounded in
examples per operation and in time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests import servers
from tests.conftest import _unavailable
from tests.sample_server import http, sample_api, staff_token

pytestmark = pytest.mark.slow
RATES = {"SHOP_RATE_ANON": "100000/hour", "SHOP_RATE_USER": "100000/hour",
         "SHOP_RATE_CART_WRITE": "100000/hour"}  # fmt: skip


@pytest.fixture(scope="module")
def api():
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    redis_process = servers.start_redis()
    try:
        with sample_api(redis_process.url, workers=2, threads=2, env=RATES) as base:
            yield base
    finally:
        redis_process.stop()


def _schemathesis() -> list[str]:
    path = shutil.which("schemathesis", path=str(__import__("pathlib").Path(sys.executable).parent))
    if path is None:
        pytest.fail("schemathesis is not installed (it is in the test extra)")
    return [path]


def test_schema_is_served(api):
    status, body, _, _ = http(api + "/api/schema/?format=json")
    assert status == 200
    assert b"/api/products/" in body and b"/api/cart/items/" in body


@pytest.mark.parametrize("who", ["anonymous", "staff"])
def test_no_server_errors(api, who, tmp_path, capsys):
    command = [
        *_schemathesis(), "run", api + "/api/schema/?format=json",
        "--checks", "not_a_server_error",
        "--max-examples", "10",
        "--request-timeout", "10",
        "--seed", "1",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    if who == "staff":
        command += ["--header", f"Authorization: Token {staff_token(api)}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, tail
    # It really ran: cases were generated and checked (the summary counts them).
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert summary and int(summary[1]) > 50 and summary[1] == summary[2], tail
    with capsys.disabled():
        print(f"\nschemathesis ({who}): {summary[0]}")
