"""``manage.py throttle_status --scope user --ident user:42 [--reset]``: inspect or reset a client.

The identity is what the throttle's ``get_cache_key()`` returns: ``user:<pk>``
or ``ip:<address>`` for the built-in classes.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.settings import api_settings

from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.exceptions import RedisUnavailable
from drf_redis_toolkit.rates import parse_rate


class Command(BaseCommand):
    help = "Show how much of a throttle scope's limits one client has used, or reset it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scope", required=True, help="throttle scope, e.g. user, anon")
        parser.add_argument("--ident", required=True, help="identity, e.g. user:42 or ip:1.2.3.4")
        parser.add_argument("--rate", help="rate to report against (default: the scope's)")
        parser.add_argument(
            "--counter", action="store_true", help="the SlidingWindowCounter variants' data"
        )
        parser.add_argument("--reset", action="store_true", help="forget the client's history")

    def handle(self, *args: Any, **options: Any) -> None:
        scope, ident = options["scope"], options["ident"]
        kind = ratelimit.COUNTER if options["counter"] else ratelimit.LOG
        try:
            if options["reset"]:
                deleted = ratelimit.reset(kind, scope, ident)
                self.stdout.write(f"Reset {scope} for {ident} ({deleted} key deleted)")
                return
            rate = options["rate"] or (api_settings.DEFAULT_THROTTLE_RATES or {}).get(scope)
            if not rate:
                raise CommandError(f"no rate for scope {scope!r}; pass --rate")
            limits = parse_rate(rate, setting=f"throttle scope {scope!r}")
            decision = ratelimit.decide(kind, scope, ident, limits, cost=0, record=False)
        except RedisUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{scope} for {ident} ({rate}):")
        for state in decision.limits:
            used = state.limit - state.remaining
            self.stdout.write(
                f"  {state.limit}/{state.window}s: used {used}, remaining {state.remaining}, "
                f"oldest leaves in {state.reset:.3f}s"
            )
