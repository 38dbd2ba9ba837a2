"""``manage.py cache_stats``: hit rate, keyspace and memory, as text or JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drf_redis_toolkit.cache_stats import namespace_stats
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable


def collect_stats() -> dict[str, Any]:
    """Redis hit-rate figures plus keyspace and memory, and the toolkit's own counters."""
    stats: dict[str, Any] = dict(redis_client.stats())
    memory = redis_client.info("memory")
    stats["used_memory"] = memory.get("used_memory")
    stats["used_memory_human"] = memory.get("used_memory_human")
    stats["maxmemory_policy"] = memory.get("maxmemory_policy")
    keyspace = redis_client.info("keyspace")
    stats["keyspace"] = {
        db: {k: v for k, v in entry.items() if k in ("keys", "expires")}
        for db, entry in keyspace.items()
        if isinstance(entry, dict)
    }
    stats["namespaces"] = namespace_stats()
    return stats


class Command(BaseCommand):
    help = "Show Redis cache statistics: hit rate, keyspace and memory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            stats = collect_stats()
        except RedisUnavailable as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(stats, default=str, sort_keys=True))
            return
        self.stdout.write(f"Hit rate:        {stats['hit_rate']:.1f}%")
        self.stdout.write(f"Keyspace hits:   {stats['keyspace_hits']}")
        self.stdout.write(f"Keyspace misses: {stats['keyspace_misses']}")
        self.stdout.write(f"Commands:        {stats['total_commands']}")
        self.stdout.write(f"Connections:     {stats['total_connections']}")
        self.stdout.write(f"Memory used:     {stats['used_memory_human']}")
        self.stdout.write(f"Eviction policy: {stats['maxmemory_policy']}")
        for db, entry in sorted(stats["keyspace"].items()):
            self.stdout.write(f"Keyspace {db}:     {entry}")
        for name, counts in sorted(stats.get("namespaces", {}).items()):
            self.stdout.write(f"Namespace {name}: {counts}")
