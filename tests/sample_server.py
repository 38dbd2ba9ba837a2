"""Serve the sample API under gunicorn on loopback for end-to-end tests (stopped by PID)."""

from __future__ import annotations

import json
import os
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


def http(
    url: str,
    method: str = "GET",
    body: dict | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
):
    """One request: ``(status, body bytes, headers, seconds)``; HTTP errors are answers too."""
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
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return (
                response.status,
                response.read(),
                dict(response.headers),
                time.monotonic() - started,
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers), time.monotonic() - started


def sample_environment(
    redis_url: str, workdir: Path, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the sample's processes (``manage.py``, gunicorn) for ``workdir``."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
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
) -> Iterator[str]:
    """Migrate and seed a fresh SQLite database, serve the API, yield its base URL.

    ``workdir`` (created empty by the caller) holds the database: other processes
    of a test can then use it through ``sample_environment()``.
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="drt-sample-"))
    environment = sample_environment(redis_url, workdir, env)
    for argv in (
        ["migrate", "--noinput", "-v", "0"],
        ["seed_demo", "--products", str(products), "--users", "2"],
    ):
        subprocess.run(
            [sys.executable, str(SAMPLE / "manage.py"), *argv],
            env=environment, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    port = servers.free_port()
    logfile = workdir / "gunicorn.log"
    log = logfile.open("wb")
    gunicorn = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            "--chdir", str(SAMPLE), "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
            "--timeout", "60", "--log-level", "warning",
        ],
        env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http(base + "/api/categories/")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or gunicorn.poll() is not None:
                raise RuntimeError(logfile.read_text()[-3000:])
            time.sleep(0.2)
        yield base
    finally:
        if gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            try:
                gunicorn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(gunicorn.pid, signal.SIGKILL)
                gunicorn.wait(timeout=5)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def staff_token(base: str) -> str:
    status, body, _, _ = http(
        base + "/api/auth/token/", "POST", {"username": "admin", "password": "admin-pass"}
    )
    assert status == 200, body
    return json.loads(body)["token"]
