"""``manage.py clear_cache --pattern "product:*"``: delete the toolkit's keys by pattern.

django-extensions ships a ``clear_cache`` command too (it clears Django's
``CACHES``); whichever app comes first in ``INSTALLED_APPS`` wins the name. The
same command is always reachable as ``drt_clear_cache``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.exceptions import RedisUnavailable


class Command(BaseCommand):
    help = (
        "Delete keys under the toolkit's KEY_PREFIX matching a glob pattern (SCAN, never KEYS). "
        "Also available as drt_clear_cache."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--pattern", type=str, help='Glob pattern without the prefix, e.g. "product:*"'
        )

    def handle(self, *args: Any, **options: Any) -> None:
        pattern = options.get("pattern")
        if not pattern:
            # Exit non-zero: a script that forgot the pattern must not believe it cleared.
            raise CommandError(
                "Please provide --pattern argument (e.g. --pattern "
                '"product:*"); nothing was cleared.'
            )
        try:
            count = redis_client.clear_pattern(pattern)
        except RedisUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Cleared {count} keys matching pattern: {pattern}")
