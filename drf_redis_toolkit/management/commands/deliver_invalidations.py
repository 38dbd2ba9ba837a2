"""``manage.py deliver_invalidations``: deliver what the outbox and this process hold back."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from drf_redis_toolkit.invalidation import delivery, outbox


class Command(BaseCommand):
    help = (
        "Deliver the invalidations kept in the outbox table during a Redis outage "
        "(normally done by the next request of any process). Exits with an error if "
        "Redis cannot be reached; safe to run any time, and twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            action="append",
            dest="databases",
            help="Only this database alias (repeatable); default: every database.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = options.get("databases") or list(connections)
        total_rows = total_names = 0
        seen: set[outbox.Row] = set()
        while True:  # the outbox is read BATCH rows at a time
            names, rows, _ = outbox.read(aliases)  # batch after batch: no need to drop all
            if not rows or rows <= seen:  # nothing left, or rows that could not be deleted
                break
            seen |= rows
            if not delivery.adopt(names, rows):
                raise CommandError(
                    f"Redis unreachable: {len(rows)} outbox row(s) left for a later delivery"
                )
            total_rows += len(rows)
            total_names += len(names.namespaces | names.keys)
        self.stdout.write(f"Delivered {total_rows} outbox row(s), {total_names} name(s).")
