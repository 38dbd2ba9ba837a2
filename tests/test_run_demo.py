"""``make demo`` (``sample_api/run_demo.py``): which Redis it uses, and that ``manage.py`` finds it.

A save in ``python sample_api/manage.py shell`` must be invalidated in the cache
the demo serves from, so the shell must talk to the demo's Redis whichever one
the demo picked: a real server on 6379 (with or without a ``redis-server``
binary here, e.g. Redis in a container), one the demo started on a free port,
or the embedded one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import servers

pytestmark = pytest.mark.real_redis

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_api"


def _load_run_demo():
    spec = importlib.util.spec_from_file_location("run_demo", SAMPLE / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_demo(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("SHOP_DEMO_REDIS_FILE", str(tmp_path / "demo-redis-url"))
    return _load_run_demo()


def _nothing_listening() -> str:
    return f"redis://127.0.0.1:{servers.free_port()}/0"


def _stop(cleanups):
    for cleanup in reversed(cleanups):
        cleanup()


def test_a_redis_already_on_the_default_port_is_used_without_a_redis_server_binary(
    run_demo, redis_server, monkeypatch
):
    """Redis in a container: nothing to start here, and nothing embedded either."""
    monkeypatch.setattr(run_demo, "DEFAULT_URL", redis_server.url)  # stands for :6379
    monkeypatch.setattr(run_demo.shutil, "which", lambda name: None)
    cleanups: list = []
    assert run_demo.choose_redis(cleanups) == redis_server.url
    assert cleanups == []  # it started nothing


def test_with_nothing_answering_it_starts_a_redis_server_and_stops_it(run_demo, monkeypatch):
    if servers.redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    monkeypatch.setattr(run_demo, "DEFAULT_URL", _nothing_listening())
    cleanups: list = []
    url = run_demo.choose_redis(cleanups)
    try:
        assert url != run_demo.DEFAULT_URL and run_demo.answers(url)
    finally:
        _stop(cleanups)
    assert not run_demo.answers(url)


def test_without_a_binary_or_a_server_it_embeds_one(run_demo, monkeypatch, capsys):
    monkeypatch.setattr(run_demo, "DEFAULT_URL", _nothing_listening())
    monkeypatch.setattr(run_demo.shutil, "which", lambda name: None)
    cleanups: list = []
    url = run_demo.choose_redis(cleanups)
    try:
        assert run_demo.answers(url)
        assert "EMBEDDED fakeredis" in capsys.readouterr().err
    finally:
        _stop(cleanups)


def _sample_manage_py_redis(code: str, env_file: Path) -> str:
    """Run ``code`` in ``python sample_api/manage.py shell``, as another terminal would."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "REDIS_", "PYTHONPATH"))
    }
    env["SHOP_DEMO_REDIS_FILE"] = str(env_file)
    done = subprocess.run(
        [sys.executable, str(SAMPLE / "manage.py"), "shell", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.rsplit("\n@@", 1)[-1]


def test_a_second_process_on_the_sample_settings_reaches_the_demos_redis(
    run_demo, redis_server, tmp_path, capsys
):
    """What ``manage.py shell`` writes is in the Redis the demo serves from, not on :6379."""
    record = tmp_path / "demo-redis-url"
    # The demo's Redis is on a port of its own (as when it starts one).
    cleanups: list = []
    run_demo.share_redis_url(redis_server.url, cleanups)
    assert f"export REDIS_URL={redis_server.url}" in capsys.readouterr().out
    marker = f"demo-marker-{uuid.uuid4().hex}"
    try:
        seen = _sample_manage_py_redis(
            "import sys; from drf_redis_toolkit.client import redis_client; "
            f"redis_client.client.set({marker!r}, 'from-the-shell'); "
            "from drf_redis_toolkit.conf import toolkit_settings; "
            "sys.stdout.write('\\n@@' + toolkit_settings.REDIS_URL)",
            record,
        )
        assert seen == redis_server.url
        assert redis_server.client().get(marker) == b"from-the-shell"
    finally:
        redis_server.client().delete(marker)
        _stop(cleanups)
    assert not record.exists()  # withdrawn when the demo stops


def test_a_record_left_by_a_killed_demo_is_ignored(monkeypatch, tmp_path):
    from config import demo_redis  # the sample's package (on sys.path in the test settings)

    record = tmp_path / "demo-redis-url"
    monkeypatch.setenv("SHOP_DEMO_REDIS_FILE", str(record))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    record.write_text(f"redis://127.0.0.1:1/0\n{gone}\n")
    assert demo_redis.running_demo_url() is None
    record.write_text(f"redis://127.0.0.1:2/0\n{os.getpid()}\n")
    assert demo_redis.running_demo_url() == "redis://127.0.0.1:2/0"


def test_redis_errors_do_not_escape_the_probe(run_demo):
    assert run_demo.answers(_nothing_listening()) is False
    assert run_demo.answers("not-a-url") is False
