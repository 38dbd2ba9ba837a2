"""Every Redis key the toolkit writes is built here, and nowhere else.

Keys start with ``KEY_PREFIX + ":"``. Parts that come from users (IPs, query
strings, paths, identifiers) are hashed, so a key's length is bounded and no
input can forge another key's shape, glob characters or Redis Cluster hash tag.
Keys that one Lua script touches together share a ``{hash tag}`` so they live in
one cluster slot.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache, lru_cache

from drf_redis_toolkit.conf import toolkit_settings

_SAFE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_GLOB_RE = re.compile(r"([*?\[\]\\])")


def prefix() -> str:
    return toolkit_settings.KEY_PREFIX


def digest(value: str | bytes, size: int = 16) -> str:
    """Return a hex BLAKE2b digest of ``value`` (``2 * size`` characters)."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return hashlib.blake2b(data, digest_size=size).hexdigest()


def safe_part(value: str) -> str:
    """Return ``value`` itself when it is short and plain, else its digest.

    Keeps developer-chosen names (scopes, namespaces) readable in ``redis-cli``
    while anything odd (braces, globs, colons, unicode, length) is hashed.
    """
    return value if _SAFE_RE.match(value) else "h" + digest(value, 8)


def client_key(key: str) -> str:
    """The stored name of a ``redis_client`` key: the prefix, then the key verbatim."""
    return f"{prefix()}:{key}"


def strip_prefix(stored: str | bytes) -> str:
    text = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else stored
    head = prefix() + ":"
    return text[len(head) :] if text.startswith(head) else text


def escape_glob(value: str) -> str:
    """Escape ``*?[]\\`` so ``value`` matches only itself inside a SCAN pattern."""
    return _GLOB_RE.sub(r"\\\1", value)


def throttle_key(kind: str, scope: str, ident: str) -> str:
    """The key holding one client's history for one throttle scope.

    ``kind`` tells the log (``"sw"``) from the counter (``"swc"``) variant. Only
    the identity's digest sits in the hash tag: every key of one client, whatever
    the scope and algorithm, shares a cluster slot, so the anon, user and scoped
    throttles of one request are decided by one script call on a cluster too.
    """
    return _throttle_key(prefix(), kind, scope, ident)


@lru_cache(maxsize=8192)
def _throttle_key(key_prefix: str, kind: str, scope: str, ident: str) -> str:
    return f"{key_prefix}:{kind}:{safe_part(scope)}:{{{digest(ident)}}}"


def throttle_identity(key: str) -> str:
    """The identity digest in a ``throttle_key()`` (its hash tag): names a client, not who."""
    return key[key.rfind("{") + 1 : -1]


def popular_products_key(day: int) -> str:
    """One day's product-view sorted set; all days share the ``{pv}`` hash tag."""
    return f"{prefix()}:popular:{{pv}}:{day}"


def popular_products_scratch_key(token: str) -> str:
    return f"{prefix()}:popular:{{pv}}:tmp:{token}"


def namespace_tag(namespace: str) -> str:
    """The hash tag shared by a namespace's generation key and its entries."""
    return "{" + safe_part(namespace) + "}"


def generation_key(namespace: str) -> str:
    """The key holding a namespace's generation counter."""
    return f"{prefix()}:gen:{namespace_tag(namespace)}"


def generation_pattern() -> str:
    """A SCAN pattern matching every namespace generation key (to forget them all)."""
    return f"{escape_glob(prefix())}:gen:*"


def cache_entry_key(namespace: str, material: str) -> str:
    """The key of one cached response: its namespace's tag, then a digest of ``material``.

    ``material`` is everything that tells this response apart inside its
    namespace (path, query, format, language, user...); it is user-supplied, so
    only its digest goes into the key. Sharing the generation key's hash tag lets
    one Lua script read the generation and the entry in one cluster slot.
    """
    return _cache_bases(prefix(), namespace)[1] + digest(material)


def cache_keys(namespace: str, material: str) -> tuple[str, str, str]:
    """``(generation, entry, lock)`` keys of one cached response: one hash tag, one slot."""
    gen, entry, lock = _cache_bases(prefix(), namespace)
    tail = digest(material)
    return gen, entry + tail, lock + tail


@lru_cache(maxsize=4096)
def _cache_bases(key_prefix: str, namespace: str) -> tuple[str, str, str]:
    # The same shapes as generation_key(), cache_entry_key() and cache_lock_key().
    tag = namespace_tag(namespace)
    return f"{key_prefix}:gen:{tag}", f"{key_prefix}:c:{tag}:", f"{key_prefix}:cl:{tag}:"


def tracked_prefixes() -> tuple[str, str]:
    """The prefixes of every generation and entry key (what ``LOCAL_CACHE`` subscribes to).

    Lock keys (``:cl:``) are left out: ``:c:`` does not match them.
    """
    return f"{prefix()}:gen:", f"{prefix()}:c:"


@cache
def _hash_tag_for_slot(slot: int) -> str:
    """The smallest number whose text, as a hash tag, puts a key in cluster slot ``slot``
    (a search: about 16 000 CRC16 computations on average, done once per slot)."""
    from redis.crc import key_slot

    for number in range(2_000_000):
        tag = str(number)
        if key_slot(tag.encode()) == slot:
            return tag
    raise ValueError(f"no hash tag found for slot {slot}")  # pragma: no cover


def slot_probe_key(slot: int) -> str:
    """A key of cluster slot ``slot`` that the toolkit never writes.

    ``LOCAL_CACHE``'s heartbeat reads it on a master's tracking connection: a node
    that no longer masters the slot answers ``MOVED`` (docs/local-cache.md, Cluster).
    """
    return f"{prefix()}:probe:{{{_hash_tag_for_slot(slot)}}}"


def cache_lock_key(entry_key: str) -> str:
    """The single-flight lock of one cached response (same slot as the entry)."""
    head = f"{prefix()}:c:"
    return f"{prefix()}:cl:{entry_key[len(head) :]}"


def cache_stats_key() -> str:
    """The hash of per-namespace hit/miss counters (fields ``h:<ns>`` and ``m:<ns>``)."""
    return f"{prefix()}:cstats"
