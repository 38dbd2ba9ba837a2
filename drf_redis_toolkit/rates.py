"""Parse rate strings such as ``"100/hour"``, ``"5/10s"`` or ``"10/s,1000/day"``.

Unlike DRF, which reads only the first letter of the unit (so ``"100/month"``
silently means per minute), an unknown unit is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from django.core.exceptions import ImproperlyConfigured

UNIT_SECONDS: dict[str, int] = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}

_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([A-Za-z]+)\s*$")
#: The longest window any limit may ask for: a year (keeps scores and TTLs sane).
MAX_WINDOW_SECONDS = 366 * 86400
#: Requests per window above this are refused at parse time (the log would be huge).
MAX_LIMIT = 10_000_000


@dataclass(frozen=True, order=True)
class Limit:
    """``limit`` requests per ``window`` seconds."""

    limit: int
    window: int

    @property
    def window_ms(self) -> int:
        return self.window * 1000

    def __str__(self) -> str:
        return f"{self.limit}/{self.window}s"


def parse_rate(rate: object, *, setting: str = "rate") -> tuple[Limit, ...]:
    """Return the limits of ``rate``; raise ``ImproperlyConfigured`` naming ``setting``.

    Several limits joined by commas are returned sorted by window, with
    duplicates removed. ``None`` is not accepted here: callers decide what a
    missing rate means.
    """
    if not isinstance(rate, str):
        raise ImproperlyConfigured(f"{setting}: rate {rate!r} must be a string like '100/hour'")
    return _parse(rate, setting)


@lru_cache(maxsize=256)
def _parse(rate: str, setting: str) -> tuple[Limit, ...]:
    limits = set()
    parts = rate.split(",")
    for part in parts:
        match = _LIMIT_RE.match(part)
        if not match:
            raise ImproperlyConfigured(
                f"{setting}: malformed rate {rate!r}; expected '<n>/<unit>' or '<n>/<k><unit>' "
                f"with unit one of s, sec, second, m, min, minute, h, hour, d, day"
            )
        count, multiplier, unit = match.groups()
        seconds = UNIT_SECONDS.get(unit.lower())
        if seconds is None:
            raise ImproperlyConfigured(
                f"{setting}: unknown unit {unit!r} in rate {rate!r}; "
                f"use one of {', '.join(UNIT_SECONDS)}"
            )
        k = int(multiplier) if multiplier else 1
        window = k * seconds
        limit = int(count)
        if k < 1 or window > MAX_WINDOW_SECONDS:
            raise ImproperlyConfigured(
                f"{setting}: window of rate {rate!r} must be between 1 second and 366 days"
            )
        if limit < 1 or limit > MAX_LIMIT:
            raise ImproperlyConfigured(
                f"{setting}: count in rate {rate!r} must be between 1 and {MAX_LIMIT}"
            )
        limits.add(Limit(limit, window))
    return tuple(sorted(limits, key=lambda lim: (lim.window, lim.limit)))
