"""The load test's judges (``loadtests/checks.py``): they must never invent a violation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from loadtests.checks import (
    REQUIRED_CHECKS,
    PriceLedger,
    admitted_per_window,
    cart_item_problem,
    cart_problem,
    categories_problem,
    early_refusals,
    namespace_family,
    over_admission,
    parse_json,
    parse_rate,
    parse_ratelimit,
    policy_scopes,
    product_page_problem,
    product_problem,
    rate_limit_header_problems,
    staff_update_problem,
    token_problem,
    verdict,
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


# -- every answer judged -----------------------------------------------------------------

PRODUCT = {"id": 7, "name": "Lamp", "price": "12.50", "stock": 3, "category": 2, "tags": []}


def page(number: int, rows: list, previous: str | None = "auto") -> dict:
    if previous == "auto":
        previous = {1: None, 2: "http://h/api/products/"}.get(
            number, f"http://h/api/products/?page={number - 1}"
        )
    return {"count": 100, "next": None, "previous": previous, "results": rows}


def test_a_200_that_is_not_json_is_judged():
    payload, why = parse_json(b"<html>Server Error</html>")
    assert payload is None and "not JSON" in why
    assert parse_json(b'{"id": 7}') == ({"id": 7}, None)


@pytest.mark.parametrize("payload", [[PRODUCT], "7", None, 7])
def test_a_200_that_is_not_an_object_is_judged(payload):
    assert product_problem(payload, 7)[0] == "bad-body"
    assert cart_problem(payload)[0] == "bad-body"
    assert token_problem(payload)[0] == "bad-body"


def test_a_product_without_its_fields_is_judged():
    assert product_problem({"id": 7, "name": "Lamp"}, 7) == (
        "bad-body",
        "product lacks ['price', 'stock', 'category']",
    )


def test_a_detail_of_another_product_is_judged_against_the_id_requested():
    assert product_problem(PRODUCT, 7) is None
    assert product_problem(PRODUCT, 8) == ("wrong-object", "asked for product 8, got 7")


def test_a_list_of_another_page_or_category_is_judged():
    rows = [PRODUCT, {**PRODUCT, "id": 9}]
    assert product_page_problem(page(1, rows), 1) is None
    assert product_page_problem(page(2, rows), 2) is None
    assert product_page_problem(page(3, rows), 3) is None
    assert product_page_problem(page(1, rows), 3)[0] == "wrong-object"  # page 1 for page 3
    assert product_page_problem(page(2, rows), 3)[0] == "wrong-object"
    assert product_page_problem(page(3, rows), 1)[0] == "wrong-object"
    assert product_page_problem(page(1, rows), 1, category=2) is None
    stray = page(1, [PRODUCT, {**PRODUCT, "id": 9, "category": 5}])
    assert product_page_problem(stray, 1, category=2) == (
        "wrong-object",
        "category 2 lists products [9] of others",
    )
    assert product_page_problem(page(1, [{"id": 1}]), 1)[0] == "bad-body"
    assert product_page_problem({"results": []}, 1)[0] == "bad-body"


def test_cart_answers_are_judged():
    line = {"id": 3, "product": 7, "quantity": 1, "unit_price": "12.50", "name": "Lamp"}
    cart = {"id": 1, "items": [line], "total_quantity": 1, "total_price": "12.50"}
    assert cart_problem(cart) is None
    assert cart_problem({**cart, "items": [{"id": 3}]})[0] == "bad-body"
    assert cart_problem({**cart, "items": "none"})[0] == "bad-body"
    assert cart_item_problem(line, 7) is None
    assert cart_item_problem(line, 8) == ("wrong-object", "added product 8, the line is 7")
    assert categories_problem([{"id": 1, "name": "Books"}]) is None
    assert categories_problem({"results": []})[0] == "bad-body"


def test_a_staff_update_answered_with_another_price_is_a_lost_update():
    assert staff_update_problem(PRODUCT, 7, Decimal("12.50")) is None
    assert staff_update_problem(PRODUCT, 7, Decimal("13.00")) == (
        "lost-update",
        "set product 7 to 13.00, answer says 12.50",
    )
    assert staff_update_problem(PRODUCT, 8, Decimal("12.50"))[0] == "wrong-object"


# -- refusing the abuser too early ---------------------------------------------------------


def test_a_refusal_with_the_limit_full_is_justified():
    log = [(i * 0.1, i * 0.1 + 0.01, 200) for i in range(3)] + [(0.35, 0.36, 429)]
    assert early_refusals(log, [(3, 1)]) == []


def test_a_refusal_before_the_limit_is_full_is_early():
    log = [(0.0, 0.01, 200), (0.1, 0.11, 200), (0.2, 0.21, 429)]
    assert early_refusals(log, [(3, 1)]) == [(0.2, 0.21, 2)]


def test_a_refusal_after_the_window_slid_past_is_early():
    log = [(i * 0.1, i * 0.1 + 0.01, 200) for i in range(3)] + [(1.5, 1.51, 429)]
    assert early_refusals(log, [(3, 1)]) == [(1.5, 1.51, 0)]


def test_a_refusal_justified_by_any_one_limit_is_not_early():
    log = [(i * 0.1, i * 0.1 + 0.01, 200) for i in range(3)] + [(2.0, 2.01, 429)]
    assert early_refusals(log, [(3, 1), (3, 60)]) == []


def test_a_slow_answer_gets_the_benefit_of_the_doubt():
    admitted = [(0.0, 0.01, 200), (0.1, 0.11, 200), (0.2, 0.21, 200)]
    # Sent at 0.5, answered at 1.05: it may have been decided at 0.5, with all three in its window.
    assert early_refusals([*admitted, (0.5, 1.05, 429)], [(3, 1)]) == []
    # Sent and answered at about 1.05: the first had certainly left the window.
    assert early_refusals([*admitted, (1.04, 1.05, 429)], [(3, 1)]) == [(1.04, 1.05, 2)]
    # An admission answered late may have been decided late: still in the window.
    late = [(0.0, 1.03, 200), (0.1, 0.11, 200), (0.2, 0.21, 200)]
    assert early_refusals([*late, (1.04, 1.05, 429)], [(3, 1)]) == []


# -- the verdict ----------------------------------------------------------------------------

ALL_CHECKED = dict.fromkeys(REQUIRED_CHECKS, 5)


def passing(**overrides):
    args = {
        "mode": "toolkit",
        "locust_exit": 0,
        "requests": 1000,
        "errors": 0,
        "violations": {},
        "over_admission": 0,
        "early_refusals": 0,
        "checked": ALL_CHECKED,
        **overrides,
    }
    return verdict(**args)


def test_a_clean_run_passes():
    assert passing() == []


def test_a_task_exception_fails_through_locusts_exit_code():
    # An exception raised inside a task is counted by Locust, which then exits 1.
    assert passing(locust_exit=1) == ["locust exited with 1 (a failed request or a task error)"]
    assert "did not exit" in passing(locust_exit=None)[0]


@pytest.mark.parametrize("kind", REQUIRED_CHECKS)
def test_a_check_that_never_ran_fails_the_run(kind):
    checked = {**ALL_CHECKED, kind: 0}
    assert passing(checked=checked) == [f"checks that never ran: [{kind!r}]"]
    del checked[kind]
    assert passing(checked=checked) == [f"checks that never ran: [{kind!r}]"]


def test_wrong_answers_fail_the_run():
    assert passing(violations={"bad-body": 1}) == ["violations {'bad-body': 1}"]
    assert passing(violations={"wrong-object": 2}) == ["violations {'wrong-object': 2}"]
    assert passing(errors=3) == ["3 unexpected answers"]
    assert passing(requests=0) == ["no requests"]
    assert passing(over_admission=1) == ["over-admission by 1"]
    assert "before any limit was full" in passing(early_refusals=1)[0]


def test_the_baseline_measures_drfs_throttle_errors_without_failing():
    assert passing(mode="baseline", over_admission=4, early_refusals=2) == []


TINY_LOCUSTFILE = """
from locust import User, constant, task


class Tiny(User):
    wait_time = constant(0.05)

    @task
    def work(self):
        if {raise_in_task}:
            raise KeyError("price")  # a body lacking a field, parsed outside catch_response
"""


@pytest.mark.slow
@pytest.mark.stack_independent  # Locust's own behaviour: not on the toolkit's stack
@pytest.mark.parametrize("raise_in_task", [False, True])
def test_locust_exits_non_zero_on_a_task_exception(tmp_path, raise_in_task):
    """The premise of reading Locust's exit code: an exception in a task makes it exit 1."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("locust") is None:  # not imported here: it patches gevent in
        pytest.skip("the locust package (the 'load' extra) is missing")
    locustfile = tmp_path / "tiny.py"
    locustfile.write_text(TINY_LOCUSTFILE.format(raise_in_task=raise_in_task))
    result = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
            "--users", "1", "--spawn-rate", "1", "--run-time", "2s",
            "--only-summary", "--loglevel", "ERROR",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (result.returncode != 0) is raise_in_task, result.stdout + result.stderr
    assert bool(passing(locust_exit=result.returncode)) is raise_in_task


def test_the_baseline_needs_no_304_check_and_the_toolkit_does():
    """The baseline has no response cache: no ETag, so no client ever revalidates."""
    from loadtests.checks import verdict

    checked = {**ALL_CHECKED, "not-modified": 0}
    common = dict(
        locust_exit=0, requests=10, errors=0, violations={}, over_admission=0,
        early_refusals=0, checked=checked,
    )  # fmt: skip
    assert verdict(mode="baseline", **common) == []
    assert verdict(mode="toolkit", **common) == ["checks that never ran: ['not-modified']"]
    missing_cart = {**ALL_CHECKED, "cart": 0}
    assert verdict(mode="baseline", **{**common, "checked": missing_cart}) == [
        "checks that never ran: ['cart']"
    ]
