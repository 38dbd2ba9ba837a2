"""adrf views under a real ASGI server (uvicorn) with concurrent clients (issue 12, item 1).

The server runs in its own process on a free loopback port, against the real
standalone Redis and the real cluster, and the test database file (the test
commits its rows, so the server sees them). Each assertion is about outcomes
that must hold whatever the scheduling: how many requests a throttle admits,
which price a read after an acknowledged write shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests import loop_guard
from tests.conftest import toolkit_settings_for
from tests.testapp.models import CachedWidget

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One uvicorn process serving ``tests.asgi_app``."""

    def __init__(self, toolkit: dict, database: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DRT_TEST_DB": database,
            "DRT_TEST_TOOLKIT": json.dumps(toolkit),
            "PYTHONPATH": str(ROOT),
            "DRT_LOOP_GUARD": "1",  # tests/loop_guard.py: sync Redis calls on the loop reported
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = tempfile.NamedTemporaryFile(prefix="drt-uvicorn-", suffix=".log")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.asgi_app:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "uvicorn exited at start-up"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("uvicorn did not listen within 60 s")

    def errors(self) -> str:
        """What the server wrote to stderr (tracebacks of 500s)."""
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server; then no sync Redis call may have run on its event loop."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        errors = self.errors()
        self.log.close()
        assert loop_guard.REPORT not in errors, errors


@pytest.fixture(params=["real", "cluster"])
def server(request, transactional_db) -> Iterator[Server]:
    chosen = toolkit_settings_for(request.param, request)
    started = Server(chosen.settings, connection.settings_dict["NAME"])
    try:
        yield started
    finally:
        try:
            started.stop()
        finally:
            chosen.raw.close()


def gather(server: Server, calls) -> list[httpx.Response]:
    """Run ``calls(client)`` coroutines at once on one connection pool; return the responses."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
            return list(await asyncio.gather(*calls(client)))

    return asyncio.run(run())


def test_concurrent_requests_at_a_throttle_admit_exactly_its_limit(server):
    responses = gather(server, lambda c: [c.get("/async/throttled/") for _ in range(CONCURRENCY)])
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 5 + [429] * (CONCURRENCY - 5)


def test_concurrent_misses_compute_once_and_share_the_bytes(server):
    responses = gather(server, lambda c: [c.get("/async/counted/") for _ in range(CONCURRENCY)])
    assert {r.status_code for r in responses} == {200}, server.errors()
    assert {r.content for r in responses} == {b'{"calls":1}'}, server.errors()
    assert sorted(r.headers["X-Cache"] for r in responses).count("MISS") == 1


def test_etag_revalidation_gets_304(server):
    first = gather(server, lambda c: [c.get("/async/deco/")])[0]
    etag = first.headers["ETag"]
    again = gather(
        server,
        lambda c: [c.get("/async/deco/", headers={"If-None-Match": etag}) for _ in range(8)],
    )
    assert {r.status_code for r in again} == {304}
    assert {r.headers["ETag"] for r in again} == {etag}


def test_no_stale_read_after_an_acknowledged_write_under_concurrency(server):
    widget = CachedWidget.objects.create(name="w", price="1.00")
    path = f"/async/widget/{widget.pk}/"

    async def scenario() -> list[tuple[str, set[str]]]:
        seen = []
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await asyncio.gather(*[client.get(path) for _ in range(8)])  # warm the entry
            for step in range(2, 8):
                price = f"{step}.00"
                # Readers racing the write may see either price; once the write
                # is acknowledged, every read must see it.
                racing = [client.get(path) for _ in range(6)]
                write, *_ = await asyncio.gather(client.put(path, json={"price": price}), *racing)
                assert write.status_code == 200
                after = await asyncio.gather(*[client.get(path) for _ in range(CONCURRENCY)])
                seen.append((price, {r.json()["price"] for r in after}))
        return seen

    for price, prices in asyncio.run(scenario()):
        assert prices == {price}


def test_redis_down_never_answers_5xx(transactional_db):
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    down = Server({"REDIS_URL": dead}, connection.settings_dict["NAME"])
    try:
        paths = ["/async/counted/", "/async/deco/", "/async/throttled/"] * 4
        responses = gather(down, lambda c: [c.get(p) for p in paths])
    finally:
        down.stop()
    assert {r.status_code for r in responses} == {200}
    assert {r.headers.get("X-Cache") for r in responses[:2]} == {"MISS"}


def test_redis_killed_under_the_server_then_back(transactional_db):
    """Pooled async connections die with the server: misses (no 5xx), then hits again."""
    from tests import servers

    redis_process = servers.start_redis()
    toolkit = {"REDIS_URL": redis_process.url, "CIRCUIT_BREAKER_COOLDOWN": 0.2}
    server = Server(toolkit, connection.settings_dict["NAME"])
    try:
        paths = ["/async/counted/", "/async/deco/"] * 6
        before = gather(server, lambda c: [c.get(p) for p in paths])
        assert {r.status_code for r in before} == {200}
        redis_process.stop()
        during = gather(server, lambda c: [c.get(p) for p in paths])
        assert {r.status_code for r in during} == {200}, server.errors()
        assert {r.headers["X-Cache"] for r in during} == {"MISS"}
        redis_process.restart()
        statuses: list[str] = []
        deadline = time.monotonic() + 20
        while statuses[-2:] != ["HIT", "HIT"] and time.monotonic() < deadline:
            response = gather(server, lambda c: [c.get("/async/deco/")])[0]
            assert response.status_code == 200, server.errors()
            statuses.append(response.headers["X-Cache"])
            time.sleep(0.05)
        assert statuses[-2:] == ["HIT", "HIT"], statuses
    finally:
        server.stop()
        redis_process.stop()
