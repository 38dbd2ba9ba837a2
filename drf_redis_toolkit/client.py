"""``redis_client``: a small key/value API on the toolkit's connection, made safe.

Keys are given without the prefix and stored at ``KEY_PREFIX + ":" + key``.
Values are JSON (never pickle, so a value planted in Redis cannot run code).
Every call goes through the shared connection and circuit breaker; while Redis
is unreachable calls raise ``RedisUnavailable`` (``ping()`` answers ``False``).
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis
from django.core.serializers.json import DjangoJSONEncoder

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.connection import guarded, is_cluster
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.scripts import run_script, run_script_direct

#: Sentinel meaning "use CACHE_DEFAULT_TIMEOUT".
DEFAULT_TIMEOUT: Any = object()
#: Popular-product views are kept per UTC day for this many days.
POPULAR_DAYS = 7
_SCAN_BATCH = 500


def dumps(key: str, value: Any) -> bytes:
    """Encode ``value`` as JSON; raise ``TypeError`` naming ``key`` if it can't be.

    Django's ``DjangoJSONEncoder`` is used, so what models hold can be stored as it
    is: ``Decimal``, ``datetime``, ``date``, ``time``, ``timedelta``, ``UUID`` and
    lazy translation strings. JSON has no such types, so they come back as the
    strings that encoder writes (``"19.99"``, ISO 8601, the UUID's hex form).
    """
    try:
        return json.dumps(
            value, separators=(",", ":"), allow_nan=False, cls=DjangoJSONEncoder
        ).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cannot store {key!r}: value of type {type(value).__name__} is not JSON "
            f"serializable ({exc})"
        ) from exc


def loads(raw: bytes | str | None, default: Any = None) -> Any:
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        # Written by something other than this client (e.g. redis-cli SET k hello).
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _resolve_timeout(timeout: Any) -> int | None:
    if timeout is DEFAULT_TIMEOUT:
        return toolkit_settings.CACHE_DEFAULT_TIMEOUT
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return int(timeout)


class RedisClient:
    """A Redis helper API (JSON values, prefix, TTLs) on top of the toolkit's connection."""

    @property
    def client(self) -> Any:
        """The raw redis-py client (``Redis``, ``RedisCluster`` or the factory's)."""
        with guarded() as client:
            return client

    # -- basic operations -------------------------------------------------

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        """Store ``value`` as JSON for ``timeout`` seconds (``None``: no expiry)."""
        payload = dumps(key, value)
        seconds = _resolve_timeout(timeout)
        with guarded() as client:
            if seconds is not None and seconds <= 0:
                client.delete(keyspace.client_key(key))
                return True
            return bool(client.set(keyspace.client_key(key), payload, ex=seconds))

    def get(self, key: str, default: Any = None) -> Any:
        with guarded() as client:
            raw = client.get(keyspace.client_key(key))
        return loads(raw, default)

    def get_or_set(
        self, key: str, compute: Callable[[], Any], timeout: Any = DEFAULT_TIMEOUT
    ) -> Any:
        """Return the cached value of ``key``, or ``compute()`` it and cache it.

        Safe against the read/invalidate race: the generation of the name ``key``
        (bumped by every invalidation of ``key``, see ``INVALIDATION``) is read
        before ``compute()`` runs and again after the value is stored; if it moved,
        the value may predate the invalidation and is deleted at once instead of
        living until its TTL. ``None`` is never cached. While Redis is unreachable
        this is just ``compute()``.
        """
        from drf_redis_toolkit.generations import read_generations

        missing = object()
        try:
            cached = self.get(key, default=missing)
            if cached is not missing:
                return cached
            before = read_generations(key)[key]
        except RedisUnavailable:
            return compute()
        value = compute()
        if value is None:
            return None
        try:
            self.set(key, value, timeout=timeout)
            if read_generations(key)[key] != before:
                self.delete(key)  # invalidated while we computed: don't keep it
        except RedisUnavailable:
            pass
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that exist, in one round trip."""
        names = list(keys)
        if not names:
            return {}
        with guarded() as client:
            # A cluster splits MGET by slot (one round trip per master involved).
            mget = getattr(client, "mget_nonatomic", client.mget)
            raws = mget([keyspace.client_key(k) for k in names])
        return {k: loads(raw) for k, raw in zip(names, raws, strict=True) if raw is not None}

    def set_many(self, mapping: Mapping[str, Any], timeout: Any = DEFAULT_TIMEOUT) -> bool:
        """Store every item of ``mapping`` in one round trip (a pipeline)."""
        payloads = {k: dumps(k, v) for k, v in mapping.items()}
        seconds = _resolve_timeout(timeout)
        if not payloads:
            return True
        with guarded() as client:
            pipe = client.pipeline(transaction=False)
            for key, payload in payloads.items():
                if seconds is not None and seconds <= 0:
                    pipe.delete(keyspace.client_key(key))
                else:
                    pipe.set(keyspace.client_key(key), payload, ex=seconds)
            pipe.execute()
        return True

    def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        with guarded() as client:
            return int(client.delete(*[keyspace.client_key(k) for k in keys]))

    def exists(self, key: str) -> bool:
        with guarded() as client:
            return bool(client.exists(keyspace.client_key(key)))

    def incr(self, key: str, amount: int = 1) -> int:
        with guarded() as client:
            return int(client.incrby(keyspace.client_key(key), amount))

    def expire(self, key: str, seconds: int) -> bool:
        with guarded() as client:
            return bool(client.expire(keyspace.client_key(key), int(seconds)))

    def get_ttl(self, key: str) -> int | None:
        """Seconds left; ``None`` if the key never expires; ``0`` if it does not exist."""
        with guarded() as client:
            ttl = int(client.ttl(keyspace.client_key(key)))
        if ttl == -1:
            return None
        return max(ttl, 0)

    def clear_pattern(self, pattern: str) -> int:
        """Delete the keys under the prefix matching glob ``pattern``; return how many.

        Uses ``SCAN`` (never ``KEYS``) on every master of a cluster and
        ``UNLINK`` in batches, so Redis is never blocked for long.
        """
        match = keyspace.client_key(pattern)
        deleted = 0
        with guarded() as client:
            batch: list[bytes] = []
            for name in client.scan_iter(match=match, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    deleted += int(client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(client.unlink(*batch))
        return deleted

    def ping(self) -> bool:
        """``True`` if Redis answers; ``False`` (quickly) if it doesn't."""
        try:
            with guarded() as client:
                return bool(client.ping())
        except (RedisUnavailable, redis.RedisError):
            return False

    def info(self, section: str | None = None) -> dict[str, Any]:
        """``INFO`` as one dict; on a cluster, numbers are summed over the masters."""
        args = [section] if section else []
        with guarded() as client:
            if is_cluster(client):
                return merge_info(client.info(*args, target_nodes=client.PRIMARIES))
            try:
                return client.info(*args)
            except redis.ResponseError:
                return {}  # a server without INFO (the embedded fakeredis fallback)

    def stats(self) -> dict[str, Any]:
        """Cache statistics: connections, commands, hits, misses, hit rate."""
        info = self.info("stats")
        hits = int(info.get("keyspace_hits", 0))
        misses = int(info.get("keyspace_misses", 0))
        return {
            "total_connections": info.get("total_connections_received"),
            "total_commands": info.get("total_commands_processed"),
            "keyspace_hits": hits,
            "keyspace_misses": misses,
            "hit_rate": (hits / (hits + misses) * 100) if hits + misses else 0.0,
        }

    # -- popular products ---------------------------------------------------

    def track_product_view(self, product_id: int | str) -> int:
        """Count one view of ``product_id`` today; return today's count for it.

        One script on the toolkit's kept connection (as a throttle decision): a
        detail view calls this on every request, cache hits included, and a
        redis-py pipeline cost several times the script's client CPU.
        """
        key = keyspace.popular_products_key(_today())
        with guarded() as client:
            views = run_script_direct(
                "popular_track", client, [key], [str(product_id), (POPULAR_DAYS + 1) * 86400]
            )
        return int(views)

    def get_popular_products(self, limit: int = 10) -> list[tuple[int | str, int]]:
        """``[(product_id, views), ...]`` over the last 7 days, most viewed first."""
        if limit <= 0:
            return []
        today = _today()
        day_keys = [keyspace.popular_products_key(today - n) for n in range(POPULAR_DAYS)]
        scratch = keyspace.popular_products_scratch_key(uuid.uuid4().hex)
        with guarded() as client:
            rows = run_script("popular_products", client, [scratch, *day_keys], [limit])
        result: list[tuple[int | str, int]] = []
        for index in range(0, len(rows), 2):
            member = rows[index].decode() if isinstance(rows[index], bytes) else str(rows[index])
            result.append((int(member) if member.isdigit() else member, int(rows[index + 1])))
        return result


def merge_info(per_node: dict[str, Any]) -> dict[str, Any]:
    """Fold a cluster's ``{node: info}`` answer into one dict: numbers are summed
    (also inside nested sections such as ``db0``), other values come from the first node."""
    merged: dict[str, Any] = {}
    for node_info in per_node.values():
        _add_into(merged, node_info)
    return merged


def _add_into(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add_into(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            previous = total.get(key, 0)
            total[key] = previous + value if isinstance(previous, (int, float)) else value
        else:
            total.setdefault(key, value)


def _today() -> int:
    return datetime.datetime.now(datetime.UTC).toordinal()


redis_client = RedisClient()


# -- helper functions: a product, a user's cart, popular products -----------


def cache_product(product_id: int | str, data: Any, timeout: Any = DEFAULT_TIMEOUT) -> bool:
    return redis_client.set(f"product:{product_id}", data, timeout=timeout)


def get_cached_product(product_id: int | str) -> Any:
    return redis_client.get(f"product:{product_id}")


def cache_user_cart(user_id: int | str, data: Any, timeout: Any = DEFAULT_TIMEOUT) -> bool:
    return redis_client.set(f"cart:user:{user_id}", data, timeout=timeout)


def get_cached_cart(user_id: int | str) -> Any:
    return redis_client.get(f"cart:user:{user_id}")


def invalidate_user_cache(user_id: int | str) -> int:
    """Delete everything cached about one user: cart, session data, ``*:user:<id>:*``."""
    removed = redis_client.delete(
        f"cart:user:{user_id}", f"session:user:{user_id}", f"user:{user_id}", f"user:{user_id}:cart"
    )
    removed += redis_client.clear_pattern(f"*:user:{keyspace.escape_glob(str(user_id))}:*")
    return removed


def track_product_view(product_id: int | str) -> int:
    return redis_client.track_product_view(product_id)


def get_popular_products(limit: int = 10) -> list[tuple[int | str, int]]:
    return redis_client.get_popular_products(limit)
