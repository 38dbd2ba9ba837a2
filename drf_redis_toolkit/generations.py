"""Namespace generations: O(1) invalidation of everything cached under a name.

A cached entry records (in its key) the generation of its namespace read
*before* the data was computed. Invalidation moves the generation forward, so
every older entry becomes unreachable at once, without a key scan, and an
entry computed from data read before an invalidation can never be served after
it. Generations come from the Redis server's clock when a key is missing, so a
number is never reused, even after eviction.

On a standalone server every call is one script, one round trip. In a cluster
each namespace's generation lives in its own slot, so the script runs once per
namespace: never a cross-slot command.
"""

from __future__ import annotations

from collections.abc import Iterable

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.connection import guarded, is_cluster
from drf_redis_toolkit.local_cache import forget
from drf_redis_toolkit.scripts import get_script


def _run(script_name: str, namespaces: Iterable[str]) -> dict[str, int]:
    names = list(dict.fromkeys(namespaces))
    if not names:
        return {}
    script = get_script(script_name)
    gen_keys = [keyspace.generation_key(name) for name in names]
    with guarded() as client:
        if is_cluster(client):
            values = [script(keys=[key], args=[], client=client)[0] for key in gen_keys]
        else:
            values = script(keys=gen_keys, args=[], client=client)
    return {name: int(value) for name, value in zip(names, values, strict=True)}


def read_generations(*namespaces: str) -> dict[str, int]:
    """Return ``{namespace: generation}``, creating missing generations."""
    return _run("generation_read", namespaces)


def bump_generations(*namespaces: str) -> dict[str, int]:
    """Invalidate every entry of each namespace; return the new generations.

    Raises ``RedisUnavailable`` if Redis cannot be reached: the caller decides
    what an invalidation that could not be delivered means.
    """
    bumped = _run("generation_bump", namespaces)
    # With LOCAL_CACHE, this process sees its own bump at once (its push follows).
    forget(*(keyspace.generation_key(name) for name in bumped))
    return bumped
