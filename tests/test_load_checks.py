"""The load test's judges (``loadtests/checks.py``): they must never invent a violation."""

from __future__ import annotations

from decimal import Decimal

from loadtests.checks import (
    PriceLedger,
    admitted_per_window,
    namespace_family,
    over_admission,
    parse_rate,
    parse_ratelimit,
    policy_scopes,
    rate_limit_header_problems,
)


class Headers(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


def headers(**values: str) -> Headers:
    return Headers({k.replace("_", "-").lower(): v for k, v in values.items()})


def test_parse_rate():
    assert parse_rate("20/s,600/min") == [(20, 1), (600, 60)]
    assert parse_rate("5/10s") == [(5, 10)]
    assert parse_rate("300/m") == [(300, 60)]


def test_over_admission_within_limit():
    # 10 requests per second for 5 seconds, each answered 5 ms after it was sent.
    spans = [(i * 0.1, i * 0.1 + 0.005) for i in range(50)]
    result = over_admission(spans, limit=10, window=1)
    assert (result.worst, result.excess, result.violating_windows) == (10, 0, 0)


def test_over_admission_found_when_certain():
    spans = [(i * 0.05, i * 0.05 + 0.01) for i in range(12)]  # 12 within 0.56 s
    result = over_admission(spans, limit=10, window=1)
    assert result.worst == 12
    assert result.excess == 2


def test_over_admission_gives_slow_answers_the_benefit_of_the_doubt():
    # 12 sent within 0.55 s, but two answers came late: they may have been decided
    # after the window of the first ones closed.
    spans = [(i * 0.05, i * 0.05 + 0.01) for i in range(10)]
    spans += [(0.5, 1.2), (0.55, 1.3)]
    assert over_admission(spans, limit=10, window=1).excess == 0


def test_admitted_per_window():
    spans = [(0, 0.1), (0, 0.2), (0, 1.5)]
    assert admitted_per_window(spans, window=1, step=0.5, until=2) == [
        (0.0, 0),
        (0.5, 2),
        (1.0, 2),
        (1.5, 1),
        (2.0, 1),
    ]


def test_headers_of_a_correct_refusal():
    good = headers(
        Retry_After="1",
        X_RateLimit_Limit="20",
        X_RateLimit_Remaining="0",
        X_RateLimit_Reset="1",
        RateLimit='"user-1s";r=0;t=1',
    )
    assert rate_limit_header_problems(429, good, [(20, 1), (600, 60)]) == []


def test_header_problems_are_named():
    limits = [(20, 1)]
    missing = headers(X_RateLimit_Limit="20", X_RateLimit_Remaining="0", X_RateLimit_Reset="1")
    assert ("missing-retry-after", "Retry-After=None") in rate_limit_header_problems(
        429, missing, limits
    )
    wrong_limit = headers(X_RateLimit_Limit="25", X_RateLimit_Remaining="3", X_RateLimit_Reset="1")
    assert rate_limit_header_problems(200, wrong_limit, limits)[0][0] == "bad-ratelimit-headers"
    too_many_left = headers(
        X_RateLimit_Limit="20", X_RateLimit_Remaining="20", X_RateLimit_Reset="1"
    )
    assert rate_limit_header_problems(200, too_many_left, limits)[0][0] == "bad-ratelimit-headers"
    # DRF's throttles (baseline) only promise Retry-After.
    assert rate_limit_header_problems(429, headers(Retry_After="1"), limits, legacy=False) == []


def test_policy_parsing():
    assert policy_scopes('"user-1s";q=20;w=1, "cart_write-60s";q=120;w=60') == {
        "user",
        "cart_write",
    }
    assert parse_ratelimit('"user-60s";r=0;t=17') == ("user", 0, 17)
    assert parse_ratelimit("garbage") is None


def test_ledger_flags_only_reads_started_after_the_acknowledgement():
    ledger = PriceLedger()
    update = ledger.begin(7, Decimal("12.50"), now=1.0)
    assert ledger.begin(7, Decimal("13.00"), now=1.1) is None  # one write in flight per product
    ledger.finish(7, update, now=2.0, ok=True)
    # Started before the acknowledgement: either price is fine.
    assert ledger.check(7, "9.99", started=1.5, ended=2.5) is None
    # Started after it: must show the new price.
    assert ledger.check(7, "12.50", started=2.1, ended=2.2) is None
    assert "saw 9.99" in ledger.check(7, "9.99", started=2.1, ended=2.2)
    # A later update in flight during the read may already show.
    later = ledger.begin(7, Decimal("14.00"), now=3.0)
    assert ledger.check(7, "14.00", started=2.9, ended=3.1) is None
    assert ledger.check(7, "14.00", started=2.5, ended=2.9) is not None
    ledger.finish(7, later, now=3.5, ok=False)  # unknown outcome: it may have committed
    assert ledger.check(7, "14.00", started=4.0, ended=4.1) is None
    assert ledger.check(8, "1.00", started=4.0, ended=4.1) is None  # never updated
    assert ledger.recently_updated() == [7]


def test_namespace_family():
    assert namespace_family("product:12") == "product:{id}"
    assert namespace_family("category:3:products") == "category:{id}:products"
    assert namespace_family("cart:user:42") == "cart:user:{id}"
    assert namespace_family("products:all") == "products:all"
