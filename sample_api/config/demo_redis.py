"""Where the running demo's Redis is, for every other process of the sample API.

``make demo`` (``run_demo.py``) may use a Redis on a port of its own choosing.
It writes the URL and its own PID to ``sample_api/.demo-redis-url`` while it
runs, and removes the file when it stops; the sample's settings read it when
``REDIS_URL`` is not set, so ``python sample_api/manage.py shell`` in another
terminal invalidates the very cache the demo serves from. A file left behind by a
demo that was killed names a dead PID and is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The file, unless ``SHOP_DEMO_REDIS_FILE`` names another (the tests do).
DEFAULT_PATH = Path(__file__).resolve().parent.parent / ".demo-redis-url"


def path() -> Path:
    return Path(os.environ.get("SHOP_DEMO_REDIS_FILE") or DEFAULT_PATH)


def publish(url: str) -> None:
    """Record ``url`` as this process's Redis (written whole, then renamed into place)."""
    target = path()
    scratch = target.with_name(target.name + f".{os.getpid()}.tmp")
    scratch.write_text(f"{url}\n{os.getpid()}\n", encoding="utf-8")
    scratch.replace(target)


def withdraw() -> None:
    """Remove the record, if it is this process's."""
    target = path()
    try:
        lines = target.read_text(encoding="utf-8").split()
    except OSError:
        return
    if lines[1:2] == [str(os.getpid())]:
        target.unlink(missing_ok=True)


def running_demo_url() -> str | None:
    """The URL a running demo published; ``None`` if there is none or its process is gone."""
    try:
        url, pid = path().read_text(encoding="utf-8").split()[:2]
        os.kill(int(pid), 0)  # signal 0: "does this process exist?"
    except ProcessLookupError:
        return None
    except PermissionError:
        return url  # it exists, under another user
    except (OSError, ValueError):
        return None
    return url
