"""Run the sample API for trying things out: pick a Redis, migrate, load demo data once, serve.

Redis, in order of preference:

1. ``REDIS_URL`` from the environment, if it answers;
2. a Redis already answering on 127.0.0.1:6379 (a ``redis-server`` or a
   container: no binary is needed here);
3. a ``redis-server`` started here on a free port (and stopped on exit, by PID);
4. an embedded fakeredis server (Lua included) in this process, with a loud
   warning: it is for trying the API out, not for measuring or production.

Whichever it is, the demo prints the ``export REDIS_URL=...`` line for other
terminals and records the URL in ``sample_api/.demo-redis-url`` until it stops,
where the sample's settings find it: ``python sample_api/manage.py shell``
reaches the same Redis, so what it saves is invalidated in the demo's cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from config import demo_redis  # noqa: E402  (the sample's own package, found through HERE)

HOST = "127.0.0.1"
#: The Redis a developer most likely runs already (a package or a container).
DEFAULT_URL = "redis://127.0.0.1:6379/0"
PORT = int(os.environ.get("PORT", "8000"))
SEED_STAMP = HERE / ".seeded"
WARNING = """
======================================================================
 WARNING: no redis-server found. Using an EMBEDDED fakeredis server.
 It is for trying the sample API out only: single process, in memory,
 not fast, not durable. Install Redis (apt-get install redis-server)
 or set REDIS_URL for anything else.
======================================================================
"""


def answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, ValueError):
        return False


def choose_redis(cleanups: list) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        if answers(url):
            print(f"demo: using REDIS_URL={url}")
            return url
        print(f"demo: REDIS_URL={url} does not answer; looking for another Redis", file=sys.stderr)
    if answers(DEFAULT_URL):
        print(f"demo: using the Redis already answering at {DEFAULT_URL}")
        return DEFAULT_URL
    if shutil.which("redis-server"):
        from tests.servers import start_redis

        server = start_redis()
        cleanups.append(server.stop)
        print(f"demo: started redis-server (pid {server.pid}) at {server.url}")
        return server.url
    print(WARNING, file=sys.stderr)
    from fakeredis import TcpFakeServer

    from tests.servers import free_port

    port = free_port()
    embedded = TcpFakeServer((HOST, port), server_type="redis")
    thread = threading.Thread(target=embedded.serve_forever, daemon=True)
    thread.start()
    cleanups.append(embedded.shutdown)
    url = f"redis://{HOST}:{port}/0"
    preload_scripts(url)
    return url


def share_redis_url(url: str, cleanups: list) -> None:
    """Tell other terminals where this demo's Redis is, and let ``manage.py`` find it."""
    demo_redis.publish(url)
    cleanups.append(demo_redis.withdraw)
    print(
        f"demo: `python sample_api/manage.py ...` (shell, seed_demo) uses this Redis while the\n"
        f"      demo runs (recorded in {demo_redis.path()}). Anything else, run first:\n"
        f"    export REDIS_URL={url}"
    )


def preload_scripts(url: str) -> None:
    """Load the toolkit's Lua scripts into the embedded server up front.

    The embedded server drops a connection after any error reply, so the usual
    ``NOSCRIPT`` -> ``SCRIPT LOAD`` round would look like an outage to the toolkit.
    """
    from importlib.resources import files

    client = redis.Redis.from_url(url)
    try:
        for script in files("drf_redis_toolkit").joinpath("lua").iterdir():
            if script.name.endswith(".lua"):
                client.script_load(script.read_bytes())
    finally:
        client.close()


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(HERE / "manage.py"), *args], check=True, env=env)


def has_command(name: str, env: dict[str, str]) -> bool:
    listing = subprocess.run(
        [sys.executable, str(HERE / "manage.py"), "help", "--commands"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    return name in listing


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does: cleanups run


def main() -> int:
    cleanups: list = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        url = choose_redis(cleanups)
        share_redis_url(url, cleanups)
        env = {**os.environ, "REDIS_URL": url}
        manage("migrate", "--noinput", "-v", "0", env=env)
        if not SEED_STAMP.exists() and has_command("seed_demo", env):
            manage("seed_demo", "--products", "1000", "--users", "20", env=env)
            SEED_STAMP.write_text("seeded\n")
        print(f"demo: serving the sample API on http://{HOST}:{PORT}/api/ (Ctrl-C stops)")
        manage("runserver", f"{HOST}:{PORT}", "--noreload", env=env)
    except KeyboardInterrupt:
        pass
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
