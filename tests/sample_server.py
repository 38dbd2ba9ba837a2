"""Serve the sample API under gunicorn on loopback for end-to-end tests (stopped by PID)."""

from __future__ import annotations

import http.client as http_client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests import servers

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_api"


#: The status recorded for a request that got no HTTP answer at all (reset, refused, timeout).
NO_ANSWER = 0


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{label string: value}`` of every sample of ``name`` in a /metrics answer."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def http(
    url: str,
    method: str = "GET",
    body: dict | None = None,
    token: str | None = None,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
):
    """One request: ``(status, body bytes, headers, seconds)``; HTTP errors are answers too.

    A request that got no answer (connection reset or refused, a timeout) is an
    outcome too, never an exception that would kill a load thread unseen: status
    ``NO_ANSWER`` (0), and the error's repr as the body.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
            return (
                response.status,
                response.read(),
                dict(response.headers),
                time.monotonic() - started,
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers), time.monotonic() - started
    except (OSError, http_client.HTTPException) as exc:  # URLError, resets, timeouts
        return NO_ANSWER, repr(exc).encode(), {}, time.monotonic() - started


def sample_environment(
    redis_url: str, workdir: Path, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the sample's processes (``manage.py``, gunicorn) for ``workdir``.

    The database is the one ``sample_api()`` created for ``workdir``: a PostgreSQL
    database when it recorded one (``DRT_DATABASE=postgres``), else SQLite in it.
    """
    recorded = workdir / "database_url"
    database_url = (
        recorded.read_text().strip()
        if recorded.exists()
        else f"sqlite:///{workdir / 'db.sqlite3'}"
    )
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        **(env or {}),
    }


@contextmanager
def sample_api(
    redis_url: str,
    *,
    workers: int = 2,
    threads: int = 4,
    products: int = 60,
    env: dict[str, str] | None = None,
    workdir: Path | None = None,
    stats_dir: Path | None = None,
) -> Iterator[str]:
    """Migrate and seed a fresh database, serve the API, yield its base URL.

    SQLite in ``workdir``, or with ``DRT_DATABASE=postgres`` a throwaway PostgreSQL
    cluster. ``workdir`` (created empty by the caller) records the database: other
    processes of a test can then use it through ``sample_environment()``.

    With ``stats_dir``, each gunicorn worker writes ``connection.stats()`` (its
    Redis failures, socket timeouts and breaker skips) to ``<stats_dir>/<pid>.json``
    as it exits: read them with ``worker_stats()`` after the block.
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="drt-sample-"))
    postgres = servers.start_postgres() if os.environ.get("DRT_DATABASE") == "postgres" else None
    if postgres:
        (workdir / "database_url").write_text(postgres.create_database("shop"))
    environment = sample_environment(redis_url, workdir, env)
    for argv in (
        ["migrate", "--noinput", "-v", "0"],
        ["seed_demo", "--products", str(products), "--users", "2"],
    ):
        try:
            subprocess.run(
                [sys.executable, str(SAMPLE / "manage.py"), *argv],
                env=environment, check=True, capture_output=True, timeout=300,
            )  # fmt: skip
        except BaseException:
            if postgres:
                postgres.stop()
            raise
    port = servers.free_port()
    config = []
    if stats_dir is not None:
        hook = workdir / "gunicorn_hooks.py"
        hook.write_text(WORKER_EXIT_HOOK.format(stats_dir=str(stats_dir)))
        config = ["--config", str(hook)]
    logfile = workdir / "gunicorn.log"
    log = logfile.open("wb")
    gunicorn = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "--chdir", str(SAMPLE), "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
            "--timeout", "60", "--log-level", "warning", *config,
        ],
        env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if http(base + "/api/categories/")[0] == 200:
                break
            if time.monotonic() > deadline or gunicorn.poll() is not None:
                raise RuntimeError(logfile.read_text()[-3000:])
            time.sleep(0.2)
        _running[base] = gunicorn
        yield base
    finally:
        _running.pop(base, None)
        _stop(gunicorn)
        log.close()
        if postgres:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


_running: dict[str, subprocess.Popen] = {}


def _stop(gunicorn: subprocess.Popen) -> None:
    if gunicorn.poll() is None:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        try:
            gunicorn.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(gunicorn.pid, signal.SIGKILL)
            gunicorn.wait(timeout=5)


def stop_sample_api(base: str) -> None:
    """Stop the server at ``base`` now (gracefully: the workers run their exit hook)."""
    _stop(_running[base])


WORKER_EXIT_HOOK = """
import json, os, time


def post_worker_init(worker):  # in each worker: log every Redis error as it happens
    from drf_redis_toolkit import signals

    path = os.path.join({stats_dir!r}, f"{{os.getpid()}}.events")

    def on_error(sender, unreachable, **kwargs):
        with open(path, "a") as out:  # one short line per write: appends do not interleave
            out.write(f"{{time.monotonic():.6f}} {{sender.__name__}} {{int(unreachable)}}\\n")

    worker.drt_on_error = on_error  # a strong reference: signals hold receivers weakly
    signals.redis_error.connect(on_error)


def worker_exit(server, worker):  # runs in the worker process, as it exits
    from drf_redis_toolkit import connection, local_cache

    local = {{"local_" + name: count for name, count in local_cache.stats().items()}}
    with open(os.path.join({stats_dir!r}, f"{{os.getpid()}}.json"), "w") as out:
        json.dump({{**connection.stats(), **local}}, out)
"""


def worker_stats(stats_dir: Path) -> list[dict[str, int]]:
    """The ``connection.stats()`` each worker wrote as it exited (see ``sample_api``)."""
    return [json.loads(path.read_text()) for path in sorted(stats_dir.glob("*.json"))]


def worker_errors(stats_dir: Path) -> list[tuple[float, int, str]]:
    """``(time.monotonic(), worker pid, exception class)`` of every Redis error a worker saw.

    ``time.monotonic()`` is one clock for every process of the machine (Linux's
    ``CLOCK_MONOTONIC``), so these compare with the load driver's timestamps.
    """
    found = []
    for path in sorted(stats_dir.glob("*.events")):
        for line in path.read_text().splitlines():
            moment, name, _unreachable = line.split()
            found.append((float(moment), int(path.stem), name))
    return sorted(found)


def staff_token(base: str) -> str:
    status, body, _, _ = http(
        base + "/api/auth/token/", "POST", {"username": "admin", "password": "admin-pass"}
    )
    assert status == 200, body
    return json.loads(body)["token"]
