"""What the load test checks, as plain functions (unit-tested in ``tests/test_load_checks.py``).

The locustfile records; these decide. Every decision here is conservative: a
request's server-side moment is only known to lie between the moment the
client sent it and the moment the answer arrived, so a violation is reported
only when it holds for *every* possible placement inside those intervals. Slow
or jittery responses can hide a violation; they can never invent one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from drf_redis_toolkit.rates import parse_rate as toolkit_parse_rate


def parse_rate(rate: str) -> list[tuple[int, int]]:
    """``"20/s,600/min"`` -> ``[(20, 1), (600, 60)]`` (limit, window in seconds).

    The toolkit's own parser (DRF's ``"20/s"`` parses the same way); a malformed
    rate raises ``ValueError``.
    """
    try:
        limits = toolkit_parse_rate(rate, setting="load test rate")
    except ImproperlyConfigured as exc:
        raise ValueError(str(exc)) from exc
    return [(limit.limit, limit.window) for limit in limits]


# -- over-admission ----------------------------------------------------------------


@dataclass
class OverAdmission:
    limit: int
    window: int
    admitted: int  # admitted requests in the log
    worst: int  # most admitted requests certainly decided inside one window
    excess: int  # max(0, worst - limit): 0 means the limit held
    violating_windows: int  # start points whose window certainly held more than the limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "window_s": self.window,
            "admitted": self.admitted,
            "worst_window": self.worst,
            "excess": self.excess,
            "violating_windows": self.violating_windows,
        }


def certain_counts(
    intervals: Iterable[tuple[float, float]], window: float
) -> list[tuple[float, int]]:
    """For each admitted request, how many were certainly decided in the window it opens.

    ``intervals`` are the ``(sent, answered)`` times of the admitted requests on
    one clock. A set of requests was certainly decided inside one window when
    its latest answer came less than ``window`` after its earliest send; anchoring
    a window at every send time finds the largest such sets. Returns
    ``[(send time, count)]`` in send order.
    """
    spans = sorted((float(s), float(e)) for s, e in intervals)
    counts = []
    for i, (anchor, _) in enumerate(spans):
        horizon = anchor + window
        count = 0
        for start, end in spans[i:]:
            if start >= horizon:
                break
            if end < horizon:
                count += 1
        counts.append((anchor, count))
    return counts


def over_admission(
    intervals: Iterable[tuple[float, float]], limit: int, window: float
) -> OverAdmission:
    """How far the admitted requests went beyond ``limit`` per ``window`` seconds."""
    counts = [n for _, n in certain_counts(intervals, window)]
    worst = max(counts, default=0)
    violating = sum(1 for n in counts if n > limit)
    return OverAdmission(limit, int(window), len(counts), worst, max(0, worst - limit), violating)


def admitted_per_window(
    intervals: Iterable[tuple[float, float]], window: float, step: float, until: float
) -> list[tuple[float, int]]:
    """``[(t, requests answered in (t - window, t])]`` every ``step`` seconds (for plots)."""
    ends = sorted(e for _, e in intervals)
    points = []
    t = 0.0
    lo = 0
    hi = 0
    while t <= until:
        while hi < len(ends) and ends[hi] <= t:
            hi += 1
        while lo < hi and ends[lo] <= t - window:
            lo += 1
        points.append((round(t, 3), hi - lo))
        t += step
    return points


# -- rate-limit headers ------------------------------------------------------------


def policy_scopes(header: str | None) -> set[str]:
    """Scopes named by a ``RateLimit-Policy`` header (``"user-1s";q=20;w=1, ...``)."""
    if not header:
        return set()
    return {name.rsplit("-", 1)[0] for name in re.findall(r'"([^"]+)"', header)}


def parse_ratelimit(header: str | None) -> tuple[str, int, int] | None:
    """``"user-1s";r=0;t=1`` -> ``("user", 0, 1)``; ``None`` if absent or malformed."""
    if not header:
        return None
    match = re.match(r'^\s*"([^"]+)"\s*;\s*r=(\d+)\s*;\s*t=(\d+)\s*$', header)
    if not match:
        return None
    return match.group(1).rsplit("-", 1)[0], int(match.group(2)), int(match.group(3))


def _int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def rate_limit_header_problems(
    status: int, headers: Any, limits: Sequence[tuple[int, int]], legacy: bool = True
) -> list[tuple[str, str]]:
    """What is wrong with one throttled response's headers: ``[(violation name, detail)]``.

    ``headers`` is anything with a case-insensitive ``get``. ``limits`` are the
    scope's ``(limit, window)`` pairs. With ``legacy`` (the toolkit's
    ``X-RateLimit-*``) their values are checked against the limits; a 429 must
    always carry a whole, positive ``Retry-After`` no longer than the window.
    """
    problems: list[tuple[str, str]] = []
    windows = dict(limits)  # limit -> window (limits of one scope are distinct enough)
    if status == 429:
        retry = _int(headers.get("Retry-After"))
        if retry is None or retry < 1:
            problems.append(("missing-retry-after", f"Retry-After={headers.get('Retry-After')!r}"))
        elif retry > max(w for _, w in limits) + 1:
            problems.append(("bad-retry-after", f"Retry-After={retry} beyond every window"))
    if not legacy:
        return problems
    limit = _int(headers.get("X-RateLimit-Limit"))
    remaining = _int(headers.get("X-RateLimit-Remaining"))
    reset = _int(headers.get("X-RateLimit-Reset"))
    raw = {k: headers.get(k) for k in ("X-RateLimit-Limit", "X-RateLimit-Remaining")}
    if limit is None or remaining is None or reset is None:
        problems.append(("bad-ratelimit-headers", f"missing or malformed X-RateLimit-*: {raw}"))
        return problems
    if limit not in windows:
        problems.append(
            ("bad-ratelimit-headers", f"X-RateLimit-Limit={limit} is none of {list(limits)}")
        )
        return problems
    window = windows[limit]
    if status == 429 and remaining != 0:
        problems.append(("bad-ratelimit-headers", f"429 with X-RateLimit-Remaining={remaining}"))
    if status != 429 and not 0 <= remaining < limit:
        problems.append(
            ("bad-ratelimit-headers", f"admitted with X-RateLimit-Remaining={remaining}/{limit}")
        )
    if not 0 <= reset <= window:
        problems.append(("bad-ratelimit-headers", f"X-RateLimit-Reset={reset} outside 0..{window}"))
    if status == 429:
        retry = _int(headers.get("Retry-After"))
        if retry is not None and retry < reset:
            problems.append(
                ("bad-ratelimit-headers", f"Retry-After={retry} earlier than Reset={reset}")
            )
        parsed = parse_ratelimit(headers.get("RateLimit"))
        if parsed is None or parsed[1] != 0:
            problems.append(("bad-ratelimit-headers", f"RateLimit={headers.get('RateLimit')!r}"))
        elif retry is not None and retry < parsed[2]:
            problems.append(
                (
                    "bad-ratelimit-headers",
                    f"Retry-After={retry} earlier than RateLimit t={parsed[2]}",
                )
            )
    return problems


# -- prices a read may show after a staff update -------------------------------------


def as_price(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None


@dataclass
class Update:
    price: Decimal
    started: float
    acked: float | None = None  # when the 200 arrived
    failed: bool = False  # no acknowledgement: it may or may not have committed


@dataclass
class PriceLedger:
    """Staff price updates as the load test observed them, shared by every simulated user.

    Updates of one product are serialized by ``begin()`` (one in flight at a
    time), so the order of acknowledgements is the order of commits. A read
    that *started* after an update was acknowledged must show that update's
    price, or the price of a later update that had started before the read
    ended; anything else is stale.
    """

    keep: int = 16
    updates: dict[int, list[Update]] = field(default_factory=dict)
    busy: set[int] = field(default_factory=set)
    acked_order: list[int] = field(default_factory=list)

    def begin(self, product_id: int, price: Decimal, now: float) -> Update | None:
        """Register an update about to be sent; ``None`` if one is already in flight."""
        if product_id in self.busy:
            return None
        self.busy.add(product_id)
        update = Update(price, now)
        history = self.updates.setdefault(product_id, [])
        history.append(update)
        del history[: -self.keep]
        return update

    def finish(self, product_id: int, update: Update, now: float, ok: bool) -> None:
        if ok:
            update.acked = now
            self.acked_order.append(product_id)
            del self.acked_order[:-64]
        else:
            update.failed = True
        self.busy.discard(product_id)

    def recently_updated(self) -> list[int]:
        return list(dict.fromkeys(reversed(self.acked_order)))

    def latest_price(self, product_id: int) -> Decimal | None:
        history = self.updates.get(product_id)
        return history[-1].price if history else None

    def check(self, product_id: int, seen: Any, started: float, ended: float) -> str | None:
        """``None`` if a read over ``[started, ended]`` showing ``seen`` is fresh, else why not."""
        history = self.updates.get(product_id)
        if not history:
            return None
        base = None
        for index, update in enumerate(history):
            if update.acked is not None and update.acked < started:
                base = index
        if base is None:
            return None
        allowed = {history[base].price}
        allowed.update(u.price for u in history[base + 1 :] if u.started < ended)
        price = as_price(seen)
        if price in allowed:
            return None
        acked = history[base].acked or 0.0
        return (
            f"product {product_id}: saw {seen}, expected one of "
            f"{sorted(str(p) for p in allowed)}; {history[base].price} was acknowledged "
            f"{started - acked:.3f}s before this read started"
        )


# -- namespaces --------------------------------------------------------------------


def namespace_family(namespace: str) -> str:
    """``product:12`` -> ``product:{id}``, ``cart:user:3`` -> ``cart:user:{id}``."""
    return re.sub(r"(?<=:)\d+(?=:|$)", "{id}", namespace)
