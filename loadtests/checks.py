"""What the load test checks, as plain functions (unit-tested in ``tests/test_load_checks.py``).

The locustfile records; these decide. Every decision here is conservative: a
request's server-side moment is only known to lie between the moment the
client sent it and the moment the answer arrived, so a violation is reported
only when it holds for *every* possible placement inside those intervals. Slow
or jittery responses can hide a violation; they can never invent one.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


# -- answers: every 2xx body is judged, inside Locust's catch_response ------------------

#: Fields every answer of a kind must carry (the sample API's serializers).
PRODUCT_FIELDS = ("id", "name", "price", "stock", "category")
CART_FIELDS = ("id", "items", "total_quantity", "total_price")
CART_ITEM_FIELDS = ("id", "product", "quantity", "unit_price")
CATEGORY_FIELDS = ("id", "name")


def parse_json(body: bytes) -> tuple[Any, str | None]:
    """``(payload, None)``, or ``(None, why)`` when the body is not JSON."""
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({exc}): {body[:80]!r}"


def _missing(row: Any, fields: Sequence[str], what: str) -> str | None:
    if not isinstance(row, dict):
        return f"{what} is a {type(row).__name__}, not an object"
    absent = [f for f in fields if f not in row]
    return f"{what} lacks {absent}" if absent else None


def _rows_problem(
    payload: Any, fields: Sequence[str], rows: str, row_fields: Sequence[str], what: str
) -> tuple[str, str] | None:
    """An object with ``fields``, whose ``rows`` field is a list of objects with ``row_fields``."""
    problem = _missing(payload, fields, what)
    if problem:
        return "bad-body", problem
    if not isinstance(payload[rows], list):
        return "bad-body", f"{what} {rows} is not a list"
    for row in payload[rows]:
        problem = _missing(row, row_fields, f"{what} row")
        if problem:
            return "bad-body", problem
    return None


def product_problem(payload: Any, product_id: int) -> tuple[str, str] | None:
    """A product detail answer: ``(violation, detail)`` if it is not product ``product_id``."""
    problem = _missing(payload, PRODUCT_FIELDS, "product")
    if problem:
        return "bad-body", problem
    if payload["id"] != product_id or as_price(payload["price"]) is None:
        return "wrong-object", f"asked for product {product_id}, got {payload['id']}"
    return None


def product_page_problem(
    payload: Any, page: int, category: int | None = None
) -> tuple[str, str] | None:
    """A product list page: page ``page`` (of ``category``, if given), made of products."""
    problem = _rows_problem(
        payload, ("count", "previous", "results"), "results", PRODUCT_FIELDS, "page"
    )
    if problem:
        return problem
    previous = payload["previous"]
    # DRF links page 2 back to the URL without ?page=, and page 1 to nothing.
    shown = None
    if previous is not None:
        shown = (parse_qs(urlsplit(previous).query).get("page") or ["1"])[0]
    expected = None if page == 1 else str(page - 1)
    if shown != expected:
        return "wrong-object", f"asked for page {page}, the answer links back to page {shown}"
    if category is not None:
        strays = [row["id"] for row in payload["results"] if row["category"] != category]
        if strays:
            return "wrong-object", f"category {category} lists products {strays[:5]} of others"
    return None


def categories_problem(payload: Any) -> tuple[str, str] | None:
    if not isinstance(payload, list):
        return "bad-body", f"categories are a {type(payload).__name__}, not a list"
    for row in payload:
        problem = _missing(row, CATEGORY_FIELDS, "category")
        if problem:
            return "bad-body", problem
    return None


def cart_problem(payload: Any) -> tuple[str, str] | None:
    return _rows_problem(payload, CART_FIELDS, "items", CART_ITEM_FIELDS, "cart")


def cart_item_problem(payload: Any, product_id: int | None = None) -> tuple[str, str] | None:
    """A cart line answer (add or change): the line of ``product_id``, if given."""
    problem = _missing(payload, CART_ITEM_FIELDS, "cart item")
    if problem:
        return "bad-body", problem
    if product_id is not None and payload["product"] != product_id:
        return "wrong-object", f"added product {product_id}, the line is {payload['product']}"
    return None


def token_problem(payload: Any) -> tuple[str, str] | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("token"), str):
        return "bad-body", "no token in the login answer"
    return None


def staff_update_problem(payload: Any, product_id: int, price: Decimal) -> tuple[str, str] | None:
    """A staff PATCH answered 200 must show the product with the price that was sent."""
    problem = product_problem(payload, product_id)
    if problem:
        return problem
    if as_price(payload["price"]) != price:
        return "lost-update", f"set product {product_id} to {price}, answer says {payload['price']}"
    return None


# -- refusing the abuser too early ----------------------------------------------------


def early_refusals(
    log: Iterable[tuple[float, float, int]], limits: Sequence[tuple[int, int]]
) -> list[tuple[float, float, int]]:
    """429s that came although no limit could have been full: ``[(sent, answered, most)]``.

    ``log`` holds ``(sent, answered, status)`` of every request of one identity.
    A refusal decided at some moment in ``[sent, answered]`` is justified by a
    limit if that limit's window before the moment may hold ``limit`` admitted
    requests: those answered after ``sent - window`` and sent before ``answered``
    (an upper bound). It is certainly early only when every limit's bound stays
    below its limit; ``most`` is the largest bound, for the report.
    """
    entries = list(log)
    sent_sorted = sorted(s for s, _, status in entries if status == 200)
    answered_sorted = sorted(e for _, e, status in entries if status == 200)
    early = []
    for sent, answered, status in entries:
        if status != 429:
            continue
        justified = False
        most = 0
        for limit, window in limits:
            # Admitted requests sent before the refusal's answer, minus those answered
            # (hence also sent) at or before the earliest start of its window.
            possible = bisect_left(sent_sorted, answered) - bisect_right(
                answered_sorted, sent - window
            )
            most = max(most, possible)
            if possible >= limit:
                justified = True
                break
        if not justified:
            early.append((sent, answered, most))
    return early


# -- the verdict ----------------------------------------------------------------------

#: Every kind of check a run must have made at least once; a judge that never ran
#: proves nothing, so the run fails.
REQUIRED_CHECKS = (
    "catalogue",  # prices of list and detail reads against acknowledged staff updates
    "not-modified",  # 304 answers: the copy the client holds must be current
    "cart",  # each cart read shows what the shopper's acknowledged writes left
    "cart-price",  # cart lines' prices against staff updates
    "staff-updates",  # staff PATCHes answered with the price sent
    "product-id",  # detail answers are the product asked for
    "page",  # list answers are the page (and category) asked for
    "rate-limit-headers",  # the abuser's 200s and 429s carry correct headers
    "abuser-refusals",  # the abuser's 429s, each judged for being too early
)


def required_checks(mode: str) -> tuple[str, ...]:
    """The kinds of check a run of ``mode`` must have run at least once.

    The baseline has no response cache, so its answers carry no ETag and no client
    ever gets a 304: ``not-modified`` cannot run there.
    """
    if mode == "baseline":
        return tuple(kind for kind in REQUIRED_CHECKS if kind != "not-modified")
    return REQUIRED_CHECKS


def verdict(
    *,
    mode: str,
    locust_exit: int | None,
    requests: int,
    errors: int,
    violations: dict[str, int],
    over_admission: int,
    early_refusals: int,
    checked: dict[str, int],
    shared_names: list[str] | None = None,
) -> list[str]:
    """Why the run failed (an empty list means it passed).

    ``shared_names``: request names sent by browsers and by other users
    (``locustfile.browse_stats``); the browse mix's figures would count both.
    """
    reasons = []
    if locust_exit is None:
        reasons.append("locust did not exit by itself (stopped after overrunning)")
    elif locust_exit != 0:
        reasons.append(f"locust exited with {locust_exit} (a failed request or a task error)")
    if requests <= 0:
        reasons.append("no requests")
    if errors:
        reasons.append(f"{errors} unexpected answers")
    wrong = {name: n for name, n in violations.items() if n}
    if wrong:
        reasons.append(f"violations {wrong}")
    # DRF's throttles (the baseline) over-admit and refuse early: measured, not failed.
    if mode != "baseline":
        if over_admission:
            reasons.append(f"over-admission by {over_admission}")
        if early_refusals:
            reasons.append(f"{early_refusals} refusals of the abuser before any limit was full")
    never = [kind for kind in required_checks(mode) if not checked.get(kind)]
    if never:
        reasons.append(f"checks that never ran: {never}")
    if shared_names:
        reasons.append(f"request names sent by browsers and other users: {shared_names}")
    return reasons
