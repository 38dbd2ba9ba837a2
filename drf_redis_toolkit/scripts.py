"""Lua scripts shipped as package files, loaded once and called by SHA.

``Script`` objects come from redis-py: the SHA is computed locally, ``EVALSHA``
is sent, and a ``NOSCRIPT`` answer (a restarted or new server) reloads the
script transparently. Each script file opens with a comment listing its
``KEYS``, ``ARGV`` and return value.

A line ``--@function NAME`` in a script is replaced by ``lua/NAME.lua`` wrapped
as ``local function NAME(KEYS, ARGV)``: a script can run another one's logic on
its own keys and arguments without a copy of it (Redis has no ``include``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError

_FUNCTION_RE = re.compile(rb"^--@function (\w+)$", re.MULTILINE)


def script_source(name: str) -> bytes:
    """The text of ``lua/<name>.lua``, its ``--@function`` lines expanded."""
    text = files("drf_redis_toolkit").joinpath("lua", f"{name}.lua").read_bytes()
    return _FUNCTION_RE.sub(
        lambda match: (
            b"local function %s(KEYS, ARGV)\n%s\nend" % (match[1], script_source(match[1].decode()))
        ),
        text,
    )


@cache
def get_script(name: str) -> Script:
    """Return the ``Script`` for ``drf_redis_toolkit/lua/<name>.lua``."""
    source = script_source(name)
    # Passing bytes lets redis-py hash it without a registered client; the
    # caller supplies ``client=`` on every call.
    return Script(None, source)  # type: ignore[arg-type]


def run_script(name: str, client: Any, keys: list[Any], args: list[Any]) -> Any:
    """``EVALSHA`` the script on ``client``, loading it first if the server lacks it."""
    script = get_script(name)
    try:
        return client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # A restarted or new server: load it (on the node that owns the keys) and retry.
        return script(keys=keys, args=args, client=client)
